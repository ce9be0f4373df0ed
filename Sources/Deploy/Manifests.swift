// SPDX-License-Identifier: Apache-2.0

/// What a node needs: the files and the unit, as they will be written.
public struct NodeFiles: Sendable, Equatable {
    /// The merged storage.conf, or nil to leave storage.conf to a ContainerRuntimeConfig.
    public var storageConf: String?
    /// The store's config.toml.
    public var configTOML: String
    /// The systemd unit.
    public var unit: String
    /// The paths they go to.
    public var layout: StoreLayout
    /// Whether the node gets the registries.conf drop-in that names the auth helper
    /// (``StoreLayout/registriesDropIn``).
    public var authHelper: Bool

    /// The node's files.
    public init(storageConf: String?, configTOML: String, unit: String, layout: StoreLayout, authHelper: Bool = true) {
        self.storageConf = storageConf
        self.configTOML = configTOML
        self.unit = unit
        self.layout = layout
        self.authHelper = authHelper
    }

    /// (path, contents, mode) of each regular file, storage.conf first, then config.toml, the tmpfiles.d entry
    /// that makes the mount point at boot (``StoreLayout/tmpfilesConf``) and, with ``authHelper``, the
    /// registries.conf drop-in (``StoreLayout/registriesDropIn``).
    public var files: [(path: String, contents: String, mode: Int)] {
        var out: [(String, String, Int)] = []
        if let storageConf { out.append((layout.storageConfPath, storageConf, 0o644)) }
        out.append((layout.configPath, configTOML, 0o644))
        out.append((layout.tmpfilesPath, layout.tmpfilesConf, 0o644))
        if authHelper { out.append((layout.registriesDropInPath, layout.registriesDropIn, 0o644)) }
        return out
    }
}

/// The OpenShift and CoreOS manifests that carry ``NodeFiles`` to every node of a pool.
public enum Manifests {
    /// The Ignition spec version MachineConfigs carry (OpenShift 4.6 and later accept it).
    public static let ignitionVersion = "3.2.0"
    /// The Butane `openshift` spec version that produces Ignition 3.2.0.
    public static let butaneVersion = "4.8.0"
    /// The label that ties a MachineConfig to a pool.
    public static let roleLabel = "machineconfiguration.openshift.io/role"

    /// The default MachineConfig name for a pool: `99-<role>-stargz` (the `99-` prefix sorts it after the
    /// operator's own configs, so its storage.conf wins).
    public static func defaultName(role: String) -> String { "99-\(role)-stargz" }

    /// Checks a pool name (`worker`, `master`, or a custom pool): a DNS-1123 label.
    ///
    /// #### Errors
    /// ``DeployError/Code/invalidArgument``.
    public static func checkRole(_ role: String) throws(DeployError) {
        guard isDNSLabel(role, max: 63) else {
            throw .invalid("role \"\(role)\" must be a pool name: lowercase letters, digits and \"-\" (e.g. worker)")
        }
    }

    /// Checks an object name: a DNS-1123 subdomain.
    ///
    /// #### Errors
    /// ``DeployError/Code/invalidArgument``.
    public static func checkName(_ name: String) throws(DeployError) {
        guard name.count <= 253, name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy({ isDNSLabel(String($0), max: 63) })
        else { throw .invalid("name \"\(name)\" must be lowercase letters, digits, \"-\" and \".\" (e.g. 99-worker-stargz)") }
    }

    static func isDNSLabel(_ s: String, max: Int) -> Bool {
        let b = Array(s.utf8)
        func alnum(_ c: UInt8) -> Bool { (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) }
        guard !b.isEmpty, b.count <= max, alnum(b.first!), alnum(b.last!) else { return false }
        return b.allSatisfy { alnum($0) || $0 == 0x2D }
    }

    /// The Ignition 3.2.0 config: the files as data URLs with decimal modes, owned by root, overwriting what
    /// is there; the unit enabled.
    public static func ignition(_ node: NodeFiles) -> Document {
        let files = node.files.map { file($0, contents: ("source", .string(DataURL.encode(Array($0.contents.utf8))))) }
        return .map([
            ("ignition", .map([("version", .string(ignitionVersion))])),
            ("storage", .map([("files", .list(files))])),
            ("systemd", .map([("units", .list([unit(node)]))])),
        ])
    }

