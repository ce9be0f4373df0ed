// SPDX-License-Identifier: Apache-2.0
import Deploy
import Foundation
import Store
import Testing
import TestSupport

/// The release tarball (scripts/release.sh): what it holds, and that its executables need nothing a RHEL 9 / RHCOS 9
/// node lacks.
///
/// The tarball is $STARGZ_RELEASE_TARBALL (scripts/test.sh builds it before `swift test`), or, when that is unset,
/// built here by scripts/release.sh (minutes: a release build of everything, in .build-release).
@Suite("Release tarball", .serialized)
struct ReleaseTests {
    static let tarball: Result<String, SupportError> = {
        if let p = ProcessInfo.processInfo.environment["STARGZ_RELEASE_TARBALL"] {
            return FileManager.default.fileExists(atPath: p) ? .success(p) : .failure(SupportError("STARGZ_RELEASE_TARBALL=\(p) does not exist"))
        }
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("release-\(getpid()).log").path
        let script = Paths.repoRoot.appendingPathComponent("scripts/release.sh").path
        guard let r = try? runCapturing("/bin/bash", ["-c", "\"$0\" 2>\"$1\"", script, log]), r.status == 0,
            let path = r.out.split(separator: "\n").last.map(String.init)
        else {
            let tail = (try? String(contentsOfFile: log, encoding: .utf8)).map { String($0.suffix(2000)) } ?? ""
            return .failure(SupportError("scripts/release.sh failed: \(tail)"))
        }
        return .success(path)
    }()

    /// The tarball extracted into a fresh directory (the caller cleans it up).
    func extracted() throws -> (tarball: String, dir: TempDir) {
        let tarball = try Self.tarball.get()
        let dir = try TempDir()
        let r = try runCapturing("/usr/bin/tar", ["-xzf", tarball, "-C", dir.path])
        guard r.status == 0 else {
            dir.cleanup()
            throw SupportError("tar -xzf \(tarball): \(r.err)")
        }
        return (tarball, dir)
    }

    @Test("the tarball holds stargz-store (and stargz, a symlink to it), stargz-store-helper, config.toml, the unit, LICENSE and VERSION, owned by root, with its .sha256 beside it")
    func contents() throws {
        let tarball = try Self.tarball.get()
        let name = (tarball as NSString).lastPathComponent
        #expect(name.hasPrefix("stargz-swift-") && name.hasSuffix("-linux-\(Self.goArch).tar.gz"), "\(name)")
        let listing = try runCapturing("/usr/bin/tar", ["-tvzf", tarball])
        try #require(listing.status == 0, "\(listing.err)")
        var members: [String: String] = [:]
        for line in listing.out.split(separator: "\n") {
            // "-rw-r--r-- 0/0 456 2026-12-01 11:32 config.toml", "lrwxrwxrwx 0/0 0 … stargz -> stargz-store"
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            try #require(f.count >= 6, "\(line)")
            if f.count == 8 && f[6] == "->" {
                members[String(f[5])] = "\(f[0]) \(f[1]) -> \(f[7])"
            } else {
                members[String(f[f.count - 1])] = "\(f[0]) \(f[1])"
            }
        }
        #expect(
            members == [
                "stargz-store": "-rwxr-xr-x 0/0", "stargz": "lrwxrwxrwx 0/0 -> stargz-store",
                "stargz-store-helper": "-rwxr-xr-x 0/0", "config.toml": "-rw-r--r-- 0/0",
                "stargz-store.service": "-rw-r--r-- 0/0", "LICENSE": "-rw-r--r-- 0/0", "VERSION": "-rw-r--r-- 0/0",
            ])

