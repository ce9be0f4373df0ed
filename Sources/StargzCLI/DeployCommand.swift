// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import AsyncHTTPClient
import Deploy
import Foundation
import NIOCore
import Store

/// `stargz deploy`: renders and applies what a node needs to run the store.
struct DeployCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deploy",
        abstract: "Render and apply the store's node setup: storage.conf, systemd unit, MachineConfig, install.",
        discussion: """
            Plain host:  stargz deploy install --binary .build/release/stargz-store
            OpenShift:   stargz deploy machineconfig --role worker --storage-conf node-storage.conf \\
                           --release-url http://mirror.example/stargz-swift-0.1.0-linux-amd64.tar.gz | oc apply -f -
            Then check a node with `stargz doctor`.
            """,
        subcommands: [
            StorageConfSubcommand.self, SystemdUnitSubcommand.self, MachineConfigSubcommand.self,
            ContainerRuntimeConfigSubcommand.self, InstallSubcommand.self, UninstallSubcommand.self,
        ])
}

/// Where the store lives on the node; shared by every deploy subcommand and doctor.
struct LayoutOptions: ParsableArguments {
    @Option(help: "The store's mount point (the additional layer store path).")
    var mountpoint = StoreLayout.Defaults.mountpoint

    @Option(help: "The store's state and cache directory (-root).")
    var root = StoreLayout.Defaults.root

    @Option(help: "Where config.toml is on the node (-config).")
    var configPath = StoreLayout.Defaults.configPath

    @Option(help: "Where the stargz-store executable is on the node.")
    var binaryPath = StoreLayout.Defaults.binaryPath

    @Option(help: "Where the stargz-store-helper executable is on the node (default: beside --binary-path).")
    var helperPath: String?

    @Option(help: "The systemd unit's name.")
    var unitName = StoreLayout.Defaults.unitName

    @Option(help: "The storage.conf CRI-O and Podman read on the node.")
    var storageConfPath = StoreLayout.Defaults.storageConfPath

    @Option(help: "The registries.conf drop-in that names the auth helper (a *.conf file sorting after the others).")
    var registriesDropInPath = StoreLayout.Defaults.registriesDropInPath

    @Option(help: "The store's log level (-log-level).")
    var logLevel = StoreLayout.Defaults.logLevel

    var layout: StoreLayout {
        StoreLayout(
            binaryPath: binaryPath, helperPath: helperPath, configPath: configPath, root: root, mountpoint: mountpoint,
            unitName: unitName, storageConfPath: storageConfPath, registriesDropInPath: registriesDropInPath,
            logLevel: logLevel)
    }

    func validate() throws {
        do { try layout.validate() } catch { throw ValidationError(error.message) }
    }
}

/// `--release-url`, `--binary-url` and `--sha256`: the unit downloads and checks the binary before starting it.
struct BinaryURLOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Download the release tarball (scripts/release.sh) from this URL when the unit starts and install its stargz-store.",
        discussion: "Without --sha256 the digest is read now from the .sha256 file beside it (URL.sha256)."))
    var releaseURL: String?

    @Option(help: "Download stargz-store from this URL when the unit starts (the binary, or a .tar.gz holding it).")
    var binaryURL: String?

    @Option(help: "The SHA-256 (hex) the download must have; required with --binary-url.")
    var sha256: String?

    func validate() throws {
        if releaseURL != nil && binaryURL != nil { throw ValidationError("--release-url and --binary-url exclude each other") }
        if binaryURL != nil && sha256 == nil { throw ValidationError("--binary-url needs --sha256 (or use --release-url)") }
        if releaseURL == nil && binaryURL == nil && sha256 != nil { throw ValidationError("--sha256 goes with --release-url or --binary-url") }
        if let releaseURL {
            let path = releaseURL.split(separator: "?", maxSplits: 1).first.map(String.init) ?? releaseURL
            guard path.hasSuffix(".tar.gz") || path.hasSuffix(".tgz") else {
                throw ValidationError("--release-url must name the release .tar.gz, not \"\(releaseURL)\"")
            }
        }
        if let url = releaseURL ?? binaryURL {
            // The URL's shape, with a stand-in digest when it is to be read from the .sha256 file.
            do { _ = try BinarySource(url: url, sha256: sha256 ?? String(repeating: "0", count: 64)) } catch {
                throw ValidationError(error.message)
            }
        }
    }

    /// Whether a download is configured.
    var isSet: Bool { releaseURL != nil || binaryURL != nil }

    /// The download, reading the release's `.sha256` file when `--release-url` comes without `--sha256`.
    func source() async throws -> BinarySource? {
        if let binaryURL, let sha256 {
            do { return try BinarySource(url: binaryURL, sha256: sha256) } catch { throw ValidationError(error.message) }
        }
        guard let releaseURL else { return nil }
        let digest: String
        if let sha256 {
            digest = sha256
        } else {
            let sumURL = BinarySource.checksumURL(forRelease: releaseURL)
            if releaseURL.lowercased().hasPrefix("http://") {
                Terminal.warn("the digest comes over plain HTTP from the same mirror as the tarball: whoever can change that traffic now chooses what every node runs as root; prefer https:// or --sha256 from a trusted source")
            }
            let text: String
            do { text = try await ChecksumFile.fetch(sumURL) } catch {
                throw DeployError(.io, "\(error) (give the digest with --sha256 HEX instead)", cause: error)
            }
            digest = try BinarySource.checksum(text, forRelease: releaseURL)
            Terminal.note("\(sumURL): sha256 \(digest)")
        }
        do { return try BinarySource(url: releaseURL, sha256: digest) } catch { throw ValidationError(error.message) }
    }
}

