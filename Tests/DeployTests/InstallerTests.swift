// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing

@testable import Deploy

struct InjectedFailure: Error {}

@Suite("install and uninstall under a prefix")
struct InstallerTests {
    let layout = StoreLayout()
    let original = "# the node's own storage.conf\n[storage]\ndriver = \"overlay\"\ngraphroot = \"/var/lib/containers/storage\"\n"

    static let helper = Array("#!/bin/sh\n# the auth helper\n".utf8)

    func plan(
        _ dir: TempDir, binary: [UInt8]? = Array("#!/bin/sh\n".utf8), config: (String, Bool) = (testConfig, false),
        authHelper: Bool = true
    ) throws -> InstallPlan {
        try InstallPlan.make(
            layout: layout, prefix: dir.path, unit: try SystemdUnit.render(layout: layout), configTOML: config, binary: binary,
            helper: authHelper && binary != nil ? Self.helper : nil, authHelper: authHelper)
    }

    var installCommands: [[String]] {
        [
            ["systemctl", "daemon-reload"], ["systemctl", "enable", "stargz-store.service"],
            ["systemctl", "restart", "stargz-store.service"], ["systemctl", "try-restart", "crio.service"],
        ]
    }

    @Test("install writes the files with their modes, backs up storage.conf once, records the commands; uninstall restores the exact bytes")
    func installAndUninstall() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try dir.write("/etc/containers/storage.conf", original, mode: 0o600)
        let runner = RecordingRunner()
        let installer = Installer(prefix: dir.path, runner: runner)
        let report = try installer.install(try plan(dir))
        #expect(runner.commands == installCommands)
        #expect(report.commands == installCommands)

