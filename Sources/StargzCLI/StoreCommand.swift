// SPDX-License-Identifier: Apache-2.0
public import ArgumentParser
import CLinuxSys
import Dispatch
import FUSE
import Foundation
import LazyLayer
import Logging
import OCI
import Registry
import Store
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// `stargz-store`: the Additional Layer Store daemon for CRI-O and Podman.
@available(macOS 10.15, macCatalyst 13, iOS 13, tvOS 13, watchOS 6, *)
public struct StoreCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "stargz-store",
        abstract: "Serve eStargz layers lazily as a containers/storage Additional Layer Store (FUSE).",
        discussion: """
            Usage: stargz-store [-config PATH] [-log-level LEVEL] [-root DIR] MOUNTPOINT

            Point storage.conf at it: additionallayerstores = ["MOUNTPOINT:ref"]. Runs until SIGINT or SIGTERM,
            then unmounts. With NOTIFY_SOCKET set (systemd Type=notify) it sends READY=1 once the mount answers.
            `stargz-store config default` prints the default config.toml.
            """,
        version: StargzVersion.current)

    @Option(name: [.customLong("config", withSingleDash: true), .customLong("config")], help: "Path to config.toml.")
    var config: String = "/etc/stargz-store/config.toml"

    @Option(name: [.customLong("log-level", withSingleDash: true), .customLong("log-level")], help: "Log level.")
    var logLevel: String = "info"

    @Option(name: [.customLong("root", withSingleDash: true), .customLong("root")], help: "Root directory.")
    var root: String = "/var/lib/stargz-store"

    @Argument(help: "The mount point of the store (or `config default`).")
    var arguments: [String] = []

    public init() {}

    public func validate() throws {
        guard JSONLogHandler.level(logLevel) != nil else { throw ValidationError("invalid log level \"\(logLevel)\"") }
        if arguments.isEmpty { throw ValidationError("mount point must be specified") }
        if arguments.count > 1 && arguments != ["config", "default"] { throw ValidationError("one mount point only") }
    }

    public func run() async throws {
        if arguments == ["config", "default"] {
            print(StoreConfiguration.defaultTOML, terminator: "")
            return
        }
        // A long-lived daemon on every node: few malloc arenas, and large buffers (decompressed chunks) given
        // back to the system when freed rather than kept in the heap (about 5 MB less resident after a start).
        CLinuxSys_tuneMallocForDaemon(2, 1 << 20)
        let level = JSONLogHandler.level(logLevel)!
        let logger = Logger(label: "stargz.store") { JSONLogHandler(label: $0, level: level) }
        let mountpoint = arguments[0]

        // Configuration: a missing default file means defaults; anything else must load.
        var conf = StoreConfiguration()
        if let data = FileManager.default.contents(atPath: config) {
            do {
                let (c, warnings) = try StoreConfiguration.parse(String(decoding: data, as: UTF8.self), path: config)
                conf = c
                for w in warnings { logger.warning("\(w) in \(config) is ignored") }
            } catch {
                logger.critical("failed to load config file \"\(config)\": \(error)")
                throw ExitCode(1)
            }
        } else if config != "/etc/stargz-store/config.toml" {
            logger.critical("failed to load config file \"\(config)\": it does not exist")
            throw ExitCode(1)
        }

        // Hosts: registries.conf first, then config.toml's resolver section on top.
        var hosts: [String: HostConfiguration] = [:]
        do { hosts = try RegistriesConf.load(RegistriesConf.defaultFiles()) } catch {
            logger.warning("registries.conf is ignored: \(error)")
        }
        for (k, v) in conf.hosts { hosts[k] = v }
        let client = RegistryClient(
            configuration: RegistryConfiguration(
                hosts: hosts, fetchTimeout: .seconds(conf.fetchingTimeoutSeconds), maxRetries: Int(conf.maxRetries),
                retryBaseDelay: .milliseconds(conf.minWaitMilliseconds)),
            credentials: CredentialStore(), logger: logger)

        do {
            try FileManager.default.createDirectory(atPath: root + "/chunks", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        } catch {
            logger.critical("cannot create \(root) or \(mountpoint): \(error)")
            throw ExitCode(1)
        }
        // A mount left by a crash ("transport endpoint is not connected") is cleaned up first.
        if umount2(mountpoint, Int32(MNT_DETACH)) == 0 { logger.info("cleaned up a stale mount at \(mountpoint)") }

        let layerOptions = LazyLayerOptions(
            memoryCacheBytes: Int(conf.memoryCacheMiB) << 20, diskCache: try DiskChunkCache(directory: root + "/chunks", maxBytes: conf.diskCacheMiB << 20),
            prefetch: !conf.noPrefetch, prefetchSizeWithoutLandmark: conf.prefetchSize, backgroundFetch: !conf.noBackgroundFetch,
            // One memory bound and one background schedule for the whole store, as upstream's task manager:
            // background fetching waits for 5 s of quiet after the last read and uses max_concurrency requests.
            memoryCache: MemoryChunkCache(capacity: Int(conf.memoryCacheMiB) << 20),
            scheduler: FetchScheduler(silence: .seconds(5), backgroundSlots: Int(conf.maxConcurrency)),
            readAround: 64 << 10,
            // However many reads and layers: chunk decompression holds at most this much at once.
            decompressionBudget: MemoryBudget(capacity: LazyLayerOptions.defaultDecompressionBudget))
        let manager = LayerManager(
            client: client,
            options: LayerManagerOptions(layer: layerOptions, manifestTTL: .seconds(conf.resolveResultEntryTTLSeconds)),
            logger: logger)
        let fs = StoreFileSystem(manager: manager, logger: logger)
        var metricsServer: MetricsServer? = nil
        if let address = conf.metricsAddress {
            do {
                metricsServer = try await MetricsServer.start(address: address, metrics: manager.metrics)
                logger.info("metrics served at http://\(address)/metrics")
            } catch {
                logger.critical("cannot serve metrics at \(address): \(error)")
                throw ExitCode(1)
            }
        }
        let stop = SignalWaiter([SIGINT, SIGTERM])
        let fuse = FUSESession.Options(
            readers: 8, fsName: "stargzstore", subtype: "stargzstore", cacheTimeout: .seconds(1),
            // The kernel checks the modes the store reports (root-only namespace, each layer's own modes);
            // root passes them as containers/storage needs, for the `use` and rmdir notifications too.
            cacheNegativeLookups: false, readOnly: false, defaultPermissions: true, allowSetuid: true)
        let session: FUSESession
        do {
            session = try await runBlocking { try FUSESession.mount(fs, at: mountpoint, options: fuse, logger: logger) }
        } catch {
            logger.critical("failed to mount \(mountpoint): \(error)")
            throw ExitCode(1)
        }
        // READY only once the mount answers.
        let answers = await runBlocking { () -> Bool in
            var st = stat()
            return stat(mountpoint, &st) == 0
        }
        logger.info("store mounted; content verification is on (TOC digest and every chunk)", metadata: ["mountpoint": "\(mountpoint)", "root": "\(root)"])
        let notified = SystemdNotify.send("READY=1")
        logger.debug("SdNotifyReady", metadata: ["notified": "\(notified)", "answers": "\(answers)"])

        await stop.wait()
        SystemdNotify.send("STOPPING=1")
        await manager.close()
        await runBlocking { session.unmount() }
        await metricsServer?.close()
        try? await client.shutdown()
        logger.info("Exiting")
    }
}
