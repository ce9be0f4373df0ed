// SPDX-License-Identifier: Apache-2.0
import EStargz
import Logging
import Synchronization

/// Fetches chunks from the blob: merges them into few range requests, decompresses and verifies each (a chunk
/// that fails is fetched once more on its own; still wrong, the read fails with EIO, never wrong bytes), puts
/// them in the caches, and shares every fetch with the readers that need the same chunks. Coordination is the
/// ``FetchStateMachine``'s; the fetches are children of the layer's ``TaskOwner``.
final class ChunkFetcher: Sendable {
    let reader: EStargzReader
    let source: any BlobSource
    let chunks: ChunkReader
    let budget: MemoryBudget
    let mergeGap: Int64
    let logger: Logger
    let tasks: TaskOwner
    let metrics: LayerMetrics
    let counters = Mutex(LazyLayerStatistics())
    private struct Coordination: ~Copyable {
        var machine = FetchStateMachine()
        var flights: [FetchStateMachine.FlightID: Flight] = [:]
    }
    private let coordination = Mutex(Coordination())

    init(
        reader: EStargzReader, source: any BlobSource, chunks: ChunkReader, budget: MemoryBudget, mergeGap: Int64,
        logger: Logger, tasks: TaskOwner, metrics: LayerMetrics
    ) {
        self.metrics = metrics
        self.reader = reader
        self.source = source
        self.chunks = chunks
        self.budget = budget
        self.mergeGap = mergeGap
        self.logger = logger
        self.tasks = tasks
    }

    /// Fetches `required` and, in the same requests, `optional` (dropped if they fail verification), joining
    /// fetches under way. `intoMemory`: the chunks go to the memory cache too (reads), not only to disk.
    func fetch(
        _ required: [Chunk], optional: [Chunk] = [], intoMemory: Bool, mergeGap gap: Int64? = nil
    ) async throws -> [ChunkKey: [UInt8]] {
        var out = try await fetchOnce(required, optional, intoMemory: intoMemory, gap: gap ?? mergeGap)
        let keys = required.map(ChunkReader.key)
        let action = coordination.withLock { $0.machine.completed(required: keys, delivered: { out[$0] != nil }) }
        if case .refetch(let lacking) = action {
            let again = required.filter { lacking.contains(ChunkReader.key($0)) }
            for (k, v) in try await fetchOnce(again, [], intoMemory: intoMemory, gap: gap ?? mergeGap) { out[k] = v }
        }
        return out
    }

    private func fetchOnce(
        _ required: [Chunk], _ optional: [Chunk], intoMemory: Bool, gap: Int64
    ) async throws -> [ChunkKey: [UInt8]] {
        let (action, waits, flight) = coordination.withLock { c in
            let a = c.machine.request(required: required.map(ChunkReader.key), optional: optional.map(ChunkReader.key))
            var waits: [Flight] = []
            var mine: Flight?
            switch a {
            case .fail: break
            case .join(let ids): waits = ids.compactMap { c.flights[$0] }
            case .start(let id, _, _, let join):
                waits = join.compactMap { c.flights[$0] }
                let f = Flight()
                c.flights[id] = f
                mine = f
            }
            return (a, waits, mine)
        }
        var all = waits
        switch action {
        case .fail:
            throw LazyLayerError(.closed, "\(source.name) is closing")
        case .join:
            break
        case .start(let id, let keys, let optionalKeys, _):
            guard let flight else { break }
            let byKey = Dictionary((required + optional).map { (ChunkReader.key($0), $0) }, uniquingKeysWith: { a, _ in a })
            let work = keys.compactMap { byKey[$0] }
            let started = tasks.spawn { [self] in
                let r: Result<Flight.Value, any Error>
                do {
                    r = .success(try await fetchGroup(work, intoMemory: intoMemory, gap: gap, optional: optionalKeys))
                } catch is CancellationError where coordination.withLock({ $0.machine.closed }) {
                    r = .failure(LazyLayerError(.closed, "\(source.name) is closing"))  // cancelled by close()
                } catch {
                    r = .failure(error)
                }
                finish(id, flight, r)
            }
            if !started { finish(id, flight, .failure(LazyLayerError(.closed, "\(source.name) is closing"))) }
            all.append(flight)
        }
        var out: [ChunkKey: [UInt8]] = [:]
        for w in all {
            for (k, v) in try await w.wait() { out[k] = v }
        }
        return out
    }

    private func finish(_ id: FetchStateMachine.FlightID, _ flight: Flight, _ r: Result<Flight.Value, any Error>) {
        coordination.withLock { c in
            c.machine.finished(id)
            c.flights[id] = nil
        }
        flight.finish(r)
    }

    /// Stops: nothing starts from now on, running fetches are cancelled, and their waiters answered.
    func close() async {
        let running = coordination.withLock { c in c.machine.close().compactMap { id in c.flights[id].map { (id, $0) } } }
        await tasks.close()
        // Fetches spawned but never started by the closed group end here.
        for (id, f) in running { finish(id, f, .failure(LazyLayerError(.closed, "\(source.name) is closing"))) }
    }

    /// The readers waiting for the flight that fetches `key`, if it is in flight (for tests).
    func waiters(of key: ChunkKey) -> Int? {
        coordination.withLock { c in c.machine.flight(of: key).flatMap { c.flights[$0]?.waiterCount } }
    }

    /// Flights running now (for tests).
    var flightCount: Int { coordination.withLock { $0.machine.flightCount } }