        #expect(dir.read("/etc/containers/storage.conf.stargz-backup") == Data(original.utf8))
        #expect(try dir.mode("/etc/containers/storage.conf.stargz-backup") == 0o600)
        let merged = String(decoding: try #require(dir.read("/etc/containers/storage.conf")), as: UTF8.self)
        #expect(merged == (try StorageConf.merge(original, entry: layout.additionalLayerStoreEntry).text))
        #expect(try dir.mode("/etc/containers/storage.conf") == 0o600)
        #expect(dir.read("/etc/systemd/system/stargz-store.service") == Data(try SystemdUnit.render(layout: layout).utf8))
        #expect(try dir.mode("/etc/systemd/system/stargz-store.service") == 0o644)
        #expect(dir.read("/etc/stargz-store/config.toml") == Data(testConfig.utf8))
        #expect(try dir.mode("/usr/local/bin/stargz-store") == 0o755)
        #expect(dir.read("/usr/local/bin/stargz-store-helper") == Data(Self.helper))
        #expect(try dir.mode("/usr/local/bin/stargz-store-helper") == 0o755)
        let dropIn = "/etc/containers/registries.conf.d/99-stargz-store-helper.conf"
        #expect(dir.read(dropIn) == Data(layout.registriesDropIn.utf8))
        #expect(try dir.mode(dropIn) == 0o644)
        #expect(dir.exists("/var/lib/stargz-store/installed-files.json"))
        let leftovers = try FileManager.default.subpathsOfDirectory(atPath: dir.path).filter { $0.contains("stargz-tmp") }
        #expect(leftovers.isEmpty)

        // Again, after an administrator's edit: the backup still holds the original; the drop-in is as it was.
        try dir.write("/etc/containers/storage.conf", merged + "# edited\n", mode: 0o600)
        let again = try installer.install(try plan(dir))
        #expect(dir.read("/etc/containers/storage.conf.stargz-backup") == Data(original.utf8))
        #expect(again.actions.contains("unchanged \(dropIn)") && again.actions.contains("unchanged /usr/local/bin/stargz-store-helper"))

        let undo = RecordingRunner()
        let u = try Installer(prefix: dir.path, runner: undo).uninstall(layout: layout)
        // What CRI-O reads goes back before CRI-O restarts.
        #expect(u.actions.prefix(2) == ["restore /etc/containers/storage.conf from /etc/containers/storage.conf.stargz-backup", "remove \(dropIn)"])
        #expect(undo.commands == [
            ["systemctl", "try-restart", "crio.service"], ["systemctl", "disable", "--now", "stargz-store.service"],
            ["systemctl", "daemon-reload"],
        ])
        #expect(u.warnings.isEmpty)
        #expect(dir.read("/etc/containers/storage.conf") == Data(original.utf8))
        #expect(try dir.mode("/etc/containers/storage.conf") == 0o600)
        for gone in [
            "/etc/containers/storage.conf.stargz-backup", "/etc/systemd/system/stargz-store.service", "/etc/stargz-store/config.toml",
            "/usr/local/bin/stargz-store", "/var/lib/stargz-store/installed-files.json", "/etc/stargz-store", "/usr/local/bin",
            "/usr/local/bin/stargz-store-helper", dropIn, "/etc/containers/registries.conf.d",
        ] {
            #expect(!dir.exists(gone), "\(gone) is left")
        }
        #expect(dir.exists("/etc/systemd/system") || !dir.exists("/etc/systemd"))
        let e = #expect(throws: DeployError.self) { try Installer(prefix: dir.path, runner: undo).uninstall(layout: layout) }
        #expect(e?.code == .notInstalled)
    }

    @Test("an administrator's config.toml is kept unless --config is given, and restored by uninstall")
    func existingConfig() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try dir.write("/etc/stargz-store/config.toml", "noprefetch = true\n")
        let installer = Installer(prefix: dir.path, runner: RecordingRunner())
        let r = try installer.install(try plan(dir))
        #expect(r.actions.contains("kept existing /etc/stargz-store/config.toml"))
        #expect(dir.read("/etc/stargz-store/config.toml") == Data("noprefetch = true\n".utf8))
        _ = try installer.install(try plan(dir, config: (testConfig, true)))
        #expect(dir.read("/etc/stargz-store/config.toml") == Data(testConfig.utf8))
        _ = try installer.uninstall(layout: layout)
        #expect(dir.read("/etc/stargz-store/config.toml") == Data("noprefetch = true\n".utf8))
        // No storage.conf before: uninstall removes the one install made.
        #expect(!dir.exists("/etc/containers/storage.conf"))
    }

    @Test("a failure while switching storage.conf leaves the original in place, and no backup or temporary file behind")
    func failureAtStorageConf() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try dir.write("/etc/containers/storage.conf", original)
        var installer = Installer(prefix: dir.path, runner: RecordingRunner())
        installer.willCommit = { path in if path == "/etc/containers/storage.conf" { throw InjectedFailure() } }
        #expect(throws: DeployError.self) { try installer.install(try plan(dir)) }
        #expect(dir.read("/etc/containers/storage.conf") == Data(original.utf8))
        #expect(!dir.exists("/etc/containers/storage.conf.stargz-backup"))
        #expect(!dir.exists(layout.registriesDropInPath))
        #expect(try FileManager.default.subpathsOfDirectory(atPath: dir.path).filter { $0.contains("stargz-tmp") }.isEmpty)
    }

    @Test("a failure half-way through the store's files puts back the ones already written")
    func failureHalfWay() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try dir.write("/etc/containers/storage.conf", original)
        try dir.write("/usr/local/bin/stargz-store", "old binary\n", mode: 0o700)
        let runner = RecordingRunner()
        var installer = Installer(prefix: dir.path, runner: runner)
        installer.willCommit = { path in if path == layout.unitPath { throw InjectedFailure() } }
        #expect(throws: DeployError.self) { try installer.install(try plan(dir)) }
        #expect(dir.read("/usr/local/bin/stargz-store") == Data("old binary\n".utf8))
        #expect(try dir.mode("/usr/local/bin/stargz-store") == 0o700)
        #expect(!dir.exists("/etc/stargz-store/config.toml"))
        #expect(!dir.exists("/etc/systemd/system/stargz-store.service"))
        #expect(!dir.exists("/usr/local/bin/stargz-store.stargz-backup"))
        #expect(dir.read("/etc/containers/storage.conf") == Data(original.utf8))
        #expect(runner.commands.isEmpty)
    }

    @Test("a real write failure (the unit directory is a file) leaves everything as it was")
    func realFailure() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try dir.write("/etc/containers/storage.conf", original)
        try dir.write("/etc/systemd/system", "not a directory\n")
        let e = #expect(throws: DeployError.self) { try Installer(prefix: dir.path, runner: RecordingRunner()).install(try plan(dir)) }
        #expect(e?.code == .io)
        #expect(dir.read("/etc/containers/storage.conf") == Data(original.utf8))
        #expect(!dir.exists("/etc/containers/storage.conf.stargz-backup"))
        #expect(!dir.exists("/usr/local/bin/stargz-store"))
    }

    @Test("if the store does not start, storage.conf is not switched and CRI-O is not restarted")
    func storeFailsToStart() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try dir.write("/etc/containers/storage.conf", original)
        let runner = RecordingRunner(answers: [["systemctl", "restart", "stargz-store.service"]: CommandResult(status: 1, output: "Job failed")])
        let e = #expect(throws: DeployError.self) { try Installer(prefix: dir.path, runner: runner).install(try plan(dir)) }
        #expect(e?.code == .commandFailed)
        #expect(e?.message.contains("storage.conf was left unchanged") == true)
        #expect(dir.read("/etc/containers/storage.conf") == Data(original.utf8))
        #expect(!dir.exists(layout.registriesDropInPath), "the drop-in goes in with storage.conf, once the store runs")
        #expect(!runner.commands.contains(["systemctl", "try-restart", "crio.service"]))
        // What was installed can be removed again.
        _ = try Installer(prefix: dir.path, runner: RecordingRunner()).uninstall(layout: layout)
        #expect(!dir.exists("/etc/systemd/system/stargz-store.service"))
        #expect(dir.read("/etc/containers/storage.conf") == Data(original.utf8))
    }

    @Test("a dry run writes and runs nothing; a malformed storage.conf is refused before anything is written")
    func dryRunAndMalformed() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try dir.write("/etc/containers/storage.conf", original)
        let runner = RecordingRunner()
        let r = try Installer(prefix: dir.path, runner: runner).install(try plan(dir), dryRun: true)
        #expect(runner.commands.isEmpty)
        #expect(r.commands == installCommands)
        #expect(r.actions.contains("replace /etc/containers/storage.conf, original saved as /etc/containers/storage.conf.stargz-backup"))
        #expect(try FileManager.default.subpathsOfDirectory(atPath: dir.path).sorted() == ["etc", "etc/containers", "etc/containers/storage.conf"])

        try dir.write("/etc/containers/storage.conf", "[storage]\ndriver = overlay\n")
        let e = #expect(throws: DeployError.self) { try plan(dir) }
        #expect(e?.line == 2)
    }

    @Test("stargz deploy install/uninstall --prefix: files in place, systemctl not called")
    func command() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try dir.write("/etc/containers/storage.conf", original)
        let binary = try dir.write("/build/stargz-store", "#!/bin/sh\n", mode: 0o755)
        // Without the helper beside --binary, install refuses before writing anything.
        let refused = try stargz(["deploy", "install", "--prefix", dir.path, "--binary", binary])
        #expect(refused.status != 0 && refused.err.contains("\(dir.path)/build/stargz-store-helper does not exist"), "\(refused.err)")
        #expect(refused.err.contains("--no-auth-helper"), "\(refused.err)")
        #expect(try FileManager.default.subpathsOfDirectory(atPath: dir.path + "/etc").sorted() == ["containers", "containers/storage.conf"])
        try dir.write("/build/stargz-store-helper", "#!/bin/sh\n# helper\n", mode: 0o755)
        let dry = try stargz(["deploy", "install", "--prefix", dir.path, "--binary", binary, "--dry-run"])
        #expect(dry.status == 0 && dry.out.contains("would run: systemctl restart stargz-store.service"))
        #expect(!dir.exists("/etc/systemd/system/stargz-store.service"))
        let done = try stargz(["deploy", "install", "--prefix", dir.path, "--binary", binary])
        #expect(done.status == 0)
        #expect(done.out.split(separator: "\n").filter { $0.hasPrefix("would run: systemctl") }.count == 4)
        #expect(dir.exists("/etc/systemd/system/stargz-store.service"))
        #expect(dir.read("/etc/containers/storage.conf.stargz-backup") == Data(original.utf8))
        #expect(dir.read("/usr/local/bin/stargz-store-helper") == Data("#!/bin/sh\n# helper\n".utf8))
        #expect(dir.read(layout.registriesDropInPath) == Data(layout.registriesDropIn.utf8))
        #expect(try stargz(["deploy", "uninstall", "--prefix", dir.path]).status == 0)
        #expect(dir.read("/etc/containers/storage.conf") == Data(original.utf8))
        #expect(!dir.exists(layout.registriesDropInPath) && !dir.exists("/usr/local/bin/stargz-store-helper"))
        #expect(try stargz(["deploy", "uninstall", "--prefix", dir.path]).status == 1)

        // --no-auth-helper: neither the helper nor the drop-in; --helper-path and --registries-drop-in-path move them.
        try FileManager.default.removeItem(atPath: dir.path + "/build/stargz-store-helper")
        #expect(try stargz(["deploy", "install", "--prefix", dir.path, "--binary", binary, "--no-auth-helper"]).status == 0)
        #expect(!dir.exists(layout.registriesDropInPath) && !dir.exists("/usr/local/bin/stargz-store-helper"))
        #expect(try stargz(["deploy", "uninstall", "--prefix", dir.path]).status == 0)
        try dir.write("/build/stargz-store-helper", "#!/bin/sh\n# helper\n", mode: 0o755)
        let moved = try stargz([
            "deploy", "install", "--prefix", dir.path, "--binary", binary, "--helper-path", "/opt/stargz/bin/helper",
            "--registries-drop-in-path", "/etc/containers/registries.conf.d/90-lazy.conf",
        ])
        #expect(moved.status == 0, "\(moved.err)")
        #expect(try dir.mode("/opt/stargz/bin/helper") == 0o755)
        let text = String(decoding: try #require(dir.read("/etc/containers/registries.conf.d/90-lazy.conf")), as: UTF8.self)
        #expect(text.contains("additional-layer-store-auth-helper = \"/opt/stargz/bin/helper\"\n"))
    }
}