/// Reads a release's checksum file: a few bytes from an `http(s)://` or `file:///` URL.
enum ChecksumFile {
    /// More than a checksum line is refused.
    static let maxSize = 4096

    /// The text at `url`.
    ///
    /// #### Errors
    /// ``DeployError`` (``DeployError/Code/io``) naming the URL: unreachable, a status other than 200, more than
    /// ``maxSize`` bytes, or no answer within 30 seconds.
    static func fetch(_ url: String) async throws -> String {
        if url.lowercased().hasPrefix("file://") {
            let path = String(url.dropFirst("file://".count))
            guard let fh = FileHandle(forReadingAtPath: path) else { throw DeployError(.io, "\(url): cannot read \(path)") }
            defer { try? fh.close() }
            let data = try fh.read(upToCount: maxSize + 1) ?? Data()
            guard data.count <= maxSize else { throw DeployError(.io, "\(url): more than \(maxSize) bytes: not a checksum file") }
            return String(decoding: data, as: UTF8.self)
        }
        var request = HTTPClientRequest(url: url)
        request.method = .GET
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
            guard response.status == .ok else { throw DeployError(.io, "\(url): HTTP \(response.status.code)") }
            let body = try await response.body.collect(upTo: maxSize)
            return String(buffer: body)
        } catch let e as DeployError {
            throw e
        } catch is NIOTooManyBytesError {
            throw DeployError(.io, "\(url): more than \(maxSize) bytes: not a checksum file")
        } catch {
            throw DeployError(.io, "\(url): \(error)", cause: error)
        }
    }
}

/// Whether the node gets the registries.conf drop-in that names the auth helper, with a warning when it does not or
/// when the helper will not reach the store.
///
/// Left out with `--no-auth-helper`, and when the unit downloads a single executable (`--binary-url` of something
/// other than an archive): that is the store alone, so no helper would be there to name.
func authHelperWanted(disabled: Bool, download: BinarySource?, layout: StoreLayout) -> Bool {
    if disabled { return false }
    if let download, !download.isArchive {
        Terminal.warn(
            "--binary-url names a single executable, so the node gets no stargz-store-helper: the registries.conf drop-in "
                + "is left out and per-pod pull secrets do not reach the store (the release tarball, --release-url, holds both)")
        return false
    }
    if layout.root != StoreLayout.Defaults.root {
        Terminal.warn(
            "containers/image runs \(layout.helperPath) without arguments, so it looks for the store under "
                + "\(StoreLayout.Defaults.root), not \(layout.root): pull credentials will not reach this store")
    }
    return true
}

/// Writes `text` to `output` atomically, or to standard output when `output` is nil.
func emit(_ text: String, to output: String?) throws {
    if let output {
        try AtomicFile.write(output, Array(text.utf8))
    } else {
        print(text, terminator: "")
    }
}

