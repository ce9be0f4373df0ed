// SPDX-License-Identifier: Apache-2.0
public import ArgumentParser

/// `stargz-store`: the Additional Layer Store daemon (not implemented yet: prints its usage).
public struct StoreCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "stargz-store",
        abstract: "Serve eStargz layers lazily as a containers/storage Additional Layer Store (FUSE).",
        discussion: """
            Usage: stargz-store [-config PATH] [-log-level LEVEL] [-root DIR] MOUNTPOINT

            The daemon is not implemented yet in this build; it only prints this usage.
            """,
        version: StargzVersion.current)

    @Option(name: [.customLong("config", withSingleDash: true), .customLong("config")], help: "Path to config.toml.")
    var config: String = "/etc/stargz-store/config.toml"

    @Option(name: [.customLong("log-level", withSingleDash: true), .customLong("log-level")], help: "Log level.")
    var logLevel: String = "info"

    @Option(name: [.customLong("root", withSingleDash: true), .customLong("root")], help: "Root directory.")
    var root: String = "/var/lib/stargz-store"

    @Argument(help: "The mount point of the store.")
    var mountpoint: String?

    public init() {}

    public func run() throws {
        print(Self.helpMessage())
        throw ExitCode(2)
    }
}
