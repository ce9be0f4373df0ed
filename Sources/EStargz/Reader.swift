// SPDX-License-Identifier: Apache-2.0
internal import Compression
public import OCI

/// Options for opening a layer.
public struct ReaderOptions: Sendable {
    /// When set, the TOC digest must equal it (the `containerd.io/snapshot/stargz/toc.digest` annotation).
    public var expectedTOCDigest: Digest?
    /// Verify every chunk against its digest before returning bytes (default: on).
    public var verifyChunks: Bool
    /// Limits against hostile TOCs.
    public var limits: TOCLimits

    /// Creates options.
    public init(expectedTOCDigest: Digest? = nil, verifyChunks: Bool = true, limits: TOCLimits = TOCLimits()) {
        self.expectedTOCDigest = expectedTOCDigest
        self.verifyChunks = verifyChunks
        self.limits = limits
    }
}

/// One chunk of a regular file: where its compressed bytes are, which part of the file it holds, and the
/// digest its bytes must have.
public struct Chunk: Sendable, Equatable {
    /// The TOC entry of the chunk (the file's `reg` entry for the first chunk).
    public var entry: EntryID
    /// Offset of the chunk in the file.
    public var fileOffset: Int64
    /// Length of the chunk's uncompressed bytes.
    public var size: Int64
    /// Blob offset of the compressed member holding the chunk.
    public var compressedOffset: Int64
    /// Blob offset where the compressed bytes needed for this chunk end at the latest.
    public var compressedEnd: Int64
    /// Uncompressed bytes to skip in the member before the chunk starts.
    public var innerOffset: Int64
    /// The digest the chunk's bytes must have, if the TOC records one.
    public var digest: Digest?

    /// Length of the compressed range.
    public var compressedSize: Int64 { compressedEnd - compressedOffset }
}

/// Reads an eStargz, legacy stargz or zstd:chunked blob: footer, TOC, and any byte range of any file.
///
/// Thread-safe: the TOC is immutable and each read uses its own decompressor.
public final class EStargzReader: Sendable {
    /// Where the bytes come from.
    public let blob: any RandomAccessBlob
    /// The parsed footer.
    public let footer: Footer
    /// The parsed TOC.
    public let toc: TOC
    /// The TOC JSON bytes exactly as in the blob, read and decompressed again on each use (a reader keeps
    /// only the parsed TOC: the JSON of a big layer is megabytes). Empty if the blob can no longer be read.
    public var tocJSON: [UInt8] { (try? Self.loadTOCJSON(blob, footer, limits: options.limits)) ?? [] }
    /// Where the layer payload ends (the first byte of the TOC structure).
    public let payloadEnd: Int64
    /// The options in force.
    public let options: ReaderOptions

    /// The layer format.
    public var format: LayerFormat { footer.format }
    /// The TOC digest (sha256 of the TOC JSON).
    public var tocDigest: Digest { toc.digest }

    /// Opens a blob: reads the footer and the TOC, verifies the TOC digest if one is expected, and indexes.
    ///
    /// - Throws: `EStargzError` (`.invalidFooter`, `.invalidTOC`, `.tocTooLarge`, `.tocDigestMismatch`, …).
    public init(blob: any RandomAccessBlob, options: ReaderOptions = ReaderOptions()) throws {
        self.blob = blob
        self.options = options
        let size = blob.size
        let tailLen = Int(min(size, Int64(Footer.estargzSize)))
        let tail = try blob.read(at: size - Int64(tailLen), length: tailLen)
        let footer = try Footer.parse(tail: tail, blobSize: size)
        self.footer = footer
        payloadEnd = footer.format == .zstdChunked ? footer.tocOffset - 8 : footer.tocOffset
        let json = try Self.loadTOCJSON(blob, footer, limits: options.limits)
        toc = try TOC.parse(
            json: json, payloadEnd: payloadEnd, blobSize: size, limits: options.limits,
            maxRatio: footer.format == .zstdChunked ? CompressionRatio.zstd : CompressionRatio.gzip)
        if let want = options.expectedTOCDigest, want != toc.digest {
            throw EStargzError(.tocDigestMismatch, "invalid TOC JSON \"\(toc.digest)\"; want \"\(want)\"")
        }
    }

