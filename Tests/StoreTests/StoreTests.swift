// SPDX-License-Identifier: Apache-2.0
import Convert
import EStargz
import Foundation
import OCI
import Registry
import Store
import TestSupport
import Testing
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// Writes DIR/config.toml for a store that reaches `host` (the tests' registry) over plain HTTP, with `settings`
/// (top-level keys and tables, each line ending in a newline) before the mirror; returns its path.
func writeStoreConfig(_ dir: String, plainHTTP host: String, settings: String = "") throws -> String {
    let path = dir + "/config.toml"
    try (settings + "[[resolver.host.\"\(host)\".mirrors]]\nhost = \"\(host)\"\ninsecure = true\n")
        .write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

/// A `stargz-store` process: started with NOTIFY_SOCKET, ready when it sends READY=1.
final class StoreProcess {
    let process = Process()
    let mountpoint: String
    let log: String

    init(binary: String, directory: String, config: String, environment: [String: String] = [:]) throws {
        mountpoint = directory + "/store"
        log = directory + "/store.log"
        let notify = directory + "/notify.sock"
        unlink(notify)
        let fd = unixSocket(notify, datagram: true, connect: false)
        guard fd >= 0 else { throw SupportError("cannot bind \(notify)") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 120, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["-config", config, "-log-level=debug", "--root", directory + "/root", mountpoint]
        var env = ProcessInfo.processInfo.environment
        env["NOTIFY_SOCKET"] = notify
        env.merge(environment) { $1 }
        process.environment = env
        process.standardError = FileHandle(forWritingAtPath: log)
        try process.run()
        var buf = [UInt8](repeating: 0, count: 256)
        let n = recv(fd, &buf, buf.count, 0)
        guard n > 0, String(decoding: buf.prefix(n), as: UTF8.self) == "READY=1" else {
            stop()
            throw SupportError("stargz-store did not say READY=1: \(logText)")
        }
    }

    var logText: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    /// SIGTERM, then wait; the exit status.
    @discardableResult
    func terminate() -> Int32 {
        guard process.isRunning else { return process.terminationStatus }
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        return process.terminationStatus
    }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        forceUnmount(mountpoint)
    }
}

@Suite("stargz-store with real podman (Additional Layer Store)", .serialized)
struct StoreTests {
    var storeBinary: String { Paths.repoRoot.appendingPathComponent(".build/debug/stargz-store").path }

    @Test("podman pulls a converted image through the store lazily, runs it, and releases it on rmi; a plain image falls back")
    func podmanPullRun() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: storeBinary), "build stargz-store first")
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let client = registryClient(registry.host)
        let plain = try Reference("\(registry.host)/store/busybox:1")
        let lazy = try Reference("\(registry.host)/store/busybox:1-esgz")
        let extra = TestImage.tar([("etc/motd", Array("lazy layers\n".utf8))])
        try await TestImage.push(client, plain, layers: [try busyboxTar(), extra], cmd: ["/bin/cat", "/etc/os-release"])
        _ = try await ImageConverter(client: client).convert(
            from: plain, to: lazy, options: ImageConvertOptions(writer: WriterOptions(prioritizedFiles: ["bin/busybox"])))
        let layers = try await client.resolve(lazy).decoded.layers
        try await client.shutdown()

        try await withTemporaryDirectory("store-e2e") { dir in
            let metrics = "127.0.0.1:\(try freePort())"
            let config = try writeStoreConfig(dir, plainHTTP: registry.host, settings: "metrics_address = \"\(metrics)\"\n")
            func metric(_ name: String) throws -> Int {
                let text = try httpGet(metrics, "/metrics")
                let line = text.split(separator: "\n").first { $0.hasPrefix(name + " ") }
                return line.flatMap { Int($0.split(separator: " ")[1]) } ?? -1
            }
            let store = try StoreProcess(binary: storeBinary, directory: dir, config: config)
            defer { store.stop() }
            #expect(isMounted(store.mountpoint))
            let podman = try TestPodman(additionalLayerStore: store.mountpoint)
            defer { podman.cleanUp() }

            try podman(["pull", "--tls-verify=false", lazy.description])
            var log = store.logText
            for l in layers {
                #expect(log.contains("\"layer.digest\":\"\(l.digest)\"") && log.contains("layer resolved"), "layer \(l.digest) was not served lazily")
            }
            #expect(log.contains("USING"))
            #expect(try metric("stargz_store_layers_resolved_total") == layers.count)
            #expect(try metric("stargz_fs_fetched_bytes_total") > 0)
            #expect(try podman.runContainer(lazy.description) == "NAME=\"stargz-swift test\"\n")
            #expect(try podman.runContainer(lazy.description, ["/bin/cat", "/etc/motd"]) == "lazy layers\n")
            // Upstream's per-layer series, for every layer served; the container's reads among them.
            let served = Exposition(try httpGet(metrics, "/metrics"))
            for l in layers {
                #expect(served.values.keys.contains { $0.hasPrefix("stargz_fs_operation_duration_milliseconds_count{operation_type=\"mount\",layer=\"\(l.digest)\"") })
            }
            #expect(served.operation("on_demand_read_access_count") > 0)
            #expect(served["stargz_registry_requests_total"] > 0 && served["stargz_registry_failures_total"] == 0)

            // A plain image: the store says "not here" and podman pulls it normally.
            try podman(["pull", "--tls-verify=false", plain.description])
            #expect(try podman.runContainer(plain.description, ["/bin/echo", "plain"]) == "plain\n")
            #expect(store.logText.contains("is not eStargz"))

            try podman(["rmi", "--force", lazy.description])
            log = store.logText
            #expect(log.contains("RELEASE"), "no release after rmi")
            let exposition = try httpGet(metrics, "/metrics")
            #expect(try metric("stargz_store_layers_released_total") == layers.count, "\(exposition)")
            for l in layers { #expect(!exposition.contains("layer=\"\(l.digest)\""), "a released layer's series end") }
            #expect(try metric("stargz_store_layers_refused_total") >= 1)

            #expect(store.terminate() == 0)
            #expect(!isMounted(store.mountpoint))
            #expect(store.logText.contains("Exiting"))
        }
    }

    @Test("a layer whose TOC digest annotation lies is refused and pulled normally; a store restart between pull and run is survived")
    func tamperedAndRestart() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: storeBinary), "build stargz-store first")
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let client = registryClient(registry.host)
        let plain = try Reference("\(registry.host)/store/app:1")
        let good = try Reference("\(registry.host)/store/app:1-esgz")
        let bad = try Reference("\(registry.host)/store/app:1-tampered")
        try await TestImage.push(client, plain, layers: [try busyboxTar()], cmd: ["/bin/cat", "/etc/os-release"])
        _ = try await ImageConverter(client: client).convert(from: plain, to: good)
        // The same layers under a manifest whose TOC digest annotation names another TOC.
        var m = try await client.fetchManifest(good).manifest()
        m.layers[0].annotations?[AnnotationKey.tocDigest] = Digest.sha256(of: Array("not this TOC".utf8)).description
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        try await client.pushManifest(bad, bytes: Array(try e.encode(m)), mediaType: MediaType.ociManifest)
        try await client.shutdown()

        try await withTemporaryDirectory("store-tamper") { dir in
            let config = try writeStoreConfig(dir, plainHTTP: registry.host)
            var store = try StoreProcess(binary: storeBinary, directory: dir, config: config)
            defer { store.stop() }
            let podman = try TestPodman(additionalLayerStore: store.mountpoint)
            defer { podman.cleanUp() }

            try podman(["pull", "--tls-verify=false", bad.description])
            #expect(store.logText.contains("TOC") && store.logText.contains("remote-snapshot-prepared\":\"false"), "the tampered layer was not refused")
            #expect(!store.logText.contains("layer resolved"), "a tampered layer was served")
            #expect(try podman.runContainer(bad.description) == "NAME=\"stargz-swift test\"\n")

            // A fresh podman storage: the one above already holds the layer (pulled normally) and would reuse it.
            let fresh = try TestPodman(additionalLayerStore: store.mountpoint)
            defer { fresh.cleanUp() }
            try fresh(["pull", "--tls-verify=false", good.description])
            #expect(store.logText.contains("layer resolved"))
            // Restart the store: the pulled image's layers are looked up again in the new process.
            #expect(store.terminate() == 0)
            store = try StoreProcess(binary: storeBinary, directory: dir, config: config)
            #expect(try fresh.runContainer(good.description, ["/bin/echo", "after restart"]) == "after restart\n")
            #expect(store.logText.contains("layer resolved"))
        }
    }

    @Test("a private registry (htpasswd): the store reads the credentials from auth.json and serves the layers lazily")
    func privateRegistry() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: storeBinary), "build stargz-store first")
        let registry = try LocalRegistry.start(basicAuth: ("alice", "s3cret"))
        defer { registry.stop() }
        let client = RegistryClient(
            configuration: RegistryConfiguration(hosts: [registry.host: HostConfiguration(insecure: true)]),
            credentials: CredentialStore(files: [], explicit: [registry.host: Credential(username: "alice", password: "s3cret")]))
        let plain = try Reference("\(registry.host)/private/app:1")
        let lazy = try Reference("\(registry.host)/private/app:1-esgz")
        try await TestImage.push(client, plain, layers: [try busyboxTar()], cmd: ["/bin/cat", "/etc/os-release"])
        _ = try await ImageConverter(client: client).convert(from: plain, to: lazy)
        try await client.shutdown()
        try await withTemporaryDirectory("store-private") { dir in
            let auth = dir + "/auth.json"
            try "{\"auths\":{\"\(registry.host)\":{\"auth\":\"\(Data("alice:s3cret".utf8).base64EncodedString())\"}}}"
                .write(toFile: auth, atomically: true, encoding: .utf8)
            let config = try writeStoreConfig(dir, plainHTTP: registry.host)
            let store = try StoreProcess(binary: storeBinary, directory: dir, config: config, environment: ["REGISTRY_AUTH_FILE": auth])
            defer { store.stop() }
            let podman = try TestPodman(additionalLayerStore: store.mountpoint)
            defer { podman.cleanUp() }
            try podman(["pull", "--tls-verify=false", "--authfile", auth, lazy.description])
            #expect(store.logText.contains("layer resolved"), "\(store.logText)")
            #expect(try podman.runContainer(lazy.description, ["/bin/echo", "private"]) == "private\n")
        }
    }

    @Test("fail open: with the store down and its mount point an empty directory (as the unit leaves it), podman pulls and runs eStargz and plain images normally")
    func storeDown() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let client = registryClient(registry.host)
        let plain = try Reference("\(registry.host)/down/busybox:1")
        let lazy = try Reference("\(registry.host)/down/busybox:1-esgz")
        try await TestImage.push(client, plain, layers: [try busyboxTar()], cmd: ["/bin/cat", "/etc/os-release"])
        _ = try await ImageConverter(client: client).convert(from: plain, to: lazy)
        try await client.shutdown()
        try await withTemporaryDirectory("store-down") { dir in
            // What `ExecStartPre=-/usr/bin/mkdir -p MOUNTPOINT` leaves when the download or the store then fails.
            let mountpoint = dir + "/store"
            try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
            #expect(!isMounted(mountpoint))
            let podman = try TestPodman(additionalLayerStore: mountpoint)
            defer { podman.cleanUp() }
            for ref in [lazy, plain] {
                try podman(["pull", "--tls-verify=false", ref.description])
                #expect(try podman.runContainer(ref.description) == "NAME=\"stargz-swift test\"\n", "\(ref)")
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: mountpoint).isEmpty, "podman wrote into the store")
            // Why the unit makes the directory first: without it the container engine does not start at all.
            let missing = try TestPodman(additionalLayerStore: dir + "/never-made")
            defer { missing.cleanUp() }
            #expect(throws: (any Error).self) { try missing(["pull", "--tls-verify=false", plain.description]) }
        }
    }

    @Test("a mount left by a killed store is cleaned up by the next start, which then serves")
    func staleMount() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: storeBinary), "build stargz-store first")
        try await withTemporaryDirectory("store-stale") { dir in
            let config = dir + "/config.toml"
            try "noprefetch = true\n".write(toFile: config, atomically: true, encoding: .utf8)
            let first = try StoreProcess(binary: storeBinary, directory: dir, config: config)
            kill(first.process.processIdentifier, SIGKILL)
            first.process.waitUntilExit()
            #expect(isMounted(first.mountpoint), "the killed store's mount should be left behind")
            let second = try StoreProcess(binary: storeBinary, directory: dir, config: config)
            defer { second.stop() }
            #expect(second.logText.contains("cleaned up a stale mount"))
            // The new mount answers: a name that is not a base64 reference is refused, not hung.
            let mp = second.mountpoint
            let errno = await runBlocking { () -> Int32 in
                var st = stat()
                return stat(mp + "/not-base64!/sha256:00", &st) == 0 ? 0 : Glibc.errno
            }
            #expect(errno == EINVAL)
            #expect(second.terminate() == 0)
            #expect(!isMounted(mp))
        }
    }
}
