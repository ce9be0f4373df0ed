// SPDX-License-Identifier: Apache-2.0
internal import OCI

/// Writes TOC JSON the way the reference writer does (Go's `json.MarshalIndent(toc, "", "\t")`): keys in
/// struct order, zero values omitted, xattr keys sorted and values base64, HTML-safe escaping, invalid UTF-8
/// replaced by U+FFFD, no trailing newline.
public enum TOCEncoder {
    /// Encodes a TOC with `version` 1 and `entries`.
    public static func encode(_ entries: [TOCEntry], version: Int = 1) -> [UInt8] {
        var o: [UInt8] = []
        o.reserveCapacity(entries.count * 300 + 64)
        o += Array("{\n\t\"version\": \(version),\n\t\"entries\": ".utf8)
        if entries.isEmpty {
            o += Array("[]".utf8)
        } else {
            o += Array("[\n".utf8)
            for (i, e) in entries.enumerated() {
                encodeEntry(e, into: &o)
                o += i == entries.count - 1 ? [0x0a] : [0x2c, 0x0a]
            }
            o += Array("\t]".utf8)
        }
        o += Array("\n}".utf8)
        return o
    }

    private static func encodeEntry(_ e: TOCEntry, into o: inout [UInt8]) {
        o += Array("\t\t{\n".utf8)
        var first = true
        func key(_ k: String) {
            if !first { o += [0x2c, 0x0a] }
            first = false
            o += Array("\t\t\t\"\(k)\": ".utf8)
        }
        func str(_ k: String, _ v: String) {
            guard !v.isEmpty else { return }
            key(k)
            quote(v, into: &o)
        }
        func int(_ k: String, _ v: Int64) {
            guard v != 0 else { return }
            key(k)
            o += Array(String(v).utf8)
        }
        str("name", e.name)
        str("type", e.type.description)
        int("size", e.size)
        if let t = e.modTime, t != 0 { str("modtime", RFC3339.format(t)) }
        str("linkName", e.linkName)
        int("mode", e.mode)
        int("uid", e.uid)
        int("gid", e.gid)
        str("userName", e.userName)
        str("groupName", e.groupName)
        int("offset", e.offset)
        int("innerOffset", e.innerOffset)
        int("devMajor", e.devMajor)
        int("devMinor", e.devMinor)
        if !e.xattrs.isEmpty {
            key("xattrs")
            o += Array("{\n".utf8)
            let pairs = e.xattrs.sorted { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) }
            for (i, (k, v)) in pairs.enumerated() {
                o += Array("\t\t\t\t".utf8)
                quote(k, into: &o)
                o += Array(": ".utf8)
                quote(Base64.encode(v), into: &o)
                o += i == pairs.count - 1 ? [0x0a] : [0x2c, 0x0a]
            }
            o += Array("\t\t\t}".utf8)
        }
        str("digest", e.digest)
        int("chunkOffset", e.chunkOffset)
        int("chunkSize", e.chunkSize)
        str("chunkDigest", e.chunkDigest)
        o += Array("\n\t\t}".utf8)
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    static func quote(_ s: String, into o: inout [UInt8]) {
        o.append(0x22)
        for scalar in s.unicodeScalars {
            switch scalar.value {
            case 0x22: o += [0x5c, 0x22]
            case 0x5c: o += [0x5c, 0x5c]
            case 0x0a: o += [0x5c, 0x6e]
            case 0x0d: o += [0x5c, 0x72]
            case 0x09: o += [0x5c, 0x74]
            case 0..<0x20, 0x3c, 0x3e, 0x26, 0x2028, 0x2029:
                let v = scalar.value
                o += [0x5c, 0x75]
                o += [hexDigits[Int(v >> 12 & 0xf)], hexDigits[Int(v >> 8 & 0xf)], hexDigits[Int(v >> 4 & 0xf)],
                      hexDigits[Int(v & 0xf)]]
            default:
                o += Array(String(scalar).utf8)
            }
        }
        o.append(0x22)
    }
}
