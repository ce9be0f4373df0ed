// SPDX-License-Identifier: Apache-2.0
import Foundation
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// The files one host needs, computed before anything is written.
public struct InstallPlan: Sendable {
    /// One file to put in place.
    public struct File: Sendable, Equatable {
        /// The absolute path on the host (without the prefix).
        public var path: String
        /// The contents.
        public var contents: [UInt8]
        /// The permission bits.
        public var mode: Int
        /// False to keep a file that is already there (an administrator's config.toml).
        public var replaceExisting: Bool

        /// A file.
        public init(path: String, contents: [UInt8], mode: Int, replaceExisting: Bool = true) {
            self.path = path
            self.contents = contents
            self.mode = mode
            self.replaceExisting = replaceExisting
        }
    }

    /// The paths.
    public var layout: StoreLayout
    /// The binary and the helper (if given), config.toml and the unit: installed, then the store is (re)started.
    public var storeFiles: [File]
    /// storage.conf with the store added: switched only once the store runs, then CRI-O is restarted.
    public var storageConf: File
    /// The registries.conf drop-in naming the auth helper (``StoreLayout/registriesDropIn``), if wanted: written with
    /// storage.conf, once the store runs (the helper hands credentials to the running store).
    public var registriesDropIn: File?
    /// Whether storage.conf already listed the store.
    public var storageConfChanged: Bool
    /// False when storage.conf's comments could not be kept.
    public var storageConfKeptFormatting: Bool

    /// Plans an install: reads the host's storage.conf under `prefix` and adds the store to it.
    /// - Parameters:
    ///   - layout: the paths.
    ///   - prefix: the directory standing for `/` (empty for the real root).
    ///   - unit: the systemd unit text.
    ///   - configTOML: config.toml text, and whether it replaces an existing file (`--config` given).
    ///   - binary: the `stargz-store` executable to install, if any.
    ///   - helper: the `stargz-store-helper` executable to install at ``StoreLayout/helperPath``, if any.
    ///   - authHelper: whether to write the registries.conf drop-in (``StoreLayout/registriesDropInPath``).
    /// The storage.conf edited is the host's own (`layout.storageConfPath`); when it does not exist,
    /// `/usr/share/containers/storage.conf` is the base, else ``StorageConf/minimal``.
    /// #### Errors
    /// ``DeployError/Code/malformedInput`` naming the line of a storage.conf that does not parse;
    /// ``DeployError/Code/io`` when it cannot be read.
    public static func make(
        layout: StoreLayout, prefix: String, unit: String, configTOML: (text: String, replace: Bool),
        binary: [UInt8]?, helper: [UInt8]? = nil, authHelper: Bool = true
    ) throws(DeployError) -> InstallPlan {
        try layout.validate()
        let confPath = prefix + layout.storageConfPath
        let base: String
        let source: String
        let existing = try FileOps.read(confPath)
        if let existing {
            base = String(decoding: existing.bytes, as: UTF8.self)
            source = confPath
        } else if let vendor = try FileOps.read(prefix + "/usr/share/containers/storage.conf") {
            base = String(decoding: vendor.bytes, as: UTF8.self)
            source = prefix + "/usr/share/containers/storage.conf"
        } else {
            base = StorageConf.minimal
            source = "built-in storage.conf"
        }
        let merged = try StorageConf.merge(base, entry: layout.additionalLayerStoreEntry, source: source)
        var files: [File] = []
        if let binary { files.append(File(path: layout.binaryPath, contents: binary, mode: 0o755)) }
        if let helper { files.append(File(path: layout.helperPath, contents: helper, mode: 0o755)) }
        files.append(File(path: layout.configPath, contents: Array(configTOML.text.utf8), mode: 0o644, replaceExisting: configTOML.replace))
        files.append(File(path: layout.tmpfilesPath, contents: Array(layout.tmpfilesConf.utf8), mode: 0o644))
        files.append(File(path: layout.unitPath, contents: Array(unit.utf8), mode: 0o644))
        return InstallPlan(
            layout: layout, storeFiles: files,
            storageConf: File(path: layout.storageConfPath, contents: Array(merged.text.utf8), mode: existing?.mode ?? 0o644),
            registriesDropIn: authHelper
                ? File(path: layout.registriesDropInPath, contents: Array(layout.registriesDropIn.utf8), mode: 0o644) : nil,
            storageConfChanged: merged.changed || existing == nil, storageConfKeptFormatting: merged.keptFormatting)
    }
}

