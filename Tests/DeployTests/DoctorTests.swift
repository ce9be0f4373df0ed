// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing

@testable import Deploy

#if canImport(Glibc)
@preconcurrency import Glibc
#endif

@Suite("doctor")
struct DoctorTests {
    @Test("the binary check runs the binary: one that starts is ok, one the loader refuses fails with the loader's words")
    func binaryStarts() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let env = DoctorEnvironment(prefix: dir.path, layout: layout, runner: ProcessRunner())
        try dir.write(layout.binaryPath, "#!/bin/sh\necho \"0.1.0 (commit abc)\"\n", mode: 0o755)
        let ok = Doctor.binary(env)
        #expect(ok.status == .ok && ok.detail.contains("runs: 0.1.0 (commit abc)"), "\(ok.detail)")
        try dir.write(
            layout.binaryPath, "#!/bin/sh\necho \"$0: /lib64/libm.so.6: version \\`GLIBC_2.35' not found\" >&2\nexit 1\n", mode: 0o755)
        let bad = Doctor.binary(env)
        #expect(bad.status == .failed && bad.detail.contains("GLIBC_2.35' not found") && bad.fix?.contains("--release-url") == true, "\(bad.detail)")
    }

    let layout = StoreLayout()

    /// A node under `dir` on which every check passes.
    func healthyNode(_ dir: TempDir) throws {
        try FileManager.default.createDirectory(atPath: dir.path + "/dev", withIntermediateDirectories: true)
        #expect(mknod(dir.path + "/dev/fuse", S_IFCHR | 0o666, dev_t((10 << 8) | 229)) == 0)
        try dir.write("/proc/filesystems", "nodev\tsysfs\nnodev\tfuse\n\text4\n")
        try dir.write("/proc/sys/kernel/osrelease", "6.12.0-55.el10.x86_64\n")
        // The running store's record of its FUSE session: in systemd's fd store, the kernel able to resend.
        try dir.write(layout.root + "/fuse-session.json", "{\"minor\":38,\"resend\":true,\"fdstore\":true}\n")
        // The mount point stands for the store's root inode: 0700, root's (these tests run as root).
        try FileManager.default.createDirectory(atPath: dir.path + layout.mountpoint, withIntermediateDirectories: true)
        #expect(chmod(dir.path + layout.mountpoint, 0o700) == 0)
        #expect(chown(dir.path + layout.mountpoint, 0, 0) == 0)
        try dir.write("/proc/self/mountinfo", mountinfo(dir))
        try dir.write(layout.binaryPath, "#!/bin/sh\n", mode: 0o755)
        try dir.write(layout.helperPath, "#!/bin/sh\n", mode: 0o755)
        try dir.write(layout.configPath, testConfig)
        try dir.write(layout.unitPath, try SystemdUnit.render(layout: layout))
        try dir.write("/etc/containers/storage.conf", try StorageConf.merge(nodeStorageConf, entry: layout.additionalLayerStoreEntry).text)
        try dir.write(
            "/etc/containers/registries.conf",
            "unqualified-search-registries = [\"docker.io\"]\n[[registry]]\nlocation = \"registry.local:5000\"\ninsecure = true\n")
        try dir.write(
            "/etc/containers/registries.conf.d/50-mirror.conf",
            "[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"mirror.local\"\n")
        // What the Machine Config Operator writes on OpenShift, and the store's drop-in after it.
        try dir.write(Self.mcoDropIn, "unqualified-search-registries = [\"registry.access.redhat.com\", \"docker.io\"]\nadditional-layer-store-auth-helper = \"\"\n")
        try dir.write(layout.registriesDropInPath, layout.registriesDropIn)
        try dir.write(
            "/var/lib/kubelet/config.json",
            "{\"auths\":{\"quay.io\":{\"auth\":\"c2VjcmV0\"},\"registry.local:5000\":{\"auth\":\"c2VjcmV0\"}}}")
    }

    static let mcoDropIn = "/etc/containers/registries.conf.d/01-image-searchRegistries.conf"

    /// mountinfo with the store mounted at the layout's mount point under `dir`, with these super options.
    func mountinfo(_ dir: TempDir, superOptions: String = "rw,user_id=0,group_id=0,default_permissions,allow_other") -> String {
        "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
            + "98 22 0:50 / \(dir.path)\(layout.mountpoint) rw,nosuid,nodev,relatime - fuse.stargzstore stargzstore \(superOptions)\n"
    }

    func environment(_ dir: TempDir, runner: (any CommandRunner)? = nil, minimumFree: Int64 = 0, cache: Int64 = 0) -> DoctorEnvironment {
        DoctorEnvironment(prefix: dir.path, layout: layout, runner: runner, minimumFreeBytes: minimumFree, defaultCacheBytes: cache)
    }

    let healthy = RecordingRunner(answers: [
        ["systemctl", "is-active", "stargz-store.service"]: CommandResult(status: 0, output: "active\n"),
        ["systemctl", "is-enabled", "stargz-store.service"]: CommandResult(status: 0, output: "enabled\n"),
    ])

    func check(_ checks: [DoctorCheck], _ name: String) throws -> DoctorCheck { try #require(checks.first { $0.name == name }) }

    @Test("a healthy node passes every check")
    func healthyPasses() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try healthyNode(dir)
        var env = environment(dir, runner: healthy)
        env.validateConfig = { _ in [] }
        let checks = Doctor.run(env)
        #expect(
            checks.map(\.name) == [
                "fuse", "binary", "config.toml", "unit", "mount", "mount.root", "mount.options", "storage.conf",
                "registries.conf", "auth-helper", "pull-secret", "selinux", "disk", "passthrough", "restart",
            ])
        for c in checks { #expect(c.status == .ok, "\(c.name): \(c.detail)") }
        let registries = try check(checks, "registries.conf")
        #expect(registries.detail.contains("registry.local:5000") && registries.detail.contains("docker.io → mirror.local"))
        #expect(try check(checks, "fuse").detail.contains("(10,229)"))
        #expect(try check(checks, "mount.root").detail.contains("mode 0700, owner 0 group 0"))
        #expect(try check(checks, "mount.options").detail.contains("default_permissions,allow_other"))
        #expect(try check(checks, "pull-secret").detail.contains("entries for 2 registries (quay.io, registry.local:5000)"))
        #expect(try check(checks, "selinux").detail.contains("disabled"))
    }

    @Test("the pull secret: named hosts, never its secrets; one that is not JSON fails with a fix; SELinux's mode is read")
    func pullSecretAndSELinux() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try healthyNode(dir)
        let env = environment(dir)
        #expect(!Doctor.pullSecret(env).detail.contains("c2VjcmV0"), "no secret in the report")
        try dir.write("/var/lib/kubelet/config.json", "{not json")
        let bad = Doctor.pullSecret(env)
        #expect(bad.status == .failed && bad.fix?.contains("pull-secret") == true, "\(bad)")
        try dir.write("/sys/fs/selinux/enforce", "1")
        let se = Doctor.selinux(env, Doctor.mount(env))
        #expect(se.detail.contains("enforcing"), "\(se)")
    }

    @Test(
        "each broken part fails (or warns) its own check, with a fix",
        arguments: [
            ("fuse", DoctorCheck.Status.failed, "/dev/fuse"),
            ("fuse-module", .failed, "/proc/filesystems"),
            ("binary", .failed, "/usr/local/bin/stargz-store"),
            ("config.toml", .failed, "line 2"),
            ("unit", .failed, "no stargz-store.service"),
            ("unit-inactive", .failed, "failed"),
            ("unit-disabled", .warning, "disabled"),
            ("mount", .failed, "nothing is mounted"),
            ("mount-other", .failed, "tmpfs"),
            ("mount-gone", .failed, "No such file or directory"),
            ("mount.root", .failed, "mode 0755"),
            ("mount.root-owner", .failed, "owner 1000 group 1000"),
            ("mount.root-group", .failed, "mode 0750"),
            ("mount.options", .failed, "without default_permissions"),
            ("mount.options-allowother", .failed, "without allow_other"),
            ("mount.options-none", .failed, "without default_permissions,allow_other"),
            ("storage.conf", .failed, "does not list"),
            ("storage.conf-noref", .failed, "without \":ref\""),
            ("storage.conf-driver", .failed, "vfs"),
            ("storage.conf-bad", .failed, "line 3"),
            ("registries.conf", .failed, "line 1"),
            ("registries.conf-mixed", .failed, "mixes"),
            ("disk", .failed, "free under"),
            ("disk-cache", .warning, "chunk cache bound"),
            ("passthrough", .warning, "5.14.0"), ("restart", .warning, "cannot resend"),
        ])
    func broken(_ breakage: String, _ status: DoctorCheck.Status, _ mention: String) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try healthyNode(dir)
        var runner: RecordingRunner = healthy
        var minimumFree: Int64 = 0
        let conf = "/etc/containers/storage.conf"
        switch breakage {
        case "fuse":
            unlink(dir.path + "/dev/fuse")
            try dir.write("/dev/fuse", "")
        case "fuse-module": try dir.write("/proc/filesystems", "nodev\tsysfs\n")
        case "binary": try dir.write(layout.binaryPath, "", mode: 0o644)
        case "config.toml": try dir.write(layout.configPath, "noprefetch = false\nmax_concurrency = \n")
        case "unit": try FileManager.default.removeItem(atPath: dir.path + layout.unitPath)
        case "unit-inactive":
            runner = RecordingRunner(answers: [["systemctl", "is-active", "stargz-store.service"]: CommandResult(status: 3, output: "failed\n")])
        case "unit-disabled":
            runner = RecordingRunner(answers: [
                ["systemctl", "is-active", "stargz-store.service"]: CommandResult(status: 0, output: "active\n"),
                ["systemctl", "is-enabled", "stargz-store.service"]: CommandResult(status: 1, output: "disabled\n"),
            ])
        case "mount": try dir.write("/proc/self/mountinfo", "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
        case "mount-other":
            try dir.write("/proc/self/mountinfo", "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n99 22 0:9 / \(dir.path)\(layout.mountpoint) rw - tmpfs tmpfs rw\n")
        case "mount-gone": try FileManager.default.removeItem(atPath: dir.path + layout.mountpoint)
        case "mount.root": #expect(chmod(dir.path + layout.mountpoint, 0o755) == 0)
        case "mount.root-owner": #expect(chown(dir.path + layout.mountpoint, 1000, 1000) == 0)
        case "mount.root-group": #expect(chmod(dir.path + layout.mountpoint, 0o750) == 0)
        case "mount.options": try dir.write("/proc/self/mountinfo", mountinfo(dir, superOptions: "rw,user_id=0,group_id=0,allow_other"))
        case "mount.options-allowother":
            try dir.write("/proc/self/mountinfo", mountinfo(dir, superOptions: "rw,user_id=0,group_id=0,default_permissions"))
        case "mount.options-none": try dir.write("/proc/self/mountinfo", mountinfo(dir, superOptions: "rw,user_id=0,group_id=0"))
        case "storage.conf": try dir.write(conf, nodeStorageConf)
        case "storage.conf-noref": try dir.write(conf, "[storage]\ndriver = \"overlay\"\n[storage.options]\nadditionallayerstores = [\"/var/lib/stargz-store/store\"]\n")
        case "storage.conf-driver": try dir.write(conf, "[storage]\ndriver = \"vfs\"\n[storage.options]\nadditionallayerstores = [\"/var/lib/stargz-store/store:ref\"]\n")
        case "storage.conf-bad": try dir.write(conf, "[storage]\ndriver = \"overlay\"\n[storage.options\n")
        case "registries.conf": try dir.write("/etc/containers/registries.conf.d/50-mirror.conf", "[[registry]\n")
        case "registries.conf-mixed": try dir.write("/etc/containers/registries.conf", "[registries.insecure]\nregistries = [\"a\"]\n[[registry]]\nlocation = \"b\"\n")
        case "disk": minimumFree = .max
        case "disk-cache": try dir.write(layout.configPath, "disk_cache_mib = 100000000000\n")
        case "passthrough": try dir.write("/proc/sys/kernel/osrelease", "5.14.0-427.el9.x86_64\n")
        case "restart": try dir.write(layout.root + "/fuse-session.json", "{\"minor\":36,\"resend\":false,\"fdstore\":true}\n")
        default: Issue.record("unknown breakage \(breakage)")
        }
        let checks = Doctor.run(environment(dir, runner: runner, minimumFree: minimumFree))
        let name = String(breakage.split(separator: "-").first!)
        let c = try check(checks, name == "storage.conf" ? "storage.conf" : name)
        #expect(c.status == status, "\(c.detail)")
        #expect(c.detail.contains(mention), "\(c.detail)")
        #expect(c.fix?.isEmpty == false)
        // The other checks are unaffected; without a mount, its root and options are not looked at (the mount
        // check has said what is wrong).
        // A registries.conf that does not parse leaves the auth helper unknown (the registries.conf check says why).
        let dependents: Set = ["mount.root", "mount.options"]
        for other in checks where other.name != c.name {
            let expected: DoctorCheck.Status =
                (name == "mount" && dependents.contains(other.name)) || (breakage == "registries.conf" && other.name == "auth-helper")
                ? .skipped : .ok
            #expect(other.status == expected, "\(other.name): \(other.detail)")
        }
    }

    @Test("the store's config parser is consulted, and its disk_cache_mib sets the cache bound")
    func configValidation() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try healthyNode(dir)
        var env = environment(dir, runner: healthy)
        env.validateConfig = { text in text.contains("disk_cache_mib = 2048") ? ["disk_cache_mib: too small"] : [] }
        var checks = Doctor.run(env)
        #expect(try check(checks, "config.toml").status == .failed)
        env.validateConfig = nil
        checks = Doctor.run(env)
        #expect(try check(checks, "disk").detail.contains("chunk cache bound 2048 MiB"))
    }

    @Test("mountinfo escapes are undone; a stat's outcome comes back as its errno")
    func mountInfoUnescape() {
        #expect(Doctor.unescapeMountinfo("/var/lib/my\\040store") == "/var/lib/my store")
        guard case .answered(let st)? = Doctor.statWithTimeout("/", .seconds(5)) else {
            Issue.record("stat / did not answer")
            return
        }
        #expect(st.st_mode & S_IFMT == S_IFDIR)
        guard case .failed(let e)? = Doctor.statWithTimeout("/nonexistent-\(UUID().uuidString)", .seconds(5)) else {
            Issue.record("stat of a missing path did not fail")
            return
        }
        #expect(e == ENOENT)
    }

    @Test("stargz doctor --prefix exits 1 when a check fails and 0 when none does")
    func command() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try healthyNode(dir)
        // Without systemd the unit state is not asked; this machine has more than 2 GiB free under the prefix.
        #expect(try stargz(["doctor", "--prefix", dir.path]).status == 0)
        try dir.write("/etc/containers/storage.conf", nodeStorageConf)
        let r = try stargz(["doctor", "--prefix", dir.path, "--json"])
        #expect(r.status == 1)
        let checks = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [[String: Any]])
        let conf = try #require(checks.first { $0["name"] as? String == "storage.conf" })
        #expect(conf["status"] as? String == "failed")
        #expect((conf["fix"] as? String)?.hasPrefix("stargz deploy storage-conf") == true)
        // The permission checks come out in the same shape as the others.
        try dir.write("/proc/self/mountinfo", mountinfo(dir, superOptions: "rw,user_id=0,group_id=0,allow_other"))
        let r2 = try stargz(["doctor", "--prefix", dir.path, "--json"])
        #expect(r2.status == 1)
        let checks2 = try #require(try JSONSerialization.jsonObject(with: Data(r2.out.utf8)) as? [[String: Any]])
        let root = try #require(checks2.first { $0["name"] as? String == "mount.root" })
        #expect(root["status"] as? String == "ok")
        #expect((root["detail"] as? String)?.contains("0700") == true)
        let options = try #require(checks2.first { $0["name"] as? String == "mount.options" })
        #expect(options["status"] as? String == "failed")
        #expect(Set(options.keys) == ["name", "status", "detail", "fix"])
        #expect((options["fix"] as? String)?.contains("allow_other,default_permissions") == true)
    }
}

