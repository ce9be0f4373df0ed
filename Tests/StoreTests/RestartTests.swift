// SPDX-License-Identifier: Apache-2.0
import Convert
import Dispatch
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

/// Follows a container's output (`podman logs -f`) as it comes: every line with the time it arrived, each
/// `pass N` line also dropping the page cache, so that the next pass reads through the store again.
private final class ReadLoopWatcher: Sendable {
    private let lines = Mutex<[(at: ContinuousClock.Instant, text: String)]>([])
    private let passes = Mutex(0)
    private let passed = DispatchSemaphore(value: 0)
    let process: Process

    init(_ podman: TestPodman, container: String, errors: String) throws {
        let (p, out) = try podman.spawn(["logs", "-f", container], errors: errors)
        process = p
        let t = Thread { [self] in
            var pending = ""
            while true {
                let data = out.availableData
                if data.isEmpty { return }
                pending += String(decoding: data, as: UTF8.self)
                while let nl = pending.firstIndex(of: "\n") {
                    let line = String(pending[..<nl])
                    pending = String(pending[pending.index(after: nl)...])
                    lines.withLock { $0.append((.now, line)) }
                    if line.hasPrefix("pass ") {
                        try? "3".write(toFile: "/proc/sys/vm/drop_caches", atomically: false, encoding: .utf8)
                        passes.withLock { $0 += 1 }
                        passed.signal()
                    }
                }
            }
        }
        t.start()
    }

    /// Waits for `n` more passes of the loop (false: not within the time allowed).
    func waitPasses(_ n: Int, timeout: TimeInterval = 180) -> Bool {
        for _ in 0..<n where passed.wait(timeout: .now() + timeout) == .timedOut { return false }
        return true
    }

    var lineCount: Int { lines.withLock { $0.count } }
    var failures: [String] { lines.withLock { $0.map(\.text).filter { $0.hasPrefix("FAIL") } } }

    /// The longest gap between two lines from line `from` on: the longest a read waited.
    func longestStall(from: Int) -> Duration {
        lines.withLock { l in
            guard l.count > from + 1 else { return .zero }
            return zip(l[from...], l[(from + 1)...]).map { $1.at - $0.at }.max() ?? .zero
        }
    }

    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}

private func mounted(_ path: String) -> Bool { mountEntry(path)?.type == "fuse.stargzstore" }

@Suite("Restart, crash and handover of the store under a running container (real kernel and podman; systemd's fd store played by the test)", .serialized)
struct RestartTests {
    var storeBinary: String { Paths.repoRoot.appendingPathComponent(".build/debug/stargz-store").path }