        let sumFile = try String(contentsOfFile: tarball + ".sha256", encoding: .utf8)
        let sum = try runCapturing("/usr/bin/sha256sum", [tarball])
        let hex = try #require(sum.out.split(separator: " ").first.map(String.init))
        #expect(hex.count == 64 && sumFile == "\(hex)  \(name)\n")
    }

    @Test("the executables need only glibc, libstdc++ and libgcc_s, at versions RHEL 9 has, and no run path")
    func symbolVersions() throws {
        let (_, tmp) = try extracted()
        defer { tmp.cleanup() }
        let dir = tmp.path
        for exe in ["stargz-store", "stargz-store-helper"] {
            let deps = try ELFDependencies([UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/" + exe))))
            #expect(RHEL9.violations(deps) == [], "\(exe)")
            // The static libraries are in: nothing of zlib, libdeflate, zstd or the Swift runtime is looked up.
            #expect(deps.needed.contains("libc.so.6"), "\(exe): \(deps.needed)")
            #expect(deps.versions.contains { $0.version == "GLIBC_2.34" }, "\(exe): the reader found no GLIBC_2.34 reference")
        }
    }

    @Test("the RHEL 9 check rejects what the development build has: libdeflate.so.0, GLIBC_2.35, GLIBCXX_3.4.30, a run path")
    func checkRejects() {
        let deps = ELFDependencies(
            needed: ["libc.so.6", "libdeflate.so.0", "libswiftCore.so"], runPaths: ["/opt/swift/usr/lib/swift/linux"],
            interpreter: "/lib64/ld-linux-x86-64.so.2",
            versions: [
                ("libm.so.6", "GLIBC_2.35"), ("libc.so.6", "GLIBC_2.34"), ("libstdc++.so.6", "GLIBCXX_3.4.30"),
                ("libstdc++.so.6", "CXXABI_1.3.13"), ("libz.so.1", "ZLIB_1.2.9"),
            ])
        #expect(
            RHEL9.violations(deps) == [
                "needs libdeflate.so.0", "needs libswiftCore.so", "has run path /opt/swift/usr/lib/swift/linux",
                "needs GLIBC_2.35 from libm.so.6 (RHEL 9 has up to GLIBC_2.34)",
                "needs GLIBCXX_3.4.30 from libstdc++.so.6 (RHEL 9 has up to GLIBCXX_3.4.29)",
                "needs ZLIB_1.2.9 from libz.so.1",
            ])
    }

    @Test("--version prints the version and the commit of VERSION; the commit is this checkout's")
    func version() throws {
        let (_, tmp) = try extracted()
        defer { tmp.cleanup() }
        let dir = tmp.path
        let lines = try String(contentsOfFile: dir + "/VERSION", encoding: .utf8).split(separator: "\n")
        try #require(lines.count == 2 && lines[1].hasPrefix("commit "), "\(lines)")
        let version = String(lines[0]), commit = String(lines[1].dropFirst("commit ".count))
        for exe in ["stargz-store", "stargz"] {
            let r = try runCapturing(dir + "/" + exe, ["--version"])
            #expect(r.status == 0 && r.out == "\(version) (commit \(commit))\n", "\(exe): \(r.out) \(r.err)")
        }
        let head = try runCapturing("/usr/bin/git", ["-C", Paths.repoRoot.path, "rev-parse", "--short=12", "HEAD"])
        if head.status == 0 {
            #expect(commit.hasPrefix(head.out.trimmingCharacters(in: .whitespacesAndNewlines)))
        }
    }

    @Test("the tarball's config.toml and unit are today's defaults; the unit verifies with its binary in place")
    func configAndUnit() throws {
        let (_, tmp) = try extracted()
        defer { tmp.cleanup() }
        let dir = tmp.path
        let config = try String(contentsOfFile: dir + "/config.toml", encoding: .utf8)
        #expect(config == StoreConfiguration.defaultTOML)
        _ = try StoreConfiguration.parse(config, path: dir + "/config.toml")
        let unit = try String(contentsOfFile: dir + "/stargz-store.service", encoding: .utf8)
        let layout = StoreLayout()
        #expect(unit == (try SystemdUnit.render(layout: layout)))
        // systemd-analyze checks that ExecStart's program exists: point it at the extracted one.
        let placed = unit.replacingOccurrences(of: "ExecStart=\(layout.binaryPath) ", with: "ExecStart=\(dir)/stargz-store ")
        try #require(placed != unit)
        let path = dir + "/unit/stargz-store.service"
        try FileManager.default.createDirectory(atPath: dir + "/unit", withIntermediateDirectories: true)
        try placed.write(toFile: path, atomically: true, encoding: .utf8)
        let r = try runCapturing("/usr/bin/systemd-analyze", ["verify", "--man=no", path])
        #expect(r.status == 0 && r.err.isEmpty, "\(r.err)")
    }

    @Test("the release stargz runs its format demo: zlib, libdeflate and zstd linked in work")
    func runs() throws {
        let (_, tmp) = try extracted()
        defer { tmp.cleanup() }
        let dir = tmp.path
        let r = try runCapturing(dir + "/stargz", ["demo", "--work-dir", dir + "/demo"])
        #expect(r.status == 0, "\(r.out) \(r.err)")
        #expect(r.out.contains("zstd:chunked") && r.out.contains("OK"), "\(r.out)")
    }

    @Test("deploy machineconfig --release-url reads the .sha256 beside the tarball; the unit's download step installs the release's stargz-store and stargz-store-helper")
    func deployFromRelease() throws {
        let (tarball, tmp) = try extracted()
        defer { tmp.cleanup() }
        let dir = tmp.path
        // A mirror: the tarball and its .sha256, and a tarball whose .sha256 names another file.
        let mirror = dir + "/mirror"
        try FileManager.default.createDirectory(atPath: mirror, withIntermediateDirectories: true)
        let name = (tarball as NSString).lastPathComponent
        try FileManager.default.copyItem(atPath: tarball, toPath: mirror + "/" + name)
        try FileManager.default.copyItem(atPath: tarball + ".sha256", toPath: mirror + "/" + name + ".sha256")
        try FileManager.default.copyItem(atPath: tarball, toPath: mirror + "/renamed.tar.gz")
        try FileManager.default.copyItem(atPath: tarball + ".sha256", toPath: mirror + "/renamed.tar.gz.sha256")
        let server = try StaticFileServer(directory: mirror)
        defer { server.stop() }
        let port = server.port
        let url = "http://127.0.0.1:\(port)/\(name)"
        let node = dir + "/node"
        let r = try runCapturing(
            dir + "/stargz",
            ["deploy", "machineconfig", "--format", "ignition", "--no-storage-conf", "--release-url", url,
             "--binary-path", node + "/usr/local/bin/stargz-store", "--root", node + "/var/lib/stargz-store"])
        try #require(r.status == 0, "\(r.err)")
        let digest = try #require(try String(contentsOfFile: tarball + ".sha256", encoding: .utf8).split(separator: " ").first)
        let ignition = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        let units = try #require((ignition["systemd"] as? [String: Any])?["units"] as? [[String: Any]])
        let unit = try #require(units.first?["contents"] as? String)
        #expect(unit.contains("Environment=STARGZ_STORE_SHA256=\(digest)\n"))
        #expect(unit.contains("Environment=\"STARGZ_STORE_URL=\(url)\"\n"))

        // The unit's download step, as systemd would run it: fetch, check, install.
        let run = try runCapturing(
            "/bin/sh", ["-ec", try downloadScript(of: unit)],
            environment: ["STARGZ_STORE_URL": url, "STARGZ_STORE_SHA256": String(digest)])
        #expect(run.status == 0, "\(run.err)")
        let installed = try runCapturing(node + "/usr/local/bin/stargz-store", ["--version"])
        #expect(installed.status == 0 && installed.out.contains("(commit "), "\(installed.out) \(installed.err)")
        // The helper, beside it, byte for byte the tarball's; and the drop-in naming it is in the manifest.
        #expect(FileManager.default.isExecutableFile(atPath: node + "/usr/local/bin/stargz-store-helper"))
        #expect(FileManager.default.contents(atPath: node + "/usr/local/bin/stargz-store-helper") == FileManager.default.contents(atPath: dir + "/stargz-store-helper"))
        let files = try #require((ignition["storage"] as? [String: Any])?["files"] as? [[String: Any]])
        #expect(files.contains { $0["path"] as? String == StoreLayout.Defaults.registriesDropInPath })

        // A checksum file for another name is refused, and nothing is printed.
        let bad = try runCapturing(
            dir + "/stargz", ["deploy", "systemd-unit", "--release-url", "http://127.0.0.1:\(port)/renamed.tar.gz"])
        #expect(bad.status != 0 && bad.out.isEmpty && bad.err.contains("not of renamed.tar.gz"), "\(bad.err)")
        // So is a missing one, naming the URL.
        let missing = try runCapturing(
            dir + "/stargz", ["deploy", "systemd-unit", "--release-url", "http://127.0.0.1:\(port)/absent.tar.gz"])
        #expect(missing.status != 0 && missing.err.contains("absent.tar.gz.sha256: HTTP 404"), "\(missing.err)")
    }

    static var goArch: String {
        #if arch(x86_64)
            "amd64"
        #elseif arch(arm64)
            "arm64"
        #else
            "unknown"
        #endif
    }
}

