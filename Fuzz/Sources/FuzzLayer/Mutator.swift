// SPDX-License-Identifier: Apache-2.0
// Structural mutations of a LayerModel: TOC fields to extremes and wrong types, entries duplicated, reordered and
// removed, hostile names and links, many and huge xattrs, chunk entries out of order, gzip members truncated,
// swapped or replaced by members that inflate far past their chunk, wrong digests.
import Compression
import EStargz
import OCI

struct RNG {
    var s: UInt64
    mutating func next() -> UInt64 {
        s &+= 0x9E37_79B9_7F4A_7C15
        var z = s
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { n <= 0 ? 0 : Int(next() % UInt64(n)) }
    mutating func chance(_ oneIn: Int) -> Bool { below(oneIn) == 0 }
    mutating func pick<T>(_ a: [T]) -> T { a[below(a.count)] }
}

enum Mutator {
    static let numericFields = [
        "size", "offset", "chunkOffset", "chunkSize", "innerOffset", "devMajor", "devMinor", "mode", "uid", "gid",
    ]
    static let stringFields = ["name", "type", "linkName", "digest", "chunkDigest", "modtime", "userName", "groupName"]
    static let allFields = numericFields + stringFields + ["xattrs", "version", "entries", "NUMLINK", "unknownKey"]

    static let extremes: [String] = [
        "0", "-1", "1", "9223372036854775807", "-9223372036854775808", "9223372036854775808",
        "9007199254740992", "9007199254740993", "4294967295", "4294967296", "2147483647", "2147483648",
        "65535", "65536", "1099511627776", "281474976710656", "4611686018427387904", "18446744073709551615",
        "1e308", "-1e308", "1.5", "-0", "0.0", "1E3", "00", "007", "4194304", "4194305", "131072", "16777216",
    ]

    static let types = ["dir", "reg", "symlink", "hardlink", "char", "block", "fifo", "chunk", "", "REG", "sock"]

    /// A value of the wrong type (or a weird value of the right one).
    static func wrongValue(_ r: inout RNG) -> J {
        switch r.below(9) {
        case 0: return .null
        case 1: return .bool(r.chance(2))
        case 2: return .str(Array(r.pick(extremes).utf8))
        case 3: return .obj([(Array("a".utf8), .int(1))])
        case 4: return .arr([.int(1), .null])
        case 5: return .arr([])
        case 6: return .obj([])
        case 7: return .str([])
        default: return .num(Array(r.pick(extremes).utf8))
        }
    }

    static func name(_ r: inout RNG, _ others: [J]) -> [UInt8] {
        switch r.below(16) {
        case 0:  // nested 10^5 deep
            return Array(repeating: Array("a/".utf8), count: 100_000).joined() + Array("f".utf8)
        case 1: return Array(repeating: UInt8(ascii: "n"), count: 1 << (8 + r.below(10)))  // up to 128 KiB component
        case 2: return Array("../../../../etc/passwd".utf8)
        case 3: return Array("/abs/path".utf8)
        case 4: return Array("./".utf8)
        case 5: return []
        case 6: return Array(".".utf8)
        case 7: return Array("a//b/./../c".utf8)
        case 8: return [UInt8(ascii: "x"), 0, UInt8(ascii: "y")]
        case 9: return Array(ReservedName.toc.utf8)
        case 10: return Array(r.pick([".wh..wh..opq", ".wh.x", "etc/.wh.os-release", ".prefetch.landmark", ".no.prefetch.landmark"]).utf8)
        case 11: return [0xff, 0xfe, 0x80, UInt8(ascii: "/"), 0xc0, 0xaf]
        case 12:  // another entry's name, or a path under it (a file used as a directory)
            let o = others.compactMap { $0["name"]?.bytes }
            guard !o.isEmpty else { return Array("x".utf8) }
            return r.chance(2) ? r.pick(o) : r.pick(o) + Array("/sub".utf8)
        case 13: return Array(repeating: Array("../".utf8), count: 1000).joined() + Array("x".utf8)
        case 14: return Array(repeating: Array("d/".utf8), count: 1 + r.below(3000)).joined().map { $0 }
        default: return Array("fuzz\(r.below(100))".utf8)
        }
    }

