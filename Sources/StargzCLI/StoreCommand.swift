// SPDX-License-Identifier: Apache-2.0
public import ArgumentParser
import CLinuxSys
import Deploy
import Foundation
import Logging
import ServiceLifecycle
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
            Usage: stargz-store [-config PATH] [-log-level LEVEL] [-root DIR] [-addr SOCKET] MOUNTPOINT
                   stargz-store stop-post UNIT MOUNTPOINT   (the unit's ExecStopPost: unmounts on a stop, not a restart)

            Point storage.conf at it: additionallayerstores = ["MOUNTPOINT:ref"]. Runs until SIGINT or SIGTERM,
            then unmounts. With NOTIFY_SOCKET set (systemd Type=notify) it sends READY=1 once the mount answers.
            `stargz-store config default` prints the default config.toml.
            """,
        version: StargzVersion.current)

    @Option(name: [.customLong("config", withSingleDash: true), .customLong("config")], help: "Path to config.toml.")
    var config: String = StoreDaemon.Paths.defaultConfig

    @Option(name: [.customLong("log-level", withSingleDash: true), .customLong("log-level")], help: "Log level.")
    var logLevel: String = "info"

    @Option(name: [.customLong("root", withSingleDash: true), .customLong("root")], help: "Root directory.")
    var root: String = StoreDaemon.Paths.defaultRoot

    @Option(
        name: [.customLong("addr", withSingleDash: true), .customLong("addr")],
        help: "The control socket stargz-store-helper hands credentials to (default: ROOT/store.sock).")
    var addr: String?

    @Argument(help: "The mount point of the store (or `config default`).")
    var arguments: [String] = []

    public init() {}

    public func validate() throws {
        guard JSONLogHandler.level(logLevel) != nil else { throw ValidationError("invalid log level \"\(logLevel)\"") }
        if arguments.isEmpty { throw ValidationError("mount point must be specified") }
        if arguments.count > 1 && arguments != ["config", "default"] && !(arguments.count == 3 && arguments[0] == "stop-post") {
            throw ValidationError("one mount point only")
        }
    }

    public func run() async throws {
        if arguments == ["config", "default"] {
            print(StoreConfiguration.defaultTOML, terminator: "")
            return
        }
        if arguments.count == 3 && arguments[0] == "stop-post" {
            // The unit's ExecStopPost: unmount only when the unit stops for good (StopPost).
            let (unit, mountPoint) = (arguments[1], arguments[2])
            let jobs = ProcessRunner().run(["systemctl", "list-jobs", "--no-legend", "--plain", unit]).output
            if StopPost.stoppingForGood(unit: unit, jobs: jobs) {
                if umount2(mountPoint, Int32(MNT_DETACH)) == 0 { print("stargz-store: \(unit) stops: unmounted \(mountPoint)") }
            } else {
                print("stargz-store: \(unit) restarts (no stop job): \(mountPoint) stays for the next process")
            }
            return
        }
        // A long-lived daemon on every node: few malloc arenas, and large buffers (decompressed chunks) given
        // back to the system when freed rather than kept in the heap (about 5 MB less resident after a start).
        CLinuxSys_tuneMallocForDaemon(2, 1 << 20)
        let level = JSONLogHandler.level(logLevel)!
        let logger = Logger(label: "stargz.store") { JSONLogHandler(label: $0, level: level) }
        let paths = StoreDaemon.Paths(config: config, root: root, mountPoint: arguments[0], socket: addr)
        var daemon: StoreDaemon
        do { daemon = try StoreDaemon.load(paths: paths, logger: logger) } catch {
            logger.critical("\(error.code): \(error)", metadata: error.key.map { ["key": "\($0)"] } ?? [:])
            throw ExitCode(1)
        }
        daemon.version = StargzVersion.current
        // A parent may have left SIGTERM and SIGINT blocked (the mask is inherited across exec); the group's
        // handlers need them delivered.
        unblockSignals([SIGINT, SIGTERM])
        var group = ServiceGroupConfiguration(
            services: [.init(service: daemon, successTerminationBehavior: .gracefullyShutdownGroup, serviceName: "stargz-store")], logger: logger)
        group.gracefulShutdownSignals = [.sigterm, .sigint]
        do {
            try await ServiceGroup(configuration: group).run()
        } catch {
            let e = error as? StoreError
            logger.critical("\(e.map { "\($0.code): " } ?? "")\(error)", metadata: e?.key.map { ["key": "\($0)"] } ?? [:])
            throw ExitCode(1)
        }
    }
}