/// The auth-helper check reads registries.conf and its drop-ins as containers/image merges them.
extension DoctorTests {
    static let key = "additional-layer-store-auth-helper"
    static let dropIns = "/etc/containers/registries.conf.d/"

    @Test("auth helper: the store's drop-in after the operator's \"\" names the installed helper: ok")
    func authHelperHealthy() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try healthyNode(dir)
        let c = Doctor.authHelper(environment(dir))
        #expect(c.status == .ok, "\(c.detail)")
        #expect(c.detail.contains("\(dir.path)\(layout.registriesDropInPath) names /usr/local/bin/stargz-store-helper"), "\(c.detail)")
        #expect(c.detail.contains("reach the store"), "\(c.detail)")
    }

    @Test("auth helper unset (only the operator's \"\", or the key inside a [[registry]] table): a warning with the drop-in as fix")
    func authHelperUnset() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try healthyNode(dir)
        try FileManager.default.removeItem(atPath: dir.path + layout.registriesDropInPath)
        var c = Doctor.authHelper(environment(dir))
        #expect(c.status == .warning, "\(c.detail)")
        #expect(c.detail.contains("per-pod pull secrets never reach the store; private images that only the pod's secret opens are pulled in full"))
        #expect(c.detail.contains("\"\" in \(dir.path)\(Self.mcoDropIn) sets nothing"), "\(c.detail)")
        #expect(c.fix?.contains("\(dir.path)/etc/containers/registries.conf.d/99-stargz-store-helper.conf") == true, "\(c.fix ?? "")")
        #expect(c.fix?.contains("\(Self.key) = \"/usr/local/bin/stargz-store-helper\"") == true, "\(c.fix ?? "")")
        #expect(c.fix?.contains("stargz deploy install") == true)

        // Not at the top level: containers/image does not see it.
        try dir.write(Self.dropIns + "50-mirror.conf", "[[registry]]\nlocation = \"quay.io\"\n\(Self.key) = \"/usr/local/bin/stargz-store-helper\"\n")
        c = Doctor.authHelper(environment(dir))
        #expect(c.status == .warning, "\(c.detail)")
    }

    @Test("auth helper: \"\" in a later file is no override of an earlier non-empty value")
    func authHelperEmptyLater() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try healthyNode(dir)
        try FileManager.default.removeItem(atPath: dir.path + layout.registriesDropInPath)
        try dir.write("/etc/containers/registries.conf", "\(Self.key) = \"/usr/local/bin/stargz-store-helper\"\n[[registry]]\nlocation = \"registry.local:5000\"\n")
        try dir.write(Self.dropIns + "99-zz-clear.conf", "\(Self.key) = \"\"\n")
        let c = Doctor.authHelper(environment(dir))
        #expect(c.status == .ok, "\(c.detail)")
        #expect(c.detail.contains("\(dir.path)/etc/containers/registries.conf names /usr/local/bin/stargz-store-helper"), "\(c.detail)")
        // Only the "" after the deciding file is mentioned (the operator's comes after the main file too).
        #expect(c.detail.contains("is no override") && c.detail.contains("99-zz-clear.conf"), "\(c.detail)")
    }

    @Test("auth helper: the last non-empty value wins, in byte order of the drop-ins, whatever it names")
    func authHelperLaterWins() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try healthyNode(dir)
        // An executable other than the store's helper: ok, and the check says which.
        try dir.write("/opt/other/bin/credential-relay", "#!/bin/sh\n", mode: 0o755)
        try dir.write(Self.dropIns + "99-zz-other.conf", "\(Self.key) = \"/opt/other/bin/credential-relay\"\n")
        // "99-Z" sorts before "99-s" in byte order: this one is read before the store's and loses.
        try dir.write(Self.dropIns + "99-Zearly.conf", "\(Self.key) = \"/nowhere/helper\"\n")
        var c = Doctor.authHelper(environment(dir))
        #expect(c.status == .ok, "\(c.detail)")
        #expect(c.detail.contains("99-zz-other.conf names /opt/other/bin/credential-relay"), "\(c.detail)")
        #expect(c.detail.contains("other than stargz-store-helper"), "\(c.detail)")
        // The later file wins even when what it names is missing.
        try dir.write(Self.dropIns + "99-zz-other.conf", "\(Self.key) = \"/opt/missing/helper\"\n")
        c = Doctor.authHelper(environment(dir))
        #expect(c.status == .failed && c.detail.contains("/opt/missing/helper, which does not exist"), "\(c.detail)")
    }

    @Test(
        "auth helper: what it names must be an executable file, found as exec.Command finds it",
        arguments: [
            ("/usr/local/bin/stargz-store-helper", "missing", DoctorCheck.Status.failed, "which does not exist"),
            ("/usr/local/bin/stargz-store-helper", "not-executable", .failed, "which is not an executable file"),
            ("/usr/local/bin/stargz-store-helper", "directory", .failed, "which is not an executable file"),
            ("stargz-store-helper", "installed", .ok, "/usr/local/bin/stargz-store-helper): each pull's credentials reach the store"),
            ("stargz-store-helper", "missing", .failed, "on none of /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            ("usr/local/bin/stargz-store-helper", "installed", .ok, "reach the store"),
        ])
    func authHelperExecutable(_ value: String, _ state: String, _ status: DoctorCheck.Status, _ mention: String) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try healthyNode(dir)
        try dir.write(layout.registriesDropInPath, "\(Self.key) = \(TOMLWriter.string(value))\n")
        let helper = dir.path + layout.helperPath
        switch state {
        case "missing": try FileManager.default.removeItem(atPath: helper)
        case "not-executable": #expect(chmod(helper, 0o644) == 0)
        case "directory":
            try FileManager.default.removeItem(atPath: helper)
            try FileManager.default.createDirectory(atPath: helper, withIntermediateDirectories: false)
        default: break
        }
        let c = Doctor.authHelper(environment(dir))
        #expect(c.status == status, "\(c.detail)")
        #expect(c.detail.contains(mention), "\(c.detail)")
        if status == .failed {
            #expect(c.detail.contains("the store gets no pull credentials"))
            #expect(c.fix?.contains("install stargz-store-helper") == true, "\(c.fix ?? "")")
        }
    }

    @Test("auth helper: a version 1 registries.conf carries no helper, and one with the key is refused; a store with another root is warned about")
    func authHelperVersion1AndRoot() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try healthyNode(dir)
        try dir.write("/etc/containers/registries.conf", "[registries.search]\nregistries = [\"docker.io\"]\n")
        #expect(Doctor.authHelper(environment(dir)).status == .ok)
        try dir.write("/etc/containers/registries.conf", "\(Self.key) = \"/usr/local/bin/stargz-store-helper\"\n[registries.search]\nregistries = [\"docker.io\"]\n")
        let mixed = Doctor.authHelper(environment(dir))
        #expect(mixed.status == .failed && mixed.detail.contains("mixes [registries.*] (version 1)"), "\(mixed.detail)")

        try dir.write("/etc/containers/registries.conf", "unqualified-search-registries = [\"docker.io\"]\n")
        let other = DoctorEnvironment(prefix: dir.path, layout: StoreLayout(root: "/srv/stargz"), minimumFreeBytes: 0, defaultCacheBytes: 0)
        let c = Doctor.authHelper(other)
        #expect(c.status == .warning && c.detail.contains("without arguments") && c.detail.contains("/srv/stargz"), "\(c.detail)")
    }

    @Test("stargz doctor --prefix reports the auth helper: unset warns without failing the run")
    func authHelperCommand() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try healthyNode(dir)
        try FileManager.default.removeItem(atPath: dir.path + layout.registriesDropInPath)
        let r = try stargz(["doctor", "--prefix", dir.path, "--json"])
        #expect(r.status == 0, "\(r.out)")
        let checks = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [[String: Any]])
        let c = try #require(checks.first { $0["name"] as? String == "auth-helper" })
        #expect(c["status"] as? String == "warning")
        try dir.write(layout.registriesDropInPath, "\(Self.key) = \"/usr/local/bin/absent-helper\"\n")
        #expect(try stargz(["doctor", "--prefix", dir.path]).status == 1)
    }
}

@Suite("doctor: restarts and crashes")
struct DoctorRestartTests {
    @Test("the FUSE session the store recorded: in the fd store with resend ok; without resend or without the fd store a warning")
    func restart() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("doctor-restart-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let env = DoctorEnvironment(prefix: root)
        try FileManager.default.createDirectory(atPath: root + "/var/lib/stargz-store", withIntermediateDirectories: true)
        #expect(Doctor.resend(env).status == .skipped)
        let file = root + "/var/lib/stargz-store/fuse-session.json"
        try "{\"minor\":38,\"resend\":true,\"fdstore\":true}\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(Doctor.resend(env).status == .ok)
        try "{\"minor\":38,\"resend\":false,\"fdstore\":true}\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(Doctor.resend(env).status == .warning && Doctor.resend(env).detail.contains("cannot resend"))
        try "{\"minor\":38,\"resend\":true,\"fdstore\":false}\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(Doctor.resend(env).status == .warning && Doctor.resend(env).fix?.contains("FileDescriptorStoreMax") == true)
    }
}
