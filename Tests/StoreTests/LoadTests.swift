// SPDX-License-Identifier: Apache-2.0
import EStargz
import Foundation
import OCI
import Registry
import Store
import Synchronization
import TestSupport
import Testing
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// A field of /proc/PID/status in kB (`VmHWM`, `RssAnon`).
private func status(_ pid: Int32, _ field: String) -> Int {
    let text = procFile("/proc/\(pid)/status") ?? ""
    for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0
    }
    return 0
}

/// Files for image `i`: mostly small, a few of a megabyte, text-like.
private func loadCorpus(_ i: Int) -> [(String, [UInt8])] {
    var rng = SplitMix(seed: UInt64(1000 + i))
    func next() -> UInt64 { rng.next() }
    return (0..<60).map { f in
        let size = f % 20 == 0 ? 1_000_000 + Int(next() % 200_000) : 1 + Int(next() % 120_000)
        var out: [UInt8] = []
        out.reserveCapacity(size + 12)
        while out.count < size { out += Array("image \(i) file \(f) word \(next() % 1000)\n".utf8) }
        return ("data/f\(f).txt", Array(out.prefix(size)))
    }
}

private func hex(_ bytes: [UInt8]) -> String { Digest.sha256(of: bytes).encoded }

/// The `p` quantile (0…1) of `xs`, nearest rank.
func percentile(_ xs: [Double], _ p: Double) -> Double {
    let s = xs.sorted()
    return s.isEmpty ? 0 : s[min(s.count - 1, Int(Double(s.count) * p))]
}

extension MeasuredTests {
    var storeBinary: String { Paths.repoRoot.appendingPathComponent(".build/debug/stargz-store").path }

