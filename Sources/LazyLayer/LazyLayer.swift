// SPDX-License-Identifier: Apache-2.0
public import EStargz
public import FUSE
import Foundation
public import Logging
public import OCI
import Synchronization

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
/// The parts: a ``LayerTree`` answers the metadata operations (pure, over the TOC); a `ChunkReader` plans a
/// read and assembles it cache first; a `ChunkFetcher` fetches what is missing, shared between the readers
/// that need the same chunks (its coordination is the `FetchStateMachine`); a `BackgroundFetcher` runs the
/// prefetch and the background fetch. Their tasks are children of one group that ``close()`` cancels and
/// awaits. Errors are ``LazyLayerError``s, answered with their errno.
public final class LazyLayer: FileSystem {
    /// The reader over the layer's TOC.
    public let reader: EStargzReader
    /// The tree the container sees.
    public let tree: LayerTree
    let source: any BlobSource
    let options: LazyLayerOptions
    let logger: Logger
    let chunks: ChunkReader
    let fetcher: ChunkFetcher
    let background: BackgroundFetcher
    let scheduler: FetchScheduler
    let tasks = TaskOwner()
    /// What the layer measures.
    public let metrics: LayerMetrics
    private let backgroundStarted = Mutex(false)
    private let backgroundDone = Flight()

    private init(reader: EStargzReader, source: any BlobSource, options: LazyLayerOptions, logger: Logger, metrics: LayerMetrics) {
        self.reader = reader
        self.source = source
        self.options = options
        self.logger = logger
        self.metrics = metrics
        tree = LayerTree(reader.toc)
        let memory = options.memoryCache ?? MemoryChunkCache(capacity: options.memoryCacheBytes)
        chunks = ChunkReader(
            reader: reader, tree: tree, memory: memory, owner: memory.newOwner(), disk: options.diskCache, name: source.name,
            metrics: metrics)
        scheduler = options.scheduler ?? FetchScheduler(silence: .zero, backgroundSlots: 1)
        fetcher = ChunkFetcher(
            reader: reader, source: source, chunks: chunks,
            budget: options.decompressionBudget ?? MemoryBudget(capacity: LazyLayerOptions.defaultDecompressionBudget),
            mergeGap: options.mergeGap, logger: logger, tasks: tasks, metrics: metrics)
        background = BackgroundFetcher(fetcher: fetcher, scheduler: scheduler, options: options, logger: logger)
    }

    /// Reads the layer's footer and TOC from `source` (one range request when the TOC is in the last
    /// 1/128 of the blob, two otherwise) and indexes it.
    public static func open(
        _ source: any BlobSource, options: LazyLayerOptions = LazyLayerOptions(),
        logger: Logger = Logger(label: "stargz.lazylayer"), metrics: LayerMetrics = .none
    ) async throws -> LazyLayer {
        let fetching = ContinuousClock.now
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
        metrics.record(metrics.tocGet, since: fetching)
        let blob = TailBlob(size: size, start: start, bytes: tail, name: source.name)
        let parsing = ContinuousClock.now
        let reader = try EStargzReader(
            blob: blob, options: ReaderOptions(expectedTOCDigest: options.expectedTOCDigest, limits: options.limits))
        metrics.record(metrics.tocParse, since: parsing)
        return LazyLayer(reader: reader, source: source, options: options, logger: logger, metrics: metrics)
    }

    /// Starts the prefetch and then the background fetch, as the options say (once).
    public func startBackgroundWork() {
        let first = backgroundStarted.withLock { s in
            defer { s = true }
            return !s
        }
        guard first else { return }
        let started = tasks.spawn { [background, backgroundDone] in
            await background.run()
            backgroundDone.finish(.success([:]))
        }
        if !started { backgroundDone.finish(.success([:])) }
    }

    /// Whether ``startBackgroundWork()`` has been called.
    public var backgroundWorkStarted: Bool { backgroundStarted.withLock { $0 } }

    /// Waits for the prefetch and background work started by ``startBackgroundWork()`` (at once if none was).
    public func waitForBackgroundWork() async {
        guard backgroundWorkStarted else { return }
        _ = try? await backgroundDone.wait()
    }

    /// Cancels the layer's fetches and background work and waits for them to return; frees its chunks in
    /// memory. Reads that must fetch fail after this (EIO); unmount first, so that none comes.
    public func close() async {
        await fetcher.close()
        backgroundDone.finish(.success([:]))
        chunks.memory.drop(owner: chunks.owner)
    }

