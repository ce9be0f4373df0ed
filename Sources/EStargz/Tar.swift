// SPDX-License-Identifier: Apache-2.0

/// A tar entry header, after PAX and GNU long-name records are applied.
public struct TarHeader: Sendable, Equatable {
    /// The typeflag byte (`'0'`, `'5'`, …). `'\0'` is reported as `'0'`.
    public var typeflag: UInt8
    /// The entry name.
    public var name: String
    /// Link target for symlinks and hardlinks.
    public var linkName: String = ""
    /// The mode field.
    public var mode: Int64 = 0
    /// Owner id.
    public var uid: Int64 = 0
    /// Group id.
    public var gid: Int64 = 0
    /// Payload size.
    public var size: Int64 = 0
    /// Modification time, whole seconds since the epoch.
    public var modTime: Int64 = 0
    /// Owner name.
    public var userName: String = ""
    /// Group name.
    public var groupName: String = ""
    /// Device major number.
    public var devMajor: Int64 = 0
    /// Device minor number.
    public var devMinor: Int64 = 0
    /// Extended attributes from `SCHILY.xattr.*` PAX records.
    public var xattrs: [String: [UInt8]] = [:]

    /// Creates a header.
    public init(typeflag: UInt8, name: String) {
        self.typeflag = typeflag
        self.name = name
    }

    /// The TOC entry type for this typeflag, or nil when unsupported.
    public var entryType: EntryType? {
        switch typeflag {
        case UInt8(ascii: "0"): .reg
        case UInt8(ascii: "1"): .hardlink
        case UInt8(ascii: "2"): .symlink
        case UInt8(ascii: "3"): .char
        case UInt8(ascii: "4"): .block
        case UInt8(ascii: "5"): .dir
        case UInt8(ascii: "6"): .fifo
        default: nil
        }
    }
}

/// Reads a tar stream entry by entry (USTAR, PAX, GNU long names, base-256 numbers).
public final class TarReader {
    private let stream: any ByteStream
    private var block = [UInt8](repeating: 0, count: 512)
    private var remaining: Int64 = 0
    private var padding: Int64 = 0
    /// Bytes consumed from the stream so far.
    public private(set) var position: Int64 = 0
    /// Stream offset where the current entry's payload starts.
    public private(set) var payloadOffset: Int64 = 0
    /// Stream offset where the current entry's first header block (including PAX/GNU prefix blocks) starts.
    public private(set) var headerOffset: Int64 = 0
    private var globalPAX: [String: [UInt8]] = [:]
    /// The largest PAX or GNU long-name record accepted.
    public var maxMetadataSize: Int64 = 1 << 20

    /// Reads from `stream`.
    public init(_ stream: any ByteStream) { self.stream = stream }

