// SPDX-License-Identifier: Apache-2.0
import EStargz

/// The chunks a read touches, and the part of the file it wants (clipped to the file's end).
struct ReadPlan: Sendable {
    /// The chunks, in file order; their union covers `start..<end`.
    var chunks: ArraySlice<Chunk>
    var start: Int64
    var end: Int64
    var isEmpty: Bool { start >= end }
}

/// What the caches gave for a plan: the bytes when every chunk was at hand, or what is at hand and what is not.
enum Assembly {
    case complete([UInt8])
    /// The pieces found (one per chunk of the plan, nil where missing) and the chunks missing.
    case partial(pieces: [Piece?], missing: [Chunk])

    /// A chunk's part of a read: the bytes and the range of them the read wants.
    struct Piece: Sendable {
        var bytes: [UInt8]
        var range: Range<Int>
    }
}

/// Plans reads over a layer's chunks and assembles them cache first: memory, then the disk cache (a whole
/// chunk into memory when memory has room for it, else only the range asked for), then whatever a fetch
/// brought. The same planning and assembly serve a read that is answered at once and one that must fetch.
struct ChunkReader: Sendable {
    let reader: EStargzReader
    let tree: LayerTree
    let memory: MemoryChunkCache
    /// This layer's number in the (possibly shared) memory cache.
    let owner: UInt64
    let disk: DiskChunkCache?
    let name: String
    let metrics: LayerMetrics

    static func key(_ c: Chunk) -> ChunkKey { ChunkKey(compressedOffset: c.compressedOffset, innerOffset: c.innerOffset) }

    /// The chunks of `node` that `[offset, offset+size)` touches, and the clipped range.
    func plan(_ node: UInt64, offset: UInt64, size: Int) throws(LazyLayerError) -> ReadPlan {
        let (file, fileSize) = try tree.regularFile(node)
        let start = Int64(clamping: offset)
        let (want, overflow) = start.addingReportingOverflow(Int64(size))
        let end = overflow ? fileSize : min(fileSize, want)
        guard start < end else { return ReadPlan(chunks: [], start: start, end: start) }
        let chunks = reader.chunks(of: file, overlapping: start..<end)
        guard let first = chunks.first, first.fileOffset <= start, let last = chunks.last, last.fileOffset + last.size >= end else {
            throw LazyLayerError(.inconsistent, "\(name): the chunks of node \(node) do not cover [\(start), \(end))")
        }
        return ReadPlan(chunks: chunks, start: start, end: end)
    }

    /// The range of chunk `c`'s bytes that the plan wants.
    @inline(__always) static func wanted(_ c: Chunk, _ p: ReadPlan) -> Range<Int> {
        Int(max(p.start, c.fileOffset) - c.fileOffset)..<Int(min(p.end, c.fileOffset + c.size) - c.fileOffset)
    }

    /// A chunk's wanted bytes from memory or disk, or nil (each lookup counted by where it was answered).
    func cached(_ c: Chunk, _ want: Range<Int>) -> Assembly.Piece? {
        let k = Self.key(c)
        if let v = memory.get(owner, k) {
            metrics.memoryHits.increment()
            return Assembly.Piece(bytes: v, range: want)
        }
        guard let disk, let d = c.digest else {
            metrics.misses.increment()
            return nil
        }
        if memory.capacity >= 8 * Int(c.size), let v = disk.get(d, size: Int(c.size)) {
            // Memory to spare: the whole chunk comes in, for the reads that follow.
            memory.put(owner, k, v)
            metrics.diskHits.increment()
            return Assembly.Piece(bytes: v, range: want)
        }
        // A trusted chunk on disk is read in the range asked for only, not loaded whole.
        if let v = disk.read(d, size: Int(c.size), from: want.lowerBound, to: want.upperBound, whole: { memory.put(owner, k, $0) }) {
            metrics.diskHits.increment()
            return Assembly.Piece(bytes: v, range: 0..<v.count)
        }
        metrics.misses.increment()
        return nil
    }

    /// Assembles a plan from the caches.
    func assemble(_ p: ReadPlan) -> Assembly {
        if p.isEmpty { return .complete([]) }
        // The common case, one chunk: a single copy of the wanted bytes (none for a range read from disk).
        if p.chunks.count == 1, let c = p.chunks.first {
            guard let piece = cached(c, Self.wanted(c, p)) else { return .partial(pieces: [nil], missing: [c]) }
            return .complete(piece.range == piece.bytes.indices ? piece.bytes : Array(piece.bytes[piece.range]))
        }
        var pieces: [Assembly.Piece?] = []
        pieces.reserveCapacity(p.chunks.count)
        var missing: [Chunk] = []
        for c in p.chunks {
            let piece = cached(c, Self.wanted(c, p))
            if piece == nil { missing.append(c) }
            pieces.append(piece)
        }
        return missing.isEmpty ? .complete(Self.join(pieces, p)) : .partial(pieces: pieces, missing: missing)
    }

    /// Completes a partial assembly with fetched chunks (whole, decompressed); nil if one is still missing.
    func complete(_ p: ReadPlan, pieces: [Assembly.Piece?], fetched: [ChunkKey: [UInt8]]) -> [UInt8]? {
        var all = pieces
        for (i, c) in zip(all.indices, p.chunks) where all[i] == nil {
            guard let v = fetched[Self.key(c)] else { return nil }
            all[i] = Assembly.Piece(bytes: v, range: Self.wanted(c, p))
        }
        return Self.join(all, p)
    }

    static func join(_ pieces: [Assembly.Piece?], _ p: ReadPlan) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(Int(p.end - p.start))
        for case let piece? in pieces { out.append(contentsOf: piece.bytes[piece.range]) }
        return out
    }

    /// Whether a chunk is in memory or on disk (not verified).
    func isCached(_ c: Chunk) -> Bool {
        if memory.contains(owner, Self.key(c)) { return true }
        if let disk, let d = c.digest, disk.contains(d) { return true }
        return false
    }
}
