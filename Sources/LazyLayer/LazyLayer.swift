// SPDX-License-Identifier: Apache-2.0
public import EStargz
public import FUSE
import Foundation
public import Logging
public import OCI
import Synchronization
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// How a lazy layer caches and fetches.
public struct LazyLayerOptions: Sendable {
    /// The bound on decompressed chunks held in memory.
    public var memoryCacheBytes: Int
    /// Where verified chunks are kept on disk (nil: memory only, and no background fetch).
    public var diskCache: DiskChunkCache?
    /// Fetch what lies before the prefetch landmark at mount.
    public var prefetch: Bool
    /// Bytes to prefetch when the layer has no landmark (upstream `prefetch_size`; 0: none).
    public var prefetchSizeWithoutLandmark: Int64
    /// After the prefetch, fetch the rest of the layer at low priority (needs a disk cache).
    public var backgroundFetch: Bool
    /// The TOC digest the layer must have (the `toc.digest` annotation), if known.
    public var expectedTOCDigest: Digest?
    /// Gaps up to this size between wanted chunks are fetched too, to make one request of several.
    public var mergeGap: Int64
    /// The largest request the background fetch makes.
    public var backgroundRequestSize: Int64
    /// A memory cache shared with other layers (nil: the layer's own, of `memoryCacheBytes`).
    public var memoryCache: MemoryChunkCache?
    /// A scheduler shared with other layers (nil: the layer's own, with no silence period and one slot).
    public var scheduler: FetchScheduler?
    /// An on-demand fetch also takes the chunks that follow it in the blob, up to this many compressed bytes
    /// past its end (0: none). The small files of a directory lie together, and a program that opens one
    /// usually opens its neighbours next; each costs a round trip otherwise. Neighbours that fail
    /// verification are dropped, never an error for the read that brought them.
    public var readAround: Int64
    /// Bounds on the TOC (the layer's author writes it): its size, entries, chunk size and the layer's size.
    public var limits: TOCLimits
    /// What chunk decompression may hold at once, shared with other layers (nil: the layer's own, of
    /// ``defaultDecompressionBudget`` bytes).
    public var decompressionBudget: MemoryBudget?

    /// The decompression budget of a layer or store that sets none: four of the largest chunks.
    public static let defaultDecompressionBudget = 256 << 20

    /// Creates options.
    public init(
        memoryCacheBytes: Int = 64 << 20, diskCache: DiskChunkCache? = nil, prefetch: Bool = true,
        prefetchSizeWithoutLandmark: Int64 = 0, backgroundFetch: Bool = true, expectedTOCDigest: Digest? = nil,
        mergeGap: Int64 = 64 << 10, backgroundRequestSize: Int64 = 4 << 20,
        memoryCache: MemoryChunkCache? = nil, scheduler: FetchScheduler? = nil, readAround: Int64 = 0,
        limits: TOCLimits = TOCLimits(), decompressionBudget: MemoryBudget? = nil
    ) {
        self.limits = limits
        self.decompressionBudget = decompressionBudget
        self.memoryCacheBytes = memoryCacheBytes
        self.diskCache = diskCache
        self.prefetch = prefetch
        self.prefetchSizeWithoutLandmark = prefetchSizeWithoutLandmark
        self.backgroundFetch = backgroundFetch
        self.expectedTOCDigest = expectedTOCDigest
        self.mergeGap = mergeGap
        self.backgroundRequestSize = backgroundRequestSize
        self.memoryCache = memoryCache
        self.scheduler = scheduler
        self.readAround = readAround
    }
}

/// What a layer has fetched so far.
public struct LazyLayerStatistics: Sendable {
    /// Range requests made for chunks (the TOC not counted).
    public var requests = 0
    /// Compressed bytes fetched for chunks.
    public var bytesFetched: Int64 = 0
    /// Chunks fetched and verified.
    public var chunksFetched = 0
    /// Chunks that failed verification (each is fetched once more).
    public var verificationFailures = 0
    /// Chunks fetched although they had been fetched before (evicted from a full memory cache, or a bug).
    public var duplicateFetches = 0
    /// Chunks fetched so far, for ``duplicateFetches``.
    var seen: Set<ChunkKey> = []
    /// Whether the prefetch has finished.
    public var prefetchDone = false
    /// Whether every chunk is on disk.
    public var fullyLocal = false
}

