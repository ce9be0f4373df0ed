// SPDX-License-Identifier: Apache-2.0

/// A double-quoted string in the syntax JSON, YAML and TOML share: `\"`, `\\`, `\n`, `\t` and `\r`, then
/// `\uXXXX` (`\UXXXXXXXX` past the BMP, which YAML and TOML read and JSON callers never ask for) for the scalars
/// `escape` picks; every other scalar as it is.
func quoted(_ s: String, escaping escape: (Unicode.Scalar) -> Bool) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        case "\r": out += "\\r"
        default:
            if !escape(u) {
                out.unicodeScalars.append(u)
            } else if u.value <= 0xFFFF {
                out += "\\u" + hex(u.value, width: 4)
            } else {
                out += "\\U" + hex(u.value, width: 8)
            }
        }
    }
    return out + "\""
}

private func hex(_ v: UInt32, width: Int) -> String {
    let h = String(v, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, width - h.count)) + h
}
