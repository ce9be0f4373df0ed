// SPDX-License-Identifier: Apache-2.0

/// Where the store lives on a node: the paths every deployment artifact agrees on.
///
/// The defaults are those of upstream stargz-store and of the OpenShift write-up this module automates.
public struct StoreLayout: Sendable, Equatable {
    /// Every default in one place.
    public enum Defaults {
        /// The `stargz-store` executable.
        public static let binaryPath = "/usr/local/bin/stargz-store"
        /// The store's config.toml (`-config`).
        public static let configPath = "/etc/stargz-store/config.toml"
        /// The state and cache directory (`-root`).
        public static let root = "/var/lib/stargz-store"
        /// The FUSE mount point: the Additional Layer Store path in storage.conf.
        public static let mountpoint = "/var/lib/stargz-store/store"
        /// The systemd unit's name.
        public static let unitName = "stargz-store.service"
        /// containers-storage.conf(5) as CRI-O and Podman read it.
        public static let storageConfPath = "/etc/containers/storage.conf"
        /// The store's log level (`-log-level`).
        public static let logLevel = "info"
    }

    /// The `stargz-store` executable.
    public var binaryPath: String
    /// The store's config.toml.
    public var configPath: String
    /// The state and cache directory.
    public var root: String
    /// The FUSE mount point.
    public var mountpoint: String
    /// The systemd unit's name (ends in `.service`).
    public var unitName: String
    /// The storage.conf to edit.
    public var storageConfPath: String
    /// The store's log level.
    public var logLevel: String

    /// A layout; every argument defaults to ``Defaults``.
    public init(
        binaryPath: String = Defaults.binaryPath, configPath: String = Defaults.configPath,
        root: String = Defaults.root, mountpoint: String = Defaults.mountpoint, unitName: String = Defaults.unitName,
        storageConfPath: String = Defaults.storageConfPath, logLevel: String = Defaults.logLevel
    ) {
        self.binaryPath = binaryPath
        self.configPath = configPath
        self.root = root
        self.mountpoint = mountpoint
        self.unitName = unitName
        self.storageConfPath = storageConfPath
        self.logLevel = logLevel
    }

    /// The storage.conf entry for the store: `MOUNTPOINT:ref` (layers are looked up by image reference).
    public var additionalLayerStoreEntry: String { mountpoint + ":ref" }

    /// The unit file's path under `/etc/systemd/system`.
    public var unitPath: String { "/etc/systemd/system/" + unitName }

    /// Checks that every path can be written into a unit file and a storage.conf unquoted and unescaped.
    ///
    /// #### Errors
    /// ``DeployError/Code/invalidArgument`` naming the first bad value.
    public func validate() throws(DeployError) {
        let paths = [
            ("binary path", binaryPath), ("config path", configPath), ("root", root), ("mount point", mountpoint),
            ("storage.conf path", storageConfPath),
        ]
        for (what, p) in paths { try Self.checkPath(p, what) }
        guard unitName.hasSuffix(".service"), unitName.count > 8,
            unitName.utf8.allSatisfy({ Self.isUnitNameByte($0) })
        else {
            throw .invalid("unit name \"\(unitName)\" must be letters, digits, \"-_.@\" ending in .service")
        }
        guard ["trace", "debug", "info", "warn", "warning", "error", "fatal", "panic", "critical"].contains(logLevel) else {
            throw .invalid("log level \"\(logLevel)\" is not one of trace, debug, info, warn, error, fatal, panic")
        }
    }

    /// An absolute, clean path made of characters that need no quoting in systemd, TOML or a shell.
    static func checkPath(_ p: String, _ what: String) throws(DeployError) {
        guard p.hasPrefix("/"), p.count > 1, !p.hasSuffix("/"), !p.contains("//"), !p.contains("/./"),
            !p.contains("/../"), !p.hasSuffix("/.."), !p.hasSuffix("/.")
        else { throw .invalid("\(what) \"\(p)\" must be an absolute, clean path") }
        guard p.utf8.allSatisfy(isPathByte) else {
            throw .invalid("\(what) \"\(p)\" may hold only letters, digits and \"/._-+\"")
        }
    }

    static func isPathByte(_ c: UInt8) -> Bool {
        (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39)
            || c == UInt8(ascii: "/") || c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
            || c == UInt8(ascii: "+")
    }

    static func isUnitNameByte(_ c: UInt8) -> Bool {
        (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39)
            || c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: "-") || c == UInt8(ascii: "@")
    }
}
