// SPDX-License-Identifier: Apache-2.0
import CLinuxFUSE
import EStargz
import FUSE
import Foundation
@testable import LazyLayer
import OCI
import Registry
import Store
import Synchronization
import TestSupport
import Testing
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

@Suite("Lazy layer without a kernel")
struct LayerTreeTests {
    @Test("the tree, whiteouts and contents through the FileSystem API; chunks fetched once")
    func inProcess() async throws {
        let blob = try fixture("kitchen-sink.chunk64k.esgz")
        let layer = try await LazyLayer.open(MemoryBlobSource(blob), options: try quietOptions())
        func lookup(_ parent: UInt64, _ name: String) async throws -> FileAttributes {
            try await layer.lookup(parent: parent, nameBytes: Array(name.utf8))
        }
        let etc = try await lookup(1, "etc")
        #expect(etc.mode == 0o040755)
        let removed = try await lookup(etc.inode, "removed")
        #expect(removed.mode == 0o020000 && removed.device == (0, 0))
        await #expect(throws: FUSEError.notFound) { try await lookup(etc.inode, ".wh.removed") }
        await #expect(throws: FUSEError.notFound) { try await lookup(etc.inode, "nothing") }
        let v = try await lookup(1, "var")
        #expect(try layer.xattr(node: v.inode, name: "trusted.overlay.opaque") == [UInt8(ascii: "y")])
        #expect(try layer.entries(directory: v.inode).isEmpty)
        let data = try await lookup(1, "data")
        let big = try await lookup(data.inode, "big.txt")
        #expect(big.size == 9_000_000)
        #expect(try layer.cachedRead(node: big.inode, offset: 0, size: 10) == nil)
        let tar = try fixture("kitchen-sink.tar")
        let want = try TarContent(tar).files["data/big.txt"]!
        let got = try await layer.readBytes(node: big.inode, offset: 1_000_000, size: 300_000)
        #expect(got == Array(want[1_000_000..<1_300_000]))
        #expect(try layer.cachedRead(node: big.inode, offset: 1_000_000, size: 300_000) == got)
        let tail = try await layer.readBytes(node: big.inode, offset: 8_999_990, size: 100)
        #expect(tail == Array(want[8_999_990...]))
        let tool = try await lookup(try await lookup(1, "bin").inode, "tool-hard")
        #expect(tool.linkCount == 2)
        #expect(layer.fetchStatistics.duplicateFetches == 0)
    }

    @Test("a chunk whose bytes are wrong is fetched again, then refused with EIO; never returned")
    func corruptSource() async throws {
        let blob = try fixture("kitchen-sink.esgz")
        let reader = try EStargzReader(blob: MemoryBlob(blob))
        let id = try #require(reader.lookup("data/owned"))
        let chunk = try #require(reader.chunks(of: id).first)
        var bad = blob
        bad[Int(chunk.compressedOffset) + 12] ^= 0x55  // inside the deflate data of the chunk's member
        let layer = try await LazyLayer.open(MemoryBlobSource(bad), options: try quietOptions())
        let node = UInt64(id.rawValue) + 2
        do {
            _ = try await layer.readBytes(node: node, offset: 0, size: 14)
            Issue.record("read a corrupt chunk")
        } catch {
            #expect(FUSEError(replyingTo: error).errno == EIO)
        }
        #expect(layer.fetchStatistics.verificationFailures == 2)
    }
}

