// SPDX-License-Identifier: Apache-2.0
// Registry benchmarks against a real docker-registry on 127.0.0.1. Prints numbers and ratios, never asserts.
//   RegistryBench ranges            range reads of 4 KiB … 4 MiB: our client vs curl on one kept-alive connection
//   RegistryBench convert TAR...    registry→registry image conversion vs converting the same tar.gz files locally
import Compression
import Convert
import EStargz
import Foundation
import OCI
import Registry
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

let args = CommandLine.arguments
do {
    switch args.count > 1 ? args[1] : "" {
    case "ranges": try await ranges()
    case "convert" where args.count > 2: try await convert(Array(args[2...]))
    default:
        FileHandle.standardError.write(Data("usage: RegistryBench ranges | convert TAR...\n".utf8))
        exit(2)
    }
} catch {
    FileHandle.standardError.write(Data("RegistryBench: \(error)\n".utf8))
    exit(1)
}
