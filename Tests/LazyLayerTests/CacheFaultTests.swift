// SPDX-License-Identifier: Apache-2.0
import EStargz
import FUSE
import Foundation
@testable import LazyLayer
import Logging
import OCI
import TestSupport
import Testing
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// Every regular file of the kitchen-sink fixture, read whole through `layer`, compared with the tar.
private func readAll(_ layer: LazyLayer) async throws -> (files: Int, wrong: [String]) {
    let want = try TarContent(try fixture("kitchen-sink.tar")).files
    var wrong: [String] = []
    // Whiteouts and landmarks are not files of the tree the container sees.
    for (path, bytes) in want where !(path as NSString).lastPathComponent.hasPrefix(".") {
        var node: UInt64 = 1
        for part in path.split(separator: "/") { node = try await layer.lookup(parent: node, nameBytes: Array(part.utf8)).inode }
        if try await layer.readBytes(node: node, offset: 0, size: bytes.count + 1) != bytes { wrong.append(path) }
    }
    return (want.count, wrong)
}

/// The chunk files of a cache directory.
private func chunkFiles(_ dir: String) -> [String] { DiskChunkCache.files(dir).map(\.path).sorted() }

/// Whether every chunk file holds the bytes its name says.
private func allIntact(_ dir: String) throws -> Bool {
    try chunkFiles(dir).allSatisfy { p in
        Digest.sha256(of: [UInt8](try Data(contentsOf: URL(fileURLWithPath: p)))).encoded == (p as NSString).lastPathComponent
    }
}

private func fill(_ dir: String) async throws -> Int {
    let layer = try await LazyLayer.open(
        MemoryBlobSource(try fixture("kitchen-sink.chunk64k.esgz")),
        options: LazyLayerOptions(diskCache: try DiskChunkCache(directory: dir), prefetch: false, backgroundFetch: true))
    layer.startBackgroundWork()
    await layer.waitForBackgroundWork()
    #expect(layer.fetchStatistics.fullyLocal)
    await layer.close()
    return chunkFiles(dir).count
}

@Suite("Chunk cache faults (in process, a real directory and a real tmpfs)")
struct CacheFaultTests {
    @Test("damaged while the store was down (corrupted, truncated, deleted, half-written): fetched again, never served")
    func damagedAtRest() async throws {
        try await withTemporaryDirectory("cache-rest") { dir in
            let total = try await fill(dir)
            let files = chunkFiles(dir)
            #expect(total > 20)
            // Three of each kind of damage, and what a crash leaves: a temporary file, an empty directory.
            for p in files[0..<3] {
                var b = [UInt8](try Data(contentsOf: URL(fileURLWithPath: p)))
                b[b.count / 2] ^= 0x5A
                try Data(b).write(to: URL(fileURLWithPath: p))
            }
            for p in files[3..<6] { truncate(p, off_t(max(0, (try FileManager.default.attributesOfItem(atPath: p)[.size] as? Int ?? 1) / 2))) }
            for p in files[6..<9] { unlink(p) }
            let sub = (files[0] as NSString).deletingLastPathComponent
            try Data("half".utf8).write(to: URL(fileURLWithPath: sub + "/.wip-crashed"))
            try FileManager.default.createDirectory(atPath: dir + "/sha256/zz", withIntermediateDirectories: true)

            // The store comes back: a new cache over the directory, a new layer.
            let cache = try DiskChunkCache(directory: dir)
            #expect(!FileManager.default.fileExists(atPath: sub + "/.wip-crashed"), "a crash's temporary file is removed at start")
            let layer = try await LazyLayer.open(
                MemoryBlobSource(try fixture("kitchen-sink.chunk64k.esgz")),
                options: LazyLayerOptions(memoryCacheBytes: 1 << 20, diskCache: cache, prefetch: false, backgroundFetch: false))
            let (n, wrong) = try await readAll(layer)
            #expect(n > 5 && wrong.isEmpty, "\(wrong)")
            #expect(layer.fetchStatistics.chunksFetched == 9, "exactly the nine damaged or missing chunks are fetched again")
            #expect(layer.fetchStatistics.verificationFailures == 0, "a damaged file is a miss, not a bad fetch")
            await layer.close()
            await cache.waitForWrites()  // the fetched chunks are stored in the background
            #expect(chunkFiles(dir).count == total, "the missing files are back")
            #expect(try allIntact(dir), "the damaged files are replaced by good ones")
        }
    }

    @Test("truncated or deleted while the store runs: a truncated chunk is fetched again, a deleted one still read right")
    func damagedWhileRunning() async throws {
        try await withTemporaryDirectory("cache-live") { dir in
            _ = try await fill(dir)
            // Memory too small for whole chunks: reads go to the disk by range, through kept-open files.
            let layer = try await LazyLayer.open(
                MemoryBlobSource(try fixture("kitchen-sink.chunk64k.esgz")),
                options: LazyLayerOptions(
                    memoryCacheBytes: 64 << 10, diskCache: try DiskChunkCache(directory: dir), prefetch: false, backgroundFetch: false))
            let first = try await readAll(layer)
            #expect(first.wrong.isEmpty && layer.fetchStatistics.chunksFetched == 0, "served from disk: \(first.wrong)")
            let files = chunkFiles(dir)
            for p in files[0..<4] { truncate(p, 10) }
            for p in files[4..<8] { unlink(p) }
            let again = try await readAll(layer)
            #expect(again.wrong.isEmpty, "\(again.wrong)")
            #expect(layer.fetchStatistics.chunksFetched <= 8 && layer.fetchStatistics.chunksFetched >= 4)
            await layer.close()
        }
    }

    @Test("a full disk (a 1 MiB tmpfs as the cache): every read right, one warning, chunks kept in memory")
    func diskFull() async throws {
        try await withTemporaryDirectory("cache-full") { dir in
            guard mount("tmpfs", dir, "tmpfs", 0, "size=1m") == 0 else {
                Issue.record("cannot mount a tmpfs: \(String(cString: strerror(errno)))")
                return
            }
            defer { umount2(dir, Int32(MNT_DETACH)) }
            let log = LogLines()
            let cache = try DiskChunkCache(directory: dir, logger: log.logger)
            let layer = try await LazyLayer.open(
                MemoryBlobSource(try fixture("kitchen-sink.chunk64k.esgz")),
                options: LazyLayerOptions(memoryCacheBytes: 32 << 20, diskCache: cache, prefetch: false, backgroundFetch: true))
            layer.startBackgroundWork()
            await layer.waitForBackgroundWork()
            let (_, wrong) = try await readAll(layer)
            #expect(wrong.isEmpty, "\(wrong)")
            #expect(cache.failedWrites > 0, "the disk did fill")
            let warnings = log.lines.withLock { $0.filter { $0.message.contains("cannot take chunks") } }
            #expect(warnings.count == 1, "one warning for the run of failures: \(warnings.map(\.message))")
            await layer.close()
        }
    }
}
