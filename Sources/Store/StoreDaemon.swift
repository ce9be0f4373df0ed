// SPDX-License-Identifier: Apache-2.0
public import FUSE
import Foundation
public import LazyLayer
public import Logging
public import Registry
public import ServiceLifecycle
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// The `stargz-store` daemon, assembled in one place from its configuration: the registry client (hosts from
/// registries.conf, then config.toml's resolver), the caches and the shared fetch schedule, the layer manager,
/// the FUSE namespace and its mount, the metrics listener; run until told to stop, then taken down in order.
/// `stargz-store` only parses its flags and runs this as a service of a `ServiceGroup`, which turns SIGTERM and
/// SIGINT into a graceful shutdown.
public struct StoreDaemon: Service, Sendable {
    /// Where the daemon reads and writes.
    public struct Paths: Sendable, Equatable {
        /// The configuration file (`-config`).
        public var config: String
        /// The state directory (`-root`): the chunk cache lives in `chunks/` under it.
        public var root: String
        /// The mount point of the store (the `additionallayerstores` path).
        public var mountPoint: String
        /// The control socket `stargz-store-helper` hands credentials to (`-addr`; default `<root>/store.sock`).
        public var socket: String

        /// Upstream's paths (`Deploy.StoreLayout` writes the same ones into the units and storage.conf).
        public static let defaultConfig = "/etc/stargz-store/config.toml"
        public static let defaultRoot = "/var/lib/stargz-store"

        /// Creates paths.
        public init(config: String = Paths.defaultConfig, root: String = Paths.defaultRoot, mountPoint: String, socket: String? = nil) {
            self.config = config
            self.root = root
            self.mountPoint = mountPoint
            self.socket = socket ?? root + "/store.sock"
        }

        /// The chunk cache.
        public var chunks: String { root + "/chunks" }
        /// Each served layer's footer and TOC, for a successor process.
        public var layers: String { root + "/layers" }
        /// Where a successor started by hand asks for the session.
        public var handover: String { root + "/handover.sock" }
        /// The socket under the default root, where `stargz-store-helper` looks.
        public static let defaultSocket = defaultRoot + "/store.sock"
    }

    /// The paths.
    public let paths: Paths
    /// The configuration in force.
    public let configuration: StoreConfiguration
    let logger: Logger
    /// This build (`--version`), in the handover state for a successor's log.
    public var version = "unknown"

    /// A daemon over a configuration already read.
    public init(paths: Paths, configuration: StoreConfiguration, logger: Logger) {
        self.paths = paths
        self.configuration = configuration
        self.logger = logger
    }

    /// Reads the configuration file: a missing file at the default path means the defaults, a missing file
    /// named explicitly is an error, and so is every bad value (naming the key). Unknown keys are logged.
    public static func load(paths: Paths, logger: Logger) throws(StoreError) -> StoreDaemon {
        var conf = StoreConfiguration()
        if let data = FileManager.default.contents(atPath: paths.config) {
            let (c, warnings) = try StoreConfiguration.parse(String(decoding: data, as: UTF8.self), path: paths.config)
            conf = c
            for w in warnings { logger.warning("\(w) in \(paths.config) is ignored") }
        } else if paths.config != Paths.defaultConfig {
            throw StoreError(.configuration, "\(paths.config) does not exist")
        }
        return StoreDaemon(paths: paths, configuration: conf, logger: logger)
    }

    // MARK: The parts, from the configuration

    /// The registry client's settings over `hosts` (registries.conf's, which config.toml's resolver overrides).
    public func registryConfiguration(registriesConf: RegistriesConf.Settings = RegistriesConf.Settings()) -> RegistryConfiguration {
        var hosts = registriesConf.hosts
        for (k, v) in configuration.hosts { hosts[k] = v }
        var c = RegistryConfiguration(
            hosts: hosts, fetchTimeout: .seconds(configuration.fetchingTimeoutSeconds), maxRetries: Int(configuration.maxRetries),
            retryBaseDelay: .milliseconds(configuration.minWaitMilliseconds))
        c.rules = registriesConf.rules
        return c
    }