@Suite("Disk chunk cache")
struct DiskCacheTests {
    @Test("bounded: past its size the least recently used chunks go; a damaged chunk file is a miss")
    func bounded() async throws {
        try await withTemporaryDirectory("chunk-cache") { dir in
            let cache = try DiskChunkCache(directory: dir, maxBytes: 3 << 20)
            var digests: [Digest] = []
            for i in 0..<5 {
                let bytes = [UInt8](repeating: UInt8(i), count: 1 << 20)
                let d = Digest.sha256(of: bytes)
                digests.append(d)
                await cache.put(d, bytes)
                if i == 1 { #expect(cache.get(digests[0], size: 1 << 20) != nil) }  // chunk 0 used: it stays longer than 1
            }
            #expect(cache.bytesUsed <= 3 << 20)
            #expect(cache.get(digests[4], size: 1 << 20) == [UInt8](repeating: 4, count: 1 << 20))
            #expect(cache.get(digests[1], size: 1 << 20) == nil, "the least recently used chunk was kept")
            // Survives a restart: a new instance over the same directory finds (and verifies) what is there.
            let again = try DiskChunkCache(directory: dir, maxBytes: 3 << 20)
            #expect(again.get(digests[4], size: 1 << 20) != nil)
            let path = again.path(digests[3])
            if let fh = FileHandle(forWritingAtPath: path) {
                try fh.write(contentsOf: Data([9]))
                try fh.close()
                #expect(again.get(digests[3], size: 1 << 20) == nil, "a damaged chunk was returned")
            }
        }
    }
}

/// Regular files of a tar by name.
struct TarContent {
    var files: [String: [UInt8]] = [:]
    init(_ tar: [UInt8]) throws {
        let r = TarReader(MemoryStream(tar))
        while let h = try r.next() {
            if h.typeflag == UInt8(ascii: "0") { files[h.name] = try r.readPayload(limit: 1 << 30) }
        }
    }
}

@Suite("Lazy layers mounted through FUSE (real kernel, real docker-registry)", .serialized)
struct MountTests {
    @Test("every fixture mounted equals its tar extracted with tar -x; whiteouts in overlay form; nothing stays mounted")
    func fixturesEqualTar() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let client = registryClient(registry.host)
        let cases = [
            ("kitchen-sink.esgz", "kitchen-sink.tar"), ("kitchen-sink.chunk64k.esgz", "kitchen-sink.tar"),
            ("app.prio.esgz", "app.tar"), ("app.zstdchunked", "app.tar"), ("empty.esgz", "empty.tar"),
        ]
        let ref = try Reference("\(registry.host)/lazy/fixtures:1")
        let layers = try await TestImage.pushEStargz(client, ref, blobs: try cases.map { try fixture($0.0) })
        try await withTemporaryDirectory("lazy-fixtures") { dir in
            for (i, (blob, tar)) in cases.enumerated() {
                let x = "\(dir)/x\(i)"
                try FileManager.default.createDirectory(atPath: x, withIntermediateDirectories: true)
                try run("/bin/tar", [
                    "-x", "-p", "--same-owner", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-f", "\(fixtures)/\(tar)",
                    "-C", x,
                ])
                try await withMountedLayer(client, ref, layers[i], at: "\(dir)/m\(i)", options: try quietOptions(prefetch: true)) { m in
                    let problems = await treeDifferences(mount: "\(dir)/m\(i)", extracted: x)
                    #expect(problems.isEmpty, "\(blob): \(problems)")
                    #expect(m.layer.fetchStatistics.verificationFailures == 0, "\(blob)")
                }
            }
        }
        try await client.shutdown()
    }

    @Test("mounting through fusermount3 (the way for users other than root) serves the same tree", arguments: [
        FUSESession.MountMethod.helper, .syscall,
    ])
    func mountMethods(_ method: FUSESession.MountMethod) async throws {
        let layer = try await LazyLayer.open(MemoryBlobSource(try fixture("kitchen-sink.esgz")), options: try quietOptions())
        try await withTemporaryDirectory("lazy-method") { dir in
            let session = try await runBlocking {
                try FUSESession.mount(layer, at: dir, options: FUSESession.Options(method: method))
            }
            let (hostname, mounted) = await runBlocking {
                (FileManager.default.contents(atPath: dir + "/etc/hostname"), isMounted(dir))
            }
            #expect(mounted)
            #expect(hostname != nil && hostname!.count == 7)
            #expect(session.negotiatedMinor >= 9)
            await runBlocking { session.unmount() }
            #expect(!isMounted(dir))
        }
    }