    private func readBlock() throws -> Bool {
        var done = 0
        try block.withUnsafeMutableBytes { buf in
            while done < 512 {
                let n = try stream.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[done...]))
                if n == 0 { break }
                done += n
            }
        }
        position += Int64(done)
        if done == 0 { return false }
        guard done == 512 else {
            throw EStargzError(.invalidTar, "tar stream ends inside a header at offset \(position)")
        }
        return true
    }

    private func readBytes(_ n: Int64) throws -> [UInt8] {
        guard n >= 0, n <= maxMetadataSize else {
            throw EStargzError(.invalidTar, "tar metadata record of \(n) bytes at offset \(position) is too large")
        }
        var out = [UInt8](repeating: 0, count: Int(n))
        try out.withUnsafeMutableBytes { try stream.readFully(into: $0) }
        position += n
        let pad = (512 - n % 512) % 512
        if pad > 0 {
            let s = try stream.skip(pad)
            position += s
            if s != pad { throw EStargzError(.invalidTar, "tar stream truncated at offset \(position)") }
        }
        return out
    }

    /// Skips whatever is left of the current payload and returns the next header, or nil at the end.
    public func next() throws -> TarHeader? {
        if remaining + padding > 0 {
            let want = remaining + padding
            let s = try stream.skip(want)
            position += s
            if s != want {
                throw EStargzError(.invalidTar, "tar stream truncated inside an entry at offset \(position)")
            }
            remaining = 0
            padding = 0
        }
        var pax: [String: [UInt8]] = [:]
        var longName: [UInt8]? = nil
        var longLink: [UInt8]? = nil
        var first = true
        while true {
            let blockStart = position
            if first { headerOffset = blockStart }
            first = false
            guard try readBlock() else { return nil }
            if block.allSatisfy({ $0 == 0 }) {
                // End of archive (one or two zero blocks).
                return nil
            }
            try verifyChecksum(at: blockStart)
            let typeflag = block[156]
            let size = try number(124, 12, field: "size", at: blockStart)
            guard size >= 0 else { throw EStargzError(.invalidTar, "negative size in tar header at offset \(blockStart)") }
            switch typeflag {
            case UInt8(ascii: "x"):
                try parsePAX(try readBytes(size), into: &pax, at: blockStart)
                continue
            case UInt8(ascii: "g"):
                try parsePAX(try readBytes(size), into: &globalPAX, at: blockStart)
                continue
            case UInt8(ascii: "L"):
                longName = trimNUL(try readBytes(size))
                continue
            case UInt8(ascii: "K"):
                longLink = trimNUL(try readBytes(size))
                continue
            default:
                break
            }
            var h = TarHeader(typeflag: typeflag == 0 ? UInt8(ascii: "0") : typeflag, name: "")
            let isUSTAR = block[257..<263].elementsEqual(Array("ustar\u{0}".utf8))
            var nameBytes = field(0, 100)
            if isUSTAR {
                let prefix = field(345, 155)
                if !prefix.isEmpty { nameBytes = prefix + [0x2f] + nameBytes }
            }
            var linkBytes = field(157, 100)
            if let l = longName { nameBytes = l }
            if let l = longLink { linkBytes = l }
            var merged = globalPAX
            for (k, v) in pax { merged[k] = v }
            if let p = merged["path"] { nameBytes = p }
            if let p = merged["linkpath"] { linkBytes = p }
            h.name = String(decoding: nameBytes, as: UTF8.self)
            h.linkName = String(decoding: linkBytes, as: UTF8.self)
            h.mode = try number(100, 8, field: "mode", at: blockStart)
            h.uid = try number(108, 8, field: "uid", at: blockStart)
            h.gid = try number(116, 8, field: "gid", at: blockStart)
            h.size = size
            h.modTime = try number(136, 12, field: "mtime", at: blockStart)
            h.userName = String(decoding: field(265, 32), as: UTF8.self)
            h.groupName = String(decoding: field(297, 32), as: UTF8.self)
            if h.typeflag == UInt8(ascii: "3") || h.typeflag == UInt8(ascii: "4") {
                h.devMajor = try number(329, 8, field: "devmajor", at: blockStart)
                h.devMinor = try number(337, 8, field: "devminor", at: blockStart)
            }
            for (k, v) in merged {
                let s = String(decoding: v, as: UTF8.self)
                switch k {
                case "size": h.size = try paxInt(s, k, blockStart)
                case "uid": h.uid = try paxInt(s, k, blockStart)
                case "gid": h.gid = try paxInt(s, k, blockStart)
                case "uname": h.userName = s
                case "gname": h.groupName = s
                case "mtime":
                    let whole = s.split(separator: ".", maxSplits: 1).first.map(String.init) ?? s
                    h.modTime = try paxInt(whole, k, blockStart)
                default:
                    if k.hasPrefix("SCHILY.xattr.") { h.xattrs[String(k.dropFirst(13))] = v }
                }
            }
            // Old V7 tars mark directories with a trailing slash on a regular entry.
            if h.typeflag == UInt8(ascii: "0") && h.name.hasSuffix("/") { h.typeflag = UInt8(ascii: "5") }
            guard h.size >= 0 else { throw EStargzError(.invalidTar, "negative size for \(h.name)") }
            // Header-only types carry no payload, whatever their size field says (as Go's reader does).
            if let t = h.entryType, t != .reg { h.size = 0 }
            remaining = h.size
            padding = (512 - h.size % 512) % 512
            payloadOffset = position
            return h
        }
    }

    /// Reads up to `buffer.count` bytes of the current payload; returns 0 at its end.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let want = Int(min(Int64(buffer.count), remaining))
        if want == 0 { return 0 }
        let n = try stream.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]))
        if n == 0 { throw EStargzError(.invalidTar, "tar stream truncated inside a payload at offset \(position)") }
        remaining -= Int64(n)
        position += Int64(n)
        return n
    }

    /// Reads the whole current payload (refusing more than `limit` bytes).
    public func readPayload(limit: Int64 = .max) throws -> [UInt8] {
        guard remaining <= limit else {
            throw EStargzError(.tocTooLarge, "tar entry payload of \(remaining) bytes exceeds the limit of \(limit)")
        }
        var out = [UInt8](repeating: 0, count: Int(remaining))
        var done = 0
        try out.withUnsafeMutableBytes { buf in
            while done < buf.count {
                done += try read(into: UnsafeMutableRawBufferPointer(rebasing: buf[done...]))
            }
        }
        return out
    }

    private func trimNUL(_ b: [UInt8]) -> [UInt8] {
        if let z = b.firstIndex(of: 0) { return Array(b[..<z]) }
        return b
    }

    private func field(_ off: Int, _ len: Int) -> [UInt8] {
        let s = block[off..<(off + len)]
        if let z = s.firstIndex(of: 0) { return Array(block[off..<z]) }
        return Array(s)
    }

    private func verifyChecksum(at offset: Int64) throws {
        var unsigned: Int64 = 0
        var signed: Int64 = 0
        for i in 0..<512 {
            let b = (148..<156).contains(i) ? UInt8(0x20) : block[i]
            unsigned += Int64(b)
            signed += Int64(Int8(bitPattern: b))
        }
        let stored = try number(148, 8, field: "checksum", at: offset)
        guard stored == unsigned || stored == signed else {
            throw EStargzError(.invalidTar, "tar header checksum mismatch at offset \(offset) (not a tar stream?)")
        }
    }

    private func number(_ off: Int, _ len: Int, field name: String, at offset: Int64) throws -> Int64 {
        let b = block[off..<(off + len)]
        if let first = b.first, first & 0x80 != 0 {
            // Base-256, big-endian two's complement.
            var v: Int64 = first & 0x40 != 0 ? -1 : 0
            for (i, c) in b.enumerated() {
                let byte = i == 0 ? Int64(c & 0x7f) | (first & 0x40 != 0 ? ~0x7f : 0) : Int64(c)
                if i == 0 {
                    v = byte
                    continue
                }
                guard v <= (Int64.max >> 8), v >= (Int64.min >> 8) else {
                    throw EStargzError(.invalidTar, "tar \(name) field overflows at offset \(offset)")
                }
                v = v << 8 | byte
            }
            return v
        }
        var v: Int64 = 0
        var seen = false
        for c in b {
            if c == 0 { break }
            if c == 0x20 {
                if seen { break }
                continue
            }
            guard c >= 0x30, c <= 0x37 else {
                throw EStargzError(.invalidTar, "tar \(name) field is not octal at offset \(offset)")
            }
            seen = true
            guard v <= (Int64.max >> 3) else { throw EStargzError(.invalidTar, "tar \(name) overflows at offset \(offset)") }
            v = v << 3 | Int64(c - 0x30)
        }
        return v
    }

    private func paxInt(_ s: String, _ key: String, _ offset: Int64) throws -> Int64 {
        guard let v = Int64(s) else {
            throw EStargzError(.invalidTar, "PAX record \(key)=\"\(s)\" is not a number at offset \(offset)")
        }
        return v
    }

    private func parsePAX(_ data: [UInt8], into out: inout [String: [UInt8]], at offset: Int64) throws {
        var i = 0
        while i < data.count {
            guard let sp = data[i...].firstIndex(of: 0x20),
                let len = Int(String(decoding: data[i..<sp], as: UTF8.self)), len > sp - i, i + len <= data.count,
                data[i + len - 1] == 0x0a, let eq = data[(sp + 1)..<(i + len)].firstIndex(of: 0x3d)
            else {
                throw EStargzError(.invalidTar, "malformed PAX record at offset \(offset)")
            }
            let key = String(decoding: data[(sp + 1)..<eq], as: UTF8.self)
            let value = Array(data[(eq + 1)..<(i + len - 1)])
            out[key] = value
            i += len
        }
    }
}