    /// Reads the TOC region the footer points at and decompresses it (bounded by the limits).
    static func loadTOCJSON(_ blob: any RandomAccessBlob, _ footer: Footer, limits: TOCLimits) throws -> [UInt8] {
        // The compressed TOC is read whole: bound it by the largest TOC (plus tar headers and what deflate adds
        // to incompressible data) before it sizes the read.
        let mostCompressed = limits.maxTOCSize + limits.maxTOCSize / 128 + (64 << 10)
        guard footer.tocCompressedSize <= mostCompressed else {
            throw EStargzError(
                .tocTooLarge,
                "the TOC region at offset \(footer.tocOffset) is \(footer.tocCompressedSize) bytes, over the limit of \(mostCompressed)")
        }
        let json: [UInt8]
        switch footer.format {
        case .estargz, .legacyStargz:
            let region = try blob.read(at: footer.tocOffset, length: Int(footer.tocCompressedSize))
            json = try Self.extractGzipTOC(region, at: footer.tocOffset, limits: limits)
        case .zstdChunked:
            guard footer.tocUncompressedSize <= limits.maxTOCSize else {
                throw EStargzError(
                    .tocTooLarge,
                    "zstd:chunked TOC of \(footer.tocUncompressedSize) bytes exceeds the limit of \(limits.maxTOCSize)")
            }
            let region = try blob.read(at: footer.tocOffset, length: Int(footer.tocCompressedSize))
            do {
                json = try region.withUnsafeBytes {
                    try ZstdDecompressor().decompressFrame($0, limit: Int(footer.tocUncompressedSize))
                }
            } catch {
                throw EStargzError(
                    .invalidTOC, "zstd:chunked TOC at offset \(footer.tocOffset) does not decompress", cause: error)
            }
            guard json.count == footer.tocUncompressedSize else {
                throw EStargzError(
                    .invalidTOC,
                    "zstd:chunked TOC is \(json.count) bytes, the footer says \(footer.tocUncompressedSize)")
            }
        }
        return json
    }

    /// Decompresses the TOC member: one gzip member holding a tar whose first entry is `stargz.index.json`.
    static func extractGzipTOC(_ region: [UInt8], at offset: Int64, limits: TOCLimits) throws -> [UInt8] {
        var tarBytes: [UInt8] = []
        let max = Int(limits.maxTOCSize) + 8192
        do {
            try region.withUnsafeBytes { r in
                _ = try GzipDecompressor.inflateAll(r, multiMember: false, limit: max) { piece in
                    let before = tarBytes.count
                    tarBytes.append(contentsOf: piece)
                    if before < 512 && tarBytes.count >= 512 && tarBytes[156] != UInt8(ascii: "x")
                        && tarBytes[156] != UInt8(ascii: "L")
                    {
                        // Fail fast on a hostile size before inflating it all.
                        let hdr = try TarReader(MemoryStream(Array(tarBytes[0..<512]) + [UInt8](repeating: 0, count: 1024))).next()
                        if let h = hdr, h.size > limits.maxTOCSize {
                            throw EStargzError(
                                .tocTooLarge,
                                "TOC entry at offset \(offset) claims \(h.size) bytes, over the limit of \(limits.maxTOCSize)")
                        }
                    }
                }
            }
        } catch let e as EStargzError {
            throw e
        } catch let e as CompressionError where e.code == .outputLimitExceeded {
            throw EStargzError(.tocTooLarge, "TOC member at offset \(offset) inflates past \(max) bytes", cause: e)
        } catch {
            throw EStargzError(.invalidTOC, "TOC member at offset \(offset) does not decompress", cause: error)
        }
        let tr = TarReader(MemoryStream(tarBytes))
        let h: TarHeader?
        do {
            h = try tr.next()
        } catch {
            throw EStargzError(.invalidTOC, "TOC member at offset \(offset) is not a tar", cause: error)
        }
        guard let h else { throw EStargzError(.invalidTOC, "TOC member at offset \(offset) holds no tar entry") }
        guard h.name == ReservedName.toc else {
            throw EStargzError(
                .invalidTOC, "TOC tar entry is named \"\(h.name)\", want \"\(ReservedName.toc)\"")
        }
        guard h.size <= limits.maxTOCSize else {
            throw EStargzError(.tocTooLarge, "TOC of \(h.size) bytes exceeds the limit of \(limits.maxTOCSize)")
        }
        do {
            return try tr.readPayload(limit: limits.maxTOCSize)
        } catch {
            throw EStargzError(.invalidTOC, "TOC at offset \(offset) is truncated", cause: error)
        }
    }