    @Test("a container reading files in a loop sees no failed read across SIGTERM + successor, SIGKILL + successor, and a handover to a store started by hand; rmi then releases every layer")
    func restartsUnderLoad() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: storeBinary), "build stargz-store first")
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let client = registryClient(registry.host)
        let plain = try Reference("\(registry.host)/restart/app:1")
        let lazy = try Reference("\(registry.host)/restart/app:1-esgz")
        var rng = SplitMix(seed: 16)
        let files = (0..<240).map { i in (String(format: "data/f%03d", i), (0..<(24 << 10)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }) }
        try await TestImage.push(client, plain, layers: [try busyboxTar(), TestImage.tar(files)], cmd: ["/bin/sh"])
        _ = try await ImageConverter(client: client).convert(from: plain, to: lazy)
        try await client.shutdown()

        try await withTemporaryDirectory("store-restart") { dir in
            let config = try writeStoreConfig(dir, plainHTTP: registry.host)
            let mountpoint = dir + "/store"
            let systemd = try FakeSystemd(directory: dir)
            let args = ["-config", config, "-log-level=debug", "--root", dir + "/root", mountpoint]
            // What the unit `stargz deploy` writes sets beside FileDescriptorStoreMax= (systemd 252 says nothing).
            let env = ["STARGZ_STORE_FDSTORE": "1"]
            var pid = try systemd.start(storeBinary, args, environment: env, log: dir + "/store-1.log", withStoredFDs: false)
            defer {
                stopProcess(pid, SIGKILL)
                forceUnmount(mountpoint)
            }
            try #require(systemd.waitReady(), "the store did not say READY=1")
            func log(_ n: Int) -> String { (try? String(contentsOfFile: "\(dir)/store-\(n).log", encoding: .utf8)) ?? "" }

            let podman = try TestPodman(additionalLayerStore: mountpoint)
            defer { podman.cleanUp() }
            try podman(["pull", "--tls-verify=false", lazy.description])
            #expect(log(1).contains("layer is marked as USING"))
            let script = "i=0; while true; do for f in /data/*; do cat \"$f\" >/dev/null || echo \"FAIL $f\"; echo \"r $f\"; done; i=$((i+1)); echo \"pass $i\"; done"
            try podman.runDetached("reader", lazy.description, ["/bin/sh", "-c", script])
            let watcher = try ReadLoopWatcher(podman, container: "reader", errors: dir + "/logs.err")
            defer { watcher.stop() }
            try #require(watcher.waitPasses(2, timeout: 60), "the container's loop did not run: \((try? String(contentsOfFile: dir + "/logs.err", encoding: .utf8)) ?? "")")

            // (1) A planned restart: SIGTERM, then the next process with the fds systemd kept.
            var mark = watcher.lineCount
            #expect(stopProcess(pid, SIGTERM) == 0)
            #expect(mounted(mountpoint), "the mount went with the process")
            #expect(systemd.storedNames.contains("fuse-0") && systemd.storedNames.contains("state"), "\(systemd.storedNames)")
            pid = try systemd.start(storeBinary, args, environment: env, log: dir + "/store-2.log", withStoredFDs: true)
            try #require(systemd.waitReady())
            #expect(log(2).contains("took over the session without unmounting"), "\(log(2))")
            #expect(watcher.waitPasses(2))
            let stallTerm = watcher.longestStall(from: mark)

            // (2) A crash: SIGKILL, then the next process (systemd's Restart=always) with the same fds; what the dead
            // one had read and not answered is resent by the kernel.
            mark = watcher.lineCount
            #expect(stopProcess(pid, SIGKILL) == 128 + SIGKILL)
            pid = try systemd.start(storeBinary, args, environment: env, log: dir + "/store-3.log", withStoredFDs: true)
            try #require(systemd.waitReady())
            #expect(log(3).contains("took over the session without unmounting"), "\(log(3))")
            #expect(watcher.waitPasses(2))
            let stallKill = watcher.longestStall(from: mark)

            // (3) Without systemd's help: a store started by hand asks the running one for its session.
            mark = watcher.lineCount
            let previous = pid
            pid = try systemd.start(storeBinary, args, environment: env, log: dir + "/store-4.log", withStoredFDs: false)
            try #require(systemd.waitReady())
            #expect(waitForExit(previous) == 0, "the predecessor did not exit by itself after the handover")
            #expect(log(4).contains("the running store"), "\(log(4))")
            #expect(watcher.waitPasses(2))
            let stallHandover = watcher.longestStall(from: mark)

            #expect(watcher.failures.isEmpty, "failed reads: \(watcher.failures.prefix(5))")
            #expect(try podman(["inspect", "-f", "{{.State.Running}}", "reader"]) == "true\n")
            print("longest read stall: SIGTERM + successor \(stallTerm), SIGKILL + successor \(stallKill), handover by hand \(stallHandover)")

            // The last store releases every layer when the image goes.
            try podman(["rm", "-f", "reader"])
            try podman(["rmi", lazy.description])
            #expect(log(4).components(separatedBy: "\"layer released\"").count - 1 == 2, "\(log(4))")
        }
    }

    @Test("a successor that cannot read the state it is handed (another version) says why, unmounts and mounts afresh: it serves, and nothing hangs")
    func incompatibleState() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: storeBinary), "build stargz-store first")
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        try await withTemporaryDirectory("store-upgrade") { dir in
            let config = try writeStoreConfig(dir, plainHTTP: registry.host)
            let mountpoint = dir + "/store"
            let systemd = try FakeSystemd(directory: dir)
            let args = ["-config", config, "-log-level=debug", "--root", dir + "/root", mountpoint]
            // The predecessor writes a state version no build reads (as a future release would).
            var pid = try systemd.start(
                storeBinary, args, environment: ["STARGZ_STORE_FDSTORE": "1", "STARGZ_STORE_STATE_VERSION": "99"],
                log: dir + "/store-1.log", withStoredFDs: false)
            defer {
                stopProcess(pid, SIGKILL)
                forceUnmount(mountpoint)
            }
            try #require(systemd.waitReady())
            #expect(stopProcess(pid, SIGTERM) == 0)
            pid = try systemd.start(storeBinary, args, environment: ["STARGZ_STORE_FDSTORE": "1"], log: dir + "/store-2.log", withStoredFDs: true)
            try #require(systemd.waitReady(), "the successor did not come up")
            let log = (try? String(contentsOfFile: dir + "/store-2.log", encoding: .utf8)) ?? ""
            #expect(log.contains("cannot take the session over") && log.contains("version 99"), "\(log)")
            // A fresh mount that answers.
            var st = stat()
            #expect(stat(mountpoint, &st) == 0 && mounted(mountpoint))
            #expect(stopProcess(pid, SIGTERM) == 0)
        }
    }

    @Test("the unit's stop step unmounts on a stop job only: a restart job, or none (an automatic restart), keeps the mount")
    func stopPost() {
        let unit = "stargz-store.service"
        #expect(StopPost.stoppingForGood(unit: unit, jobs: "1234 stargz-store.service stop running\n"))
        #expect(!StopPost.stoppingForGood(unit: unit, jobs: "1234 stargz-store.service restart running\n"))
        #expect(!StopPost.stoppingForGood(unit: unit, jobs: ""), "no job: a crash or an automatic restart")
        #expect(!StopPost.stoppingForGood(unit: unit, jobs: "99 crio.service stop running\n"), "another unit's stop")
    }
}