/// An eStargz (or zstd:chunked) layer served lazily: the tree from its TOC at once, file contents chunk by
/// chunk from a ``BlobSource``, each chunk verified against its digest before any byte is returned.
///
/// Whiteouts are shown in overlayfs form (`.wh.NAME` as a 0/0 character device `NAME`; `.wh..wh..opq` as
/// `trusted.overlay.opaque=y` on its directory) and the landmark files are hidden, as upstream does.
/// Node ids: 1 is the root; every other node is its TOC id + 2.
public final class LazyLayer: FileSystem {
    /// The reader over the layer's TOC.
    public let reader: EStargzReader
    let source: any BlobSource
    let options: LazyLayerOptions
    let logger: Logger
    let memory: MemoryChunkCache
    let flights = Mutex<[ChunkKey: Flight]>([:])
    let counters = Mutex(LazyLayerStatistics())
    /// This layer's number in the (possibly shared) memory cache.
    let owner: UInt64
    let scheduler: FetchScheduler
    let budget: MemoryBudget
    let background = Mutex<Task<Void, Never>?>(nil)
    /// Nodes that are `.wh.NAME` whiteouts (shown as `NAME`), and directories holding an opaque marker.
    let whiteouts: Set<UInt32>
    let opaqueDirectories: Set<UInt32>
    let hidden: Set<UInt32>
    let totalSize: Int64

    static let opaqueMarker = Array(".wh..wh..opq".utf8)
    static let whiteoutPrefix = Array(".wh.".utf8)

    private init(reader: EStargzReader, source: any BlobSource, options: LazyLayerOptions, logger: Logger) {
        self.reader = reader
        self.source = source
        self.options = options
        self.logger = logger
        memory = options.memoryCache ?? MemoryChunkCache(capacity: options.memoryCacheBytes)
        owner = memory.newOwner()
        scheduler = options.scheduler ?? FetchScheduler(silence: .zero, backgroundSlots: 1)
        budget = options.decompressionBudget ?? MemoryBudget(capacity: LazyLayerOptions.defaultDecompressionBudget)
        var wh = Set<UInt32>(), opq = Set<UInt32>(), hid = Set<UInt32>()
        var total: Int64 = 0
        let toc = reader.toc
        for raw in 0..<UInt32(toc.nodeCount) {
            let id = EntryID(rawValue: raw)
            let a = toc.attributes(id)
            guard a.type == .dir else {
                if a.type == .reg { total += a.size }
                continue
            }
            for (name, node) in toc.childNodes(of: id) {
                if name == Self.opaqueMarker {
                    opq.insert(raw)
                    hid.insert(node.rawValue)
                } else if name.starts(with: Self.whiteoutPrefix) && name.count > 4 {
                    wh.insert(node.rawValue)
                } else if id == toc.root,
                    name == Array(ReservedName.prefetchLandmark.utf8) || name == Array(ReservedName.noPrefetchLandmark.utf8)
                {
                    hid.insert(node.rawValue)
                }
            }
        }
        whiteouts = wh
        opaqueDirectories = opq
        hidden = hid
        totalSize = total
    }