/// Serializes tar headers the way Go's archive/tar does for the formats it picks: USTAR when the header
/// fits, PAX records otherwise (long or non-ASCII names, xattrs, large numbers).
public enum TarWriter {
    /// One archive member: the header of `h` with its size set to `content.count`, the content, and zeros to the
    /// next 512-byte block.
    public static func entry(_ h: TarHeader, _ content: [UInt8] = []) -> [UInt8] {
        var h = h
        h.size = Int64(content.count)
        return header(h) + content + [UInt8](repeating: 0, count: (512 - content.count % 512) % 512)
    }

    /// The end-of-archive marker: two zero blocks.
    public static let end = [UInt8](repeating: 0, count: 1024)

    /// The header bytes (one or more 512-byte blocks) for `h`.
    public static func header(_ h: TarHeader) -> [UInt8] {
        var pax: [(String, [UInt8])] = []
        let name = Array(h.name.utf8)
        let link = Array(h.linkName.utf8)
        var nameField = name
        var prefixField: [UInt8] = []
        let ascii = { (b: [UInt8]) in b.allSatisfy { $0 < 0x80 && $0 != 0 } }
        if !ascii(name) {
            pax.append(("path", name))
            nameField = Array(name.prefix(100))
        } else if name.count > 100 {
            // USTAR split: prefix (≤155) + "/" + name (≤100).
            var split: Int? = nil
            for i in stride(from: min(name.count - 1, 155), through: 1, by: -1) where name[i] == 0x2f {
                if name.count - i - 1 <= 100 && name.count - i - 1 > 0 { split = i }
                break
            }
            if let s = split {
                prefixField = Array(name[..<s])
                nameField = Array(name[(s + 1)...])
            } else {
                pax.append(("path", name))
                nameField = Array(name.prefix(100))
            }
        }
        var linkField = link
        if link.count > 100 || !ascii(link) {
            pax.append(("linkpath", link))
            linkField = Array(link.prefix(100))
        }
        let uname = Array(h.userName.utf8)
        let gname = Array(h.groupName.utf8)
        var unameField = uname
        var gnameField = gname
        if uname.count > 32 || !ascii(uname) {
            pax.append(("uname", uname))
            unameField = []
        }
        if gname.count > 32 || !ascii(gname) {
            pax.append(("gname", gname))
            gnameField = []
        }
        let max8: Int64 = 0o7777777
        let max12: Int64 = 0o77777777777
        if h.uid < 0 || h.uid > max8 { pax.append(("uid", Array(String(h.uid).utf8))) }
        if h.gid < 0 || h.gid > max8 { pax.append(("gid", Array(String(h.gid).utf8))) }
        if h.size > max12 { pax.append(("size", Array(String(h.size).utf8))) }
        if h.modTime < 0 || h.modTime > max12 { pax.append(("mtime", Array(String(h.modTime).utf8))) }
        for (k, v) in h.xattrs { pax.append(("SCHILY.xattr." + k, v)) }

        var out: [UInt8] = []
        if !pax.isEmpty {
            pax.sort { $0.0 < $1.0 }
            var records: [UInt8] = []
            for (k, v) in pax { records += paxRecord(k, v) }
            var ph = TarHeader(typeflag: UInt8(ascii: "x"), name: "")
            let base = name.split(separator: 0x2f).last.map(Array.init) ?? []
            let dir = Array(name.split(separator: 0x2f).dropLast().joined(separator: [0x2f]))
            var pname = (dir.isEmpty ? [] : Array(dir) + [0x2f]) + Array("PaxHeaders.0/".utf8) + base
            pname = pname.filter { $0 < 0x80 && $0 != 0 }
            ph.size = Int64(records.count)
            out += block(
                ph, name: Array(pname.prefix(100)), prefix: [], link: [], uname: [], gname: [], modTime: 0)
            out += records
            out += [UInt8](repeating: 0, count: (512 - records.count % 512) % 512)
        }
        out += block(
            h, name: nameField, prefix: prefixField, link: linkField, uname: unameField, gname: gnameField,
            modTime: h.modTime < 0 || h.modTime > max12 ? 0 : h.modTime)
        return out
    }