    // MARK: Files and chunks

    /// Looks up a path; hardlinks resolve to their target.
    public func lookup(_ path: String) -> EntryID? { toc.lookup(path) }

    /// The chunks of regular file `node`, in file order (empty for empty files).
    public func chunks(of node: EntryID) -> [Chunk] {
        let recs = toc.records
        let r = recs[node.index]
        guard r.type == .reg, r.size > 0 else { return [] }
        var out: [Chunk] = []
        var k = node.index
        repeat {
            out.append(chunk(at: k))
            k += 1
        } while k < toc.entryCount && recs[k].type == .chunk
        return out
    }

    /// The files of `entry`'s directory that are held in one chunk and whose compressed data lies inside
    /// `window`, nearest first: the neighbours worth fetching in the same request as `entry`'s chunk, since a
    /// program that opens one small file of a directory (a module, a locale file) often opens its siblings
    /// next, and they lie next to each other in the blob.
    public func smallSiblings(of entry: EntryID, within window: Range<Int64>) -> [Chunk] {
        let recs = toc.records
        let parent = toc.parent(of: entry)
        var out: [Chunk] = []
        func single(_ k: Int) -> Bool {
            recs[k].type == .reg && recs[k].size > 0 && (k + 1 == toc.entryCount || recs[k + 1].type != .chunk)
                && toc.parent(of: EntryID(k)) == parent
        }
        var k = entry.index + 1
        while k < toc.entryCount {
            if recs[k].type == .reg || recs[k].type == .chunk {
                if recs[k].offset >= window.upperBound { break }
                if single(k) {
                    let c = chunk(at: k)
                    if c.compressedEnd > window.upperBound { break }
                    out.append(c)
                }
            }
            k += 1
        }
        k = entry.index - 1
        while k >= 0 {
            if recs[k].type == .reg || recs[k].type == .chunk {
                if recs[k].offset < window.lowerBound { break }
                if single(k) { out.append(chunk(at: k)) }
            }
            k -= 1
        }
        return out
    }

    private func chunk(at k: Int) -> Chunk {
        let c = toc.records[k]
        var end = c.nextOffset
        if c.innerOffset == 0 { end = min(end, payloadEnd) }
        return Chunk(
            entry: EntryID(k), fileOffset: c.chunkOffset, size: c.chunkSize, compressedOffset: c.offset,
            compressedEnd: end, innerOffset: c.innerOffset, digest: chunkDigest(EntryID(k)))
    }

    /// The digest a chunk must have: its `chunkDigest`, or the file's `digest` for a single-chunk file.
    func chunkDigest(_ id: EntryID) -> Digest? {
        let r = toc.records[id.index]
        if r.flags.contains(.hasChunkDigest) { return Digest(sha256: r.chunkDigest.bytes) }
        if let s = toc.digestString(id, chunk: true), let d = Digest(s) { return d }
        if r.type == .reg && r.chunkSize == r.size {
            if r.flags.contains(.hasDigest) { return Digest(sha256: r.digest.bytes) }
            if let s = toc.digestString(id, chunk: false), let d = Digest(s) { return d }
        }
        return nil
    }

