// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing

@testable import Deploy

let sha = String(repeating: "ab", count: 32)

@Suite("systemd unit")
struct SystemdUnitTests {
    @Test("the default unit and the one that downloads its binary match their golden files")
    func golden() throws {
        let plain = try SystemdUnit.render(layout: StoreLayout())
        try expectGolden("stargz-store.service", plain)
        for line in [
            "Type=notify", "Before=crio.service", "After=network.target", "Restart=always", "Environment=HOME=/root",
            // Unmounts on a stop job only: a restart leaves the mount and its fds (FileDescriptorStoreMax) to the next process.
            "ExecStopPost=-/usr/local/bin/stargz-store stop-post %n /var/lib/stargz-store/store",
            "FileDescriptorStoreMax=32", "Environment=STARGZ_STORE_FDSTORE=1",
            // /run/stargz-store: 0700, kept across restarts of the unit (the helper's credentials), gone at reboot.
            "RuntimeDirectory=stargz-store", "RuntimeDirectoryMode=0700", "RuntimeDirectoryPreserve=yes",
            "ExecStart=/usr/local/bin/stargz-store --log-level=info --config=/etc/stargz-store/config.toml --root=/var/lib/stargz-store /var/lib/stargz-store/store",
        ] {
            #expect(plain.split(separator: "\n").contains(Substring(line)), "missing \(line)")
        }
        let download = try SystemdUnit.render(
            layout: StoreLayout(), binary: BinarySource(url: "https://mirror.example/stargz/stargz-store?x=%41", sha256: sha))
        try expectGolden("stargz-store-download.service", download)
        #expect(download.contains("Environment=\"STARGZ_STORE_URL=https://mirror.example/stargz/stargz-store?x=%%41\""))
    }

    /// Runs `systemd-analyze verify` on `unit` saved as NAME in a fresh directory; returns (status, stderr).
    func verify(_ unit: String, name: String = "stargz-store.service") throws -> (Int32, String) {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let path = try dir.write("/" + name, unit)
        let r = try shell(["systemd-analyze", "verify", "--man=no", path])
        return (r.status, r.err)
    }