/// What an install or uninstall did (or, for a dry run, would do).
public struct InstallReport: Sendable, Equatable {
    /// One line per file: created, replaced (backed up), unchanged, kept, restored, removed.
    public var actions: [String] = []
    /// The commands run (or, with a recording runner, that would run), in order.
    public var commands: [[String]] = []
    /// Commands that failed without stopping the operation.
    public var warnings: [String] = []
}

/// Installs the store on one host and removes it again, with `prefix` standing for `/`.
///
/// Files are written atomically (a synced temporary file renamed into place). A file that is replaced is
/// first backed up beside itself as `FILE.stargz-backup`, once: an existing backup is never overwritten, so it
/// always holds the bytes from before the first install. What was created and what was backed up is recorded in
/// `ROOT/installed-files.json`, which ``uninstall(layout:dryRun:)`` follows to restore the exact original bytes.
///
/// The store's files go in first and the store is (re)started; storage.conf and the registries.conf drop-in are
/// switched only after that succeeded, and CRI-O is restarted last. If writing fails half-way, every file of the
/// step is put back as it was, so the original storage.conf stays in place.
public struct Installer: Sendable {
    /// The directory standing for `/`; empty for the real root.
    public var prefix: String
    /// Runs `systemctl`; a ``RecordingRunner`` only records.
    public var runner: any CommandRunner
    /// Called before each file is renamed into place (tests inject failures here).
    package var willCommit: (@Sendable (String) throws -> Void)?

    /// An installer.
    public init(prefix: String = "", runner: any CommandRunner) {
        self.prefix = prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
        self.runner = runner
    }

    struct Manifest: Codable, Equatable {
        /// Files that did not exist before the install.
        var created: [String] = []
        /// Files replaced, whose originals are at `PATH.stargz-backup`.
        var backedUp: [String] = []
        /// Directories made, outermost first.
        var directories: [String] = []
    }

    static func manifestPath(_ layout: StoreLayout) -> String { layout.root + "/installed-files.json" }
    static func backupPath(_ path: String) -> String { path + ".stargz-backup" }

    func loadManifest(_ layout: StoreLayout) throws(DeployError) -> Manifest? {
        guard let m = try FileOps.read(prefix + Self.manifestPath(layout)) else { return nil }
        do { return try JSONDecoder().decode(Manifest.self, from: Data(m.bytes)) } catch {
            throw DeployError(.malformedInput, "\(prefix + Self.manifestPath(layout)) is not a deploy manifest", cause: error)
        }
    }

    func saveManifest(_ m: Manifest, _ layout: StoreLayout) throws(DeployError) {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data: Data
        do { data = try enc.encode(m) } catch { throw DeployError(.io, "cannot encode the deploy manifest", cause: error) }
        let path = prefix + Self.manifestPath(layout)
        _ = try FileOps.makeDirectories(FileOps.directory(of: path))
        try FileOps.replace(path, with: [UInt8](data) + [10], mode: 0o644)
    }

    // MARK: Install

