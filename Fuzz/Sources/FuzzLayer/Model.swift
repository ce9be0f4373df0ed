// SPDX-License-Identifier: Apache-2.0
// An eStargz blob taken apart into what the mutator edits: the payload's gzip members (opaque compressed bytes)
// and the TOC as a JSON tree whose payload offsets name members, so members can be resized, dropped or
// swapped and entries moved, and the blob is laid out again with offsets that still point at member starts.
import Compression
import EStargz
import OCI

struct LayerModel {
    /// The payload's gzip members, in blob order (member 0 starts at byte 0).
    var members: [[UInt8]]
    /// The TOC JSON; `J.member(k)` offsets point at member k.
    var toc: J
    /// Footer flavour: 0 eStargz (51 bytes), 1 legacy stargz (47 bytes).
    var legacyFooter = false

    /// The `entries` array (empty when the TOC has none or it is not an array).
    var entries: [J] {
        get {
            if case .arr(let a)? = toc["entries"] { return a }
            return []
        }
        set { toc["entries"] = .arr(newValue) }
    }

    /// Takes a blob apart; nil when it is not an eStargz blob whose TOC member and JSON decode.
    init?(blob: [UInt8]) {
        guard blob.count >= Footer.estargzSize,
            let footer = try? Footer.parse(tail: Array(blob.suffix(Footer.estargzSize)), blobSize: Int64(blob.count)),
            footer.format != .zstdChunked, footer.tocOffset >= 0, footer.tocOffset < Int64(blob.count)
        else { return nil }
        let tocOffset = Int(footer.tocOffset)
        let region = Array(blob[tocOffset..<(blob.count - footer.size)])
        var tar: [UInt8] = []
        do {
            try GzipDecodingStream(MemoryStream(region)).readToEnd(into: &tar, limit: 64 << 20)
        } catch {
            return nil
        }
        let tr = TarReader(MemoryStream(tar + [UInt8](repeating: 0, count: 1024)))
        guard let h = try? tr.next(), h.size < 64 << 20, let json = try? tr.readPayload(limit: 64 << 20),
            var toc = JSONParser.parse(json)
        else { return nil }
        // Member boundaries: 0 and every payload offset the entries name.
        var starts: Set<Int> = [0]
        if case .arr(let a)? = toc["entries"] {
            for e in a {
                if let o = e["offset"]?.int64, o > 0, o < Int64(tocOffset) { starts.insert(Int(o)) }
            }
        }
        let sorted = starts.sorted()
        var members: [[UInt8]] = []
        var index: [Int: Int] = [:]
        for (k, s) in sorted.enumerated() {
            let end = k + 1 < sorted.count ? sorted[k + 1] : tocOffset
            index[s] = k
            members.append(Array(blob[s..<end]))
        }
        if case .arr(var a)? = toc["entries"] {
            for i in a.indices {
                if let o = a[i]["offset"]?.int64, let k = index[Int(o)], o > 0 || a[i]["type"]?.bytes != Array("dir".utf8) {
                    a[i]["offset"] = .member(k)
                }
            }
            toc["entries"] = .arr(a)
        }
        self.members = members
        self.toc = toc
        legacyFooter = footer.format == .legacyStargz
    }

    init(members: [[UInt8]], toc: J) {
        self.members = members
        self.toc = toc
    }

    /// The blob offset member k starts at in the laid-out blob (one past the payload for a missing member).
    func starts() -> [Int64] {
        var s: [Int64] = []
        var o: Int64 = 0
        for m in members {
            s.append(o)
            o += Int64(m.count)
        }
        s.append(o)
        return s
    }

    /// The TOC JSON as the blob will hold it.
    func tocJSON() -> [UInt8] {
        let s = starts()
        var w = JSONWriter(offsets: { k in k >= 0 && k < s.count ? s[k] : s.last! })
        w.write(toc)
        return w.out
    }

    /// Lays the blob out: members, the TOC member (a tar holding `stargz.index.json`), the footer.
    func encode(level: Int = 1) -> [UInt8] {
        var blob: [UInt8] = []
        for m in members { blob += m }
        let json = tocJSON()
        var h = TarHeader(typeflag: UInt8(ascii: "0"), name: ReservedName.toc)
        h.mode = 0o644
        let tar = TarWriter.entry(h, json) + TarWriter.end
        let tocOffset = Int64(blob.count)
        blob += GzipMemberCompressor(level: level).compress(tar)
        if legacyFooter {
            // The legacy footer: the eStargz one without the 4-byte subfield header.
            var f: [UInt8] = [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 22, 0]
            f += Array(String(tocOffset, radix: 16).leftPadded(16).utf8) + Array("STARGZ".utf8)
            f += [0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]
            blob += f
        } else {
            blob += Footer.estargz(tocOffset: tocOffset)
        }
        return blob
    }

    // MARK: Content

    /// The uncompressed bytes `[skip, skip+count)` of the stream starting at member k (bounded), or nil.
    func inflate(member k: Int, skip: Int64, count: Int64) -> [UInt8]? {
        guard k >= 0, k < members.count, skip >= 0, count >= 0, count <= 8 << 20, skip <= 8 << 20 else { return nil }
        var out = [UInt8](repeating: 0, count: Int(count))
        if count == 0 { return out }
        do {
            // The reader inflates [offset, next entry's offset): the member itself.
            try members[k].withUnsafeBytes { i in
                try out.withUnsafeMutableBytes { o in try GzipDecompressor.inflate(i, skip: Int(skip), into: o) }
            }
        } catch {
            return nil
        }
        return out
    }

    /// Makes every chunk's `chunkDigest` (and a single-chunk file's `digest`) match the bytes its member holds,
    /// so that reads get past verification and the bytes are served.
    mutating func repairDigests() {
        var a = entries
        for i in a.indices {
            guard let t = a[i]["type"]?.bytes, t == Array("reg".utf8) || t == Array("chunk".utf8),
                case .member(let k)? = a[i]["offset"]
            else { continue }
            let inner = a[i]["innerOffset"]?.int64 ?? 0
            // The file's size, from this entry or the reg entry before a chunk.
            var size = a[i]["size"]?.int64 ?? 0
            var j = i
            while t == Array("chunk".utf8), j > 0, a[j]["type"]?.bytes == Array("chunk".utf8) { j -= 1 }
            if j != i { size = a[j]["size"]?.int64 ?? 0 }
            let off = a[i]["chunkOffset"]?.int64 ?? 0
            var len = a[i]["chunkSize"]?.int64 ?? 0
            if len == 0 {
                let next = i + 1 < a.count && a[i + 1]["type"]?.bytes == Array("chunk".utf8) ? a[i + 1]["chunkOffset"]?.int64 : nil
                len = (next ?? size) &- off
            }
            guard let bytes = inflate(member: k, skip: inner, count: len) else { continue }
            let d = J.string(Digest.sha256(of: bytes).description)
            a[i]["chunkDigest"] = d
            let single = t == Array("reg".utf8) && !(i + 1 < a.count && a[i + 1]["type"]?.bytes == Array("chunk".utf8))
            if single { a[i]["digest"] = d }
        }
        entries = a
    }
}

extension String {
    func leftPadded(_ n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}
