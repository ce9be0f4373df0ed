// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import EStargz
import Foundation
import Testing
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

@testable import StargzCLI
import OCI
import Registry
import TestSupport

let fixtures = Paths.fixtures

/// Runs `stargz ARGS…` in-process, capturing standard output. Returns (exit code, stdout).
func stargz(_ args: [String]) async -> (code: Int32, out: String) {
    fflush(nil)
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("stargz-out-\(UUID().uuidString)").path
    let fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0o600)
    let saved = dup(1)
    dup2(fd, 1)
    var code: Int32 = 0
    do {
        var cmd = try StargzCommand.parseAsRoot(args)
        if var asyncCommand = cmd as? any AsyncParsableCommand {
            try await asyncCommand.run()
        } else {
            try cmd.run()
        }
    } catch {
        code = StargzCommand.exitCode(for: error).rawValue
    }
    fflush(nil)
    dup2(saved, 1)
    close(saved)
    close(fd)
    let out = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    unlink(path)
    return (code, out)
}

@Suite("stargz CLI", .serialized)
struct CLITests {
    let dir: URL = FileManager.default.temporaryDirectory.appendingPathComponent("stargz-cli-\(UUID().uuidString)")

    init() throws { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    @Test("convert, inspect, toc-digest, verify and extract a fixture tar")
    func endToEnd() async throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let tar = fixtures.appendingPathComponent("app.tar").path
        try "usr/bin/app\n# a comment\n\n/usr/lib/app/mod000.py\n".write(toFile: path("prio"), atomically: true, encoding: .utf8)
        let c = await stargz(["convert", tar, path("a.esgz"), "--prioritized-files", path("prio"), "--json", "--chunk-size", "65536"])
        #expect(c.code == 0)
        let summary = try JSONSerialization.jsonObject(with: Data(c.out.utf8)) as? [String: Any]
        let tocDigest = try #require(summary?["tocDigest"] as? String)
        let annotations = try #require(summary?["annotations"] as? [String: String])
        #expect(annotations["containerd.io/snapshot/stargz/toc.digest"] == tocDigest)
        #expect(annotations["io.containers.estargz.uncompressed-size"] != nil)

        let t = await stargz(["toc-digest", path("a.esgz")])
        #expect(t.code == 0 && t.out.trimmingCharacters(in: .whitespacesAndNewlines) == tocDigest)

        let i = await stargz(["inspect", path("a.esgz"), "--json"])
        #expect(i.code == 0)
        let inspect = try JSONSerialization.jsonObject(with: Data(i.out.utf8)) as? [String: Any]
        let entries = try #require(inspect?["entries"] as? [[String: Any]])
        #expect(entries.prefix(5).compactMap { $0["name"] as? String }.contains("usr/bin/app"))
        #expect(await stargz(["inspect", path("a.esgz"), "--chunks"]).out.contains("prefetch:"))

        let v = await stargz(["verify", path("a.esgz"), "--toc-digest", tocDigest, "--tar", tar])
        #expect(v.code == 0 && v.out.hasPrefix("OK estargz"))
        #expect(await stargz(["verify", path("a.esgz"), "--toc-digest", "sha256:" + String(repeating: "0", count: 64)]).code == 1)

        let x = await stargz(["extract", path("a.esgz"), path("root")])
        #expect(x.code == 0)
        #expect(FileManager.default.fileExists(atPath: path("root/usr/bin/app")))

        let z = await stargz(["convert", "--zstd-chunked", tar, path("a.zst")])
        #expect(z.code == 0 && z.out.contains("zstd-chunked.manifest-position"))
        #expect(await stargz(["verify", path("a.zst"), "--tar", tar]).out.hasPrefix("OK zstd:chunked"))
    }