/// What a RHEL 9 node (and so RHCOS / SCOS 9) provides to a dynamically linked program: glibc 2.34 and GCC 11's
/// libstdc++ and libgcc_s.
enum RHEL9 {
    /// The libraries a release executable may load.
    static let libraries: Set<String> = [
        "libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libstdc++.so.6", "libgcc_s.so.1",
        "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1",
    ]
    /// The newest version of each versioned interface.
    static let newest: [String: SymbolVersion] = [
        "GLIBC": SymbolVersion("GLIBC_2.34")!, "GLIBCXX": SymbolVersion("GLIBCXX_3.4.29")!,
        "CXXABI": SymbolVersion("CXXABI_1.3.13")!, "GCC": SymbolVersion("GCC_7.0.0")!,
    ]

    /// What in `deps` a RHEL 9 node would not satisfy, one line each; empty when it runs there.
    static func violations(_ deps: ELFDependencies) -> [String] {
        var out = deps.needed.filter { !libraries.contains($0) }.map { "needs \($0)" }
        out += deps.runPaths.map { "has run path \($0)" }
        for (file, name) in deps.versions {
            guard libraries.contains(file) else { continue }  // reported above
            if name.hasPrefix("GLIBC_PRIVATE") {
                out.append("needs \(name) from \(file)")
                continue
            }
            guard let v = SymbolVersion(name), let limit = newest[v.prefix] else {
                out.append("needs \(name) from \(file)")
                continue
            }
            if limit < v { out.append("needs \(name) from \(file) (RHEL 9 has up to \(limit))") }
        }
        // Versions from a library that is not even in DT_NEEDED (and so was not reported above).
        for (file, name) in deps.versions where !libraries.contains(file) && !deps.needed.contains(file) {
            out.append("needs \(name) from \(file)")
        }
        return out
    }
}
