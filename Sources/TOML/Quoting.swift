// SPDX-License-Identifier: Apache-2.0

/// A double-quoted string in the syntax JSON, YAML and TOML share: `\"`, `\\`, `\n`, `\t` and `\r`, then
/// `\uXXXX` (`\UXXXXXXXX` past the BMP, which YAML and TOML read and JSON callers never ask for) for the scalars
/// `escape` picks; every other scalar as it is.
public func quoted(_ s: String, escaping escape: (Unicode.Scalar) -> Bool) -> String {
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

/// A JSON string literal of `s`: control characters, DEL and the two line separators JavaScript reads as line ends
/// escaped (the one JSON quoting of the package: manifests, Ignition, the store's log lines).
public func jsonQuoted(_ s: String) -> String {
    quoted(s, escaping: { $0.value < 0x20 || $0.value == 0x7F || $0.value == 0x2028 || $0.value == 0x2029 })
}

private func hex(_ v: UInt32, width: Int) -> String {
    let h = String(v, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, width - h.count)) + h
}
