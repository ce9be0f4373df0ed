// SPDX-License-Identifier: Apache-2.0

/// Where the store lives on a node: the paths every deployment artifact agrees on.
///
/// The defaults are those of upstream stargz-store and of the OpenShift write-up this module automates.
public struct StoreLayout: Sendable, Equatable {
    /// Every default in one place.
    public enum Defaults {
        /// The `stargz-store` executable.
        public static let binaryPath = "/usr/local/bin/stargz-store"
        /// The auth helper's file name: by default it sits beside ``binaryPath``.
        public static let helperName = "stargz-store-helper"
        /// The auth helper, `/usr/local/bin/stargz-store-helper`.
        public static let helperPath = "/usr/local/bin/" + helperName
        /// The registries.conf drop-in that names the auth helper.
        ///
        /// containers/image reads `/etc/containers/registries.conf`, then the `*.conf` files of
        /// `registries.conf.d` in lexical order, and for `additional-layer-store-auth-helper` the last non-empty
        /// value wins. `99-` sorts after the Machine Config Operator's `01-image-searchRegistries.conf` (which sets
        /// the key to `""`, no override anyway) and after any drop-in an administrator numbers below 99, so this
        /// one decides unless a later file names another helper.
        public static let registriesDropInPath = "/etc/containers/registries.conf.d/99-stargz-store-helper.conf"
        /// The store's runtime directory (systemd `RuntimeDirectory=`): pull credentials the helper handed over,
        /// kept across restarts of the store but not across a reboot.
        public static let runtimeDirectory = "/run/stargz-store"
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
    /// The `stargz-store-helper` executable that containers/image runs with each pull's credentials.
    public var helperPath: String
    /// The registries.conf drop-in naming ``helperPath`` (a `*.conf` file of `registries.conf.d`).
    public var registriesDropInPath: String
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

    /// A layout; every argument defaults to ``Defaults``, but `helperPath`, which defaults to
    /// ``Defaults/helperName`` in the directory of `binaryPath` (the release and `stargz deploy install` put the
    /// two executables side by side).
    public init(
        binaryPath: String = Defaults.binaryPath, helperPath: String? = nil, configPath: String = Defaults.configPath,
        root: String = Defaults.root, mountpoint: String = Defaults.mountpoint, unitName: String = Defaults.unitName,
        storageConfPath: String = Defaults.storageConfPath,
        registriesDropInPath: String = Defaults.registriesDropInPath, logLevel: String = Defaults.logLevel
    ) {
        self.binaryPath = binaryPath
        self.helperPath = helperPath ?? Self.beside(binaryPath, Defaults.helperName)
        self.registriesDropInPath = registriesDropInPath
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

    /// The tmpfiles.d entry that makes the mount point at boot: `/etc/tmpfiles.d/<unit name>.conf`.
    public var tmpfilesPath: String { "/etc/tmpfiles.d/" + unitName.dropLast(".service".count) + ".conf" }

    /// The tmpfiles.d file: the mount point as an empty directory from early boot (systemd-tmpfiles-setup runs
    /// before CRI-O), whether or not the store's unit ever starts, so that CRI-O and Podman, which refuse to start
    /// when a configured layer store is missing, find no additional layers and pull normally (fail open). Mode,
    /// owner and age are `-`: a missing directory is made 0755 root:root, an existing one (the store's FUSE mount, when
    /// `systemd-tmpfiles --create` runs again later) is never chmod-ed, chown-ed or cleaned.
    public var tmpfilesConf: String {
        """
        # stargz-store: the additional layer store's mount point exists even when the store does not run, so that
        # CRI-O and Podman start and pull normally. Generated by `stargz deploy`.
        d \(mountpoint) - - - -

        """
    }

    /// `name` in the directory of `path`.
    static func beside(_ path: String, _ name: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return name }
        return String(path[...slash]) + name
    }

    /// The registries.conf drop-in: ``helperPath`` as `additional-layer-store-auth-helper`, at the top level
    /// (before any table, where containers/image looks for it). containers/image runs the helper once per pull, with
    /// no arguments and the pull's credentials as JSON on standard input; the helper hands them to the store.
    public var registriesDropIn: String {
        """
        # stargz-store: containers/image (CRI-O, Podman) runs this helper once per pull with the pull's credentials on
        # standard input, and the helper hands them to the store, so that layers only a pod's pull secret opens are
        # pulled lazily too. The last non-empty value in registries.conf and registries.conf.d/*.conf wins; "" is
        # no override. Generated by `stargz deploy`.
        additional-layer-store-auth-helper = \(TOMLWriter.string(helperPath))

        """
    }

    /// Checks that every path can be written into a unit file and a storage.conf unquoted and unescaped.
    ///
    /// #### Errors
    /// ``DeployError/Code/invalidArgument`` naming the first bad value.
    public func validate() throws(DeployError) {
        let paths = [
            ("binary path", binaryPath), ("helper path", helperPath), ("config path", configPath), ("root", root),
            ("mount point", mountpoint), ("storage.conf path", storageConfPath),
            ("registries.conf drop-in path", registriesDropInPath),
        ]
        for (what, p) in paths { try Self.checkPath(p, what) }
        guard registriesDropInPath.hasSuffix(".conf"), !registriesDropInPath.hasSuffix("/.conf") else {
            // containers/image reads only *.conf files of registries.conf.d.
            throw .invalid("registries.conf drop-in path \"\(registriesDropInPath)\" must end in .conf")
        }
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