    static func linkName(_ r: inout RNG, _ entries: [J], self me: Int) -> [UInt8] {
        let names = entries.compactMap { $0["name"]?.bytes }
        switch r.below(9) {
        case 0: return entries[me]["name"]?.bytes ?? []  // to itself
        case 1: return names.isEmpty ? [] : r.pick(names)
        case 2: return Array("../../../../../../etc/shadow".utf8)
        case 3: return Array("/proc/self/root".utf8)
        case 4: return []
        case 5: return Array(repeating: UInt8(ascii: "l"), count: 1 << (8 + r.below(11)))  // up to 256 KiB
        case 6: return Array("nonexistent/target".utf8)
        case 7: return Array(repeating: Array("../".utf8), count: 5000).joined().map { $0 }
        default:  // the name of an entry that links back here (a cycle)
            return names.isEmpty ? [] : r.pick(names)
        }
    }

    static func xattrs(_ r: inout RNG) -> J {
        switch r.below(6) {
        case 0:  // many
            return .obj((0..<(1 + r.below(20_000))).map { (Array("user.k\($0)".utf8), .string(Base64.encode([UInt8($0 & 0xff)]))) })
        case 1:  // huge value
            let v = [UInt8](repeating: 0x41, count: 1 << (10 + r.below(11)))
            return .obj([(Array("user.big".utf8), .string(Base64.encode(v)))])
        case 2: return .obj([([], .string("eA==")), (Array("user.bad".utf8), .string("!!!not base64"))])
        case 3: return .obj([(Array("user.n".utf8), wrongValue(&r))])
        case 4: return .obj([(Array("trusted.overlay.opaque".utf8), .string("eQ==")), (Array(repeating: 0x6b, count: 70_000), .string(""))])
        default: return wrongValue(&r)
        }
    }

    /// A gzip member holding `count` zero bytes (cached: a few sizes).
    nonisolated(unsafe) static var bombs: [Int: [UInt8]] = [:]
    static func bomb(_ mib: Int) -> [UInt8] {
        if let b = bombs[mib] { return b }
        let b = Bomb.zeros(mib << 20)
        bombs[mib] = b
        return b
    }

    /// Indices of entries of a type.
    static func indices(_ a: [J], _ type: String) -> [Int] {
        a.indices.filter { a[$0]["type"]?.bytes == Array(type.utf8) }
    }