    /// Reads the layer's footer and TOC from `source` (one range request when the TOC is in the last
    /// 64 KiB, two otherwise) and indexes it.
    public static func open(
        _ source: any BlobSource, options: LazyLayerOptions = LazyLayerOptions(),
        logger: Logger = Logger(label: "stargz.lazylayer")
    ) async throws -> LazyLayer {
        let size = source.size
        guard size >= Int64(Footer.zstdChunkedSize) else {
            throw EStargzError(.invalidFooter, "\(source.name): a blob of \(size) bytes has no footer")
        }
        // One read should bring the footer and the whole TOC: a TOC is commonly 0.3–1 % of its blob, so the
        // first read takes 1/128 of the blob (64 KiB at least, 1 MiB at most); a larger TOC costs a second read.
        var start = max(0, size - min(max(64 << 10, size / 128), 1 << 20))
        var tail = try await source.read([start..<size])[0]
        let footerBytes = Array(tail.suffix(min(tail.count, Footer.estargzSize)))
        let footer = try Footer.parse(tail: footerBytes, blobSize: size)
        if footer.tocOffset < start {
            guard size - footer.tocOffset <= options.limits.maxTOCSize + options.limits.maxTOCSize / 128 + (64 << 10) else {
                throw EStargzError(.tocTooLarge, "\(source.name): TOC of \(size - footer.tocOffset) bytes is over the limit")
            }
            let more = try await source.read([footer.tocOffset..<start])[0]
            tail = more + tail
            start = footer.tocOffset
        }
        let blob = TailBlob(size: size, start: start, bytes: tail, name: source.name)
        let reader = try EStargzReader(
            blob: blob, options: ReaderOptions(expectedTOCDigest: options.expectedTOCDigest, limits: options.limits))
        return LazyLayer(reader: reader, source: source, options: options, logger: logger)
    }

    /// Starts the prefetch and then the background fetch, as the options say.
    public func startBackgroundWork() {
        background.withLock { t in
            guard t == nil else { return }
            t = Task { [self] in
                // Opening the layer and its prefetch count as foreground work: the background fetch waits for
                // the silence after them, as it does after reads.
                scheduler.enter()
                await self.prefetch()
                scheduler.leave()
                if options.backgroundFetch, options.diskCache != nil { await self.fetchRest() }
            }
        }
    }

    /// Whether ``startBackgroundWork()`` has been called.
    public var backgroundWorkStarted: Bool { background.withLock { $0 != nil } }

    /// Waits for the prefetch and background work started by ``startBackgroundWork()``.
    public func waitForBackgroundWork() async {
        let t = background.withLock { $0 }
        await t?.value
    }

    /// Stops background work.
    /// Stops background work and frees this layer's chunks in memory.
    public func close() {
        background.withLock { $0?.cancel() }
        memory.drop(owner: owner)
    }

    /// What has been fetched.
    public var fetchStatistics: LazyLayerStatistics { counters.withLock { $0 } }

    // MARK: Node ids

    @inline(__always) func entry(_ node: UInt64) throws(FUSEError) -> EntryID {
        if node == 1 { return reader.toc.root }
        guard node >= 2, node - 2 < UInt64(reader.toc.nodeCount) else { throw FUSEError(ENOENT, "no node \(node)") }
        return EntryID(rawValue: UInt32(node - 2))
    }

    @inline(__always) func node(_ id: EntryID) -> UInt64 { id == reader.toc.root ? 1 : UInt64(id.rawValue) + 2 }

    static func typeBits(_ t: EntryType) -> UInt32 {
        switch t {
        case .dir: 0o040000
        case .reg, .hardlink, .chunk: 0o100000
        case .symlink: 0o120000
        case .char: 0o020000
        case .block: 0o060000
        case .fifo: 0o010000
        }
    }

    func fileAttributes(_ id: EntryID) -> FileAttributes {
        let a = reader.toc.attributes(id)
        if whiteouts.contains(id.rawValue) {
            return FileAttributes(inode: node(id), mode: 0o020000, linkCount: 1, uid: a.uid, gid: a.gid, modTime: a.modTime)
        }
        return FileAttributes(
            inode: node(id), mode: Self.typeBits(a.type) | a.permissions, linkCount: UInt32(max(1, a.linkCount)),
            uid: a.uid, gid: a.gid, size: UInt64(max(0, a.size)), modTime: a.modTime, device: (a.devMajor, a.devMinor))
    }

    // MARK: FileSystem