/// The text of `path` (`-` is standard input).
func readText(_ path: String) throws -> String {
    if path == "-" { return String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self) }
    guard let bytes = try AtomicFile.read(path) else { throw ValidationError("\(path) does not exist") }
    return String(decoding: bytes, as: UTF8.self)
}

/// The node's storage.conf as CRI-O would find it, for a `--from` left out.
func hostStorageConf(prefix: String = "") throws -> (text: String, source: String)? {
    for p in ["/etc/containers/storage.conf", "/usr/share/containers/storage.conf"] {
        if let b = try AtomicFile.read(prefix + p) { return (String(decoding: b, as: UTF8.self), prefix + p) }
    }
    return nil
}

struct StorageConfSubcommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storage-conf",
        abstract: "Print storage.conf with the store in additionallayerstores, every other setting kept.",
        discussion: """
            Reads --from (default: /etc/containers/storage.conf, else /usr/share/containers/storage.conf, else a
            minimal overlay configuration), adds "MOUNTPOINT:ref" under [storage.options] (replacing an entry for
            the same mount point) and prints the result; running it on its own output changes nothing.
            A file that is not valid TOML is refused with its line, and nothing is written.
            """)

    @Option(help: "The storage.conf to start from (- for standard input).")
    var from: String?

    @Option(help: "Write the result here (atomically) instead of standard output; it may be the --from file.")
    var output: String?

    @OptionGroup var layout: LayoutOptions

    func run() throws {
        try reportingErrors {
            let base: (text: String, source: String)
            if let from { base = (try readText(from), from) } else { base = try hostStorageConf() ?? (StorageConf.minimal, "built-in") }
            let r = try StorageConf.merge(base.text, entry: layout.layout.additionalLayerStoreEntry, source: base.source)
            if !r.keptFormatting { Terminal.warn("\(base.source): comments and layout could not be kept; the settings are") }
            try emit(r.text, to: output)
        }
    }
}

struct SystemdUnitSubcommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "systemd-unit",
        abstract: "Print the store's systemd unit (Type=notify, before crio.service, unmount after stop).")

    @OptionGroup var layout: LayoutOptions
    @OptionGroup var binary: BinaryURLOptions

    @Option(help: "Write the unit here instead of standard output.")
    var output: String?

    func run() async throws {
        let source = try await reportingErrorsAsync { try await binary.source() }
        try reportingErrors { try emit(try SystemdUnit.render(layout: layout.layout, binary: source), to: output) }
    }
}

struct MachineConfigSubcommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "machineconfig",
        abstract: "Print an OpenShift MachineConfig (or Butane, or Ignition) carrying storage.conf, config.toml and the unit.",
        discussion: """
            The MachineConfig replaces the node's /etc/containers/storage.conf. Give the node's current file with
            --storage-conf (oc debug node/NODE -- chroot /host cat /etc/containers/storage.conf) so that its
            settings are kept; without it a minimal overlay storage.conf is used. With --no-storage-conf the file is
            left out, for clusters that set additionalLayerStores through a ContainerRuntimeConfig.
            It also carries /etc/containers/registries.conf.d/99-stargz-store-helper.conf, which names
            stargz-store-helper as additional-layer-store-auth-helper (--no-auth-helper leaves it out); the unit's
            download step installs the helper from the release tarball.
            """)

    @Option(help: "The machine config pool: worker, master, or a custom pool.")
    var role = "worker"

    @Option(help: "The MachineConfig's name (default: 99-ROLE-stargz).")
    var name: String?

    @Option(help: "The store's config.toml to ship (default: the store's defaults).")
    var config: String?

    @Option(help: "The node's current storage.conf, to which the store is added.")
    var storageConf: String?

    @Flag(help: "Leave storage.conf out (use `stargz deploy containerruntimeconfig` for it).")
    var noStorageConf = false

    @Flag(help: "Leave out the registries.conf drop-in that names stargz-store-helper.")
    var noAuthHelper = false

    @Option(help: "machineconfig, butane (variant: openshift) or ignition (JSON).")
    var format: ManifestFormat = .machineconfig

    @Option(help: "Write the manifest here instead of standard output.")
    var output: String?

    @OptionGroup var layout: LayoutOptions
    @OptionGroup var binary: BinaryURLOptions

    func validate() throws {
        do {
            try Manifests.checkRole(role)
            try Manifests.checkName(name ?? Manifests.defaultName(role: role))
        } catch { throw ValidationError(error.message) }
        if noStorageConf && storageConf != nil { throw ValidationError("--storage-conf and --no-storage-conf exclude each other") }
    }

    func run() async throws {
        let source = try await reportingErrorsAsync { try await binary.source() }
        try reportingErrors {
            let l = layout.layout
            var conf: String? = nil
            if !noStorageConf {
                let base = try storageConf.map { (try readText($0), $0) } ?? (StorageConf.minimal, "built-in storage.conf")
                if storageConf == nil {
                    Terminal.warn("no --storage-conf: the node's storage.conf is replaced by a minimal overlay one; pass the node's file to keep its settings")
                }
                let r = try StorageConf.merge(base.0, entry: l.additionalLayerStoreEntry, source: base.1)
                if !r.keptFormatting { Terminal.warn("\(base.1): comments and layout could not be kept; the settings are") }
                conf = r.text
            }
            let configText = try config.map(readText) ?? StoreConfiguration.defaultTOML
            if let config {
                do { _ = try StoreConfiguration.parse(configText, path: config) } catch { throw ValidationError("\(error)") }
            }
            let node = NodeFiles(
                storageConf: conf, configTOML: configText, unit: try SystemdUnit.render(layout: l, binary: source),
                layout: l, authHelper: authHelperWanted(disabled: noAuthHelper, download: source, layout: l))
            let name = self.name ?? Manifests.defaultName(role: role)
            let text: String
            switch format {
            case .machineconfig: text = Manifests.machineConfig(node, name: name, role: role).yaml()
            case .butane: text = Manifests.butane(node, name: name, role: role).yaml()
            case .ignition: text = Manifests.ignition(node).json()
            }
            try emit(text, to: output)
        }
    }
}