    /// Applies one structural mutation.
    @discardableResult
    static func mutate(_ m: inout LayerModel, _ r: inout RNG) -> Int {
        var a = m.entries
        let n = a.count
        let which = r.below(24)
        switch which {
        case 0, 1, 2:  // a numeric field to an extreme
            guard n > 0 else { break }
            let i = r.below(n)
            a[i][r.pick(numericFields)] = .num(Array(r.pick(extremes).utf8))
        case 3:  // a field to a wrong type
            guard n > 0 else { break }
            a[r.below(n)][r.pick(allFields)] = wrongValue(&r)
        case 4:  // a top-level field to an extreme or wrong type
            if r.chance(2) { m.toc["version"] = r.chance(2) ? wrongValue(&r) : .num(Array(r.pick(extremes).utf8)) }
            else if r.chance(4) { m.toc["entries"] = wrongValue(&r); return which }
            else { m.toc[r.pick(["entries2", "prefetch", ""])] = wrongValue(&r) }
        case 5:  // duplicate an entry
            guard n > 0 else { break }
            let i = r.below(n)
            a.insert(a[i], at: r.below(n + 1))
        case 6:  // swap two entries (chunks out of order, children before parents)
            guard n > 1 else { break }
            a.swapAt(r.below(n), r.below(n))
        case 7:  // remove entries
            guard n > 0 else { break }
            let i = r.below(n)
            a.removeSubrange(i..<min(n, i + 1 + (r.chance(4) ? r.below(8) : 0)))
        case 8:  // a hostile name
            guard n > 0 else { break }
            let i = r.below(n)
            a[i]["name"] = .str(name(&r, a))
        case 9:  // a link that loops, dangles or leaves the layer
            guard n > 0 else { break }
            let i = r.below(n)
            if r.chance(2) { a[i]["type"] = .string(r.chance(2) ? "symlink" : "hardlink") }
            a[i]["linkName"] = .str(linkName(&r, a, self: i))
        case 10:  // many or huge xattrs
            guard n > 0 else { break }
            a[r.below(n)]["xattrs"] = xattrs(&r)
        case 11:  // a type changed
            guard n > 0 else { break }
            a[r.below(n)]["type"] = .string(r.pick(types))
        case 12:  // chunk offsets shuffled, overlapping, or leaving gaps
            let cs = indices(a, "chunk")
            guard !cs.isEmpty else { break }
            let i = r.pick(cs)
            switch r.below(4) {
            case 0: if let j = cs.randomElement(using: &r) { let t = a[i]["chunkOffset"]; a[i]["chunkOffset"] = a[j]["chunkOffset"]; a[j]["chunkOffset"] = t }
            case 1: a[i]["chunkOffset"] = .int((a[i]["chunkOffset"]?.int64 ?? 0) &+ Int64(r.below(9000)) &- 4500)
            case 2: a[i]["chunkSize"] = .int((a[i]["chunkSize"]?.int64 ?? 0) &+ Int64(r.below(9000)) &- 4500)
            default: a.insert(a[i], at: i)
            }
        case 13:  // a gzip member truncated
            guard !m.members.isEmpty else { break }
            let k = r.below(m.members.count)
            m.members[k] = Array(m.members[k].prefix(r.below(m.members[k].count + 1)))
        case 14:  // a member that inflates far past its chunk
            guard !m.members.isEmpty else { break }
            let k = r.below(m.members.count)
            let mib = r.pick([1, 4, 16, 64])
            m.members[k] = bomb(mib)
            if r.chance(2), mib < 64 || r.chance(8) {  // and a file that says it is that big, with the right digest: a legitimate huge chunk
                for i in a.indices where a[i]["offset"] == .member(k) {
                    a[i]["size"] = .int(Int64(mib) << 20)
                    a[i]["chunkSize"] = nil
                    a[i]["chunkDigest"] = nil
                }
                m.entries = a
                m.repairDigests()
                return which
            }
        case 15:  // members swapped, dropped, duplicated, or made random bytes
            guard m.members.count > 1 else { break }
            let k = r.below(m.members.count), l = r.below(m.members.count)
            switch r.below(4) {
            case 0: m.members.swapAt(k, l)
            case 1: m.members.remove(at: k)
            case 2: m.members.insert(m.members[k], at: l)
            default: m.members[k] = Seeds.pseudoRandom(r.below(4096), seed: r.next())
            }
        case 16:  // wrong digests
            guard n > 0 else { break }
            let i = r.below(n)
            let d = r.pick([
                "sha256:" + String(repeating: "0", count: 64), "sha256:xyz", "md5:d41d8cd98f00b204e9800998ecf8427e",
                "sha256:", "", "sha512:" + String(repeating: "a", count: 128),
                "sha256:" + String(repeating: "A", count: 64),
            ])
            a[i][r.chance(2) ? "digest" : "chunkDigest"] = .string(d)
        case 17:  // a member's ISIZE trailer lies (the fast-path inflate trusts it)
            guard !m.members.isEmpty else { break }
            let k = r.below(m.members.count)
            guard m.members[k].count >= 18 else { break }
            let v = UInt32(truncatingIfNeeded: r.pick([0, 1, 0xffff_ffff, 16 << 20, 17 << 20, UInt64(r.below(1 << 20))]))
            let b = m.members[k].count - 4
            for j in 0..<4 { m.members[k][b + j] = UInt8(truncatingIfNeeded: v >> (8 * j)) }
        case 18:  // a file's content replaced (new size, right digest)
            let regs = indices(a, "reg")
            guard let i = regs.randomElement(using: &r), case .member(let k)? = a[i]["offset"], k < m.members.count
            else { break }
            let len = r.pick([0, 1, 4095, 4096, 4097, 65536, 131_072, 131_073, r.below(300_000)])
            m.members[k] = GzipMemberCompressor(level: 1).compress(Seeds.pseudoRandom(len, seed: r.next()))
            a[i]["size"] = .int(Int64(len))
            a[i]["chunkSize"] = nil
            a[i]["innerOffset"] = nil
            m.entries = a
            m.repairDigests()
            return which
        case 19:  // an entry's offset to another member (or past the last)
            guard n > 0 else { break }
            a[r.below(n)]["offset"] = .member(r.below(m.members.count + 2))
        case 20:  // a new entry
            var e = J.obj([])
            e["name"] = .str(name(&r, a))
            e["type"] = .string(r.pick(types))
            if r.chance(2) { e["size"] = .num(Array(r.pick(extremes).utf8)) }
            if r.chance(2) { e["offset"] = .member(r.below(m.members.count + 1)) }
            if r.chance(3) { e["linkName"] = .str(linkName(&r, a.isEmpty ? [e] : a, self: 0)) }
            a.insert(e, at: r.below(n + 1))
        case 21:  // innerOffset past the member, or into the middle of it
            guard n > 0 else { break }
            let i = r.below(n)
            a[i]["innerOffset"] = .int(r.pick([1, 511, 512, 4096, 1 << 20, 64 << 20, Int64(r.below(100_000))]))
        case 22:  // duplicate a member boundary: two entries in one member, or a member split in two
            guard !m.members.isEmpty else { break }
            let k = r.below(m.members.count)
            let c = m.members[k].count
            guard c > 2 else { break }
            let cut = 1 + r.below(c - 1)
            let tail = Array(m.members[k][cut...])
            m.members[k] = Array(m.members[k][..<cut])
            m.members.insert(tail, at: k + 1)
            // Offsets after k shift by one member.
            m.entries = a
            m.toc = renumber(m.toc, from: k + 1)
            return which
        default:  // the legacy footer
            m.legacyFooter.toggle()
        }
        m.entries = a
        return which
    }