    public func lookup(parent: UInt64, name: UnsafeRawBufferPointer) throws(FUSEError) -> FileAttributes {
        let dir = try entry(parent)
        if name.starts(with: Self.whiteoutPrefix) { throw .notFound }  // the raw whiteout names are hidden
        if let id = reader.toc.child(of: dir, named: name), !hidden.contains(id.rawValue) {
            return fileAttributes(id)
        }
        let wh = Self.whiteoutPrefix + Array(name)
        if let id = wh.withUnsafeBytes({ reader.toc.child(of: dir, named: $0) }), whiteouts.contains(id.rawValue) {
            return fileAttributes(id)
        }
        throw .notFound
    }

    public func attributes(node: UInt64) throws(FUSEError) -> FileAttributes { fileAttributes(try entry(node)) }

    public func readlink(node: UInt64) throws(FUSEError) -> [UInt8] {
        let id = try entry(node)
        guard reader.toc.attributes(id).type == .symlink else { throw FUSEError(EINVAL) }
        return reader.toc.linkTarget(id)
    }

    public func entries(directory: UInt64) throws(FUSEError) -> [DirectoryEntry] {
        let id = try entry(directory)
        guard reader.toc.attributes(id).type == .dir, !whiteouts.contains(id.rawValue) else { throw FUSEError(ENOTDIR) }
        var out: [DirectoryEntry] = []
        for (name, child) in reader.toc.childNodes(of: id) where !hidden.contains(child.rawValue) {
            if whiteouts.contains(child.rawValue) {
                out.append(DirectoryEntry(name: Array(name.dropFirst(4)), inode: node(child), type: 0o020000))
            } else {
                out.append(DirectoryEntry(name: name, inode: node(child), type: Self.typeBits(reader.toc.attributes(child).type)))
            }
        }
        return out
    }

    static let opaqueXattr = "trusted.overlay.opaque"

    /// Whether a TOC's xattr is shown. overlayfs reads `trusted.overlay.*` of its lower layers as its own
    /// metadata: `redirect`, `metacopy`, `origin` and the like from an image would make a file of this layer
    /// stand for another of the stack (with `metacopy=on`, as RHCOS's storage.conf has it). Only `opaque`, which
    /// a whiteout could express anyway, is kept; the others are the image author's to write, not overlay's.
    static func shown(_ name: String) -> Bool { !name.hasPrefix("trusted.overlay.") || name == opaqueXattr }

    public func xattr(node: UInt64, name: String) throws(FUSEError) -> [UInt8] {
        let id = try entry(node)
        if name == Self.opaqueXattr, opaqueDirectories.contains(id.rawValue) { return [UInt8(ascii: "y")] }
        guard Self.shown(name), let v = reader.toc.xattrs(id)[name] else { throw FUSEError(ENODATA) }
        return v
    }

    public func xattrNames(node: UInt64) throws(FUSEError) -> [String] {
        let id = try entry(node)
        var names = reader.toc.xattrs(id).keys.filter(Self.shown).sorted()
        if opaqueDirectories.contains(id.rawValue) && !names.contains(Self.opaqueXattr) { names.append(Self.opaqueXattr) }
        return names
    }

    public func open(node: UInt64, flags: UInt32) throws(FUSEError) {
        let id = try entry(node)
        // A whiteout is shown as a 0/0 character device whatever its TOC entry is (a `.wh.` directory too): it
        // opens as a device with no driver would, the kernel never asks us for it.
        if whiteouts.contains(id.rawValue) { throw FUSEError(ENXIO) }
        if reader.toc.attributes(id).type == .dir { throw FUSEError(EISDIR) }
    }

    public func statistics() -> FileSystemStatistics {
        FileSystemStatistics(blocks: UInt64((totalSize + 4095) / 4096), files: UInt64(reader.toc.nodeCount))
    }