    /// Installs `plan`: the store's files, `systemctl daemon-reload`, `enable` and `restart` of the unit, then
    /// storage.conf and the registries.conf drop-in, and `systemctl try-restart crio.service`.
    ///
    /// With `dryRun` nothing is written or run; the report says what would be.
    /// #### Errors
    /// ``DeployError/Code/io`` when a file cannot be written (the step's files are then as before);
    /// ``DeployError/Code/commandFailed`` when the store does not start (storage.conf is then unchanged).
    public func install(_ plan: InstallPlan, dryRun: Bool = false) throws(DeployError) -> InstallReport {
        var report = InstallReport()
        var manifest = try loadManifest(plan.layout) ?? Manifest()
        let unit = plan.layout.unitName

        try commitStep(plan.storeFiles, plan.layout, &manifest, &report, dryRun: dryRun)
        for argv in [["systemctl", "daemon-reload"], ["systemctl", "enable", unit], ["systemctl", "restart", unit]] {
            if dryRun {
                report.commands.append(argv)
                continue
            }
            let r = run(argv, &report)
            if r.status != 0 {
                throw DeployError(
                    .commandFailed,
                    "\(argv.joined(separator: " ")) failed (status \(r.status)): \(r.output.trimmingCharacters(in: .whitespacesAndNewlines)); "
                        + "storage.conf was left unchanged. See `journalctl -u \(unit)`; `stargz deploy uninstall` removes what was installed")
            }
        }
        let crioFiles = [plan.storageConf] + [plan.registriesDropIn].compactMap { $0 }
        try commitStep(crioFiles, plan.layout, &manifest, &report, dryRun: dryRun)
        let crio = ["systemctl", "try-restart", "crio.service"]
        if dryRun {
            report.commands.append(crio)
        } else if run(crio, &report).status != 0 {
            report.warnings.append("systemctl try-restart crio.service failed: restart CRI-O yourself to use the store")
        }
        return report
    }

    private func run(_ argv: [String], _ report: inout InstallReport) -> CommandResult {
        report.commands.append(argv)
        return runner.run(argv)
    }

    /// Writes one step's files all-or-nothing.
    private func commitStep(
        _ files: [InstallPlan.File], _ layout: StoreLayout, _ manifest: inout Manifest, _ report: inout InstallReport,
        dryRun: Bool
    ) throws(DeployError) {
        struct Pending {
            var file: InstallPlan.File
            var target: String
            var original: (bytes: [UInt8], mode: Int)?
            /// Whether the original is recorded as backed up, and whether the backup file must be made.
            var backup: Bool
            var makeBackup: Bool
            var temporary: String?
            var committed = false
        }
        var pending: [Pending] = []
        for f in files {
            let target = prefix + f.path
            let original = try FileOps.read(target)
            if let original, original.bytes == f.contents, original.mode == f.mode {
                report.actions.append("unchanged \(f.path)")
                continue
            }
            if original != nil && !f.replaceExisting {
                report.actions.append("kept existing \(f.path)")
                continue
            }
            let ours = manifest.created.contains(f.path) || manifest.backedUp.contains(f.path)
            let backup = original != nil && !ours
            let makeBackup = backup && !FileOps.exists(Self.backupPath(target))
            if original == nil {
                report.actions.append("create \(f.path) (mode \(String(f.mode, radix: 8)))")
            } else if makeBackup {
                report.actions.append("replace \(f.path), original saved as \(Self.backupPath(f.path))")
            } else {
                report.actions.append("replace \(f.path)")
            }
            pending.append(Pending(file: f, target: target, original: original, backup: backup, makeBackup: makeBackup))
        }
        if dryRun || pending.isEmpty { return }

        let savedManifest = manifest
        var backups: [String] = []
        var success = false
        defer {
            if !success {
                // Put every file of the step back, then drop what this step added.
                for p in pending.reversed() {
                    if let t = p.temporary { unlink(t) }
                    guard p.committed else { continue }
                    if let o = p.original { try? FileOps.replace(p.target, with: o.bytes, mode: o.mode) } else { try? FileOps.remove(p.target) }
                }
                for b in backups { try? FileOps.remove(b) }
                if savedManifest != manifest { try? saveManifest(savedManifest, layout) }
            }
        }
        for i in pending.indices {
            let dirs = try FileOps.makeDirectories(FileOps.directory(of: pending[i].target))
            manifest.directories += dirs.map { String($0.dropFirst(prefix.count)) }.filter { !manifest.directories.contains($0) }
            let f = pending[i].file
            if let o = pending[i].original, pending[i].backup {
                if pending[i].makeBackup {
                    let tmp = try FileOps.writeTemporary(beside: pending[i].target, o.bytes, mode: o.mode)
                    defer { unlink(tmp) }
                    try FileOps.link(tmp, Self.backupPath(pending[i].target))
                    backups.append(Self.backupPath(pending[i].target))
                }
                manifest.backedUp.append(f.path)
            } else if pending[i].original == nil, !manifest.created.contains(f.path), !manifest.backedUp.contains(f.path) {
                manifest.created.append(f.path)
            }
        }
        if manifest != savedManifest { try saveManifest(manifest, layout) }
        for i in pending.indices {
            pending[i].temporary = try FileOps.writeTemporary(beside: pending[i].target, pending[i].file.contents, mode: pending[i].file.mode)
        }
        for i in pending.indices {
            if let hook = willCommit {
                do { try hook(pending[i].file.path) } catch {
                    throw DeployError(.io, "\(pending[i].file.path): \(error)", cause: error)
                }
            }
            try FileOps.rename(pending[i].temporary!, pending[i].target)
            pending[i].temporary = nil
            pending[i].committed = true
        }
        success = true
    }