    /// Members numbered `from` and later move up by one.
    static func renumber(_ v: J, from: Int) -> J {
        switch v {
        case .member(let k): return .member(k >= from ? k + 1 : k)
        case .arr(let a): return .arr(a.map { renumber($0, from: from) })
        case .obj(let kv): return .obj(kv.map { ($0.key, renumber($0.value, from: from)) })
        default: return v
        }
    }
}

extension RNG: RandomNumberGenerator {}

/// A gzip member of `n` zero bytes, written by hand (a fixed-Huffman block of length-258 distance-1 matches,
/// about 160:1): compressing many MiB through GzipMemberCompressor is too slow in a debug ASan build.
enum Bomb {
    static func zeros(_ n: Int) -> [UInt8] {
        var out: [UInt8] = [0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff]
        var acc: UInt64 = 0, bits = 0
        func put(_ v: UInt32, _ count: Int) {
            acc |= UInt64(v) << UInt64(bits)
            bits += count
            while bits >= 8 {
                out.append(UInt8(truncatingIfNeeded: acc))
                acc >>= 8
                bits -= 8
            }
        }
        func code(_ c: UInt32, _ len: Int) {  // Huffman codes go most significant bit first
            var r: UInt32 = 0
            for i in 0..<len where c & (1 << UInt32(i)) != 0 { r |= 1 << UInt32(len - 1 - i) }
            put(r, len)
        }
        put(1, 1)  // BFINAL
        put(1, 2)  // fixed Huffman
        var left = n
        if left > 0 {
            code(0x30, 8)  // literal 0
            left -= 1
        }
        while left >= 258 {
            code(0b1100_0101, 8)  // length 258 (symbol 285)
            code(0, 5)  // distance 1
            left -= 258
        }
        while left > 0 {
            code(0x30, 8)
            left -= 1
        }
        code(0, 7)  // end of block
        if bits > 0 { put(0, 8 - bits) }
        let crc = crcOfZeros(n)
        for v in [crc, UInt32(truncatingIfNeeded: n)] {
            for j in 0..<4 { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(j)))) }
        }
        return out
    }

    // zlib's multmodp / x2nmodp: the CRC-32 of n zero bytes is ~(x^(8n) * ~0 mod P).
    static let poly: UInt32 = 0xedb8_8320
    static func multmodp(_ a: UInt32, _ b0: UInt32) -> UInt32 {
        var m: UInt32 = 1 << 31, p: UInt32 = 0, b = b0
        while true {
            if a & m != 0 {
                p ^= b
                if a & (m - 1) == 0 { break }
            }
            m >>= 1
            b = b & 1 != 0 ? (b >> 1) ^ poly : b >> 1
        }
        return p
    }
    static func crcOfZeros(_ n: Int) -> UInt32 {
        var x2n: [UInt32] = []
        var p: UInt32 = 1 << 30
        x2n.append(p)
        for _ in 1..<32 {
            p = multmodp(p, p)
            x2n.append(p)
        }
        var q: UInt32 = 1 << 31
        var k = 3, m = n
        while m != 0 {
            if m & 1 != 0 { q = multmodp(x2n[k & 31], q) }
            m >>= 1
            k += 1
        }
        return ~multmodp(q, 0xffff_ffff)
    }
}