    private static func paxRecord(_ k: String, _ v: [UInt8]) -> [UInt8] {
        let body = Array(" \(k)=".utf8) + v + [0x0a]
        var len = body.count + 1
        while String(len).utf8.count + body.count != len { len = String(len).utf8.count + body.count }
        return Array(String(len).utf8) + body
    }

    private static func block(
        _ h: TarHeader, name: [UInt8], prefix: [UInt8], link: [UInt8], uname: [UInt8], gname: [UInt8],
        modTime: Int64
    ) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 512)
        func put(_ bytes: [UInt8], _ off: Int, _ len: Int) {
            for (i, c) in bytes.prefix(len).enumerated() { b[off + i] = c }
        }
        func octal(_ v: Int64, _ off: Int, _ len: Int) {
            if v >= 0 && v < (Int64(1) << (3 * (len - 1))) {
                let s = Array(String(v, radix: 8).utf8)
                let padded = [UInt8](repeating: 0x30, count: len - 1 - s.count) + s
                put(padded, off, len - 1)
            } else {
                // Base-256.
                var x = UInt64(bitPattern: v)
                for i in stride(from: off + len - 1, to: off, by: -1) {
                    b[i] = UInt8(truncatingIfNeeded: x)
                    x >>= 8
                }
                b[off] = 0x80
            }
        }
        put(name, 0, 100)
        octal(h.mode & 0o7777777, 100, 8)
        octal(max(0, min(h.uid, 0o7777777)), 108, 8)
        octal(max(0, min(h.gid, 0o7777777)), 116, 8)
        octal(h.size, 124, 12)
        octal(modTime, 136, 12)
        b[156] = h.typeflag
        put(link, 157, 100)
        put(Array("ustar\u{0}00".utf8), 257, 8)
        put(uname, 265, 32)
        put(gname, 297, 32)
        if h.typeflag == UInt8(ascii: "3") || h.typeflag == UInt8(ascii: "4") {
            octal(h.devMajor, 329, 8)
            octal(h.devMinor, 337, 8)
        } else {
            octal(0, 329, 8)
            octal(0, 337, 8)
        }
        put(prefix, 345, 155)
        // Checksum: computed with the field as spaces; written as 6 octal digits, NUL, space.
        for i in 148..<156 { b[i] = 0x20 }
        let sum = b.reduce(0) { $0 + Int($1) }
        let s = Array(String(sum, radix: 8).utf8)
        put([UInt8](repeating: 0x30, count: 6 - s.count) + s + [0, 0x20], 148, 8)
        return b
    }
}
