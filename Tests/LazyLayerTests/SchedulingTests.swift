// SPDX-License-Identifier: Apache-2.0
import EStargz
import FUSE
import Foundation
@testable import LazyLayer
import Logging
import Synchronization
import TestSupport
import Testing
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// Bytes that gzip cannot shrink much, so that each small file's chunk has a known size (about `n` bytes).
private func noise(_ n: Int, seed: UInt64) -> [UInt8] {
    var x = seed &* 6364136223846793005 &+ 1442695040888963407
    return (0..<n).map { _ in
        x = x &* 6364136223846793005 &+ 1442695040888963407
        return UInt8(truncatingIfNeeded: x >> 33)
    }
}

/// A layer with 30 small files in `mods/` (1,500 bytes each, about 45 KB of blob in all) and one in `other/`.
private func smallFilesLayer(_ dir: String) throws -> (blob: [UInt8], files: [String: [UInt8]]) {
    var tb = TarBuilder().dir("mods")
    var files: [String: [UInt8]] = [:]
    for i in 0..<30 {
        let name = "mods/m\(i < 10 ? "0" : "")\(i).py"
        files[name] = noise(1500, seed: UInt64(i))
        tb = tb.file(name, files[name]!)
    }
    files["other/x.py"] = noise(1500, seed: 99)
    tb = tb.dir("other").file("other/x.py", files["other/x.py"]!)
    try Data(tb.bytes()).write(to: URL(fileURLWithPath: dir + "/small.tar"))
    _ = try EStargzWriter.build(input: dir + "/small.tar", output: dir + "/small.esgz", options: WriterOptions())
    return ([UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/small.esgz"))), files)
}

private func readFile(_ layer: LazyLayer, _ path: String) async throws -> [UInt8] {
    var node: UInt64 = 1
    for part in path.split(separator: "/") {
        node = try await layer.lookup(parent: node, nameBytes: Array(part.utf8)).inode
    }
    let size = Int(try layer.attributes(node: node).size)
    return try await layer.readBytes(node: node, offset: 0, size: size)
}

/// Keeps the log lines of a logger, for tests of what is logged.
final class LogLines: Sendable {
    let lines = Mutex<[(message: String, metadata: Logger.Metadata)]>([])
    var logger: Logger { Logger(label: "test") { _ in Handler(sink: self) } }

    struct Handler: LogHandler {
        let sink: LogLines
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            sink.lines.withLock { $0.append(("\(event.message)", metadata.merging(event.metadata ?? [:]) { $1 })) }
        }
    }
}

@Suite("Read-around of small files and background scheduling (in process)")
struct SchedulingTests {
    @Test("a small file's read brings its small siblings in the same request; another directory's file does not come")
    func readAround() async throws {
        try await withTemporaryDirectory("read-around") { dir in
            let (blob, files) = try smallFilesLayer(dir)
            let layer = try await LazyLayer.open(
                MemoryBlobSource(blob), options: LazyLayerOptions(prefetch: false, backgroundFetch: false, readAround: 64 << 10))
            #expect(try await readFile(layer, "mods/m10.py") == files["mods/m10.py"])
            #expect(layer.fetchStatistics.requests == 1)
            for name in ["mods/m00.py", "mods/m11.py", "mods/m29.py"] {
                #expect(try await readFile(layer, name) == files[name])
            }
            #expect(layer.fetchStatistics.requests == 1, "siblings before and after were fetched with the first read")
            #expect(try await readFile(layer, "other/x.py") == files["other/x.py"])
            #expect(layer.fetchStatistics.requests == 2, "a file of another directory is not a sibling")
            #expect(layer.fetchStatistics.duplicateFetches == 0)

            // Without read-around every file costs its own request.
            let plain = try await LazyLayer.open(
                MemoryBlobSource(blob), options: LazyLayerOptions(prefetch: false, backgroundFetch: false))
            _ = try await readFile(plain, "mods/m10.py")
            _ = try await readFile(plain, "mods/m11.py")
            #expect(plain.fetchStatistics.requests == 2)
        }
    }

    @Test("a sibling read around that fails verification is left out: the read that brought it gets its bytes")
    func corruptSibling() async throws {
        try await withTemporaryDirectory("read-around-corrupt") { dir in
            let (blob, files) = try smallFilesLayer(dir)
            let reader = try EStargzReader(blob: MemoryBlob(blob))
            let id = try #require(reader.lookup("mods/m11.py"))
            let sibling = try #require(reader.chunks(of: id).first)
            var bad = blob
            bad[Int(sibling.compressedOffset) + 40] ^= 0x55
            let layer = try await LazyLayer.open(
                MemoryBlobSource(bad), options: LazyLayerOptions(prefetch: false, backgroundFetch: false, readAround: 64 << 10))
            #expect(try await readFile(layer, "mods/m10.py") == files["mods/m10.py"])
            #expect(layer.fetchStatistics.verificationFailures == 1)
            // The corrupt sibling itself: fetched again on its own, still wrong, so EIO.
            let error = await #expect(throws: LazyLayerError.self) { _ = try await readFile(layer, "mods/m11.py") }
            #expect(error?.code == .verificationFailed && error?.errno == EIO)
            #expect(layer.fetchStatistics.verificationFailures == 3)
            #expect(try await readFile(layer, "mods/m12.py") == files["mods/m12.py"])
        }
    }

    @Test("a read that joined another read's sibling request, where its chunk failed verification, fetches it again itself")
    func joinedSiblingFailed() async throws {
        try await withTemporaryDirectory("read-around-joined") { dir in
            let (blob, files) = try smallFilesLayer(dir)
            let reader = try EStargzReader(blob: MemoryBlob(blob))
            let id = try #require(reader.lookup("mods/m11.py"))
            let sibling = try #require(reader.chunks(of: id).first)
            let source = HeldSource(blob, corruptingAt: Int64(sibling.compressedOffset) + 40)
            let layer = try await LazyLayer.open(
                source, options: LazyLayerOptions(prefetch: false, backgroundFetch: false, readAround: 64 << 10))
            source.hold()
            // Reader A asks for m10; its request also carries m11 as an optional sibling, and is held.
            let a = Task { try await readFile(layer, "mods/m10.py") }
            for _ in 0..<1_000_000 where source.heldReads == 0 { await Task.yield() }
            #expect(source.heldReads == 1)
            #expect(layer.fetcher.waiters(of: ChunkReader.key(sibling)) == 1)
            // Reader B asks for m11 and joins A's request.
            let b = Task { try await readFile(layer, "mods/m11.py") }
            for _ in 0..<1_000_000 where layer.fetcher.waiters(of: ChunkReader.key(sibling)) ?? 0 < 2 { await Task.yield() }
            #expect(layer.fetcher.waiters(of: ChunkReader.key(sibling)) == 2)
            source.release()  // the held request comes back with m11 corrupted
            #expect(try await a.value == files["mods/m10.py"])
            #expect(try await b.value == files["mods/m11.py"], "B fetched m11 again and got the right bytes")
            #expect(layer.fetchStatistics.verificationFailures == 1)
        }
    }

    @Test("background fetching waits while reads run, then for the silence after them; slots bound it")
    func scheduler() async throws {
        func settle(_ s: FetchScheduler, waiting n: Int) async {
            for _ in 0..<1_000_000 where s.waitingForTurn != n { await Task.yield() }
        }
        // A read is running: the background waits for it to end.
        let s = FetchScheduler(silence: .zero, backgroundSlots: 1)
        s.enter()
        let first = Task { try await s.backgroundTurn() }
        await settle(s, waiting: 1)
        #expect(s.waitingForTurn == 1)
        s.leave()
        try await first.value
        // The one slot is taken: a second background request waits until it is given back.
        let second = Task { try await s.backgroundTurn() }
        await settle(s, waiting: 1)
        #expect(s.waitingForTurn == 1)
        s.endTurn()
        try await second.value
        s.endTurn()

        // Reads ended just now and the silence is an hour: the background is still waiting when cancelled.
        let quiet = FetchScheduler(silence: .seconds(3600), backgroundSlots: 2)
        quiet.enter()
        quiet.leave()
        let waiting = Task { try await quiet.backgroundTurn() }
        await settle(quiet, waiting: 1)
        #expect(quiet.waitingForTurn == 1)
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }
        #expect(quiet.waitingForTurn == 0)
    }

    @Test("layers sharing one memory cache stay within its bound, and a closed layer's chunks leave it")
    func sharedMemory() async throws {
        let blob = try fixture("kitchen-sink.chunk64k.esgz")
        let cache = MemoryChunkCache(capacity: 4 << 20)
        let options = LazyLayerOptions(prefetch: false, backgroundFetch: false, memoryCache: cache)
        let a = try await LazyLayer.open(MemoryBlobSource(blob), options: options)
        let b = try await LazyLayer.open(MemoryBlobSource(blob), options: options)
        let wantBig = try TarContent(try fixture("kitchen-sink.tar")).files["data/big.txt"]!
        for layer in [a, b] {
            let big = try await layer.lookup(parent: try await layer.lookup(parent: 1, nameBytes: Array("data".utf8)).inode, nameBytes: Array("big.txt".utf8))
            #expect(try await layer.readBytes(node: big.inode, offset: 0, size: 1 << 20) == Array(wantBig[0..<(1 << 20)]))
        }
        #expect(cache.bytesHeld > 0 && cache.bytesHeld <= 4 << 20)
        let before = cache.bytesHeld
        await a.close()
        #expect(cache.bytesHeld < before)
        await b.close()
        #expect(cache.bytesHeld == 0)
    }

    @Test("prefetch and background fetch write upstream's per-layer latency lines (layer_sha, operation, value=… milliseconds)")
    func latencyLines() async throws {
        try await withTemporaryDirectory("latency-lines") { dir in
            let tar = try fixture("kitchen-sink.tar")
            try Data(tar).write(to: URL(fileURLWithPath: dir + "/in.tar"))
            var w = WriterOptions()
            w.prioritizedFiles = ["etc/hostname"]
            _ = try EStargzWriter.build(input: dir + "/in.tar", output: dir + "/out.esgz", options: w)
            let blob = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/out.esgz")))
            let log = LogLines()
            let layer = try await LazyLayer.open(
                MemoryBlobSource(blob, name: "reg/repo@sha256:feed"),
                options: LazyLayerOptions(diskCache: try DiskChunkCache(directory: dir + "/cache")), logger: log.logger)
            layer.startBackgroundWork()
            await layer.waitForBackgroundWork()
            let latency = log.lines.withLock { $0 }.filter { $0.metadata["metrics"] == "latency" }
            #expect(latency.map { $0.metadata["operation"] } == ["prefetch_total", "background_fetch_total"])
            for line in latency {
                #expect(line.metadata["layer_sha"] == "sha256:feed")
                #expect(line.message.hasPrefix("value=") && line.message.contains(" milliseconds"))
            }
            guard case .range(let end) = layer.reader.prefetch else {
                Issue.record("the layer has no prefetch landmark")
                return
            }
            #expect(latency.first?.message.hasSuffix("; prefetch_size=\(end) bytes") == true)
            #expect(layer.fetchStatistics.fullyLocal)
        }
    }
}