    /// What has been fetched.
    public var fetchStatistics: LazyLayerStatistics { fetcher.counters.withLock { $0 } }

    // MARK: FileSystem

    public func lookup(parent: UInt64, name: UnsafeRawBufferPointer) throws(FUSEError) -> Answer<FileAttributes> {
        do { return .now(try tree.lookup(parent: parent, name: name)) } catch { throw FUSEError(replyingTo: error) }
    }

    public func attributes(node: UInt64) throws(FUSEError) -> FileAttributes {
        do { return try tree.attributes(node: node) } catch { throw FUSEError(replyingTo: error) }
    }

    public func readlink(node: UInt64) throws(FUSEError) -> [UInt8] {
        do { return try tree.readlink(node: node) } catch { throw FUSEError(replyingTo: error) }
    }

    public func entries(directory: UInt64) throws(FUSEError) -> [DirectoryEntry] {
        let start = ContinuousClock.now
        defer { metrics.recordMicroseconds(metrics.readdir, since: start) }
        do { return try tree.entries(directory: directory) } catch { throw FUSEError(replyingTo: error) }
    }

    public func xattr(node: UInt64, name: String) throws(FUSEError) -> [UInt8] {
        do { return try tree.xattr(node: node, name: name) } catch { throw FUSEError(replyingTo: error) }
    }

    public func xattrNames(node: UInt64) throws(FUSEError) -> [String] {
        do { return try tree.xattrNames(node: node) } catch { throw FUSEError(replyingTo: error) }
    }

    public func open(node: UInt64, flags: UInt32) throws(FUSEError) {
        do { try tree.open(node: node) } catch { throw FUSEError(replyingTo: error) }
    }

    public func statistics() -> FileSystemStatistics { tree.statistics() }

    /// A read: planned and assembled from the caches once; what is missing is fetched later (with its
    /// read-around neighbours), and the read completed from what the fetch brought.
    public func read(node: UInt64, offset: UInt64, size: Int) throws(FUSEError) -> Answer<[UInt8]> {
        let start = ContinuousClock.now
        metrics.readCount.increment()
        let plan: ReadPlan
        do { plan = try chunks.plan(node, offset: offset, size: size) } catch { throw FUSEError(replyingTo: error) }
        switch chunks.assemble(plan) {
        case .complete(let bytes):
            served(bytes.count, since: start)
            return .now(bytes)
        case .partial(let pieces, let missing):
            return .later { [self] in
                let bytes = try await fetchAndComplete(node, plan, pieces, missing)
                served(bytes.count, since: start)
                return bytes
            }
        }
    }

    private func served(_ count: Int, since start: ContinuousClock.Instant) {
        metrics.bytesServed.increment(by: Double(count))
        metrics.recordMicroseconds(metrics.readOnDemand, since: start)
    }

    func fetchAndComplete(_ node: UInt64, _ plan: ReadPlan, _ pieces: [Assembly.Piece?], _ missing: [Chunk]) async throws -> [UInt8] {
        scheduler.enter()
        defer { scheduler.leave() }
        // Another read may have brought some of them since this one looked (it waited for a slot, or for the
        // pool): those are taken from memory, not fetched again.
        var fetched: [ChunkKey: [UInt8]] = [:]
        var need: [Chunk] = []
        for c in missing {
            if let v = chunks.memory.get(chunks.owner, ChunkReader.key(c)) { fetched[ChunkReader.key(c)] = v } else { need.append(c) }
        }
        if !need.isEmpty {
            for (k, v) in try await fetcher.fetch(need, optional: neighbours(of: need), intoMemory: true) { fetched[k] = v }
        }
        guard let out = chunks.complete(plan, pieces: pieces, fetched: fetched) else {
            throw LazyLayerError(.inconsistent, "\(source.name): chunks of node \(node) went missing")
        }
        return out
    }

    /// For each missing chunk that is a whole small file, its small siblings within
    /// ``LazyLayerOptions/readAround`` bytes either side that are not cached yet.
    func neighbours(of missing: [Chunk]) -> [Chunk] {
        let w = options.readAround
        guard w > 0 else { return [] }
        var asked = Set(missing.map(ChunkReader.key))
        var out: [Chunk] = []
        for m in missing where m.fileOffset == 0 && m.compressedSize <= w {
            let window = (m.compressedOffset - w)..<(m.compressedEnd + w)
            for c in reader.smallSiblings(of: m.entry, within: window) {
                if !asked.insert(ChunkReader.key(c)).inserted || chunks.isCached(c) { continue }
                out.append(c)
            }
        }
        return out
    }
}