/// The `--format` of `stargz deploy machineconfig`.
enum ManifestFormat: String, ExpressibleByArgument, CaseIterable {
    case machineconfig, butane, ignition
}

struct ContainerRuntimeConfigSubcommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "containerruntimeconfig",
        abstract: "Print a ContainerRuntimeConfig with additionalLayerStores (OpenShift with AdditionalStorageConfig).",
        discussion: """
            The Machine Config Operator then writes storage.conf itself and appends ":ref". Ship the unit, binary and
            config.toml with `stargz deploy machineconfig --no-storage-conf`.
            """)

    @Option(help: "The machine config pool: worker, master, or a custom pool labelled pools.operator.machineconfiguration.openshift.io/POOL.")
    var role = "worker"

    @Option(help: "The object's name (default: stargz-ROLE).")
    var name: String?

    @Flag(help: "Write MOUNTPOINT:ref (for operator builds that accept the suffix but do not append it).")
    var refSuffix = false

    @Option(help: "The store's mount point.")
    var mountpoint = StoreLayout.Defaults.mountpoint

    @Option(help: "Write the manifest here instead of standard output.")
    var output: String?

    func validate() throws {
        do {
            try Manifests.checkRole(role)
            try Manifests.checkName(name ?? "stargz-\(role)")
        } catch { throw ValidationError(error.message) }
    }

    func run() throws {
        try reportingErrors {
            let doc = try Manifests.containerRuntimeConfig(
                name: name ?? "stargz-\(role)", pool: role, layout: StoreLayout(mountpoint: mountpoint), refSuffix: refSuffix)
            try emit(doc.yaml(), to: output)
        }
    }
}

/// Prints what an install or uninstall did, or would do.
func printReport(_ r: InstallReport, live: Bool, dryRun: Bool) {
    for a in r.actions { print((dryRun ? "would " : "") + a) }
    for c in r.commands { print((live && !dryRun ? "ran: " : "would run: ") + c.joined(separator: " ")) }
    for w in r.warnings { Terminal.warn(w) }
}