    /// What every layer gets: one memory bound, one decompression budget and one background schedule for the
    /// whole store (as upstream's task manager: background fetching waits for the silence period after the last
    /// read and uses `max_concurrency` requests).
    public func layerOptions(diskCache: DiskChunkCache?) -> LazyLayerOptions {
        let c = configuration
        return LazyLayerOptions(
            memoryCacheBytes: Int(c.memoryCacheMiB) << 20, diskCache: diskCache, prefetch: !c.noPrefetch,
            prefetchSizeWithoutLandmark: c.prefetchSize, backgroundFetch: !c.noBackgroundFetch,
            memoryCache: MemoryChunkCache(capacity: Int(c.memoryCacheMiB) << 20),
            scheduler: FetchScheduler(silence: .milliseconds(c.silencePeriodMilliseconds), backgroundSlots: Int(c.maxConcurrency)),
            readAround: c.readAroundSize,
            decompressionBudget: MemoryBudget(capacity: LazyLayerOptions.defaultDecompressionBudget))
    }

    /// How the namespace is mounted. The kernel checks the modes the store reports (a root-only namespace,
    /// each layer's own modes); root passes them as containers/storage needs, for the `use` and `rmdir`
    /// notifications too (hence read-write, every other write EROFS). Negative lookups are not cached: a layer
    /// that is not there now may be resolvable in a moment.
    public var fuseOptions: FUSESession.Options {
        FUSESession.Options(
            readers: Int(configuration.fuseReaderThreads), fsName: "stargzstore", subtype: "stargzstore",
            cacheTimeout: .seconds(min(configuration.fuseAttrTimeoutSeconds, configuration.fuseEntryTimeoutSeconds)),
            cacheNegativeLookups: false, readOnly: false, defaultPermissions: true, allowSetuid: true)
    }

    // MARK: Running

    /// Runs until the service group's graceful shutdown (SIGTERM, SIGINT), then takes the daemon down in order.
    public func run() async throws {
        try await run(until: { try? await gracefulShutdown() })
    }

    /// The credentials handed over by `stargz-store-helper`, in `[credentials] dir` (what a previous run was given
    /// is read back).
    public func givenCredentials() -> GivenCredentials {
        let given = GivenCredentials(
            file: configuration.credentialsDirectory + "/credentials.json", ttl: .seconds(configuration.credentialsTTLSeconds))
        if let p = given.problem { logger.warning("credentials of a previous run are not used: \(p)") }
        return given
    }

    /// The credential files: Podman's, Docker's, then the node's pull secret (CRI-O's `global_auth_file` under
    /// `[credentials] crio_config_dir`, and the kubelet's).
    public func credentialFiles(environment: [String: String]? = nil) -> [String] {
        CredentialStore.defaultFiles(
            environment: environment,
            crio: CredentialStore.crioConfigFiles(directory: configuration.crioConfigDirectory))
    }

    /// Sets up, mounts, says READY (systemd's `NOTIFY_SOCKET`, and `ready`), serves until `stop` returns, then
    /// unmounts, stops every layer's work and closes the listeners. `credentials` (default: ``credentialFiles(environment:)``)
    /// gets the helper's credentials (``givenCredentials()``), looked up first.
    public func run(
        registriesConf: [String] = RegistriesConf.defaultFiles(), credentials: CredentialStore? = nil,
        ready: @Sendable () -> Void = {}, until stop: @escaping @Sendable () async -> Void
    ) async throws(StoreError) {
        var settings = RegistriesConf.Settings()
        do { settings = try RegistriesConf.load(registriesConf) } catch { logger.warning("registries.conf is ignored: \(error)") }
        let metrics = StoreMetrics()
        var store = credentials ?? CredentialStore(files: credentialFiles())
        let given = givenCredentials()
        store.given = given
        let client = RegistryClient(
            configuration: registryConfiguration(registriesConf: settings), credentials: store, logger: logger,
            metrics: metrics.registryMetrics)
        // Authorizations made with dropped or replaced credentials are forgotten with them.
        given.onChange { [client] registry, repository in
            Task { await client.forgetAuthorizations(host: registry, repository: repository) }
        }
        do {
            try await serve(client, metrics, given, ready: ready, until: stop)
        } catch {
            try? await client.shutdown()
            throw error
        }
        try? await client.shutdown()
        logger.info("Exiting")
    }