    @Test("a 1-byte read of a 9 MB file fetches only the chunk that holds it")
    func oneByte() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let blob = try fixture("kitchen-sink.esgz")
        let setup = registryClient(registry.host)
        let ref = try Reference("\(registry.host)/lazy/one:1")
        let layers = try await TestImage.pushEStargz(setup, ref, blobs: [blob])
        try await setup.shutdown()
        let proxy = try FaultProxy(upstream: registry.host, [])
        defer { proxy.stop() }
        let client = registryClient(proxy.host)
        let via = Reference(registry: proxy.host, repository: ref.repository, tag: ref.tag)
        let reader = try EStargzReader(blob: MemoryBlob(blob))
        let bigID = try #require(reader.lookup("data/big.txt"))
        let chunk = try #require(reader.chunk(of: bigID, containing: 5_000_000))
        let want = try TarContent(try fixture("kitchen-sink.tar")).files["data/big.txt"]!
        try await withTemporaryDirectory("lazy-one") { dir in
            try await withMountedLayer(client, via, layers[0], at: dir + "/m", options: try quietOptions()) { m in
                let before = try proxy.stats()["bytes"] ?? -1
                let got = await blockingRead(dir + "/m/data/big.txt", offset: 5_000_000, length: 1)
                #expect(try got.get() == [want[5_000_000]])
                let sent = (try proxy.stats()["bytes"] ?? 0) - before
                #expect(Int64(sent) == chunk.compressedSize, "the registry sent \(sent) bytes; the chunk is \(chunk.compressedSize)")
                #expect(Int64(sent) * 2 < Int64(blob.count), "not the whole blob")
                #expect(m.layer.fetchStatistics.chunksFetched == 1)
            }
        }
        try await client.shutdown()
    }

    @Test("16 threads reading random ranges all get the right bytes, and no chunk is fetched twice")
    func concurrentReaders() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let client = registryClient(registry.host)
        let ref = try Reference("\(registry.host)/lazy/concurrent:1")
        let layers = try await TestImage.pushEStargz(client, ref, blobs: [try fixture("kitchen-sink.chunk64k.esgz")])
        let want = try TarContent(try fixture("kitchen-sink.tar")).files["data/big.txt"]!
        try await withTemporaryDirectory("lazy-concurrent") { dir in
            try await withMountedLayer(client, ref, layers[0], at: dir + "/m", options: try quietOptions()) { m in
                let path = dir + "/m/data/big.txt"
                let failures = await runBlocking {
                  let failures = Atomic<Int>(0)
                  DispatchQueue.concurrentPerform(iterations: 16) { t in
                    var rng = SystemRandomNumberGenerator()
                    for _ in 0..<40 {
                        let off = Int.random(in: 0..<want.count, using: &rng)
                        let len = Int.random(in: 1...200_000, using: &rng)
                        let end = min(want.count, off + len)
                        guard case .success(let got) = preadFile(path, offset: off, length: len), got == Array(want[off..<end]) else {
                            failures.add(1, ordering: .relaxed)
                            return
                        }
                    }
                  }
                  return failures.load(ordering: .relaxed)
                }
                #expect(failures == 0)
                let s = m.layer.fetchStatistics
                #expect(s.duplicateFetches == 0)
                #expect(s.chunksFetched <= 138)
                #expect(s.verificationFailures == 0)
            }
        }
        try await client.shutdown()
    }

    @Test("a chunk served corrupted yields EIO, never wrong bytes; with the proxy healed the same read works")
    func corruptedChunk() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let setup = registryClient(registry.host)
        let ref = try Reference("\(registry.host)/lazy/corrupt:1")
        let layers = try await TestImage.pushEStargz(setup, ref, blobs: [try fixture("kitchen-sink.esgz")])
        try await setup.shutdown()
        // The first blob request (footer and TOC) passes; every chunk after it comes back corrupted.
        let proxy = try FaultProxy(upstream: registry.host, ["--match", "/blobs/", "--corrupt-times", "1000", "--corrupt-skip", "1"])
        defer { proxy.stop() }
        let client = registryClient(proxy.host)
        let via = Reference(registry: proxy.host, repository: ref.repository, tag: ref.tag)
        let want = try TarContent(try fixture("kitchen-sink.tar")).files["data/big.txt"]!
        try await withTemporaryDirectory("lazy-corrupt") { dir in
            try await withMountedLayer(client, via, layers[0], at: dir + "/m", options: try quietOptions()) { m in
                // A 4 MiB chunk of text: the middle of its range is inside its own gzip member.
                let path = dir + "/m/data/big.txt"
                switch await blockingRead(path, offset: 0, length: 100) {
                case .success(let bytes): Issue.record("read \(bytes.count) bytes of a corrupt chunk")
                case .failure(let e): #expect(e.errno == EIO)
                }
                #expect(m.layer.fetchStatistics.verificationFailures >= 2)
                _ = try httpGet(proxy.host, "/__heal")
                let healed = try await blockingRead(path, offset: 0, length: 100).get()
                #expect(healed == Array(want[0..<100]))
            }
        }
        try await client.shutdown()
    }

    @Test("the mount answers while the prefetch is held up by a slow registry; then prefetched files cost no request")
    func slowPrefetch() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let setup = registryClient(registry.host)
        let ref = try Reference("\(registry.host)/lazy/slow:1")
        let layers = try await TestImage.pushEStargz(setup, ref, blobs: [try fixture("app.prio.esgz")])
        try await setup.shutdown()
        let proxy = try FaultProxy(upstream: registry.host, ["--hold-range", "bytes=0-"])
        defer {
            _ = try? httpGet(proxy.host, "/__release")
            proxy.stop()
        }
        let client = registryClient(proxy.host)
        let via = Reference(registry: proxy.host, repository: ref.repository, tag: ref.tag)
        try await withTemporaryDirectory("lazy-slow") { dir in
            try await withMountedLayer(client, via, layers[0], at: dir + "/m", options: try quietOptions(prefetch: true)) { m in
                #expect(listDirectory(dir + "/m/usr/lib/app").contains("mod000.py"))
                #expect(lstatPath(dir + "/m/usr/bin/app")?.size == 200_000)
                #expect(!m.layer.fetchStatistics.prefetchDone)
                _ = try httpGet(proxy.host, "/__release")
                await m.layer.waitForBackgroundWork()
                let s = m.layer.fetchStatistics
                #expect(s.prefetchDone && s.requests == 1)
                let app = try await blockingRead(dir + "/m/usr/bin/app", offset: 0, length: 200_000).get()
                #expect(app.count == 200_000)
                #expect(m.layer.fetchStatistics.requests == 1, "the prioritized file came from the prefetch")
            }
        }
        try await client.shutdown()
    }

    @Test("background fetch makes the layer fully local on disk; a new mount reads it with no request")
    func backgroundFetch() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let client = registryClient(registry.host)
        let ref = try Reference("\(registry.host)/lazy/bg:1")
        let layers = try await TestImage.pushEStargz(client, ref, blobs: [try fixture("kitchen-sink.chunk64k.esgz")])
        let want = try TarContent(try fixture("kitchen-sink.tar")).files["data/big.txt"]!
        try await withTemporaryDirectory("lazy-bg") { dir in
            let options = try quietOptions(cache: dir + "/cache", prefetch: true, background: true)
            try await withMountedLayer(client, ref, layers[0], at: dir + "/m", options: options) { m in
                await m.layer.waitForBackgroundWork()
                #expect(m.layer.fetchStatistics.fullyLocal)
            }
            // The cache survives: a second mount (a restart) fetches nothing.
            try await withMountedLayer(client, ref, layers[0], at: dir + "/m2", options: try quietOptions(cache: dir + "/cache")) { m in
                let all = try await blockingRead(dir + "/m2/data/big.txt", offset: 0, length: want.count).get()
                #expect(all == want)
                #expect(m.layer.fetchStatistics.requests == 0)
            }
        }
        try await client.shutdown()
    }

    @Test("overlayfs stacks two mounted layers: a whiteout hides a lower file, an opaque directory hides a lower tree")
    func overlay() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let client = registryClient(registry.host)
        try await withTemporaryDirectory("lazy-overlay") { dir in
            let tb = TarBuilder()
                .file("etc/removed", Array("gone\n".utf8))
                .file("etc/kept", Array("kept\n".utf8))
                .file("var/old", Array("old\n".utf8))
            try Data(tb.bytes()).write(to: URL(fileURLWithPath: dir + "/lower.tar"))
            _ = try EStargzWriter.build(input: dir + "/lower.tar", output: dir + "/lower.esgz", options: WriterOptions())
            let lower = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/lower.esgz")))
            let ref = try Reference("\(registry.host)/lazy/overlay:1")
            let layers = try await TestImage.pushEStargz(client, ref, blobs: [lower, try fixture("kitchen-sink.esgz")])
            try await withMountedLayer(client, ref, layers[0], at: dir + "/l0", options: try quietOptions()) { _ in
                try await withMountedLayer(client, ref, layers[1], at: dir + "/l1", options: try quietOptions()) { _ in
                    try FileManager.default.createDirectory(atPath: dir + "/merged", withIntermediateDirectories: true)
                    try run("/bin/mount", ["-t", "overlay", "overlay", "-o", "lowerdir=\(dir)/l1:\(dir)/l0", dir + "/merged"])
                    defer { _ = try? run("/bin/umount", [dir + "/merged"]) }
                    let (etc, varList, kept) = await runBlocking {
                        (listDirectory(dir + "/merged/etc"), listDirectory(dir + "/merged/var"),
                         FileManager.default.contents(atPath: dir + "/merged/etc/kept"))
                    }
                    #expect(etc.contains("kept") && etc.contains("hostname") && !etc.contains("removed"), "\(etc)")
                    #expect(!varList.contains("old"))
                    #expect(kept == Data("kept\n".utf8))
                }
            }
        }
        try await client.shutdown()
    }
}