struct InstallSubcommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "install",
        abstract: "Install the store on this host: config.toml, unit, storage.conf (backed up once), then restart.",
        discussion: """
            Writes the binary (--binary) and stargz-store-helper from beside it, config.toml (unless one exists, or
            --config is given) and the unit, runs systemctl daemon-reload, enable and restart for the store, and
            only once it runs switches storage.conf (the original is kept as storage.conf.stargz-backup, never
            overwritten), writes the registries.conf drop-in naming the helper (--no-auth-helper leaves both out)
            and restarts CRI-O if it runs.
            Files are replaced atomically; if writing fails half-way the step's files are put back.
            With --prefix DIR the files go under DIR and systemctl is not called: the commands are printed.
            """)

    @Option(help: "Install under this directory instead of / (systemctl is then not called).")
    var prefix: String?

    @Flag(help: "Print what would be written and run, and change nothing.")
    var dryRun = false

    @Option(help: "The stargz-store executable to install at --binary-path; stargz-store-helper is taken from beside it.")
    var binary: String?

    @Flag(help: "Install neither stargz-store-helper nor the registries.conf drop-in that names it.")
    var noAuthHelper = false

    @Option(help: "A config.toml to install (replacing an existing one); by default the defaults, if none exists.")
    var config: String?

    @OptionGroup var layout: LayoutOptions
    @OptionGroup var download: BinaryURLOptions

    func run() async throws {
        let source = try await reportingErrorsAsync { try await download.source() }
        try reportingErrors {
            let l = layout.layout
            let root = prefix ?? ""
            let binaryBytes = try binary.map { p -> [UInt8] in
                guard let b = try AtomicFile.read(p) else { throw ValidationError("--binary \(p) does not exist") }
                return b
            }
            let authHelper = authHelperWanted(disabled: noAuthHelper, download: source, layout: l)
            // The helper comes from where the store's binary comes from: beside --binary (swift build and the
            // release tarball put them side by side), or from the download.
            let helperBytes = try binary.flatMap { p -> [UInt8]? in
                guard authHelper else { return nil }
                let h = URL(fileURLWithPath: p).deletingLastPathComponent()
                    .appendingPathComponent(StoreLayout.Defaults.helperName).path
                guard let b = try AtomicFile.read(h) else {
                    throw ValidationError(
                        "\(h) does not exist: the auth helper is installed from beside --binary \(p) "
                            + "(swift build --product stargz-store-helper makes it); --no-auth-helper installs the store without it")
                }
                return b
            }
            let configText = try config.map(readText)
            if let config, let configText {
                do { _ = try StoreConfiguration.parse(configText, path: config) } catch { throw ValidationError("\(error)") }
            }
            let plan = try InstallPlan.make(
                layout: l, prefix: root, unit: try SystemdUnit.render(layout: l, binary: source),
                configTOML: (configText ?? StoreConfiguration.defaultTOML, configText != nil), binary: binaryBytes,
                helper: helperBytes, authHelper: authHelper)
            if !plan.storageConfKeptFormatting { Terminal.warn("storage.conf: comments and layout could not be kept; the settings are") }
            if binaryBytes == nil, !download.isSet, !FileManager.default.isExecutableFile(atPath: root + l.binaryPath) {
                Terminal.warn("\(root + l.binaryPath) is missing: pass --binary PATH, --release-url URL or --binary-url URL --sha256 HEX")
            }
            if authHelper, binaryBytes == nil, !download.isSet,
                !FileManager.default.isExecutableFile(atPath: root + l.helperPath)
            {
                Terminal.warn(
                    "\(root + l.helperPath) is missing: the registries.conf drop-in names it; pass --binary PATH with the "
                        + "helper beside it, or --no-auth-helper")
            }
            let runner: any CommandRunner = prefix == nil ? ProcessRunner() : RecordingRunner()
            let report = try Installer(prefix: root, runner: runner).install(plan, dryRun: dryRun)
            printReport(report, live: runner.isLive, dryRun: dryRun)
        }
    }
}

struct UninstallSubcommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "uninstall",
        abstract: "Undo `stargz deploy install`: restore storage.conf's original bytes, stop and remove the store.")

    @Option(help: "Uninstall from under this directory instead of / (systemctl is then not called).")
    var prefix: String?

    @Flag(help: "Print what would be restored, removed and run, and change nothing.")
    var dryRun = false

    @OptionGroup var layout: LayoutOptions

    func run() throws {
        try reportingErrors {
            let runner: any CommandRunner = prefix == nil ? ProcessRunner() : RecordingRunner()
            let report = try Installer(prefix: prefix ?? "", runner: runner).uninstall(layout: layout.layout, dryRun: dryRun)
            printReport(report, live: runner.isLive, dryRun: dryRun)
        }
    }
}