    private func serve(
        _ client: RegistryClient, _ storeMetrics: StoreMetrics, _ given: GivenCredentials, ready: @Sendable () -> Void,
        until stop: @escaping @Sendable () async -> Void
    ) async throws(StoreError) {
        let mountPoint = paths.mountPoint
        // A session systemd kept: nothing serves the mount until it is adopted, so nothing here may touch it.
        let inherited = SystemdFDStore.inherited()
        let disk: DiskChunkCache
        do {
            try FileManager.default.createDirectory(atPath: paths.chunks, withIntermediateDirectories: true)
            if inherited.isEmpty { try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true) }
            disk = try DiskChunkCache(directory: paths.chunks, maxBytes: configuration.diskCacheMiB << 20)
        } catch {
            throw StoreError(.setup, "cannot create \(paths.root) or \(mountPoint)", cause: error)
        }
        let manager = LayerManager(
            client: client,
            options: LayerManagerOptions(
                layer: layerOptions(diskCache: disk), manifestTTL: .seconds(configuration.resolveResultEntryTTLSeconds),
                tailDirectory: paths.layers),
            logger: logger, metrics: storeMetrics)
        let fs = StoreFileSystem(manager: manager, logger: logger)
        var metrics: MetricsServer? = nil
        if let address = configuration.metricsAddress {
            do {
                metrics = try await MetricsServer.start(address: address, metrics: manager.metrics)
                logger.info("metrics served at http://\(address)/metrics")
            } catch {
                throw StoreError(.setup, "cannot serve metrics at \(address)", key: "metrics_address", cause: error)
            }
        }
        let control: ControlServer
        do {
            control = try await ControlServer.start(path: paths.socket, credentials: given, logger: logger)
        } catch {
            await metrics?.close()
            throw StoreError(.setup, "cannot serve the control socket \(paths.socket)", cause: error)
        }
        // Credentials that no layer holds expire (a pull that never used them).
        let sweeper = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(60))
                given.sweep()
            }
        }
        defer { sweeper.cancel() }

        // The session: handed over (by systemd's fd store, or by a running predecessor), or mounted afresh.
        let journal: StateJournal? = Self.fdStoreEnabled() ? StateJournal(inherited: inherited["state"]?.first) : nil
        var session: FUSESession
        do {
            session = try await open(fs, manager, inherited: inherited, journal: journal)
        } catch {
            await control.close()
            await metrics?.close()
            throw error
        }
        // Kept by systemd while the unit restarts: every /dev/fuse fd and the journal, which follows each change.
        var stored = false
        if let journal {
            let state = { @Sendable [version] (p: SessionParameters) -> [UInt8] in
                Self.state(p, fs, manager, writer: version).encoded()
            }
            let parameters = session.parameters
            journal.write(state(parameters))
            fs.onChange { journal.write(state(parameters)) }
            manager.onChange { journal.write(state(parameters)) }
            stored = session.fileDescriptors.enumerated().allSatisfy { SystemdFDStore.store($1, name: "fuse-\($0)") }
                && SystemdFDStore.store(journal.fd, name: "state")
            logger.info("the session is kept in systemd's fd store across restarts", metadata: ["stored": "\(stored)"])
        }
        // What the kernel agreed, for `stargz doctor` (FUSE_HAS_RESEND comes from INIT, not the kernel's version).
        let p = session.parameters
        try? "{\"minor\":\(p.minor),\"resend\":\(p.kernelCanResend),\"fdstore\":\(stored)}\n"
            .write(toFile: paths.root + "/fuse-session.json", atomically: true, encoding: .utf8)
        let listener: HandoverListener?
        do { listener = try HandoverListener(path: paths.handover) } catch {
            logger.warning("no handover socket: a successor started by hand mounts afresh", metadata: ["error": "\(error)"])
            listener = nil
        }
        // READY only once the mount answers.
        let answers = await runBlocking { () -> Bool in
            var st = stat()
            return stat(mountPoint, &st) == 0
        }
        logger.info(
            "store mounted; content verification is on (TOC digest and every chunk)",
            metadata: [
                "mountpoint": "\(mountPoint)", "root": "\(paths.root)", "control": "\(paths.socket)",
                "credentials.held": "\(given.scopes.count)",
            ])
        let notified = SystemdNotify.send("READY=1")
        logger.debug("SdNotifyReady", metadata: ["notified": "\(notified)", "answers": "\(answers)"])
        ready()

        // Until told to stop, or a successor asks for the session.
        while true {
            guard let listener else {
                await stop()
                break
            }
            guard let connection = await Self.firstOf(stop, { await listener.successor() }) else { break }
            logger.info("a successor asks for the session; handing it over")
            let serving = session
            let (fds, parameters) = await runBlocking { serving.suspend() }
            let state = Self.state(parameters, fs, manager, writer: version)
            journal?.write(state.encoded())
            if await runBlocking({ HandoverListener.give(connection, state: state.encoded(), fds: fds) }) {
                logger.info("the successor serves the session; exiting without unmounting", metadata: ["layers": "\(state.layers.count)"])
                listener.close()
                await control.close()
                await manager.close()
                await metrics?.close()
                return
            }
            logger.warning("the successor did not take the session; serving it again")
            do {
                let options = fuseOptions, logger = logger
                session = try await runBlocking {
                    try FUSESession.adopt(fs, at: mountPoint, fds: fds, parameters: parameters, options: options, logger: logger)
                }
            } catch {
                throw StoreError(.setup, "cannot serve the session again after a failed handover", cause: error)
            }
        }
        listener?.close()
        SystemdNotify.send("STOPPING=1")
        if stored, let journal {
            // A restart (or a stop: the unit's ExecStopPost unmounts then): the session stays in systemd's fd store
            // for the next process; the requests in flight are answered first, those that come wait in the kernel.
            let serving = session
            let (_, parameters) = await runBlocking { serving.suspend() }
            journal.write(Self.state(parameters, fs, manager, writer: version).encoded())
            logger.info("stopped reading; the session is left to the next process (the mount stays)")
        } else {
            // Unmount first, so that no read comes to a closing layer; then stop every layer's work.
            let serving = session
            await runBlocking { serving.unmount() }
        }
        await control.close()
        await manager.close()
        await metrics?.close()
    }

    /// The session to serve: one handed over by systemd (`fuse-N` and `state` in `inherited`) or by a predecessor
    /// on the handover socket, adopted with its namespace and layers; else (or when it cannot be taken: the log
    /// says why) a fresh mount, after a clean unmount of whatever is mounted there.
    private func open(
        _ fs: StoreFileSystem, _ manager: LayerManager, inherited: [String: [Int32]], journal: StateJournal?
    ) async throws(StoreError) -> FUSESession {
        let mountPoint = paths.mountPoint
        var handed: (fds: [Int32], state: [UInt8]?, from: String)? = nil
        let fuse = inherited.keys.filter { $0.hasPrefix("fuse-") }.sorted { (Int($0.dropFirst(5)) ?? 0) < (Int($1.dropFirst(5)) ?? 0) }
        if !fuse.isEmpty {
            handed = (fuse.flatMap { inherited[$0] ?? [] }, journal?.read(), "systemd's fd store")
        } else {
            do {
                if let taken = try HandoverChannel.take(from: paths.handover) {
                    // Taken: the predecessor stops now, whether or not this process can adopt the session.
                    HandoverChannel.accept(taken.connection, true)
                    handed = (taken.fds, taken.state, "the running store")
                }
            } catch {
                logger.warning("no session from a running store", metadata: ["error": "\(error)"])
            }
        }
        if let handed {
            do {
                guard let bytes = handed.state else { throw StoreError(.handover, "no state came with the session") }
                let state = try HandoverState.decode(bytes)
                try fs.restore(state.namespace)
                let failed = await manager.restore(state.layers, nextID: state.nextLayerID)
                for (key, e) in failed {
                    logger.error("a layer of the session could not be opened again; its reads fail", metadata: ["layer": "\(key)", "error": "\(e)"])
                }
                let options = fuseOptions, logger = logger, fds = handed.fds
                let session = try await runBlocking {
                    try FUSESession.adopt(fs, at: mountPoint, fds: fds, parameters: state.session, options: options, logger: logger)
                }
                logger.info(
                    "took over the session without unmounting",
                    metadata: [
                        "from": "\(handed.from)", "writer": "\(state.writer)", "layers": "\(state.layers.count)",
                        "resend": "\(state.session.kernelCanResend)",
                    ])
                return session
            } catch {
                logger.error(
                    "cannot take the session over; unmounting it and mounting afresh (reads in flight fail)",
                    metadata: ["from": "\(handed.from)", "error": "\(error)"])
                umount2(mountPoint, Int32(MNT_DETACH))
                for f in handed.fds { close(f) }
                for name in fuse { SystemdFDStore.remove(name: name) }
            }
        } else if umount2(mountPoint, Int32(MNT_DETACH)) == 0 {
            // A mount left by a crash ("transport endpoint is not connected") is cleaned up first.
            logger.info("cleaned up a stale mount at \(mountPoint)")
        }
        do {
            let options = fuseOptions, logger = logger
            return try await runBlocking { try FUSESession.mount(fs, at: mountPoint, options: options, logger: logger) }
        } catch {
            throw StoreError(.setup, "failed to mount \(mountPoint)", cause: error)
        }
    }

    /// Whether systemd keeps fds for this service: `$FDSTORE` (systemd 254+: `FileDescriptorStoreMax=`), or
    /// `$STARGZ_STORE_FDSTORE` (the unit `stargz deploy` writes sets it beside `FileDescriptorStoreMax=`, for
    /// systemd 252 on RHEL 9, which says nothing), and `$NOTIFY_SOCKET`. Without it, fds sent are dropped by
    /// systemd, so the store never relies on them: it unmounts when it stops.
    static func fdStoreEnabled(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        guard let n = environment["NOTIFY_SOCKET"], !n.isEmpty else { return false }
        return (environment["FDSTORE"].flatMap(Int.init) ?? 0) > 0 || (environment["STARGZ_STORE_FDSTORE"].flatMap(Int.init) ?? 0) > 0
    }

    /// The state a successor needs (``HandoverState``). `STARGZ_STORE_STATE_VERSION` writes another version (for
    /// tests of a successor that cannot read it).
    static func state(_ session: SessionParameters, _ fs: StoreFileSystem, _ manager: LayerManager, writer: String) -> HandoverState {
        let (layers, next) = manager.snapshot()
        let version = ProcessInfo.processInfo.environment["STARGZ_STORE_STATE_VERSION"].flatMap(Int.init) ?? HandoverState.currentVersion
        return HandoverState(version: version, writer: writer, session: session, namespace: fs.snapshot(), layers: layers, nextLayerID: next)
    }

    /// Waits for `stop` or `successor`, whichever comes first: the successor's connection, or nil for stop.
    static func firstOf(_ stop: @escaping @Sendable () async -> Void, _ successor: @escaping @Sendable () async -> Int32?) async -> Int32? {
        await withTaskGroup(of: Int32?.self) { group in
            group.addTask { await successor() }
            group.addTask {
                await stop()
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }
}
