// SPDX-License-Identifier: Apache-2.0
// Registry benchmarks against a real docker-registry on 127.0.0.1. Prints numbers and ratios, never asserts.
//   RegistryBench ranges            range reads of 4 KiB … 4 MiB: our client vs curl on one kept-alive connection
//   RegistryBench convert TAR...    registry→registry image conversion vs converting the same tar.gz files locally
//   RegistryBench mount FILE STARGZ  a file through a lazy FUSE mount: warm read throughput vs local disk, cold read
//                                    time vs the physical limit of a throttled link, resident memory of `stargz mount`
import Compression
import Convert
import EStargz
import Dispatch
import Foundation
import LazyLayer
import OCI
import Registry
import Store
import TestSupport

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

struct SplitMix {
    var s: UInt64
    mutating func next() -> UInt64 {
        s &+= 0x9E37_79B9_7F4A_7C15
        var z = s
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func client(_ r: LocalRegistry) -> RegistryClient {
    RegistryClient(configuration: RegistryConfiguration(hosts: [r.host: HostConfiguration(insecure: true)]))
}

func ranges() async throws {
    let registry = try LocalRegistry.start()
    defer { registry.stop() }
    let c = client(registry)
    var rng = SplitMix(s: 42)
    let size = 64 << 20
    var blob = [UInt8](repeating: 0, count: size)
    blob.withUnsafeMutableBytes { p in
        let words = p.bindMemory(to: UInt64.self)
        for i in words.indices { words[i] = rng.next() }
    }
    let ref = try Reference("\(registry.host)/bench/ranges:1")
    let d = Descriptor(mediaType: MediaType.ociLayerGzip, digest: Digest.sha256(of: blob), size: Int64(size))
    try await c.pushBlob(ref, bytes: blob, descriptor: d)
    let url = "http://\(registry.host)/v2/\(ref.repository)/blobs/\(d.digest)"
    let dir = NSTemporaryDirectory() + "rangebench-\(getpid())"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    print("blob: \(size >> 20) MiB on \(registry.host); requests one after another on a kept-alive connection")
    print("size      n    ours µs/req   curl µs/req   ours MB/s  curl MB/s  ratio ours/curl (goal <= 1.2)")
    for (len, n) in [(4096, 400), (65536, 400), (1 << 20, 100), (4 << 20, 40)] {
        let offsets = (0..<n).map { _ in Int64(rng.next() % UInt64(size - len)) }
        for o in offsets.prefix(10) { _ = try await c.readRange(ref, d.digest, offset: o, length: len) }
        var best = Double.infinity
        for _ in 0..<3 {
            let t0 = now()
            for o in offsets {
                let got = try await c.readRange(ref, d.digest, offset: o, length: len)
                precondition(got.count == len && got[0] == blob[Int(o)])
            }
            best = min(best, now() - t0)
        }
        let cfg = offsets.map { o in "url = \"\(url)\"\nrange = \(o)-\(o + Int64(len) - 1)\noutput = /dev/null\n" }
            .joined(separator: "next\n")
        try cfg.write(toFile: dir + "/curl.cfg", atomically: true, encoding: .utf8)
        var curlBest = Double.infinity
        for _ in 0..<3 {
            let t0 = now()
            _ = try run("/usr/bin/curl", ["-s", "-f", "-K", dir + "/curl.cfg"])
            curlBest = min(curlBest, now() - t0)
        }
        let mb = { (t: Double) in Double(len * n) / t / 1e6 }
        print(String(
            format: "%-8@ %4d  %11.0f  %12.0f  %9.1f  %9.1f  %.2f", "\(len >> 10)K" as NSString, n, best / Double(n) * 1e6,
            curlBest / Double(n) * 1e6, mb(best), mb(curlBest), best / curlBest))
    }
    try await c.shutdown()
}

func convert(_ tars: [String]) async throws {
    let registry = try LocalRegistry.start()
    defer { registry.stop() }
    let c = client(registry)
    let dir = (ProcessInfo.processInfo.environment["BENCH_DIR"] ?? NSTemporaryDirectory()) + "/convbench-\(getpid())"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    // The plain image: each tar gzip'd (level 6, like most builders) and pushed.
    var layers: [Descriptor] = []
    var diffIDs: [String] = []
    var tgzs: [String] = []
    let src = try Reference("\(registry.host)/bench/app:plain")
    var total = 0
    for (i, t) in tars.enumerated() {
        let tar = [UInt8](try Data(contentsOf: URL(fileURLWithPath: t)))
        let gz = GzipMemberCompressor(level: 6).compress(tar)
        let path = "\(dir)/layer\(i).tar.gz"
        try Data(gz).write(to: URL(fileURLWithPath: path))
        tgzs.append(path)
        let d = Descriptor(mediaType: MediaType.ociLayerGzip, digest: Digest.sha256(of: gz), size: Int64(gz.count))
        try await c.pushBlob(src, path: path, descriptor: d)
        layers.append(d)
        diffIDs.append(Digest.sha256(of: tar).description)
        total += tar.count
        print("layer \(i): \(t), \(tar.count >> 20) MiB tar, \(gz.count >> 20) MiB gzip")
    }
    let config = Array(try JSONSerialization.data(withJSONObject: [
        "architecture": Platform.current.architecture, "os": "linux", "rootfs": ["type": "layers", "diff_ids": diffIDs],
    ]))
    let cd = Descriptor(mediaType: MediaType.ociConfig, digest: Digest.sha256(of: config), size: Int64(config.count))
    try await c.pushBlob(src, bytes: config, descriptor: cd)
    try await c.pushManifest(
        src, bytes: Array(try JSONEncoder().encode(Manifest(mediaType: MediaType.ociManifest, config: cd, layers: layers))),
        mediaType: MediaType.ociManifest)

    // Local: the same tar.gz files converted one after another, as `stargz convert` does.
    var t0 = now()
    for (i, p) in tgzs.enumerated() { _ = try EStargzWriter.build(input: p, output: "\(dir)/local\(i).esgz", options: WriterOptions()) }
    let local = now() - t0
    for i in tgzs.indices { try? FileManager.default.removeItem(atPath: "\(dir)/local\(i).esgz") }
    var results: [(Int, Double)] = []
    for parallel in [1, 2] {
        let dst = try Reference("\(registry.host)/bench/app:esgz-\(parallel)")
        t0 = now()
        _ = try await ImageConverter(client: c).convert(
            from: src, to: dst, options: ImageConvertOptions(parallelLayers: parallel, temporaryDirectory: dir))
        results.append((parallel, now() - t0))
    }
    print(String(format: "image: %d MiB of tar in %d layers", total >> 20, tars.count))
    print(String(format: "local convert of the tar.gz files: %.2f s", local))
    for (p, t) in results {
        print(String(format: "registry→registry, %d layer(s) at a time: %.2f s  ratio %.2f (goal <= 1.2)", p, t, t / local))
    }
    try await c.shutdown()
}

func dropCaches() {
    sync()
    _ = try? "3".write(toFile: "/proc/sys/vm/drop_caches", atomically: false, encoding: .utf8)
}

/// Seconds to read a whole file sequentially in 1 MiB reads.
func timeRead(_ path: String) async throws -> (Double, Int) {
    try await runBlocking {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw SupportError("cannot open \(path)") }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        var total = 0
        let t0 = now()
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { throw SupportError("read \(path) failed: errno \(errno)") }
            if n == 0 { break }
            total += n
        }
        return (now() - t0, total)
    }
}