    /// A `storage.files` entry, the same in Ignition and Butane but for how `contents` holds the bytes: owned
    /// by root, overwriting what is there, mode in decimal.
    private static func file(_ f: (path: String, contents: String, mode: Int), contents: (String, Document)) -> Document {
        .map([
            ("path", .string(f.path)),
            ("mode", .integer(f.mode)),
            ("overwrite", .boolean(true)),
            ("user", .map([("name", .string("root"))])),
            ("group", .map([("name", .string("root"))])),
            ("contents", .map([contents])),
        ])
    }

    private static func unit(_ node: NodeFiles) -> Document {
        .map([
            ("name", .string(node.layout.unitName)),
            ("enabled", .boolean(true)),
            ("contents", .string(node.unit)),
        ])
    }

    /// A `machineconfiguration.openshift.io/v1` MachineConfig for pool `role` carrying ``ignition(_:)``.
    public static func machineConfig(_ node: NodeFiles, name: String, role: String) -> Document {
        .map([
            ("apiVersion", .string("machineconfiguration.openshift.io/v1")),
            ("kind", .string("MachineConfig")),
            ("metadata", .map([("name", .string(name)), ("labels", .map([(roleLabel, .string(role))]))])),
            ("spec", .map([("config", ignition(node))])),
        ])
    }

    /// The Butane (`variant: openshift`) source of ``machineConfig(_:name:role:)``: files inline, which
    /// `butane` turns into the same data URLs.
    public static func butane(_ node: NodeFiles, name: String, role: String) -> Document {
        let files = node.files.map { file($0, contents: ("inline", .string($0.contents))) }
        return .map([
            ("variant", .string("openshift")),
            ("version", .string(butaneVersion)),
            ("metadata", .map([("name", .string(name)), ("labels", .map([(roleLabel, .string(role))]))])),
            ("storage", .map([("files", .list(files))])),
            ("systemd", .map([("units", .list([unit(node)]))])),
        ])
    }

    /// A ContainerRuntimeConfig that makes the Machine Config Operator add the store to storage.conf, for
    /// OpenShift versions with `additionalLayerStores` (the `AdditionalStorageConfig` feature gate).
    ///
    /// The operator appends `:ref` itself (OCPBUGS-83492), and its API accepts only `[A-Za-z0-9/._-]` in
    /// paths, so the path is the bare mount point unless `refSuffix` asks for `MOUNTPOINT:ref` (for operator
    /// builds that accept the suffix but do not append it). The pool is selected by the
    /// `pools.operator.machineconfiguration.openshift.io/<pool>` label, which the worker and master pools have.
    /// #### Errors
    /// ``DeployError/Code/invalidArgument`` when the mount point is not a valid store path (1–256 characters,
    /// absolute, no `//`).
    public static func containerRuntimeConfig(
        name: String, pool: String, layout: StoreLayout, refSuffix: Bool = false
    ) throws(DeployError) -> Document {
        let path = layout.mountpoint
        guard path.count <= 256, path.hasPrefix("/"), !path.contains("//"),
            path.utf8.allSatisfy({ StoreLayout.isPathByte($0) && $0 != UInt8(ascii: "+") })
        else { throw .invalid("mount point \"\(path)\" is not a valid additionalLayerStores path (^/[a-zA-Z0-9/._-]+$)") }
        return .map([
            ("apiVersion", .string("machineconfiguration.openshift.io/v1")),
            ("kind", .string("ContainerRuntimeConfig")),
            ("metadata", .map([("name", .string(name))])),
            (
                "spec",
                .map([
                    (
                        "machineConfigPoolSelector",
                        .map([("matchLabels", .map([("pools.operator.machineconfiguration.openshift.io/\(pool)", .string(""))]))])
                    ),
                    (
                        "containerRuntimeConfig",
                        .map([
                            ("additionalLayerStores", .list([.map([("path", .string(refSuffix ? path + ":ref" : path))])]))
                        ])
                    ),
                ])
            ),
        ])
    }
}
