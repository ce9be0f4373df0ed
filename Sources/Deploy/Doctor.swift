// SPDX-License-Identifier: Apache-2.0
import CLinuxSys
import Foundation
import TOML
import Synchronization
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// The outcome of one check of `stargz doctor`.
public struct DoctorCheck: Sendable, Equatable {
    /// How the check came out.
    public enum Status: String, Sendable {
        case ok, warning, failed, skipped
    }

    /// A short name (`fuse`, `unit`, `mount`, `storage.conf`, …).
    public var name: String
    /// How it came out.
    public var status: Status
    /// What was found, naming paths and values.
    public var detail: String
    /// One line that fixes it, for warnings and failures.
    public var fix: String?

    /// A check result.
    public init(_ name: String, _ status: Status, _ detail: String, fix: String? = nil) {
        self.name = name
        self.status = status
        self.detail = detail
        self.fix = fix
    }
}

/// What the doctor looks at: a node's files under `prefix`, and a runner for `systemctl`.
public struct DoctorEnvironment: Sendable {
    /// The directory standing for `/` (empty for the real root); `/dev`, `/proc` and `/etc` are read under it.
    public var prefix: String
    /// The paths of the store.
    public var layout: StoreLayout
    /// Asks systemd for the unit's state; nil skips that part.
    public var runner: (any CommandRunner)?
    /// `CONTAINERS_STORAGE_CONF` and `CONTAINERS_REGISTRIES_CONF`, if set, name the files in force.
    public var environment: [String: String]
    /// How long the mount point may take to answer a stat.
    public var statTimeout: Duration
    /// Below this much free space under the root, the disk check fails.
    public var minimumFreeBytes: Int64
    /// The chunk cache bound when config.toml does not set `disk_cache_mib`.
    public var defaultCacheBytes: Int64
    /// Validates config.toml text, returning its problems (the CLI plugs in the store's own parser).
    public var validateConfig: (@Sendable (String) -> [String])?
    /// The node's pull secret files, in the store's order (the CLI plugs in CRI-O's `global_auth_file`).
    public var pullSecretFiles: [String] = ["/var/lib/kubelet/config.json"]

    /// An environment; by default the real root, the store's default paths and no systemd.
    public init(
        prefix: String = "", layout: StoreLayout = StoreLayout(), runner: (any CommandRunner)? = nil,
        environment: [String: String] = [:], statTimeout: Duration = .seconds(5), minimumFreeBytes: Int64 = 1 << 30,
        defaultCacheBytes: Int64 = 10 << 30, validateConfig: (@Sendable (String) -> [String])? = nil
    ) {
        self.prefix = prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
        self.layout = layout
        self.runner = runner
        self.environment = environment
        self.statTimeout = statTimeout
        self.minimumFreeBytes = minimumFreeBytes
        self.defaultCacheBytes = defaultCacheBytes
        self.validateConfig = validateConfig
    }

    func path(_ p: String) -> String { prefix + p }
}

/// Checks a node: FUSE, the binary, config.toml, the unit, the mount (and that only root can use it),
/// storage.conf, registries.conf and its auth helper, the pull secret, SELinux, disk space and kernel FUSE passthrough.
public enum Doctor {
    /// Runs every check, in the order a broken node is best repaired.
    public static func run(_ env: DoctorEnvironment) -> [DoctorCheck] {
        let config = self.config(env)
        let mount = self.mount(env)
        return [
            fuse(env), binary(env), config.check, unit(env), mount.check, mountRoot(env, mount),
            mountOptions(env, mount), storageConf(env), registries(env), authHelper(env), pullSecret(env),
            selinux(env, mount), disk(env, cacheBytes: config.cacheBytes ?? env.defaultCacheBytes), passthrough(env),
            resend(env),
        ]
    }

