// SPDX-License-Identifier: Apache-2.0
import CoreMetrics
import EStargz
import Logging

/// A layer's work after mount: the prefetch (what lies before the landmark, in one request) and then, with a
/// disk cache, the rest of the layer a bounded request at a time, each when the shared ``FetchScheduler``
/// gives it a turn (after on-demand reads have been quiet). Runs as a child of the layer's ``TaskOwner``.
struct BackgroundFetcher: Sendable {
    let fetcher: ChunkFetcher
    let scheduler: FetchScheduler
    let options: LazyLayerOptions
    let logger: Logger

    var reader: EStargzReader { fetcher.reader }
    var name: String { fetcher.source.name }

    /// The prefetch, then the background fetch, as the options say.
    func run() async {
        guard !Task.isCancelled else { return }  // the layer closed before this started
        // Opening the layer and its prefetch count as foreground work: the background fetch waits for the
        // silence after them, as it does after reads.
        scheduler.enter()
        await prefetch()
        scheduler.leave()
        if options.backgroundFetch, options.diskCache != nil { await fetchRest() }
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
        defer { fetcher.counters.withLock { $0.prefetchDone = true } }
        guard options.prefetch, !Task.isCancelled else { return }
        let end: Int64
        switch reader.prefetch {
        case .none: return
        case .range(let e): end = e
        case .unspecified:
            guard options.prefetchSizeWithoutLandmark > 0 else { return }
            end = options.prefetchSizeWithoutLandmark
        }
        let wanted = allChunks().filter { $0.compressedEnd <= end && !fetcher.chunks.isCached($0) }
        guard !wanted.isEmpty else { return }
        let start = ContinuousClock.now
        do {
            // One request: the whole span, whatever the gaps between chunks.
            _ = try await fetcher.fetch(wanted, intoMemory: true, mergeGap: .max / 4)
            logLatency("prefetch_total", fetcher.metrics.prefetch, since: start, suffix: "; prefetch_size=\(end) bytes")
            logger.debug("completed to prefetch", metadata: ["layer_sha": "\(layerDigest)"])
        } catch {
            logger.info("prefetch failed", metadata: ["layer.digest": "\(name)", "error": "\(error)"])
        }
    }

    /// Fetches the rest of the layer to disk, a bounded request at a time, yielding to on-demand reads.
    func fetchRest() async {
        guard let disk = options.diskCache, !Task.isCancelled else { return }
        let started = ContinuousClock.now
        let pending = allChunks().filter { c in c.digest.map { !disk.contains($0) } ?? false }
        var batch: [Chunk] = []
        var batchBytes: Int64 = 0
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
                    _ = try await fetcher.fetch(batch, intoMemory: false)
                } catch let e where e is CancellationError || (e as? LazyLayerError)?.code == .closed {
                    return
                } catch {
                    logger.info("background fetch failed", metadata: ["layer.digest": "\(name)", "error": "\(error)"])
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
        fetcher.counters.withLock { $0.fullyLocal = true }
        logLatency("background_fetch_total", fetcher.metrics.backgroundFetch, since: started, suffix: "")
        logger.debug(
            "completed to fetch all layer data in background",
            metadata: ["layer_sha": "\(layerDigest)", "bytes": "\(pending.reduce(0) { $0 + $1.compressedSize })"])
    }

    /// The layer's digest for log lines (the part of the source's name after `@`).
    var layerDigest: Substring { name.split(separator: "@").last ?? Substring(name) }

    /// The per-layer latency line of upstream's store, in its shape (debug level, `layer_sha`,
    /// `metrics=latency`, `operation`, `msg` = `value=<ms> milliseconds[; prefetch_size=<n> bytes]`).
    /// Also recorded in the layer's `stargz_fs_operation_duration_milliseconds` (`recorder`).
    func logLatency(_ operation: String, _ recorder: Recorder, since start: ContinuousClock.Instant, suffix: String) {
        fetcher.metrics.record(recorder, since: start)
        logger.debug(
            "value=\((ContinuousClock.now - start).fractionalMilliseconds) milliseconds\(suffix)",
            metadata: ["layer_sha": "\(layerDigest)", "metrics": "latency", "operation": "\(operation)"])
    }
}