    /// The chunk of `node` that holds file offset `offset`.
    public func chunk(of node: EntryID, containing offset: Int64) -> Chunk? {
        let cs = chunks(of: node)
        return Self.chunkIndex(cs, containing: offset).map { cs[$0] }
    }

    /// The chunks of regular file `node` that `range` (file offsets) touches, in file order; empty when the
    /// range is empty or past the end, and short of the range only when the TOC's chunks do not cover it.
    public func chunks(of node: EntryID, overlapping range: Range<Int64>) -> ArraySlice<Chunk> {
        let cs = chunks(of: node)
        guard !range.isEmpty else { return [] }
        let first = Self.firstChunk(cs, endingAfter: range.lowerBound)
        var last = first
        while last < cs.count, cs[last].fileOffset < range.upperBound { last += 1 }
        return cs[first..<last]
    }

    /// The index of the first chunk in `cs` (file order) that ends after `offset` (`cs.count`: none).
    static func firstChunk(_ cs: [Chunk], endingAfter offset: Int64) -> Int {
        var lo = 0
        var hi = cs.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if cs[mid].fileOffset + cs[mid].size <= offset { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// The index of the chunk in `cs` (file order) that holds file offset `offset`.
    static func chunkIndex(_ cs: [Chunk], containing offset: Int64) -> Int? {
        let lo = firstChunk(cs, endingAfter: offset)
        guard lo < cs.count, cs[lo].fileOffset <= offset, offset < cs[lo].fileOffset + cs[lo].size else { return nil }
        return lo
    }

    /// Fetches and decompresses a chunk, verifying it (unless verification is off).
    public func chunkData(_ chunk: Chunk) throws -> [UInt8] {
        let compressed = try blob.read(at: chunk.compressedOffset, length: Int(chunk.compressedSize))
        return try decompress(chunk, compressed: compressed)
    }

    /// Decompresses a chunk from its compressed bytes (`[compressedOffset, compressedEnd)` of the blob) and
    /// verifies it against its digest.
    ///
    /// - Throws: `.corruptData` when it does not decompress, `.chunkDigestMismatch` when the bytes are wrong.
    public func decompress(_ chunk: Chunk, compressed: [UInt8]) throws -> [UInt8] {
        let out = try compressed.withUnsafeBytes { try decompressRaw(chunk, $0) }
        if options.verifyChunks {
            try verify(chunk, out)
        }
        return out
    }

    /// Checks a chunk's bytes against its digest.
    public func verify(_ chunk: Chunk, _ bytes: [UInt8]) throws {
        guard let want = chunk.digest else {
            throw EStargzError(
                .chunkDigestMismatch,
                "invalid chunk: no digest is recorded for \"\(toc.path(chunk.entry))\" at file offset \(chunk.fileOffset)")
        }
        let got = bytes.withUnsafeBytes { Digest.sha256(of: $0) }
        guard got == want else {
            throw EStargzError(
                .chunkDigestMismatch,
                "invalid chunk: \"\(toc.path(chunk.entry))\" at file offset \(chunk.fileOffset) (blob offset \(chunk.compressedOffset)) has digest \(got), want \(want)")
        }
    }

    private func decompressRaw(_ chunk: Chunk, _ input: UnsafeRawBufferPointer) throws -> [UInt8] {
        let count = Int(chunk.size)
        let skip = Int(chunk.innerOffset)
        var out = [UInt8](repeating: 0, count: count)
        do {
            switch footer.format {
            case .estargz, .legacyStargz:
                // Fast path: the member ends exactly at compressedEnd, so its ISIZE trailer gives the exact
                // output size and libdeflate inflates it in one call.
                if skip == 0, let isize = GzipDecompressor.trailerSize(input), isize >= count,
                    isize <= count + (16 << 20)
                {
                    if isize == count {
                        let ok: Bool = out.withUnsafeMutableBytes { o in
                            (try? GzipDecompressor().decompressMember(input, into: o)) == input.count
                        }
                        if ok { return out }
                    } else {
                        var full = [UInt8](repeating: 0, count: isize)
                        let ok: Bool = full.withUnsafeMutableBytes { o in
                            (try? GzipDecompressor().decompressMember(input, into: o)) == input.count
                        }
                        if ok {
                            full.removeLast(isize - count)
                            return full
                        }
                    }
                }
                try out.withUnsafeMutableBytes { o in try GzipDecompressor.inflate(input, skip: skip, into: o) }
            case .zstdChunked:
                try out.withUnsafeMutableBytes { o in try ZstdDecompressor().decompress(input, skip: skip, into: o) }
            }
        } catch {
            throw EStargzError(
                .corruptData,
                "chunk of \"\(toc.path(chunk.entry))\" at file offset \(chunk.fileOffset) (blob offset \(chunk.compressedOffset)) does not decompress",
                cause: error)
        }
        return out
    }

    /// Reads up to `length` bytes of regular file `node` starting at `offset` (fewer at the end of the file).
    public func read(_ node: EntryID, at offset: Int64, length: Int) throws -> [UInt8] {
        let r = toc.records[node.index]
        guard r.type == .reg else {
            throw EStargzError(.invalidArgument, "\"\(toc.path(node))\" is a \(r.type), not a regular file")
        }
        guard offset >= 0, length >= 0 else { throw EStargzError(.invalidArgument, "negative offset or length") }
        let (want, overflow) = offset.addingReportingOverflow(Int64(length))
        let end = overflow ? r.size : min(r.size, want)
        guard offset < end else { return [] }
        var out: [UInt8] = []
        out.reserveCapacity(Int(min(end - offset, 16 << 20)))  // the TOC's size is a claim until the chunks are read
        // The chunk map is built once; the chunks tile the file (checked at parse), so the ones after the
        // first follow in order.
        let cs = chunks(of: node)
        var pos = offset
        var i = Self.chunkIndex(cs, containing: pos)
        while pos < end {
            guard let k = i, k < cs.count, cs[k].fileOffset <= pos, pos < cs[k].fileOffset + cs[k].size else {
                throw EStargzError(.invalidEntry, "\"\(toc.path(node))\": no chunk holds file offset \(pos)")
            }
            let c = cs[k]
            let data = try chunkData(c)
            let from = Int(pos - c.fileOffset)
            let to = Int(min(end, c.fileOffset + c.size) - c.fileOffset)
            out.append(contentsOf: data[from..<to])
            pos = c.fileOffset + Int64(to)
            i = k + 1
        }
        return out
    }

    /// Reads a whole regular file by path.
    public func readFile(_ path: String) throws -> [UInt8] {
        guard let id = lookup(path) else { throw EStargzError(.notFound, "no entry \"\(path)\" in the layer") }
        return try read(id, at: 0, length: Int(toc.records[id.index].size))
    }

    // MARK: Landmarks

    /// The prefetch decision the landmarks encode.
    public enum Prefetch: Sendable, Equatable {
        /// `.no.prefetch.landmark`: do not prefetch.
        case none
        /// `.prefetch.landmark`: prefetch blob bytes `[0, end)`.
        case range(end: Int64)
        /// No landmark: the store's configured prefetch size applies.
        case unspecified
    }

    /// What the layer's landmarks say about prefetching.
    public var prefetch: Prefetch {
        if toc.find(Array(ReservedName.noPrefetchLandmark.utf8)) != nil { return .none }
        if let l = toc.find(Array(ReservedName.prefetchLandmark.utf8)) {
            return .range(end: toc.records[Int(l)].offset)
        }
        return .unspecified
    }
}