    @Test("load: one store, ten images, 50 reader processes and 3 podman runs: every byte right, nobody stuck, anonymous memory bounded; STARGZ_SOAK_S runs it that long")
    func fiftyReaders() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: storeBinary), "build stargz-store first")
        let soak = ProcessInfo.processInfo.environment["STARGZ_SOAK_S"].flatMap(Double.init)
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let client = registryClient(registry.host)
        let busybox = try estargz(try busyboxTar())
        var images: [(Reference, Descriptor, [(String, [UInt8])])] = []
        for i in 0..<10 {
            let files = loadCorpus(i)
            var tar = TarBuilder().dir("data")
            for (name, bytes) in files { tar = tar.file(name, bytes) }
            let ref = try Reference("\(registry.host)/load/app\(i):1")
            let layers = try await TestImage.pushEStargz(client, ref, blobs: [busybox, try estargz(tar.bytes())])
            images.append((ref, layers[1], files))
        }
        try await client.shutdown()

        try await withTemporaryDirectory("load") { dir in
            // The defaults a node runs with (memory_cache_mib 8, disk cache and background fetch on).
            let memoryCacheMiB = 8
            let config = try writeStoreConfig(dir, plainHTTP: registry.host, settings: "memory_cache_mib = \(memoryCacheMiB)\n")
            let store = try StoreProcess(binary: storeBinary, directory: dir, config: config)
            defer { store.stop() }
            let pid = store.process.processIdentifier
            let baseline = status(pid, "RssAnon")
            var manifest: [[Any]] = []
            for (ref, layer, files) in images {
                let diff = "\(store.mountpoint)/\(storeName(ref.description))/\(layer.digest)/diff"
                for (name, bytes) in files { manifest.append(["\(diff)/\(name)", bytes.count, hex(bytes)]) }
            }
            try JSONSerialization.data(withJSONObject: manifest).write(to: URL(fileURLWithPath: dir + "/manifest.json"))

            // Anonymous memory, sampled while the load runs.
            let peak = Atomic<Int>(0)
            let sampling = Task {
                while !Task.isCancelled {
                    let v = status(pid, "RssAnon")
                    _ = peak.max(v, ordering: .relaxed)
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
            let script = Paths.repoRoot.appendingPathComponent("scripts/testing/readload.py").path
            var readers: [(Process, String)] = []
            for r in 0..<50 {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
                p.arguments = [script, dir + "/manifest.json", "\(r)"] + (soak.map { ["--seconds", "\($0)"] } ?? ["40"])
                let out = dir + "/reader-\(r).json"
                _ = FileManager.default.createFile(atPath: out, contents: nil)
                p.standardOutput = FileHandle(forWritingAtPath: out)
                p.standardError = FileHandle(forWritingAtPath: out + ".err") ?? FileHandle.nullDevice
                try p.run()
                readers.append((p, out))
            }
            // Podman pulls and runs three of the images at the same time, through the same store. Each has storage
            // of its own: podman 4.3's containers/storage (1.43) can deadlock on its own lock files when several
            // podman processes pull into one storage at once (seen here: EDEADLK from fcntl, retried forever, the
            // store idle), which is podman's, not the store's, to fix.
            let podmen = try (0..<3).map { _ in try TestPodman(additionalLayerStore: store.mountpoint) }
            defer { for p in podmen { p.cleanUp() } }
            let runs = try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for i in 0..<3 {
                    let podman = podmen[i]
                    let (ref, _, files) = images[i]
                    let small = files.first { $0.1.count < 2000 } ?? files[1]
                    group.addTask {
                        let got = try await runBlocking { () throws in
                            _ = try podman(["pull", "--tls-verify=false", ref.description])
                            return try podman.runContainer(ref.description, ["/bin/busybox", "sha256sum", "/" + small.0])
                        }
                        let sum = got.split(separator: " ").first.map(String.init) ?? ""
                        return (i, sum == hex(small.1) ? "ok" : got)
                    }
                }
                var out: [Int: String] = [:]
                for try await (i, r) in group { out[i] = r }
                return out
            }
            #expect(runs.values.allSatisfy { $0 == "ok" }, "\(runs)")

            // Every reader ends, or the store is stuck: a deadline far past what the reads need.
            let deadline = ContinuousClock.now + .seconds((soak ?? 0) + 300)
            while readers.contains(where: { $0.0.isRunning }), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(200))
            }
            let stuck = readers.filter { $0.0.isRunning }
            for (p, _) in stuck { kill(p.processIdentifier, SIGKILL) }
            sampling.cancel()
            #expect(stuck.isEmpty, "\(stuck.count) readers did not finish: the store is stuck")

            var reads = 0, wrong = 0, failed = 0
            var latencies: [Double] = []
            var errors: [String] = []
            for (p, out) in readers where !p.isRunning {
                guard let line = try? Data(contentsOf: URL(fileURLWithPath: out)),
                    let r = try? JSONSerialization.jsonObject(with: line) as? [String: Any]
                else {
                    errors.append("reader \(out) wrote no report")
                    continue
                }
                reads += r["reads"] as? Int ?? 0
                wrong += r["wrong"] as? Int ?? 0
                failed += r["failed"] as? Int ?? 0
                latencies += r["latencies"] as? [Double] ?? []
                errors += r["errors"] as? [String] ?? []
            }
            let hwm = status(pid, "VmHWM")
            let anonPeak = peak.load(ordering: .relaxed)
            // The bound: the memory cache, plus what the daemon holds at rest after its start (baseline), plus
            // 64 MiB for chunks being decompressed and verified and the FUSE and HTTP buffers of the requests in
            // flight (measured: see the note of issue 14).
            let bound = baseline + (memoryCacheMiB << 10) + (64 << 10)
            print(
                """
                load: 50 readers, \(reads) whole-file reads (\(soak.map { "soak \($0) s" } ?? "40 each")), wrong \(wrong), failed \(failed); \
                p50 \(String(format: "%.1f", percentile(latencies, 0.5) * 1000)) ms, p99 \(String(format: "%.1f", percentile(latencies, 0.99) * 1000)) ms; \
                store RssAnon \(baseline / 1024) MiB at start, peak \(anonPeak / 1024) MiB (bound \(bound / 1024) MiB), VmHWM \(hwm / 1024) MiB; podman runs \(runs.count)
                """)
            #expect(wrong == 0 && failed == 0, "\(errors.prefix(5))")
            #expect(reads >= 50 * 40 || soak != nil)
            #expect(anonPeak <= bound, "anonymous memory \(anonPeak) kB over the bound \(bound) kB")
            #expect(store.terminate() == 0)
        }
    }
}