    /// Whether the node's pull secret is there and readable, and for which registries (never its secrets).
    static func pullSecret(_ env: DoctorEnvironment) -> DoctorCheck {
        for f in env.pullSecretFiles {
            let path = env.path(f)
            guard FileManager.default.fileExists(atPath: path) else { continue }
            guard let data = (try? FileOps.read(path)).flatMap({ $0 }) else {
                return DoctorCheck("pull-secret", .failed, "\(path) is not readable", fix: "check the mode of \(path) (the store runs as root)")
            }
            guard let top = try? JSONSerialization.jsonObject(with: Data(data.bytes)) as? [String: Any] else {
                return DoctorCheck("pull-secret", .failed, "\(path) is not a JSON object", fix: "restore \(path) (oc get secret/pull-secret -n openshift-config on OpenShift)")
            }
            let hosts = ((top["auths"] as? [String: Any]) ?? [:]).keys.sorted()
            return DoctorCheck("pull-secret", .ok, "\(path): entries for \(hosts.count) registr\(hosts.count == 1 ? "y" : "ies")\(hosts.isEmpty ? "" : " (" + hosts.prefix(8).joined(separator: ", ") + (hosts.count > 8 ? ", …" : "") + ")"); the store reads it after Podman's and Docker's files")
        }
        return DoctorCheck("pull-secret", .ok, "no node pull secret (\(env.pullSecretFiles.map(env.path).joined(separator: ", "))): the store uses Podman's and Docker's credential files only")
    }