@Suite("stargz mount (the command, as a process)")
struct MountCommandTests {
    @Test("stargz mount serves a layer until SIGTERM, then unmounts and says what it fetched")
    func mountUntilSignal() async throws {
        let stargz = Paths.repoRoot.appendingPathComponent(".build/debug/stargz").path
        try #require(FileManager.default.isExecutableFile(atPath: stargz), "build the stargz executable first")
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let client = registryClient(registry.host)
        let ref = try Reference("\(registry.host)/lazy/cli:1")
        let layers = try await TestImage.pushEStargz(client, ref, blobs: [try fixture("kitchen-sink.esgz")])
        try await client.shutdown()
        try await withTemporaryDirectory("lazy-cli") { dir in
            try FileManager.default.createDirectory(atPath: dir + "/m", withIntermediateDirectories: true)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: stargz)
            p.arguments = [
                "mount", "--insecure-registry", registry.host, "--cache-dir", dir + "/cache", "--no-background-fetch",
                ref.description, layers[0].digest.description, dir + "/m",
            ]
            let out = Pipe()
            p.standardOutput = out
            try p.run()
            defer {
                if p.isRunning { kill(p.processIdentifier, SIGKILL) }
                forceUnmount(dir + "/m")
            }
            let first = await runBlocking { () -> String in
                var text = ""
                while !text.contains("\n") {
                    let d = out.fileHandleForReading.availableData
                    if d.isEmpty { break }
                    text += String(decoding: d, as: UTF8.self)
                }
                return text
            }
            #expect(first.hasPrefix("mounted \(layers[0].digest)"), "\(first)")
            #expect(isMounted(dir + "/m"))
            let hostname = await runBlocking { FileManager.default.contents(atPath: dir + "/m/etc/hostname") }
            #expect(hostname.map { String(decoding: $0, as: UTF8.self) }?.isEmpty == false)
            kill(p.processIdentifier, SIGTERM)
            let rest = await runBlocking { () -> String in
                let d = out.fileHandleForReading.readDataToEndOfFile()
                p.waitUntilExit()
                return String(decoding: d, as: UTF8.self)
            }
            #expect(p.terminationStatus == 0)
            #expect(rest.contains("unmounted"), "\(rest)")
            #expect(!isMounted(dir + "/m"))
        }
    }
}