    /// The chunks of a regular file that `[offset, offset+size)` touches, and the clipped range.
    func plan(_ node: UInt64, offset: UInt64, size: Int) throws(FUSEError) -> (chunks: [Chunk], start: Int64, end: Int64) {
        let id = try entry(node)
        let a = reader.toc.attributes(id)
        guard a.type == .reg, !whiteouts.contains(id.rawValue) else {
            throw FUSEError(a.type == .dir && !whiteouts.contains(id.rawValue) ? EISDIR : EINVAL)
        }
        let start = Int64(clamping: offset)
        let (want, overflow) = start.addingReportingOverflow(Int64(size))
        let end = overflow ? a.size : min(a.size, want)
        guard start < end else { return ([], start, start) }
        let all = reader.chunks(of: reader.toc.resolvedNode(id))
        // Binary search the first chunk, then take while they overlap.
        var lo = 0, hi = all.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if all[mid].fileOffset + all[mid].size <= start { lo = mid + 1 } else { hi = mid }
        }
        var picked: [Chunk] = []
        var i = lo
        while i < all.count, all[i].fileOffset < end {
            picked.append(all[i])
            i += 1
        }
        guard let first = picked.first, first.fileOffset <= start,
            let last = picked.last, last.fileOffset + last.size >= end
        else {
            throw FUSEError(EIO, "\(source.name): the chunks of node \(node) do not cover [\(start), \(end))")
        }
        return (picked, start, end)
    }

    static func key(_ c: Chunk) -> ChunkKey { ChunkKey(compressedOffset: c.compressedOffset, innerOffset: c.innerOffset) }

    /// A chunk from memory, or from disk (verified) into memory.
    func cached(_ c: Chunk) -> [UInt8]? {
        let k = Self.key(c)
        if let v = memory.get(owner, k) { return v }
        if let disk = options.diskCache, let d = c.digest, let v = disk.get(d, size: Int(c.size)) {
            memory.put(owner, k, v)
            return v
        }
        return nil
    }

    func assemble(_ chunks: [Chunk], _ data: (Chunk) -> [UInt8]?, start: Int64, end: Int64) -> [UInt8]? {
        var out = [UInt8]()
        out.reserveCapacity(Int(end - start))
        for c in chunks {
            guard let bytes = data(c) else { return nil }
            let from = Int(max(start, c.fileOffset) - c.fileOffset)
            let to = Int(min(end, c.fileOffset + c.size) - c.fileOffset)
            out.append(contentsOf: bytes[from..<to])
        }
        return out
    }

    public func cachedRead(node: UInt64, offset: UInt64, size: Int) throws(FUSEError) -> [UInt8]? {
        let p = try plan(node, offset: offset, size: size)
        if p.chunks.isEmpty { return [] }
        var out = [UInt8]()
        out.reserveCapacity(Int(p.end - p.start))
        for c in p.chunks {
            let from = Int(max(p.start, c.fileOffset) - c.fileOffset)
            let to = Int(min(p.end, c.fileOffset + c.size) - c.fileOffset)
            let k = Self.key(c)
            if let v = memory.get(owner, k) {
                out.append(contentsOf: v[from..<to])
            } else if let disk = options.diskCache, let d = c.digest, memory.capacity >= 8 * Int(c.size),
                let v = disk.get(d, size: Int(c.size))
            {
                // Memory to spare: the whole chunk comes in, for the reads that follow.
                memory.put(owner, k, v)
                out.append(contentsOf: v[from..<to])
            } else if let disk = options.diskCache, let d = c.digest,
                let v = disk.read(d, size: Int(c.size), from: from, to: to, whole: { self.memory.put(self.owner, k, $0) })
            {
                // A trusted chunk on disk is read in the range asked for only, not loaded whole.
                out.append(contentsOf: v)
            } else {
                return nil
            }
        }
        return out
    }

    public func read(node: UInt64, offset: UInt64, size: Int) async throws -> [UInt8] {
        let p = try plan(node, offset: offset, size: size)
        if p.chunks.isEmpty { return [] }
        scheduler.enter()
        defer { scheduler.leave() }
        var have: [ChunkKey: [UInt8]] = [:]
        var missing: [Chunk] = []
        for c in p.chunks {
            if let v = cached(c) { have[Self.key(c)] = v } else { missing.append(c) }
        }
        if !missing.isEmpty {
            let extra = neighbours(of: missing)
            let wanted = extra.isEmpty ? missing : missing + extra
            for (k, v) in try await fetch(wanted, intoMemory: true, optional: Set(extra.map(Self.key))) { have[k] = v }
            // A chunk this read found in flight as another read's optional sibling is left out of that flight's
            // result if it failed verification there; fetch it for this read, where it gets its second try.
            let lacking = missing.filter { have[Self.key($0)] == nil }
            if !lacking.isEmpty {
                for (k, v) in try await fetch(lacking, intoMemory: true) { have[k] = v }
            }
        }
        guard let out = assemble(p.chunks, { have[Self.key($0)] }, start: p.start, end: p.end) else {
            throw FUSEError(EIO, "\(source.name): chunks of node \(node) went missing")
        }
        return out
    }

    // MARK: Fetching

    /// For each missing chunk that is a whole small file, its small siblings within
    /// ``LazyLayerOptions/readAround`` bytes either side that are not cached yet.
    func neighbours(of missing: [Chunk]) -> [Chunk] {
        let w = options.readAround
        guard w > 0 else { return [] }
        var asked = Set(missing.map(Self.key))
        var out: [Chunk] = []
        for m in missing where m.fileOffset == 0 && m.compressedSize <= w {
            let window = (m.compressedOffset - w)..<(m.compressedEnd + w)
            for c in reader.smallSiblings(of: m.entry, within: window) {
                let k = Self.key(c)
                if !asked.insert(k).inserted || memory.contains(owner, k) { continue }
                if let disk = options.diskCache, let d = c.digest, disk.contains(d) { continue }
                out.append(c)
            }
        }
        return out
    }

    /// Fetches chunks, joining fetches already under way for some of them (singleflight). Chunks in
    /// `optional` that fail verification are left out of the result instead of failing the fetch.
    func fetch(
        _ chunks: [Chunk], intoMemory: Bool, mergeGap: Int64? = nil, optional: Set<ChunkKey> = []
    ) async throws -> [ChunkKey: [UInt8]] {
        var waits: [Flight] = []
        var mine: [Chunk] = []
        let flight = Flight()
        flights.withLock { f in
            var joined = Set<ObjectIdentifier>()
            for c in chunks {
                let k = Self.key(c)
                if let existing = f[k] {
                    if joined.insert(ObjectIdentifier(existing)).inserted { waits.append(existing) }
                } else if !mine.contains(where: { Self.key($0) == k }) {
                    mine.append(c)
                    f[k] = flight
                }
            }
        }
        if !mine.isEmpty {
            let work = mine
            Task { [self] in
                let r: Result<Flight.Value, any Error>
                do {
                    r = .success(
                        try await self.fetchGroup(
                            work, intoMemory: intoMemory, gap: mergeGap ?? options.mergeGap, optional: optional))
                } catch {
                    r = .failure(error)
                }
                flights.withLock { f in for c in work where f[Self.key(c)] === flight { f[Self.key(c)] = nil } }
                flight.finish(r)
            }
            waits.append(flight)
        }
        var out: [ChunkKey: [UInt8]] = [:]
        for w in waits {
            for (k, v) in try await w.wait() { out[k] = v }
        }
        return out
    }

    /// The byte ranges to request for chunks: their compressed spans, merged across small gaps.
    func ranges(_ chunks: [Chunk], gap: Int64) -> [Range<Int64>] {
        var spans = chunks.map { $0.compressedOffset..<$0.compressedEnd }.sorted { $0.lowerBound < $1.lowerBound }
        var out: [Range<Int64>] = []
        for s in spans {
            if let last = out.last, s.lowerBound <= last.upperBound + gap {
                out[out.count - 1] = last.lowerBound..<max(last.upperBound, s.upperBound)
            } else {
                out.append(s)
            }
        }
        spans.removeAll()
        return out
    }

    /// Fetches, decompresses and verifies chunks; a chunk that fails verification is fetched once more
    /// on its own, and fails the read with EIO if it is still wrong.
    func fetchGroup(
        _ chunks: [Chunk], intoMemory: Bool, gap: Int64, optional: Set<ChunkKey> = []
    ) async throws -> [ChunkKey: [UInt8]] {
        try Task.checkCancellation()
        let rs = ranges(chunks, gap: gap)
        let started = ContinuousClock.now
        let bodies = try await source.read(rs)
        if logger.logLevel <= .debug {
            let d = ContinuousClock.now - started
            logger.debug(
                "fetched", metadata: [
                    "layer.digest": "\(source.name)", "ranges": "\(rs.count)", "chunks": "\(chunks.count)",
                    "bytes": "\(rs.reduce(0) { $0 + $1.count })", "range.offset": "\(rs.first?.lowerBound ?? 0)",
                    "file": "\(chunks.first.map { reader.toc.entry($0.entry).name } ?? "")",
                    "latency": "\(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)ms",
                ])
        }
        counters.withLock { s in
            s.requests += rs.count > 1 ? 1 : rs.count
            s.bytesFetched += rs.reduce(0) { $0 + Int64($1.count) }
        }
        // The group's chunks are held until it returns: their claimed sizes come out of the shared budget.
        let claim = chunks.reduce(0) { $0 + Int($1.size) }
        await budget.acquire(claim)
        defer { budget.release(claim) }
        var out: [ChunkKey: [UInt8]] = [:]
        for c in chunks {
            guard let ri = rs.firstIndex(where: { $0.lowerBound <= c.compressedOffset && c.compressedEnd <= $0.upperBound }) else {
                throw FUSEError(EIO, "\(source.name): no fetched range holds the chunk at \(c.compressedOffset)")
            }
            let from = Int(c.compressedOffset - rs[ri].lowerBound)
            let compressed = Array(bodies[ri][from..<(from + Int(c.compressedSize))])
            var bytes: [UInt8]
            do {
                bytes = try reader.decompress(c, compressed: compressed)
            } catch where optional.contains(Self.key(c)) {
                counters.withLock { $0.verificationFailures += 1 }
                logger.warning(
                    "a chunk read around failed verification; left out",
                    metadata: ["layer.digest": "\(source.name)", "range.offset": "\(c.compressedOffset)", "error": "\(error)"])
                continue
            } catch {
                counters.withLock { $0.verificationFailures += 1 }
                logger.warning(
                    "chunk failed verification; fetching it again",
                    metadata: ["layer.digest": "\(source.name)", "range.offset": "\(c.compressedOffset)", "error": "\(error)"])
                let again = try await source.read([c.compressedOffset..<c.compressedEnd])[0]
                counters.withLock { s in
                    s.requests += 1
                    s.bytesFetched += c.compressedSize
                }
                do {
                    bytes = try reader.decompress(c, compressed: again)
                } catch {
                    counters.withLock { $0.verificationFailures += 1 }
                    throw FUSEError(EIO, "\(source.name): \(error)")
                }
            }
            let k = Self.key(c)
            if intoMemory { memory.put(owner, k, bytes) }
            if let disk = options.diskCache, let d = c.digest {
                // A read has its bytes already and need not wait for the disk; the background fetch does wait,
                // so that it goes no faster than the disk takes its chunks.
                if intoMemory { disk.store(d, bytes) } else { await disk.put(d, bytes) }
            }
            out[k] = bytes
        }
        counters.withLock { s in
            s.chunksFetched += out.count
            for c in chunks where !s.seen.insert(Self.key(c)).inserted { s.duplicateFetches += 1 }
        }
        return out
    }

    /// Every chunk of the layer, in blob order.
    func allChunks() -> [Chunk] {
        var out: [Chunk] = []
        let toc = reader.toc
        for raw in 0..<UInt32(toc.nodeCount) {
            let id = EntryID(rawValue: raw)
            let a = toc.attributes(id)
            guard a.type == .reg, a.size > 0, toc.resolvedNode(id) == id else { continue }
            out += reader.chunks(of: id)
        }
        out.sort { ($0.compressedOffset, $0.innerOffset) < ($1.compressedOffset, $1.innerOffset) }
        return out
    }

    /// Fetches everything before the prefetch landmark in one request (readers of those chunks wait for it).
    func prefetch() async {
        defer { counters.withLock { $0.prefetchDone = true } }
        guard options.prefetch else { return }
        let end: Int64
        switch reader.prefetch {
        case .none: return
        case .range(let e): end = e
        case .unspecified:
            guard options.prefetchSizeWithoutLandmark > 0 else { return }
            end = options.prefetchSizeWithoutLandmark
        }
        let wanted = allChunks().filter { $0.compressedEnd <= end && cached($0) == nil }
        guard !wanted.isEmpty else { return }
        let start = ContinuousClock.now
        do {
            _ = try await fetchPrefetch(wanted)
            logLatency("prefetch_total", since: start, suffix: "; prefetch_size=\(end) bytes")
            logger.debug("completed to prefetch", metadata: ["layer_sha": "\(layerDigest)"])
        } catch {
            logger.info("prefetch failed", metadata: ["layer.digest": "\(source.name)", "error": "\(error)"])
        }
    }

    private func fetchPrefetch(_ chunks: [Chunk]) async throws -> [ChunkKey: [UInt8]] {
        // One request: the whole span, whatever the gaps between chunks.
        try await fetch(chunks, intoMemory: true, mergeGap: .max / 4)
    }

    /// Fetches the rest of the layer to disk, a bounded request at a time, yielding to on-demand reads.
    func fetchRest() async {
        let started = ContinuousClock.now
        var batch: [Chunk] = []
        var batchBytes: Int64 = 0
        let pending = allChunks().filter { c in
            guard let d = c.digest, let disk = options.diskCache else { return false }
            return !disk.contains(d)
        }
        var i = 0
        while i <= pending.count {
            if Task.isCancelled { return }
            let flush = i == pending.count || batchBytes + pending[i].compressedSize > options.backgroundRequestSize
            if flush, !batch.isEmpty {
                do {
                    try await scheduler.backgroundTurn()
                } catch {
                    return  // cancelled: the layer is closing
                }
                do {
                    defer { scheduler.endTurn() }
                    _ = try await fetch(batch, intoMemory: false)
                } catch is CancellationError {
                    return
                } catch {
                    logger.info("background fetch failed", metadata: ["layer.digest": "\(source.name)", "error": "\(error)"])
                    return
                }
                batch = []
                batchBytes = 0
            }
            if i < pending.count {
                batch.append(pending[i])
                batchBytes += pending[i].compressedSize
            }
            i += 1
        }
        counters.withLock { $0.fullyLocal = true }
        logLatency("background_fetch_total", since: started, suffix: "")
        logger.debug(
            "completed to fetch all layer data in background",
            metadata: ["layer_sha": "\(layerDigest)", "bytes": "\(pending.reduce(0) { $0 + $1.compressedSize })"])
    }

    /// The layer's digest for log lines (the part of the source's name after `@`).
    var layerDigest: Substring { source.name.split(separator: "@").last ?? Substring(source.name) }

    /// The per-layer latency line of upstream's store, in its shape (debug level, `layer_sha`,
    /// `metrics=latency`, `operation`, `msg` = `value=<ms> milliseconds[; prefetch_size=<n> bytes]`).
    func logLatency(_ operation: String, since start: ContinuousClock.Instant, suffix: String) {
        let d = ContinuousClock.now - start
        let ms = Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
        logger.debug(
            "value=\((ms * 1000).rounded() / 1000) milliseconds\(suffix)",
            metadata: ["layer_sha": "\(layerDigest)", "metrics": "latency", "operation": "\(operation)"])
    }
}
