// SPDX-License-Identifier: Apache-2.0

/// Standard base64 (RFC 4648, padded), as Go's encoding/json uses for `[]byte`.
public enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// Encodes with padding.
    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= bytes.count {
            let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out += [alphabet[Int(v >> 18)], alphabet[Int(v >> 12 & 63)], alphabet[Int(v >> 6 & 63)], alphabet[Int(v & 63)]]
            i += 3
        }
        let rest = bytes.count - i
        if rest == 1 {
            let v = UInt32(bytes[i]) << 16
            out += [alphabet[Int(v >> 18)], alphabet[Int(v >> 12 & 63)], 61, 61]
        } else if rest == 2 {
            let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out += [alphabet[Int(v >> 18)], alphabet[Int(v >> 12 & 63)], alphabet[Int(v >> 6 & 63)], 61]
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes padded standard base64; nil when malformed. `\r` and `\n` are ignored as Go does.
    public static func decode(_ input: [UInt8]) -> [UInt8]? {
        var vals: [UInt8] = []
        vals.reserveCapacity(input.count)
        var pad = 0
        for c in input {
            switch c {
            case 65...90: vals.append(c - 65)
            case 97...122: vals.append(c - 71)
            case 48...57: vals.append(c + 4)
            case 43: vals.append(62)
            case 47: vals.append(63)
            case 61: pad += 1; continue
            case 10, 13: continue
            default: return nil
            }
            if pad > 0 { return nil }
        }
        guard (vals.count + pad) % 4 == 0, pad <= 2 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(vals.count * 3 / 4)
        var i = 0
        while i + 4 <= vals.count {
            let v = UInt32(vals[i]) << 18 | UInt32(vals[i + 1]) << 12 | UInt32(vals[i + 2]) << 6 | UInt32(vals[i + 3])
            out += [UInt8(v >> 16), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)]
            i += 4
        }
        let rest = vals.count - i
        if rest == 2 {
            out.append(vals[i] << 2 | vals[i + 1] >> 4)
        } else if rest == 3 {
            let v = UInt32(vals[i]) << 18 | UInt32(vals[i + 1]) << 12 | UInt32(vals[i + 2]) << 6
            out += [UInt8(v >> 16), UInt8(v >> 8 & 0xff)]
        } else if rest == 1 {
            return nil
        }
        return out
    }
}