    @Test("systemd-analyze verify accepts the units with the binary present, and rejects one without")
    func systemdAnalyze() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let binary = try dir.write("/usr/local/bin/stargz-store", "#!/bin/sh\nexit 0\n", mode: 0o755)
        let layout = StoreLayout(binaryPath: binary)
        for source in [nil, try BinarySource(url: "https://mirror.example/s.tar.gz", sha256: sha)] {
            let (status, err) = try verify(try SystemdUnit.render(layout: layout, binary: source))
            #expect(status == 0 && err.isEmpty, "\(err)")
        }
        // The check can fail: a missing executable, and an unknown Type=, are reported.
        let (missing, missingErr) = try verify(try SystemdUnit.render(layout: StoreLayout(binaryPath: dir.path + "/nowhere")))
        #expect(missing != 0 && missingErr.contains("nowhere"))
        let broken = try SystemdUnit.render(layout: layout).replacingOccurrences(of: "Type=notify", with: "Type=notif")
        #expect(try verify(broken).1.contains("notif"))
    }

    @Test("the tmpfiles.d entry makes the mount point at boot, as systemd-tmpfiles reads it, whether or not the unit runs")
    func tmpfilesMakesMountPoint() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let layout = StoreLayout(mountpoint: "/var/lib/other-store/store", unitName: "other-store.service")
        #expect(layout.tmpfilesPath == "/etc/tmpfiles.d/other-store.conf")
        let conf = try dir.write("/conf/other-store.conf", layout.tmpfilesConf)
        #expect(!dir.exists("/root/var/lib/other-store/store"))
        try FileManager.default.createDirectory(atPath: dir.path + "/root", withIntermediateDirectories: true)
        let r = try shell(["systemd-tmpfiles", "--create", "--root=" + dir.path + "/root", conf])
        #expect(r.status == 0, "\(r.err)")
        var isDir: ObjCBool = false
        #expect(FileManager.default.fileExists(atPath: dir.path + "/root/var/lib/other-store/store", isDirectory: &isDir) && isDir.boolValue)
        #expect(try dir.mode("/root/var/lib/other-store/store") == 0o755)
        // An existing directory keeps its mode (as the store's mount root does when tmpfiles runs again).
        #expect(chmod(dir.path + "/root/var/lib/other-store/store", 0o700) == 0)
        #expect(try shell(["systemd-tmpfiles", "--create", "--root=" + dir.path + "/root", conf]).status == 0)
        #expect(try dir.mode("/root/var/lib/other-store/store") == 0o700)
    }

    func runScript(_ unit: String, url: String, sha256: String) throws -> (Int32, String) {
        let r = try shell(
            ["/bin/sh", "-ec", try downloadScript(of: unit)],
            environment: ["PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "STARGZ_STORE_URL": url, "STARGZ_STORE_SHA256": sha256])
        return (r.status, r.err)
    }

    @Test("the download step installs a binary with the right digest, skips the network once installed, and refuses a wrong digest")
    func downloadBinary() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let payload = "#!/bin/sh\necho store v1\n"
        let source = try dir.write("/mirror/stargz-store", payload)
        let digest = try #require(try shell(["sha256sum", source]).out.split(separator: " ").first.map(String.init))
        let layout = StoreLayout(binaryPath: dir.path + "/usr/local/bin/stargz-store", root: dir.path + "/var/lib/stargz-store")
        let unit = try SystemdUnit.render(layout: layout, binary: BinarySource(url: "file://" + source, sha256: digest))

        var (status, err) = try runScript(unit, url: "file://" + source, sha256: digest)
        #expect(status == 0, "\(err)")
        #expect(dir.read("/usr/local/bin/stargz-store") == Data(payload.utf8))
        #expect(try dir.mode("/usr/local/bin/stargz-store") == 0o755)

        // Installed and matching: no download (the mirror is gone).
        try FileManager.default.removeItem(atPath: source)
        (status, err) = try runScript(unit, url: "file://" + source, sha256: digest)
        #expect(status == 0, "\(err)")

        // A new digest whose download does not match fails and keeps the installed binary.
        try dir.write("/mirror/stargz-store", "#!/bin/sh\necho tampered\n")
        (status, _) = try runScript(unit, url: "file://" + source, sha256: sha)
        #expect(status != 0)
        #expect(dir.read("/usr/local/bin/stargz-store") == Data(payload.utf8))
    }

    @Test("the download step takes stargz-store out of a release archive and records the archive's digest")
    func downloadArchive() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let payload = "#!/bin/sh\necho from archive\n"
        try dir.write("/build/stargz-store", payload, mode: 0o755)
        try dir.write("/build/stargz-snapshotter", "other\n", mode: 0o755)
        let archive = dir.path + "/mirror/stargz-snapshotter-v1-linux-amd64.tar.gz"
        try FileManager.default.createDirectory(atPath: dir.path + "/mirror", withIntermediateDirectories: true)
        #expect(try shell(["tar", "-czf", archive, "-C", dir.path + "/build", "stargz-store", "stargz-snapshotter"]).status == 0)
        let digest = try #require(try shell(["sha256sum", archive]).out.split(separator: " ").first.map(String.init))
        let layout = StoreLayout(binaryPath: dir.path + "/bin/stargz-store", root: dir.path + "/state")
        let unit = try SystemdUnit.render(layout: layout, binary: BinarySource(url: "file://" + archive, sha256: digest))

        let (status, err) = try runScript(unit, url: "file://" + archive, sha256: digest)
        #expect(status == 0, "\(err)")
        #expect(dir.read("/bin/stargz-store") == Data(payload.utf8))
        #expect(dir.read("/state/binary-archive.sha256") == Data((digest + "\n").utf8))
        try FileManager.default.removeItem(atPath: archive)
        #expect(try runScript(unit, url: "file://" + archive, sha256: digest).0 == 0)
        // That archive has no stargz-store-helper: the store is installed alone.
        #expect(!dir.exists("/bin/stargz-store-helper"))
    }

    @Test("the download step installs stargz-store-helper from an archive that holds it, at the layout's helper path")
    func downloadArchiveWithHelper() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try dir.write("/build/stargz-store", "#!/bin/sh\necho store\n", mode: 0o755)
        try dir.write("/build/stargz-store-helper", "#!/bin/sh\necho helper\n", mode: 0o755)
        try dir.write("/build/LICENSE", "license\n")
        let archive = dir.path + "/mirror/stargz-swift-1.0.0-linux-amd64.tar.gz"
        try FileManager.default.createDirectory(atPath: dir.path + "/mirror", withIntermediateDirectories: true)
        #expect(try shell(["tar", "-czf", archive, "-C", dir.path + "/build", "LICENSE", "stargz-store", "stargz-store-helper"]).status == 0)
        let digest = try #require(try shell(["sha256sum", archive]).out.split(separator: " ").first.map(String.init))
        for (helperPath, expected) in [(nil, "/bin/stargz-store-helper"), (dir.path + "/libexec/stargz/helper", "/libexec/stargz/helper")] {
            let layout = StoreLayout(binaryPath: dir.path + "/bin/stargz-store", helperPath: helperPath, root: dir.path + "/state")
            #expect(layout.helperPath == dir.path + expected)
            let unit = try SystemdUnit.render(layout: layout, binary: BinarySource(url: "file://" + archive, sha256: digest))
            let (status, err) = try runScript(unit, url: "file://" + archive, sha256: digest)
            #expect(status == 0 && err.isEmpty, "\(err)")
            #expect(dir.read("/bin/stargz-store") == Data("#!/bin/sh\necho store\n".utf8))
            #expect(dir.read(expected) == Data("#!/bin/sh\necho helper\n".utf8))
            #expect(try dir.mode(expected) == 0o755)
            try FileManager.default.removeItem(atPath: dir.path + "/state")  // the next layout downloads again
        }
        #expect(try FileManager.default.subpathsOfDirectory(atPath: dir.path + "/bin").sorted() == ["stargz-store", "stargz-store-helper"])
    }

    @Test(
        "bad paths, names, URLs and digests are refused",
        arguments: [
            { () throws -> Void in _ = try SystemdUnit.render(layout: StoreLayout(mountpoint: "relative/store")) },
            { () throws -> Void in _ = try SystemdUnit.render(layout: StoreLayout(mountpoint: "/var/lib/my store")) },
            { () throws -> Void in _ = try SystemdUnit.render(layout: StoreLayout(binaryPath: "/usr/bin/$HOME")) },
            { () throws -> Void in _ = try SystemdUnit.render(layout: StoreLayout(root: "/var/lib/../x")) },
            { () throws -> Void in _ = try SystemdUnit.render(layout: StoreLayout(unitName: "stargz")) },
            { () throws -> Void in _ = try SystemdUnit.render(layout: StoreLayout(logLevel: "loud")) },
            { () throws -> Void in _ = try BinarySource(url: "ftp://x/y", sha256: sha) },
            { () throws -> Void in _ = try BinarySource(url: "https://x/y z", sha256: sha) },
            { () throws -> Void in _ = try BinarySource(url: "https://x/'y", sha256: sha) },
            { () throws -> Void in _ = try BinarySource(url: "https://x/y", sha256: "abc") },
            { () throws -> Void in _ = try BinarySource(url: "https://x/y", sha256: String(repeating: "g", count: 64)) },
        ] as [@Sendable () throws -> Void])
    func refused(_ body: @Sendable () throws -> Void) {
        let e = #expect(throws: DeployError.self) { try body() }
        #expect(e?.code == .invalidArgument)
    }
}