    /// The byte ranges to request for chunks: their compressed spans, merged across gaps up to `gap`.
    static func ranges(_ chunks: [Chunk], gap: Int64) -> [Range<Int64>] {
        let spans = chunks.map { $0.compressedOffset..<$0.compressedEnd }.sorted { $0.lowerBound < $1.lowerBound }
        var out: [Range<Int64>] = []
        for s in spans {
            if let last = out.last, s.lowerBound <= last.upperBound + gap {
                out[out.count - 1] = last.lowerBound..<max(last.upperBound, s.upperBound)
            } else {
                out.append(s)
            }
        }
        return out
    }

    /// Fetches, decompresses and verifies chunks; a chunk that fails verification is fetched once more on its
    /// own, and fails the fetch with EIO if it is still wrong. Chunks in `optional` that fail are left out.
    func fetchGroup(
        _ group: [Chunk], intoMemory: Bool, gap: Int64, optional: Set<ChunkKey>
    ) async throws -> [ChunkKey: [UInt8]] {
        try Task.checkCancellation()
        let rs = Self.ranges(group, gap: gap)
        let started = ContinuousClock.now
        let bodies: [[UInt8]]
        do {
            bodies = try await source.read(rs)
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw LazyLayerError(.fetchFailed, "\(source.name): \(rs.count) ranges from \(rs.first?.lowerBound ?? 0)", cause: error)
        }
        // The source promises one body per range, of its length; a short one would be read past.
        guard bodies.count == rs.count, zip(bodies, rs).allSatisfy({ Int64($0.count) == $1.count }) else {
            throw LazyLayerError(.fetchFailed, "\(source.name): the source answered \(rs.count) ranges with bodies of other lengths")
        }
        if logger.logLevel <= .debug {
            logger.debug(
                "fetched", metadata: [
                    "layer.digest": "\(source.name)", "ranges": "\(rs.count)", "chunks": "\(group.count)",
                    "bytes": "\(rs.reduce(0) { $0 + $1.count })", "range.offset": "\(rs.first?.lowerBound ?? 0)",
                    "file": "\(group.first.map { reader.toc.entry($0.entry).name } ?? "")",
                    "latency": "\((ContinuousClock.now - started).milliseconds)ms",
                ])
        }
        fetched(requests: rs.count > 1 ? 1 : rs.count, bytes: rs.reduce(0) { $0 + Int64($1.count) }, since: started)
        // The group's chunks are held until it returns: their claimed sizes come out of the shared budget.
        let claim = group.reduce(0) { $0 + Int($1.size) }
        await budget.acquire(claim)
        defer { budget.release(claim) }
        var out: [ChunkKey: [UInt8]] = [:]
        var ri = 0
        for c in group.sorted(by: { $0.compressedOffset < $1.compressedOffset }) {
            while ri < rs.count, rs[ri].upperBound < c.compressedEnd { ri += 1 }
            guard ri < rs.count, rs[ri].lowerBound <= c.compressedOffset else {
                throw LazyLayerError(.inconsistent, "\(source.name): no fetched range holds the chunk at \(c.compressedOffset)")
            }
            let from = Int(c.compressedOffset - rs[ri].lowerBound)
            let k = ChunkReader.key(c)
            var bytes: [UInt8]
            do {
                bytes = try bodies[ri].withUnsafeBytes { b in
                    try reader.decompress(c, compressed: Array(b[from..<(from + Int(c.compressedSize))]))
                }
            } catch where optional.contains(k) {
                failedVerification()
                logger.warning(
                    "a chunk read around failed verification; left out",
                    metadata: ["layer.digest": "\(source.name)", "range.offset": "\(c.compressedOffset)", "error": "\(error)"])
                continue
            } catch {
                failedVerification()
                logger.warning(
                    "chunk failed verification; fetching it again",
                    metadata: ["layer.digest": "\(source.name)", "range.offset": "\(c.compressedOffset)", "error": "\(error)"])
                bytes = try await refetch(c)
            }
            if intoMemory { chunks.memory.put(chunks.owner, k, bytes) }
            if let disk = chunks.disk, let d = c.digest {
                // A read has its bytes already and need not wait for the disk; the background fetch does wait,
                // so that it goes no faster than the disk takes its chunks.
                if intoMemory { disk.store(d, bytes) } else { await disk.put(d, bytes) }
            }
            out[k] = bytes
        }
        counters.withLock { s in
            s.chunksFetched += out.count
            for c in group where !s.seen.insert(ChunkReader.key(c)).inserted { s.duplicateFetches += 1 }
        }
        metrics.chunksFetched.increment(by: out.count)
        return out
    }

    /// Counts range requests made and the compressed bytes they brought (statistics and metrics).
    private func fetched(requests: Int, bytes: Int64, since start: ContinuousClock.Instant) {
        counters.withLock { s in
            s.requests += requests
            s.bytesFetched += bytes
        }
        metrics.fetchRequests.increment(by: requests)
        metrics.fetchCount.increment(by: requests)
        metrics.fetchedBytes.increment(by: bytes)
        metrics.bytesFetched.increment(by: Double(bytes))
        metrics.record(metrics.registryGet, since: start)
    }

    private func failedVerification() {
        counters.withLock { $0.verificationFailures += 1 }
        metrics.verificationFailures.increment()
    }

    /// A chunk's second try, on its own.
    private func refetch(_ c: Chunk) async throws -> [UInt8] {
        let started = ContinuousClock.now
        let again: [UInt8]
        do {
            again = try await source.read([c.compressedOffset..<c.compressedEnd])[0]
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw LazyLayerError(.fetchFailed, "\(source.name): the chunk at \(c.compressedOffset)", cause: error)
        }
        fetched(requests: 1, bytes: c.compressedSize, since: started)
        do {
            return try reader.decompress(c, compressed: again)
        } catch {
            failedVerification()
            throw LazyLayerError(.verificationFailed, "\(source.name): the chunk at \(c.compressedOffset), twice", cause: error)
        }
    }
}