    /// SELinux's mode and the label of the store's mount. container-selinux lets CRI-O (`container_runtime_t`,
    /// which overlayfs checks a lower layer with) and containers (`container_t`) read `fusefs_t` without a boolean
    /// (docs/deployment.md); another label on the mount is reported with the way back.
    static func selinux(_ env: DoctorEnvironment, _ mount: Mount) -> DoctorCheck {
        let enforce = (try? FileOps.read(env.path("/sys/fs/selinux/enforce"))).flatMap { $0 }
            .map { String(decoding: $0.bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
        guard let enforce else { return DoctorCheck("selinux", .ok, "SELinux is disabled (no \(env.path("/sys/fs/selinux/enforce")))") }
        let mode = enforce == "1" ? "enforcing" : "permissive"
        guard mount.root != nil else { return DoctorCheck("selinux", .skipped, "SELinux is \(mode); the mount is not there to read its label") }
        let mp = env.path(env.layout.mountpoint)
        var value = [UInt8](repeating: 0, count: 4096)  // a context with a long MCS range fits
        let n = getxattr(mp, "security.selinux", &value, value.count)
        guard n > 0 else { return DoctorCheck("selinux", .ok, "SELinux is \(mode); \(mp) has no label to read") }
        let label = String(decoding: value.prefix(Int(n)).prefix { $0 != 0 }, as: UTF8.self)
        let type = label.split(separator: ":").dropFirst(2).first.map(String.init) ?? label
        if ["fusefs_t", "container_file_t", "container_ro_file_t"].contains(type) {
            return DoctorCheck("selinux", .ok, "SELinux is \(mode); \(mp) is \(label), which CRI-O and containers may read with container-selinux's default policy")
        }
        return DoctorCheck(
            "selinux", mode == "enforcing" ? .warning : .ok,
            "SELinux is \(mode); \(mp) is \(label), which container-selinux does not grant containers by default",
            fix: "look for denials with ausearch -m avc -ts recent; the store's own FUSE mount is fusefs_t unless a context= option relabels it")
    }

    static func fuse(_ env: DoctorEnvironment) -> DoctorCheck {
        let dev = env.path("/dev/fuse")
        var st = stat()
        guard stat(dev, &st) == 0 else {
            return DoctorCheck("fuse", .failed, "\(dev) does not exist", fix: "modprobe fuse (and add fuse to /etc/modules-load.d)")
        }
        guard st.st_mode & S_IFMT == S_IFCHR else {
            return DoctorCheck("fuse", .failed, "\(dev) is not a character device", fix: "rm \(dev) && mknod -m 0666 \(dev) c 10 229")
        }
        let filesystems = (try? FileOps.read(env.path("/proc/filesystems"))).flatMap { $0 }
        if let fs = filesystems {
            let names = String(decoding: fs.bytes, as: UTF8.self).split(separator: "\n").compactMap { $0.split(whereSeparator: { $0 == "\t" || $0 == " " }).last }
            guard names.contains("fuse") else {
                return DoctorCheck("fuse", .failed, "\(env.path("/proc/filesystems")) does not list fuse", fix: "modprobe fuse")
            }
        }
        return DoctorCheck("fuse", .ok, "\(dev) is a character device (\(major(st.st_rdev)),\(minor(st.st_rdev)))" + (filesystems == nil ? "" : "; fuse is registered"))
    }

    private static func major(_ dev: dev_t) -> UInt64 { (UInt64(dev) >> 8) & 0xFFF | ((UInt64(dev) >> 32) & ~0xFFF) }
    private static func minor(_ dev: dev_t) -> UInt64 { (UInt64(dev) & 0xFF) | ((UInt64(dev) >> 12) & ~0xFF) }

    /// The binary is executable and, with a live runner, starts: `stargz-store --version` exits 0 (a development
    /// build on RHEL 9 fails here with the loader's `GLIBC_2.35 not found` or a missing libdeflate).
    static func binary(_ env: DoctorEnvironment) -> DoctorCheck {
        let b = env.path(env.layout.binaryPath)
        if FileOps.isExecutable(b) {
            guard let runner = env.runner, runner.isLive else { return DoctorCheck("binary", .ok, "\(b) is executable") }
            let r = runner.run(["timeout", "10", b, "--version"])
            let output = r.output.trimmingCharacters(in: .whitespacesAndNewlines)
            if r.status == 0 { return DoctorCheck("binary", .ok, "\(b) runs: \(output.prefix(200))") }
            return DoctorCheck(
                "binary", .failed, "\(b) does not start (status \(r.status)): \(output.prefix(300))",
                fix: "install the release built for this OS (scripts/release.sh: glibc 2.34 and newer, nothing else needed) with stargz deploy --release-url URL")
        }
        return DoctorCheck(
            "binary", .failed, FileOps.exists(b) ? "\(b) is not executable" : "\(b) does not exist",
            fix: "stargz deploy install --binary PATH (or --release-url URL to download the release at start)")
    }

    static func config(_ env: DoctorEnvironment) -> (check: DoctorCheck, cacheBytes: Int64?) {
        let p = env.path(env.layout.configPath)
        let file: (bytes: [UInt8], mode: Int)?
        do { file = try FileOps.read(p) } catch {
            return (DoctorCheck("config.toml", .failed, "\(error)", fix: "make \(p) a readable file"), nil)
        }
        guard let file else { return (DoctorCheck("config.toml", .ok, "\(p) does not exist: defaults apply"), nil) }
        let text = String(decoding: file.bytes, as: UTF8.self)
        let table: TOMLTable
        do { table = try TOML.parse(text) } catch {
            return (
                DoctorCheck("config.toml", .failed, "\(p): line \(error.line): \(error.message)", fix: "fix line \(error.line) of \(p); the store refuses to start with it"),
                nil
            )
        }
        let cache = table["disk_cache_mib"]?.integer.map { $0 << 20 }
        if let problems = env.validateConfig?(text), !problems.isEmpty {
            return (DoctorCheck("config.toml", .failed, problems.joined(separator: "; "), fix: "correct \(p) (`stargz-store config default` prints a valid one)"), cache)
        }
        return (DoctorCheck("config.toml", .ok, "\(p) is valid"), cache)
    }

    static func unit(_ env: DoctorEnvironment) -> DoctorCheck {
        let name = env.layout.unitName
        let places = ["/etc/systemd/system/", "/usr/lib/systemd/system/", "/lib/systemd/system/"].map { env.path($0 + name) }
        guard let file = places.first(where: FileOps.exists) else {
            return DoctorCheck("unit", .failed, "no \(name) in /etc/systemd/system or /usr/lib/systemd/system", fix: "stargz deploy install (or apply the MachineConfig from stargz deploy machineconfig)")
        }
        guard let runner = env.runner else { return DoctorCheck("unit", .ok, "\(file) exists (state not asked)") }
        let active = runner.run(["systemctl", "is-active", name]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        let enabled = runner.run(["systemctl", "is-enabled", name]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        guard active == "active" else {
            return DoctorCheck("unit", .failed, "\(name) is \(active.isEmpty ? "unknown" : active)", fix: "systemctl enable --now \(name); journalctl -u \(name) -b shows why it stopped")
        }
        guard enabled == "enabled" else {
            return DoctorCheck("unit", .warning, "\(name) is active but \(enabled.isEmpty ? "not enabled" : enabled): it will not start at boot", fix: "systemctl enable \(name)")
        }
        return DoctorCheck("unit", .ok, "\(name) is active and enabled")
    }

    /// The store's mount as the mount check found it: what the checks of its root and options look at.
    struct Mount {
        /// How the mount check came out.
        var check: DoctorCheck
        /// The super options (mountinfo's last field: `rw,user_id=0,group_id=0,default_permissions,allow_other`);
        /// nil unless the mount check passed.
        var superOptions: [String]?
        /// The mount point's attributes, from the stat that proved it answers; nil unless the mount check passed.
        var root: stat?
    }

    static func mount(_ env: DoctorEnvironment) -> Mount {
        let mp = env.path(env.layout.mountpoint)
        let info = (try? FileOps.read(env.path("/proc/self/mountinfo"))).flatMap { $0 }
        guard let info else { return Mount(check: DoctorCheck("mount", .skipped, "\(env.path("/proc/self/mountinfo")) is not readable")) }
        var found: (fstype: String, superOptions: [String])?
        for line in String(decoding: info.bytes, as: UTF8.self).split(separator: "\n") {
            let halves = line.components(separatedBy: " - ")
            let fields = halves[0].split(separator: " ")
            guard halves.count >= 2, fields.count >= 5, unescapeMountinfo(String(fields[4])) == mp else { continue }
            // After " - ": fstype, source, super options.
            let tail = halves[1].split(separator: " ")
            guard let fstype = tail.first else { continue }
            let superOptions = tail.count >= 3 ? tail[2].split(separator: ",").map(String.init) : []
            found = (String(fstype), superOptions)  // the last mount on top wins
        }
        guard let (fstype, superOptions) = found else {
            return Mount(check: DoctorCheck("mount", .failed, "nothing is mounted at \(mp)", fix: "systemctl restart \(env.layout.unitName); journalctl -u \(env.layout.unitName) -b shows why it is not mounted"))
        }
        guard fstype.hasPrefix("fuse") else {
            return Mount(check: DoctorCheck("mount", .failed, "\(mp) is a \(fstype) mount, not the store's FUSE mount", fix: "umount \(mp) && systemctl restart \(env.layout.unitName)"))
        }
        switch statWithTimeout(mp, env.statTimeout) {
        case .answered(let st)?:
            return Mount(check: DoctorCheck("mount", .ok, "\(mp) is mounted (\(fstype)) and answers"), superOptions: superOptions, root: st)
        case .failed(let e)?:
            let why = e == ENOTCONN ? "transport endpoint is not connected: the store died without unmounting" : String(cString: strerror(e))
            return Mount(check: DoctorCheck("mount", .failed, "\(mp): \(why)", fix: "systemctl restart \(env.layout.unitName) (it unmounts a stale mount at start)"))
        case .none:
            return Mount(check: DoctorCheck("mount", .failed, "\(mp) did not answer a stat within \(env.statTimeout)", fix: "systemctl restart \(env.layout.unitName); look for blocked requests in journalctl -u \(env.layout.unitName)"))
        }
    }

    /// What the two checks below say when the mount check did not pass: it has reported the problem already.
    private static func skippedWithoutMount(_ name: String, _ env: DoctorEnvironment) -> DoctorCheck {
        DoctorCheck(name, .skipped, "no answering store mount at \(env.path(env.layout.mountpoint)) to look at (see the mount check)")
    }

    /// The fix for what only the daemon decides (the root's attributes, the mount options).
    private static func upgradeFix(_ env: DoctorEnvironment, _ what: String) -> String {
        "install a stargz-store that \(what) (stargz deploy install --binary PATH), then systemctl restart \(env.layout.unitName)"
    }

    /// The store's namespace root must be mode 0700 and owned by root: no other account may look a layer up
    /// (each lookup may start a registry request and takes a reference).
    static func mountRoot(_ env: DoctorEnvironment, _ mount: Mount) -> DoctorCheck {
        guard let st = mount.root else { return skippedWithoutMount("mount.root", env) }
        let mp = env.path(env.layout.mountpoint)
        let mode = st.st_mode & 0o7777
        let found = "\(mp) is mode \(octal(mode)), owner \(st.st_uid) group \(st.st_gid)"
        guard st.st_mode & S_IFMT == S_IFDIR, st.st_uid == 0, mode & 0o077 == 0 else {
            var wrong: [String] = []
            if st.st_mode & S_IFMT != S_IFDIR { wrong.append("it is not a directory") }
            if st.st_uid != 0 { wrong.append("not owned by root") }
            if mode & 0o077 != 0 { wrong.append("other accounts may use it") }
            return DoctorCheck(
                "mount.root", .failed, found + ": " + wrong.joined(separator: ", ") + " (needs 0700, owner 0)",
                fix: upgradeFix(env, "reports its store root as 0700 root:root"))
        }
        return DoctorCheck("mount.root", .ok, found + ": only root can reach the layers")
    }

    private static func octal(_ mode: mode_t) -> String {
        let digits = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    /// The store must mount with `default_permissions` (the kernel checks the modes, so the root's 0700 holds)
    /// and `allow_other` (the runtime and overlayfs, not only the mounting user, may use it).
    static func mountOptions(_ env: DoctorEnvironment, _ mount: Mount) -> DoctorCheck {
        guard let options = mount.superOptions else { return skippedWithoutMount("mount.options", env) }
        let mp = env.path(env.layout.mountpoint)
        let missing = ["default_permissions", "allow_other"].filter { !options.contains($0) }
        let shown = options.isEmpty ? "no super options" : options.joined(separator: ",")
        guard missing.isEmpty else {
            let why = missing.contains("default_permissions")
                ? "without default_permissions the kernel ignores the modes and any account can look layers up"
                : "without allow_other only the mounting user can use it"
            return DoctorCheck(
                "mount.options", .failed, "\(mp) is mounted without \(missing.joined(separator: ",")) (\(shown)): \(why)",
                fix: upgradeFix(env, "mounts with allow_other,default_permissions"))
        }
        return DoctorCheck("mount.options", .ok, "\(mp) is mounted with \(shown): the kernel checks the modes")
    }

    /// Mount points in mountinfo escape blanks, tabs, newlines and backslashes as octal (`\040`).
    static func unescapeMountinfo(_ s: String) -> String {
        var out: [UInt8] = []
        var b = Array(s.utf8)[...]
        while let c = b.popFirst() {
            if c == UInt8(ascii: "\\"), b.count >= 3, let v = UInt8(String(decoding: b.prefix(3), as: UTF8.self), radix: 8) {
                out.append(v)
                b = b.dropFirst(3)
            } else {
                out.append(c)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// What stat(2) on `path` returned (the attributes or the errno), or nil when it did not return in time.
    /// The stat runs on a thread of its own, which a hung FUSE mount may keep.
    static func statWithTimeout(_ path: String, _ timeout: Duration) -> StatOutcome? {
        let result = Mutex<StatOutcome?>(nil)
        let done = DispatchSemaphore(value: 0)
        let t = Thread {
            var st = stat()
            let r: StatOutcome = stat(path, &st) == 0 ? .answered(st) : .failed(errno)
            result.withLock { $0 = r }
            done.signal()
        }
        t.name = "doctor-stat"
        t.start()
        let (s, atto) = timeout.components
        _ = done.wait(timeout: .now() + .nanoseconds(Int(s) * 1_000_000_000 + Int(atto / 1_000_000_000)))
        return result.withLock { $0 }
    }

    /// What a stat(2) returned.
    enum StatOutcome {
        /// The attributes.
        case answered(stat)
        /// The errno.
        case failed(Int32)
    }

    static func storageConf(_ env: DoctorEnvironment) -> DoctorCheck {
        var candidates: [String] = []
        if let e = env.environment["CONTAINERS_STORAGE_CONF"] { candidates = [env.path(e)] } else {
            candidates = [env.path("/etc/containers/storage.conf"), env.path("/usr/share/containers/storage.conf")]
        }
        guard let p = candidates.first(where: FileOps.exists) else {
            return DoctorCheck("storage.conf", .failed, "no storage.conf at \(candidates.joined(separator: " or "))", fix: "stargz deploy install (or stargz deploy storage-conf --output /etc/containers/storage.conf)")
        }
        let fix = "stargz deploy storage-conf --from \(p) --output \(p) && systemctl restart crio"
        let text: String
        do { text = String(decoding: try FileOps.read(p)?.bytes ?? [], as: UTF8.self) } catch {
            return DoctorCheck("storage.conf", .failed, "\(error)", fix: "make \(p) readable")
        }
        let root: TOMLTable
        let stores: [String]?
        do {
            root = try TOML.parse(text)
        } catch {
            return DoctorCheck("storage.conf", .failed, "\(p): line \(error.line): \(error.message)", fix: "fix line \(error.line) of \(p); CRI-O and Podman refuse to start with it")
        }
        do { stores = try StorageConf.stores(in: root, source: p, text: text) } catch {
            return DoctorCheck("storage.conf", .failed, error.message, fix: fix)
        }
        if let driver = root["storage"]?.table?["driver"]?.string, driver != "overlay" {
            return DoctorCheck("storage.conf", .failed, "\(p) uses the \(driver) driver; additional layer stores need overlay", fix: "set driver = \"overlay\" under [storage] in \(p)")
        }
        let entry = env.layout.additionalLayerStoreEntry
        let list = stores ?? []
        if list.contains(entry) { return DoctorCheck("storage.conf", .ok, "\(p) lists \"\(entry)\"") }
        if list.contains(where: { StorageConf.mountpoint(ofEntry: $0) == env.layout.mountpoint }) {
            return DoctorCheck("storage.conf", .failed, "\(p) lists \(env.layout.mountpoint) without \":ref\": the store needs the image reference in its paths", fix: fix)
        }
        return DoctorCheck("storage.conf", .failed, "\(p) does not list \"\(entry)\" in [storage.options] additionallayerstores", fix: fix)
    }

    /// The registries.conf files in the order containers/image merges them (under the prefix): the main file
    /// (`CONTAINERS_REGISTRIES_CONF`, else /etc/containers/registries.conf), then the `*.conf` files of the
    /// `registries.conf.d` beside it, in lexical order. Missing files are listed too; readers skip them.
    static func registriesFiles(_ env: DoctorEnvironment) -> [String] {
        var files: [String]
        if let e = env.environment["CONTAINERS_REGISTRIES_CONF"] { files = [env.path(e)] } else {
            files = [env.path("/etc/containers/registries.conf")]
        }
        let dropins = FileOps.directory(of: files[0]) + "/registries.conf.d"
        if let names = try? FileManager.default.contentsOfDirectory(atPath: dropins) {
            // Byte order, as Go's filepath.WalkDir lists them (Swift's own String order normalizes first).
            files += names.filter { $0.hasSuffix(".conf") }.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
                .map { dropins + "/" + $0 }
        }
        return files
    }

    static func registries(_ env: DoctorEnvironment) -> DoctorCheck {
        let files = registriesFiles(env)
        var insecure: [String] = []
        var mirrors: [String] = []
        var read = 0
        for f in files {
            guard let data = try? FileOps.read(f) else { continue }
            read += 1
            let root: TOMLTable
            do { root = try TOML.parse(String(decoding: data.bytes, as: UTF8.self)) } catch {
                return DoctorCheck("registries.conf", .failed, "\(f): line \(error.line): \(error.message)", fix: "fix line \(error.line) of \(f); CRI-O, Podman and the store cannot use it")
            }
            let v1 = root["registries"]?.table
            let v2 = root["registry"]?.array
            if v1 != nil && v2 != nil {
                return DoctorCheck("registries.conf", .failed, "\(f) mixes [registries.*] (version 1) with [[registry]] (version 2)", fix: "rewrite \(f) in the version 2 format only")
            }
            for h in v1?["insecure"]?.table?["registries"]?.array ?? [] { if let s = h.string { insecure.append(s) } }
            for r in v2 ?? [] {
                guard let t = r.table, let name = t["prefix"]?.string ?? t["location"]?.string else { continue }
                if t["insecure"]?.boolean == true { insecure.append(name) }
                for m in t["mirror"]?.array ?? [] {
                    guard let mt = m.table, let loc = mt["location"]?.string else { continue }
                    mirrors.append("\(name) → \(loc)" + (mt["insecure"]?.boolean == true ? " (insecure)" : ""))
                }
            }
        }
        if read == 0 { return DoctorCheck("registries.conf", .ok, "no registries.conf: every registry is used over HTTPS, without mirrors") }
        var parts: [String] = []
        parts.append(insecure.isEmpty ? "no insecure registries" : "insecure (plain HTTP): " + insecure.joined(separator: ", "))
        parts.append(mirrors.isEmpty ? "no mirrors" : "mirrors: " + mirrors.joined(separator: ", "))
        return DoctorCheck("registries.conf", .ok, "\(read) file\(read == 1 ? "" : "s"); " + parts.joined(separator: "; ") + " (the store follows the same entries)")
    }

    /// The directories `exec.Command` searches for a helper named without a `/`: CRI-O's PATH as systemd sets it.
    static let helperSearchPath = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]

    /// Whether containers/image hands each pull's credentials to the store: `additional-layer-store-auth-helper` as
    /// containers/image merges it (the last non-empty value of ``registriesFiles(_:)`` wins; `""`, which the Machine
    /// Config Operator writes in `01-image-searchRegistries.conf`, is no override; a version 1 file has no such key),
    /// and whether it names an executable, as `exec.Command` finds it (a name without `/` on ``helperSearchPath``).
    ///
    /// Unset is a warning (pulls work; a pod's own pull secret never reaches the store); a helper that cannot be run
    /// fails (containers/image then logs a warning on every pull).
    static func authHelper(_ env: DoctorEnvironment) -> DoctorCheck {
        let key = "additional-layer-store-auth-helper"
        let wanted = env.layout.helperPath
        var chosen: (helper: String, file: String)?
        /// Files that set `""`: every one, and those after the file that decides.
        var cleared: [String] = []
        var clearedAfter: [String] = []
        for f in registriesFiles(env) {
            guard let data = try? FileOps.read(f) else { continue }
            guard let root = try? TOML.parse(String(decoding: data.bytes, as: UTF8.self)) else {
                return DoctorCheck("auth-helper", .skipped, "\(f) does not parse (see the registries.conf check)")
            }
            guard let value = root[key] else { continue }
            guard let helper = value.string else {
                return DoctorCheck(
                    "auth-helper", .failed, "\(f): \(key) is not a string: containers/image refuses the file",
                    fix: "set \(key) = \(TOMLWriter.string(wanted)) in \(f)")
            }
            if root["registries"]?.table != nil {
                // A version 1 file is converted without the key; with a non-empty one it is a mix, which is refused.
                guard helper.isEmpty else {
                    return DoctorCheck(
                        "auth-helper", .failed,
                        "\(f) mixes [registries.*] (version 1) with \(key) (version 2): containers/image refuses the file",
                        fix: "move \(key) to \(env.path(env.layout.registriesDropInPath)) (stargz deploy install writes it)")
                }
                continue
            }
            if helper.isEmpty {
                cleared.append(f)
                if chosen != nil { clearedAfter.append(f) }
            } else {
                chosen = (helper, f)
                clearedAfter = []
            }
        }
        guard let (helper, origin) = chosen else {
            let note = cleared.isEmpty ? "" : " (\"\" in \(cleared.joined(separator: ", ")) sets nothing)"
            return DoctorCheck(
                "auth-helper", .warning,
                "no registries.conf file sets \(key)\(note): per-pod pull secrets never reach the store; private images "
                    + "that only the pod's secret opens are pulled in full",
                fix: "write \(env.path(env.layout.registriesDropInPath)) containing \(key) = \(TOMLWriter.string(wanted)) "
                    + "(stargz deploy install does), then systemctl restart crio")
        }
        let named = "\(origin) names \(helper)"
            + (clearedAfter.isEmpty ? "" : " (\"\" in \(clearedAfter.joined(separator: ", ")) is no override)")
        var candidates: [String]
        if helper.hasPrefix("/") {
            candidates = [env.path(helper)]
        } else if helper.contains("/") {
            candidates = [env.path("/" + helper)]  // against CRI-O's working directory, /
        } else {
            candidates = helperSearchPath.map { env.path($0 + "/" + helper) }
        }
        guard let found = candidates.first(where: isExecutableFile) else {
            let why: String
            if candidates.count > 1 {
                why = "which is on none of \(helperSearchPath.joined(separator: ":"))"
            } else if !FileOps.exists(candidates[0]) {
                why = "which does not exist"
            } else {
                why = "which is not an executable file"
            }
            let storeHelper = helper == wanted || helper == StoreLayout.Defaults.helperName
                || helper.hasSuffix("/" + StoreLayout.Defaults.helperName)
            let install = storeHelper
                ? "install stargz-store-helper at \(candidates.count > 1 ? env.path(wanted) : candidates[0]) "
                    + "(stargz deploy install takes it from beside --binary)"
                : "set \(key) = \(TOMLWriter.string(wanted)) in \(origin) and install stargz-store-helper there"
            return DoctorCheck(
                "auth-helper", .failed,
                "\(named), \(why): containers/image warns on every pull and the store gets no pull credentials",
                fix: install)
        }
        let isStoreHelper = helper == wanted || found.hasSuffix("/" + StoreLayout.Defaults.helperName)
        guard isStoreHelper else {
            return DoctorCheck(
                "auth-helper", .ok,
                "\(named) (\(found)), an executable other than stargz-store-helper: each pull's credentials go to it, "
                    + "and reach the store only if it passes them on")
        }
        if env.layout.root != StoreLayout.Defaults.root {
            // containers/image runs the helper without arguments, so it looks for the store's socket under the
            // default root.
            return DoctorCheck(
                "auth-helper", .warning,
                "\(named) (\(found)); containers/image runs it without arguments, so it looks for the store at "
                    + "\(StoreLayout.Defaults.root)/store.sock, not under this store's root \(env.layout.root)",
                fix: "run the store with --root \(StoreLayout.Defaults.root), or name a wrapper that runs "
                    + "\(helper) --root \(env.layout.root)")
        }
        return DoctorCheck("auth-helper", .ok, "\(named) (\(found)): each pull's credentials reach the store")
    }

    /// A regular file (symbolic links followed) that may be executed: what `exec.Command` runs.
    static func isExecutableFile(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFREG && access(path, X_OK) == 0
    }

    static func disk(_ env: DoctorEnvironment, cacheBytes: Int64) -> DoctorCheck {
        var dir = env.path(env.layout.root)
        while !FileOps.exists(dir), dir.count > 1 { dir = FileOps.directory(of: dir) }
        if dir.isEmpty { dir = "/" }
        var vfs = statvfs()
        guard statvfs(dir, &vfs) == 0 else {
            return DoctorCheck("disk", .skipped, "statvfs \(dir): \(String(cString: strerror(errno)))")
        }
        let free = Int64(vfs.f_bavail) * Int64(vfs.f_frsize)
        let root = env.path(env.layout.root)
        if free < env.minimumFreeBytes {
            return DoctorCheck("disk", .failed, "\(mib(free)) free under \(root) (needs at least \(mib(env.minimumFreeBytes)))", fix: "free space on the filesystem of \(root), or point -root at a larger one")
        }
        if free < cacheBytes {
            return DoctorCheck("disk", .warning, "\(mib(free)) free under \(root), less than the chunk cache bound \(mib(cacheBytes))", fix: "lower disk_cache_mib in \(env.layout.configPath) below \(free >> 20), or free space")
        }
        return DoctorCheck("disk", .ok, "\(mib(free)) free under \(root) (chunk cache bound \(mib(cacheBytes)))")
    }

    private static func mib(_ bytes: Int64) -> String { "\(bytes >> 20) MiB" }

    /// FUSE passthrough (the kernel reads a backing file directly) arrived in Linux 6.9 with FUSE protocol 7.40.
    /// Whether a crash of the store costs requests: the kernel resends what a dead store read and never answered
    /// (FUSE_NOTIFY_RESEND, Linux 6.9+) when INIT offered FUSE_HAS_RESEND, which the running store records in
    /// `ROOT/fuse-session.json`; and whether systemd keeps the session across restarts (the fd store).
    static func resend(_ env: DoctorEnvironment) -> DoctorCheck {
        let file = env.path(env.layout.root + "/fuse-session.json")
        guard let data = (try? FileOps.read(file)).flatMap({ $0 }),
            let obj = try? JSONSerialization.jsonObject(with: Data(data.bytes)) as? [String: Any]
        else {
            return DoctorCheck("restart", .skipped, "the store has not recorded its FUSE session (\(file)): start it, then check again")
        }
        let resend = obj["resend"] as? Bool ?? false, stored = obj["fdstore"] as? Bool ?? false
        let minor = obj["minor"] as? Int ?? 0
        guard stored else {
            return DoctorCheck(
                "restart", .warning,
                "the FUSE session (7.\(minor)) is not in systemd's fd store: a restart or crash of the store unmounts it, and running containers' reads fail",
                fix: "install the unit `stargz deploy systemd-unit` writes (FileDescriptorStoreMax=, STARGZ_STORE_FDSTORE=1), then systemctl daemon-reload and restart the store")
        }
        if resend {
            return DoctorCheck("restart", .ok, "the FUSE session (7.\(minor)) survives restarts and crashes: systemd keeps it, and the kernel resends what a crashed store read (FUSE_HAS_RESEND)")
        }
        return DoctorCheck(
            "restart", .warning,
            "the FUSE session (7.\(minor)) survives restarts (systemd keeps it), but this kernel cannot resend what a crashed store read: after a crash, the reads that were in flight wait until the store is stopped for good",
            fix: "a kernel 6.9 or later (FUSE_NOTIFY_RESEND); planned restarts lose nothing either way")
    }

    static func passthrough(_ env: DoctorEnvironment) -> DoctorCheck {
        guard let data = (try? FileOps.read(env.path("/proc/sys/kernel/osrelease"))).flatMap({ $0 }) else {
            return DoctorCheck("passthrough", .skipped, "\(env.path("/proc/sys/kernel/osrelease")) is not readable")
        }
        let release = String(decoding: data.bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let numbers = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        guard numbers.count == 2 else { return DoctorCheck("passthrough", .skipped, "cannot read the kernel version \"\(release)\"") }
        if (numbers[0], numbers[1]) >= (6, 9) {
            return DoctorCheck("passthrough", .ok, "kernel \(release) supports FUSE passthrough (Linux 6.9, FUSE 7.40)")
        }
        return DoctorCheck("passthrough", .warning, "kernel \(release) predates FUSE passthrough (Linux 6.9, FUSE 7.40): every read of a lazily pulled file goes through the store", fix: "upgrade the node to a kernel 6.9 or later for FUSE passthrough")
    }
}