    // MARK: Uninstall

    /// Undoes ``install(_:dryRun:)``: restores storage.conf's original bytes and the registries.conf drop-in's (or
    /// removes the drop-in) and restarts CRI-O, then stops and disables the unit, restores or removes the other
    /// files, reloads systemd, and removes the directories it made if they are empty.
    /// #### Errors
    /// ``DeployError/Code/notInstalled`` without a manifest; ``DeployError/Code/io`` when a file cannot be
    /// restored.
    public func uninstall(layout: StoreLayout, dryRun: Bool = false) throws(DeployError) -> InstallReport {
        try layout.validate()
        guard let manifest = try loadManifest(layout) else {
            throw DeployError(.notInstalled, "nothing to uninstall: \(prefix + Self.manifestPath(layout)) does not exist")
        }
        var report = InstallReport()
        // What CRI-O reads: put back before it restarts, while the store still runs.
        let crioFiles = [layout.storageConfPath, layout.registriesDropInPath].filter {
            manifest.backedUp.contains($0) || manifest.created.contains($0)
        }
        let others = (manifest.backedUp + manifest.created).filter { !crioFiles.contains($0) }

        func undo(_ path: String) throws(DeployError) {
            let target = prefix + path
            if manifest.backedUp.contains(path) {
                guard FileOps.exists(Self.backupPath(target)) else {
                    report.warnings.append("\(Self.backupPath(path)) is missing: \(path) left as it is")
                    return
                }
                report.actions.append("restore \(path) from \(Self.backupPath(path))")
                if !dryRun { try FileOps.rename(Self.backupPath(target), target) }
            } else if FileOps.exists(target) {
                report.actions.append("remove \(path)")
                if !dryRun { try FileOps.remove(target) }
            }
        }
        func command(_ argv: [String]) {
            report.commands.append(argv)
            if dryRun { return }
            let r = runner.run(argv)
            if r.status != 0 {
                report.warnings.append("\(argv.joined(separator: " ")) failed (status \(r.status)): \(r.output.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
        }

        if !crioFiles.isEmpty {
            for p in crioFiles { try undo(p) }
            command(["systemctl", "try-restart", "crio.service"])
        }
        command(["systemctl", "disable", "--now", layout.unitName])
        for p in others { try undo(p) }
        command(["systemctl", "daemon-reload"])
        if !dryRun {
            try FileOps.remove(prefix + Self.manifestPath(layout))
            for d in manifest.directories.reversed() where rmdir(prefix + d) == 0 { report.actions.append("remove directory \(d)") }
        }
        return report
    }
}