/// A blob in memory whose reads can be held until released (or their task is cancelled: the read then throws
/// CancellationError, as a registry request does); the first read held is served with one byte flipped.
final class HeldSource: BlobSource, Sendable {
    private struct State {
        var holding = false
        var held: [Int: CheckedContinuation<Void, Never>] = [:]
        var next = 0
        var corruptNext = false
    }
    private let state = Mutex(State())
    let bytes: [UInt8]
    let corruptAt: Int64?
    var size: Int64 { Int64(bytes.count) }
    var name: String { "held@sha256:feed" }

    init(_ bytes: [UInt8], corruptingAt offset: Int64? = nil) {
        self.bytes = bytes
        corruptAt = offset
    }

    func hold() {
        state.withLock { s in
            s.holding = true
            s.corruptNext = true
        }
    }

    func release() {
        let waiting = state.withLock { s in
            s.holding = false
            defer { s.held = [:] }
            return Array(s.held.values)
        }
        for c in waiting { c.resume() }
    }

    var heldReads: Int { state.withLock { $0.held.count } }

    func read(_ ranges: [Range<Int64>]) async throws -> [[UInt8]] {
        let id = state.withLock { s in
            defer { s.next += 1 }
            return s.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let go = state.withLock { s in
                    if s.holding && !Task.isCancelled {
                        s.held[id] = c
                        return false
                    }
                    return true
                }
                if go { c.resume() }
            }
        } onCancel: {
            state.withLock { $0.held.removeValue(forKey: id) }?.resume()
        }
        try Task.checkCancellation()
        let first = state.withLock { s in
            defer { s.corruptNext = false }
            return s.corruptNext
        }
        return ranges.map { r in
            var out = Array(bytes[Int(r.lowerBound)..<Int(r.upperBound)])
            if first, let at = corruptAt, r.contains(at) { out[Int(at - r.lowerBound)] ^= 0x55 }
            return out
        }
    }
}