    @Test("bad input and bad flags give a non-zero exit and no output file")
    func errors() async throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data("not a layer".utf8).write(to: URL(fileURLWithPath: path("junk")))
        #expect(await stargz(["inspect", path("junk")]).code == 1)
        #expect(await stargz(["verify", path("junk")]).code == 1)
        #expect(await stargz(["toc-digest", path("missing")]).code == 1)
        #expect(await stargz(["convert", path("junk"), path("out")]).code == 1)
        #expect(!FileManager.default.fileExists(atPath: path("out")))
        let tar = fixtures.appendingPathComponent("app.tar").path
        #expect(await stargz(["convert", tar, path("out"), "--chunk-size", "0"]).code == 64)
        #expect(await stargz(["convert", tar, path("out"), "--compression-level", "10"]).code == 64)
        #expect(await stargz(["convert", tar, path("out"), "--zstd-chunked", "--compression-level", "0"]).code == 64)
        #expect(await stargz(["verify", path("junk"), "--toc-digest", "nope"]).code == 64)
        #expect(await stargz(["no-such-command"]).code == 64)
        // A platform that does not parse is a usage error for every command that takes one, not this machine's.
        for cmd in [["image", "inspect", "127.0.0.1:1/x:1"], ["image", "convert", "127.0.0.1:1/x:1", "127.0.0.1:1/y:1"],
                    ["mount", "127.0.0.1:1/x:1", path("mnt")]] {
            #expect(await stargz(cmd + ["--platform", "linux"]).code == 64, "\(cmd[0])")
        }
    }

    @Test("the demo runs on its embedded sample and says OK")
    func demo() async throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let d = await stargz(["demo", "--work-dir", path("demo")])
        #expect(d.code == 0)
        #expect(d.out.contains("demo OK"))
        #expect(d.out.contains("verify: OK"))
    }

    @Test("stargz-store accepts upstream's Go-style flags; a bad level or a missing mount point is a usage error")
    func storeUsage() throws {
        let cmd = try StoreCommand.parse(["-config", "/x.toml", "-log-level=debug", "--root=/r", "/mnt"])
        #expect(cmd.config == "/x.toml" && cmd.logLevel == "debug" && cmd.root == "/r" && cmd.arguments == ["/mnt"])
        let defaults = try StoreCommand.parse(["/mnt"])
        #expect(defaults.config == "/etc/stargz-store/config.toml" && defaults.root == "/var/lib/stargz-store")
        #expect(StoreCommand.helpMessage().contains("MOUNTPOINT"))
        #expect(throws: (any Error).self) { try StoreCommand.parse(["-log-level=loud", "/mnt"]) }
        #expect(throws: (any Error).self) { try StoreCommand.parse(["-config", "/x.toml"]) }
    }

    @Test("image convert, then image inspect shows eStargz layers; a bad reference is a usage error")
    func convertAndInspect() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let client = RegistryClient(configuration: RegistryConfiguration(hosts: [registry.host: HostConfiguration(insecure: true)]))
        let src = try Reference("\(registry.host)/cli/app:v1")
        try await TestImage.push(client, src, layers: [SampleLayer.tar()])
        try await client.shutdown()
        let insecure = ["--insecure-registry", registry.host]
        let c = await stargz(["image", "convert", src.description, "\(registry.host)/cli/app:v1-esgz"] + insecure)
        #expect(c.code == 0)
        let i = await stargz(["image", "inspect", "\(registry.host)/cli/app:v1-esgz"] + insecure)
        #expect(i.code == 0)
        #expect(i.out.contains("[estargz] toc.digest=sha256:"), "\(i.out)")
        let plain = await stargz(["image", "inspect", src.description] + insecure)
        #expect(plain.out.contains("[not eStargz]"))
        let again = await stargz(["image", "convert", "\(registry.host)/cli/app:v1-esgz", "\(registry.host)/cli/app:v1-esgz"] + insecure)
        #expect(again.code == 0 && again.out.contains("already eStargz"))
        #expect(await stargz(["image", "inspect", "Bad Ref!"] + insecure).code == 64)
        #expect(await stargz(["image", "inspect", "\(registry.host)/cli/missing:x"] + insecure).code == 1)

        // registries.conf marks the registry insecure; an OCI layout is a destination and a source.
        let conf = path("registries.conf")
        try "[[registry]]\nlocation = \"\(registry.host)\"\ninsecure = true\n".write(toFile: conf, atomically: true, encoding: .utf8)
        let viaConf = await stargz(["image", "convert", src.description, "oci:\(path("layout")):esgz", "--registries-conf", conf])
        #expect(viaConf.code == 0, "\(viaConf.out)")
        let layoutAgain = await stargz(["image", "convert", "oci:\(path("layout")):esgz", "oci:\(path("layout")):esgz"])
        #expect(layoutAgain.code == 0 && layoutAgain.out.contains("already eStargz"), "\(layoutAgain.out)")
        try "[[registry]]\ninsecure = maybe\n".write(toFile: conf, atomically: true, encoding: .utf8)
        #expect(await stargz(["image", "inspect", src.description, "--registries-conf", conf]).code == 1)
    }
}
