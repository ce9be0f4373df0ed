// SPDX-License-Identifier: Apache-2.0
import EStargz
import FUSE
import Foundation
import LazyLayer
import Logging
import OCI
import Registry
@testable import Store
import TestSupport
import Testing
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// Whether a `fuse.stargzstore` mount is at `path`.
private func mounted(_ path: String) -> Bool { mountEntry(path)?.type == "fuse.stargzstore" }

@Suite("The store daemon, assembled (in process, real FUSE)")
struct StoreDaemonTests {
    @Test("tuning comes from config.toml under its keys; the daemon mounts, says ready, and unmounts when told to stop")
    func lifecycle() async throws {
        try await withTemporaryDirectory("daemon") { dir in
            let config = dir + "/config.toml"
            try """
                read_around_size = 0
                max_concurrency = 3
                [fuse]
                attr_timeout = 2
                entry_timeout = 5
                reader_threads = 3
                [background_fetch]
                silence_period_msec = 250
                """.write(toFile: config, atomically: true, encoding: .utf8)
            let paths = StoreDaemon.Paths(config: config, root: dir + "/root", mountPoint: dir + "/store")
            let daemon = try StoreDaemon.load(paths: paths, logger: Logger(label: "test"))
            #expect(daemon.fuseOptions.readers == 3 && daemon.fuseOptions.cacheTimeout == .seconds(2))
            #expect(!daemon.fuseOptions.readOnly && !daemon.fuseOptions.cacheNegativeLookups)
            let layer = daemon.layerOptions(diskCache: nil)
            #expect(layer.readAround == 0 && layer.scheduler?.silence == .milliseconds(250))
            defer { forceUnmount(paths.mountPoint) }

            let (ready, readyGo) = AsyncStream.makeStream(of: Void.self)
            let (stop, stopGo) = AsyncStream.makeStream(of: Void.self)
            let run = Task {
                try await daemon.run(
                    registriesConf: [], ready: { readyGo.yield() },
                    until: { for await _ in stop { return } })
            }
            for await _ in ready { break }
            #expect(mounted(paths.mountPoint), "mounted before it says ready")
            #expect(FileManager.default.fileExists(atPath: paths.chunks))
            let root = await runBlocking { () -> (Bool, UInt32) in
                var st = stat()
                return (stat(paths.mountPoint, &st) == 0, UInt32(st.st_mode) & 0o7777)
            }
            #expect(root == (true, StoreFileSystem.rootOnly))
            stopGo.yield()
            try await run.value
            #expect(!mounted(paths.mountPoint), "unmounted on stop")
        }
    }

    @Test("a bad value is a configuration error naming its key; a config file named but missing too")
    func badConfiguration() async throws {
        try await withTemporaryDirectory("daemon-config") { dir in
            let config = dir + "/config.toml"
            try "[fuse]\nreader_threads = 99\n".write(toFile: config, atomically: true, encoding: .utf8)
            let error = #expect(throws: StoreError.self) {
                _ = try StoreDaemon.load(paths: .init(config: config, mountPoint: dir + "/m"), logger: Logger(label: "test"))
            }
            #expect(error?.code == .configuration && error?.key == "fuse.reader_threads", "\(String(describing: error))")
            #expect("\(error.map { "\($0)" } ?? "")".contains("at most 16"))
            let missing = #expect(throws: StoreError.self) {
                _ = try StoreDaemon.load(paths: .init(config: dir + "/nope.toml", mountPoint: dir + "/m"), logger: Logger(label: "test"))
            }
            #expect(missing?.code == .configuration)
            // The default path may be missing: the defaults apply.
            let d = try StoreDaemon.load(paths: .init(mountPoint: dir + "/m"), logger: Logger(label: "test"))
            #expect(d.configuration == StoreConfiguration() || FileManager.default.fileExists(atPath: StoreDaemon.Paths.defaultConfig))
        }
    }

    @Test("a mount point that cannot be made is a setup error, and nothing is left mounted")
    func setupFailure() async throws {
        try await withTemporaryDirectory("daemon-setup") { dir in
            try "x".write(toFile: dir + "/file", atomically: true, encoding: .utf8)
            let daemon = StoreDaemon(
                paths: .init(config: dir + "/c.toml", root: dir + "/root", mountPoint: dir + "/file/store"),
                configuration: StoreConfiguration(), logger: Logger(label: "test"))
            let error = await #expect(throws: StoreError.self) { try await daemon.run(registriesConf: [], until: {}) }
            #expect(error?.code == .setup)
            #expect(!mounted(dir + "/file/store"))
        }
    }
}

@Suite("Why a layer is not served (real docker-registry, no kernel)")
struct RefusalTests {
    @Test("not eStargz: refused; no such layer or image: not found; no registry: failed to resolve")
    func reasons() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let client = registryClient(registry.host)
        let ref = try Reference("\(registry.host)/plain/img:1")
        _ = try await TestImage.push(client, ref, layers: [TarBuilder().file("a", Array("a\n".utf8)).bytes()])
        let plain = try #require(try await client.resolve(ref).decoded.layers.first)
        let manager = LayerManager(
            client: client, options: LayerManagerOptions(layer: try quietOptions()), logger: Logger(label: "test"))
        func reason(_ r: Reference, _ d: Digest) async -> StoreError.Code? {
            do {
                _ = try await manager.resolve(r, d)
                return nil
            } catch {
                return (error as? StoreError)?.code
            }
        }
        #expect(await reason(ref, plain.digest) == .refused)
        let other = try #require(Digest("sha256:" + String(repeating: "ab", count: 32)))
        #expect(await reason(ref, other) == .notFound)
        #expect(await reason(try Reference("\(registry.host)/nothing/here:1"), other) == .notFound)
        let nowhereClient = RegistryClient(
            configuration: RegistryConfiguration(hosts: ["127.0.0.1:1": HostConfiguration(insecure: true)], maxRetries: 0))
        let nowhere = LayerManager(
            client: nowhereClient, options: LayerManagerOptions(layer: try quietOptions()), logger: Logger(label: "test"))
        do {
            _ = try await nowhere.resolve(try Reference("127.0.0.1:1/x/y:1"), other)
            Issue.record("resolved from nowhere")
        } catch {
            #expect((error as? StoreError)?.code == .resolveFailed, "\(error)")
        }
        try await nowhereClient.shutdown()
        #expect(manager.metrics.render().contains("stargz_store_layers_refused_total 3"))
        await manager.close()
        try await client.shutdown()
    }
}