func mountBench(_ file: String, _ stargz: String) async throws {
    let registry = try LocalRegistry.start()
    defer { registry.stop() }
    let c = client(registry)
    let dir = NSTemporaryDirectory() + "mountbench-\(getpid())"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer {
        for m in ["m1", "m2", "m3"] { forceUnmount("\(dir)/\(m)") }
        try? FileManager.default.removeItem(atPath: dir)
    }
    let content = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
    try Data(TarBuilder().file("big", content, mode: 0o755).bytes()).write(to: URL(fileURLWithPath: dir + "/layer.tar"))
    let built = try EStargzWriter.build(input: dir + "/layer.tar", output: dir + "/layer.esgz", options: WriterOptions())
    let ref = try Reference("\(registry.host)/bench/mount:1")
    let layers = try await TestImage.pushEStargz(c, ref, blobs: [[UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/layer.esgz")))])
    print("file: \(file), \(content.count >> 20) MiB, \(built.compressedSize >> 20) MiB as eStargz (4 MiB chunks)")

    // Warm: every chunk local (background fetch to the disk cache), then read with the page cache dropped.
    for (label, memory) in [("memory cache", 256 << 20), ("disk cache", 8 << 20)] {
        let m = dir + (memory > 8 << 20 ? "/m1" : "/m2")
        try FileManager.default.createDirectory(atPath: m, withIntermediateDirectories: true)
        let options = LazyLayerOptions(
            memoryCacheBytes: memory, diskCache: try DiskChunkCache(directory: dir + "/cache"), prefetch: false, backgroundFetch: true)
        let mounted = try await MountedLayer.mount(client: c, reference: ref, descriptor: layers[0], at: m, options: options)
        await mounted.layer.waitForBackgroundWork()
        _ = try await timeRead(m + "/big")
        var best = (mount: Double.infinity, local: Double.infinity)
        for _ in 0..<3 {
            dropCaches()
            best.mount = min(best.mount, try await timeRead(m + "/big").0)
            dropCaches()
            best.local = min(best.local, try await timeRead(file).0)
        }
        await mounted.unmount()
        let mb = { (t: Double) in Double(content.count) / t / 1e6 }
        print(String(
            format: "warm read (%@): mount %.0f MB/s, local disk %.0f MB/s, ratio %.2f (goal >= 0.5)", label, mb(best.mount),
            mb(best.local), best.local / best.mount))
    }

    // Cold: nothing local, through a throttled link.
    let rate = 20_000_000
    let proxy = try FaultProxy(upstream: registry.host, ["--rate", String(rate)])
    defer { proxy.stop() }
    let pc = RegistryClient(configuration: RegistryConfiguration(hosts: [proxy.host: HostConfiguration(insecure: true)]))
    let via = Reference(registry: proxy.host, repository: ref.repository, tag: ref.tag)
    var rtt = Double.infinity
    for _ in 0..<5 {
        let t0 = now()
        _ = try await pc.readRange(via, layers[0].digest, offset: 0, length: 1)
        rtt = min(rtt, now() - t0)
    }
    try FileManager.default.createDirectory(atPath: dir + "/m3", withIntermediateDirectories: true)
    let cold = try await MountedLayer.mount(
        client: pc, reference: via, descriptor: layers[0], at: dir + "/m3",
        options: LazyLayerOptions(prefetch: false, backgroundFetch: false))
    let before = try proxy.stats()["bytes"] ?? 0
    dropCaches()
    let (t, _) = try await timeRead(dir + "/m3/big")
    let bytes = (try proxy.stats()["bytes"] ?? 0) - before
    await cold.unmount()
    let limit = Double(bytes) / Double(rate) + rtt
    print(String(
        format: "cold read at %d MB/s: %.2f s for %d compressed bytes; limit (bytes/rate + RTT %.1f ms) %.2f s; ratio %.2f",
        rate / 1_000_000, t, bytes, rtt * 1000, limit, t / limit))
    try await pc.shutdown()

    // Resident memory of `stargz mount` with the fixtures mounted and every file read.
    let fixtures = Paths.fixtures.path
    let blobs = try ["kitchen-sink.esgz", "kitchen-sink.chunk64k.esgz", "app.prio.esgz", "app.zstdchunked", "empty.esgz"].map {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(fixtures)/\($0)")))
    }
    let fref = try Reference("\(registry.host)/bench/fixtures:1")
    try await TestImage.pushEStargz(c, fref, blobs: blobs)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: stargz)
    p.arguments = ["mount", "--insecure-registry", registry.host, "--cache-dir", dir + "/fcache", "--memory-cache-mib", "64", fref.description, dir + "/fx"]
    let out = Pipe()
    p.standardOutput = out
    try p.run()
    defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
    let ready = await runBlocking { () -> Bool in
        var text = ""
        while text.components(separatedBy: "mounted").count <= blobs.count {
            let d = out.fileHandleForReading.availableData
            if d.isEmpty { return false }
            text += String(decoding: d, as: UTF8.self)
        }
        return true
    }
    guard ready else { throw SupportError("stargz mount did not mount the fixtures") }
    let files = try await runBlocking { () -> Int in
        let list = try run("/usr/bin/find", [dir + "/fx", "-type", "f"]).split(separator: "\n")
        return list.filter { FileManager.default.contents(atPath: String($0)) != nil }.count
    }
    let status = (try? String(contentsOfFile: "/proc/\(p.processIdentifier)/status", encoding: .utf8)) ?? ""
    let rss = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }.map(String.init) ?? "?"
    kill(p.processIdentifier, SIGTERM)
    p.waitUntilExit()
    print("stargz mount with the 5 fixtures mounted and \(files) files read: \(rss) (goal < 30 MB + the 64 MiB memory cache bound)")
    try await c.shutdown()
}

let args = CommandLine.arguments
do {
    switch args.count > 1 ? args[1] : "" {
    case "ranges": try await ranges()
    case "convert" where args.count > 2: try await convert(Array(args[2...]))
    case "mount" where args.count == 4: try await mountBench(args[2], args[3])
    default:
        FileHandle.standardError.write(Data("usage: RegistryBench ranges | convert TAR... | mount FILE STARGZ-BINARY\n".utf8))
        exit(2)
    }
} catch {
    FileHandle.standardError.write(Data("RegistryBench: \(error)\n".utf8))
    exit(1)
}
