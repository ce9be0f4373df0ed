// SPDX-License-Identifier: Apache-2.0
import CLinuxSys
import EStargz
import FUSE
import Foundation
import LazyLayer
import Logging
import OCI
import Registry
import Store
import Synchronization
import TestSupport
import Testing
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// An eStargz blob of `tar`, made with our writer.
func estargz(_ tar: [UInt8], options: WriterOptions = WriterOptions()) throws -> [UInt8] {
    try inScratchDirectory { dir in
        try Data(tar).write(to: URL(fileURLWithPath: dir + "/in.tar"))
        _ = try EStargzWriter.build(input: dir + "/in.tar", output: dir + "/out.esgz", options: options)
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/out.esgz")))
    }
}

private func inScratchDirectory<T>(_ body: (String) throws -> T) throws -> T {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("stargz-sec-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    return try body(dir)
}

/// `ARGS…` as uid and gid 65534 with no supplementary groups: an unprivileged local account.
func asNobody(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
    try runCapturing("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups"] + args)
}

/// The ALS directory name of a reference: Go's base64.StdEncoding, padded.
func storeName(_ ref: String) -> String { Data(ref.utf8).base64EncodedString() }

@Suite("stargz-store against hostile images and local users", .serialized)
struct StoreSecurityTests {
    var storeBinary: String { Paths.repoRoot.appendingPathComponent(".build/debug/stargz-store").path }
    var stargzBinary: String { Paths.repoRoot.appendingPathComponent(".build/debug/stargz").path }

    /// Each case: a name for the log, and the TOC rewrite (of the layer that holds `etc/motd`).
    static let hostileCases: [(String, @Sendable ([UInt8]) throws -> TestImage.Layer)] = [
        ("size 2^62", { try HostileLayer.setting("size", of: "etc/motd", to: NSNumber(value: Int64(1) << 62), in: $0) }),
        ("size Int64.max", { try HostileLayer.setting("size", of: "etc/motd", to: NSNumber(value: Int64.max), in: $0) }),
        ("size 60 MiB from a few bytes", { try HostileLayer.setting("size", of: "etc/motd", to: NSNumber(value: Int64(60) << 20), in: $0) }),
        ("chunkSize Int64.max", { try HostileLayer.setting("chunkSize", of: "etc/motd", to: NSNumber(value: Int64.max), in: $0) }),
        ("offset Int64.max", { try HostileLayer.setting("offset", of: "etc/motd", to: NSNumber(value: Int64.max), in: $0) }),
        ("innerOffset Int64.max", { try HostileLayer.setting("innerOffset", of: "etc/motd", to: NSNumber(value: Int64.max), in: $0) }),
        ("chunkOffset -1", { try HostileLayer.setting("chunkOffset", of: "etc/motd", to: NSNumber(value: -1), in: $0) }),
        ("mode 2^40", { try HostileLayer.setting("mode", of: "etc/motd", to: NSNumber(value: Int64(1) << 40), in: $0) }),
        ("uid 4294967295", { try HostileLayer.setting("uid", of: "etc/motd", to: NSNumber(value: 4_294_967_295 as Int64), in: $0) }),
        ("devMajor 2^40", { try HostileLayer.setting("devMajor", of: "etc/motd", to: NSNumber(value: Int64(1) << 40), in: $0) }),
        ("size of the wrong type", { try HostileLayer.setting("size", of: "etc/motd", to: "12", in: $0) }),
        ("xattr of 1 MiB", {
            try HostileLayer.setting("xattrs", of: "etc/motd", to: ["user.big": Data(count: 1 << 20).base64EncodedString()], in: $0)
        }),
        ("linkName of 1 MiB", { blob in
            try HostileLayer.rewritingTOC(blob) { $0.append(["name": "l", "type": "symlink", "linkName": String(repeating: "x", count: 1 << 20)]) }
        }),
        ("name 10^5 deep", { blob in
            try HostileLayer.rewritingTOC(blob) { $0.append(["name": String(repeating: "a/", count: 100_000), "type": "dir"]) }
        }),
        ("hardlink loop", { blob in
            try HostileLayer.rewritingTOC(blob) {
                $0.append(["name": "h1", "type": "hardlink", "linkName": "h2"])
                $0.append(["name": "h2", "type": "hardlink", "linkName": "h1"])
            }
        }),
        ("entry duplicated", { blob in try HostileLayer.rewritingTOC(blob) { $0.append($0[$0.count - 1]) } }),
    ]

    @Test("every TOC field at its extreme: stargz verify fails with one line, the store refuses that layer and keeps serving the one beside it")
    func hostileTOCs() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: storeBinary), "build stargz-store first")
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let client = registryClient(registry.host)
        let honest = try estargz(TarBuilder().dir("etc").file("etc/motd", Array("hostile\n".utf8)).bytes())
        let good = try estargz(TarBuilder().dir("srv").file("srv/ok", Array("still served\n".utf8)).bytes())
        let goodLayer = TestImage.Layer(
            blob: good, diffID: try EStargzReader(blob: MemoryBlob(good)).computeDiffID().diffID,
            annotations: [AnnotationKey.tocDigest: try EStargzReader(blob: MemoryBlob(good)).tocDigest.description])
        var images: [(name: String, ref: Reference, hostile: Digest, good: Digest)] = []
        try await withTemporaryDirectory("hostile-cli") { dir in
            for (i, (name, make)) in Self.hostileCases.enumerated() {
                let layer = try make(honest)
                // stargz verify: non-zero, one line on stderr, no trap (a trap is a signal status).
                let path = dir + "/\(i).esgz"
                try Data(layer.blob).write(to: URL(fileURLWithPath: path))
                let v = try runCapturing(stargzBinary, ["verify", path])
                #expect(v.status == 1, "\(name): stargz verify exited \(v.status): \(v.err)")
                let lines = v.err.split(separator: "\n")
                #expect(lines.count == 1 && lines[0].hasPrefix("error: "), "\(name): \(v.err.prefix(300))")
                let ref = try Reference("\(registry.host)/hostile/app:\(i)")
                let d = try await TestImage.push(client, ref, layers: [layer, goodLayer])
                images.append((name, ref, d[0].digest, d[1].digest))
            }
        }
        try await client.shutdown()

        try await withTemporaryDirectory("store-hostile") { dir in
            let config = try writeStoreConfig(dir, plainHTTP: registry.host, settings: "noprefetch = true\n")
            let store = try StoreProcess(binary: storeBinary, directory: dir, config: config)
            defer { store.stop() }
            for image in images {
                let base = store.mountpoint + "/" + storeName(image.ref.description)
                // What containers/storage does: stat diff, info, blob. The hostile layer is "not here".
                let hostile = base + "/\(image.hostile)/diff"
                let err = await runBlocking { () -> Int32 in
                    var st = stat()
                    return stat(hostile, &st) == 0 ? 0 : Glibc.errno
                }
                #expect(err == ENOENT, "\(image.name): the hostile layer answered errno \(err)")
                #expect(store.process.isRunning, "\(image.name): the store died")
                // The layer beside it is served.
                let ok = base + "/\(image.good)/diff/srv/ok"
                let content = await runBlocking { try? String(contentsOfFile: ok, encoding: .utf8) }
                #expect(content == "still served\n", "\(image.name): the good layer was not served")
            }
            let log = store.logText
            #expect(log.contains("layer not served") && log.contains("chunkSize") && log.contains("PATH_MAX"), "\(log.suffix(2000))")
            #expect(!log.contains("Fatal error"))
            #expect(store.terminate() == 0)
        }
    }

    @Test("an unprivileged user gets EACCES at the store's root and makes it connect nowhere; root's lookup does connect")
    func onlyRootReachesTheStore() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: storeBinary), "build stargz-store first")
        // A listener the store would be pointed at: it counts connections.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(bound == 0 && listen(listener, 16) == 0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &len) } }
        let port = Int(UInt16(bigEndian: addr.sin_port))
        _ = fcntl(listener, F_SETFL, fcntl(listener, F_GETFL) | O_NONBLOCK)

        try await withTemporaryDirectory("store-root-only") { dir in
            let config = try writeStoreConfig(
                dir, plainHTTP: "127.0.0.1:\(port)", settings: "noprefetch = true\n[blob]\nmax_retries = 0\n")
            let store = try StoreProcess(binary: storeBinary, directory: dir, config: config)
            defer { store.stop() }
            var st = stat()
            #expect(stat(store.mountpoint, &st) == 0)
            #expect(st.st_mode & 0o7777 == 0o700 && st.st_uid == 0 && st.st_gid == 0, "root is \(String(st.st_mode, radix: 8)) \(st.st_uid):\(st.st_gid)")
            let options = mountEntry(store.mountpoint)?.options ?? ""
            #expect(options.contains("default_permissions") && options.contains("allow_other"), "\(options)")

            let target = store.mountpoint + "/" + storeName("127.0.0.1:\(port)/x:y") + "/sha256:" + String(repeating: "ab", count: 32) + "/diff"
            let nobody = try asNobody(["/usr/bin/stat", target])
            #expect(nobody.status != 0 && nobody.err.contains("Permission denied"), "\(nobody)")
            let list = try asNobody(["/bin/ls", store.mountpoint])
            #expect(list.status != 0 && list.err.contains("Permission denied"), "\(list)")
            // EACCES comes from the kernel (the store never answers it): nothing reached the store, nothing connected.
            #expect(accept(listener, nil, nil) == -1 && errno == EAGAIN, "a connection came from an unprivileged lookup")
            #expect(!store.logText.contains("127.0.0.1:\(port)/x:y"))

            // The control: the same lookup as root does reach the store, which connects to the listener (accepted
            // and closed at once, so the resolution fails and the lookup ends).
            _ = fcntl(listener, F_SETFL, fcntl(listener, F_GETFL) & ~O_NONBLOCK)
            let done = Mutex(false)
            async let connections = runBlocking { () -> Int in
                // Until root's lookup has ended: each accept waits at most a second, so the loop sees the end.
                var limit = timeval(tv_sec: 1, tv_usec: 0)
                setsockopt(listener, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
                var n = 0
                while !done.withLock({ $0 }) {
                    let c = accept(listener, nil, nil)
                    if c >= 0 {
                        n += 1
                        close(c)
                    }
                }
                return n
            }
            let rootErr = await runBlocking { () -> Int32 in
                var st = stat()
                return stat(target, &st) == 0 ? 0 : Glibc.errno
            }
            done.withLock { $0 = true }
            #expect(await connections >= 1, "root's lookup made no connection: the check above proves nothing")
            #expect(rootErr == ENOENT)
            #expect(store.logText.contains("127.0.0.1:\(port)/x:y"))
        }
    }

    @Test("a registry that never answers: the lookup is ENOENT at the resolve timeout, not when the registry gives up")
    func resolveTimeout() async throws {
        // A listener that never accepts: connections complete in its backlog and no byte ever comes back.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, len) == 0 && listen(listener, 16) == 0 && getsockname(listener, $0, &len) == 0
            }
        }
        try #require(ok)
        let host = "127.0.0.1:\(UInt16(bigEndian: addr.sin_port))"
        let client = RegistryClient(
            configuration: RegistryConfiguration(hosts: [host: HostConfiguration(insecure: true)], fetchTimeout: .seconds(120), maxRetries: 0))
        let manager = LayerManager(client: client, options: LayerManagerOptions(layer: try quietOptions()), logger: Logger(label: "test"))
        let fs = StoreFileSystem(manager: manager, logger: Logger(label: "test"), resolveTimeout: .milliseconds(300))
        let refDir = try await fs.lookup(parent: 1, nameBytes: Array(storeName("\(host)/slow/app:1").utf8))
        let layerDir = try await fs.lookup(parent: refDir.inode, nameBytes: Array(("sha256:" + String(repeating: "cd", count: 32)).utf8))
        do {
            _ = try await fs.lookup(parent: layerDir.inode, nameBytes: Array("diff".utf8))
            Issue.record("a layer was served from a registry that never answers")
        } catch let e as FUSEError {
            #expect(e.errno == ENOENT && e.message.contains("longer than"), "\(e)")
        }
        await manager.close()
        try await client.shutdown()
    }

    @Test("with the namespace root opened to others, the kernel checks each layer file's own mode: 0600 root is EACCES, 0644 reads")
    func layerModes() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let client = registryClient(registry.host)
        let tar = TarBuilder().dir("etc").dir("root", mode: 0o700)
            .file("etc/shadow", Array("root:secret\n".utf8), mode: 0o600)
            .file("etc/hostname", Array("public\n".utf8), mode: 0o644)
            .file("root/key", Array("private key\n".utf8), mode: 0o644)
            .dir("home").dir("home/u", mode: 0o700, owner: 65534)
            .file("home/u/mine", Array("nobody's own\n".utf8), mode: 0o600, owner: 65534)
            .bytes()
        let ref = try Reference("\(registry.host)/modes/app:1")
        // overlayfs metadata and SELinux labels from the image's author are not passed on (one would make a file
        // stand for another, the other would label it as its author chose).
        let attrs: [String: String] = [
            "user.keep": Data("kept".utf8).base64EncodedString(), "trusted.overlay.redirect": Data("/etc/shadow".utf8).base64EncodedString(),
            "trusted.overlay.metacopy": "",
            "security.selinux": Data("system_u:object_r:shadow_t:s0".utf8).base64EncodedString(),
        ]
        let layer = try HostileLayer.setting("xattrs", of: "etc/hostname", to: attrs, in: try estargz(tar))
        let layers = try await TestImage.push(client, ref, layers: [layer])
        let manager = LayerManager(
            client: client, options: LayerManagerOptions(layer: try quietOptions()), logger: Logger(label: "test"))
        // Opened for the test only: the daemon's root is 0700 (the test above).
        let fs = StoreFileSystem(manager: manager, logger: Logger(label: "test"), rootPermissions: 0o755)
        try await withTemporaryDirectory("store-modes") { dir in
            let mp = dir + "/store"
            try FileManager.default.createDirectory(atPath: mp, withIntermediateDirectories: true)
            let fuse = FUSESession.Options(readOnly: false, defaultPermissions: true, allowSetuid: true)
            let session = try await runBlocking { try FUSESession.mount(fs, at: mp, options: fuse, logger: Logger(label: "test")) }
            defer {
                session.unmount()
                forceUnmount(mp)
            }
            let diff = mp + "/" + storeName(ref.description) + "/\(layers[0].digest)/diff"
            // Root resolves the layer (as containers/storage would).
            #expect(FileManager.default.fileExists(atPath: diff + "/etc/hostname"))
            let shadow = try asNobody(["/bin/cat", diff + "/etc/shadow"])
            #expect(shadow.status != 0 && shadow.err.contains("Permission denied") && !shadow.out.contains("secret"), "\(shadow)")
            let key = try asNobody(["/bin/cat", diff + "/root/key"])  // 0644, under a 0700 root directory
            #expect(key.status != 0 && key.err.contains("Permission denied"), "\(key)")
            let hostname = try asNobody(["/bin/cat", diff + "/etc/hostname"])
            #expect(hostname.status == 0 && hostname.out == "public\n", "\(hostname)")
            let mine = try asNobody(["/bin/cat", diff + "/home/u/mine"])
            #expect(mine.status == 0 && mine.out == "nobody's own\n", "\(mine)")
            let shown = xattrs(diff + "/etc/hostname")
            #expect(shown == ["user.keep": Array("kept".utf8)], "\(shown)")
            var value = [UInt8](repeating: 0, count: 256)
            #expect(lgetxattr(diff + "/etc/hostname", "trusted.overlay.redirect", &value, value.count) == -1 && errno == ENODATA)
            // Root reads everything.
            #expect(try String(contentsOfFile: diff + "/etc/shadow", encoding: .utf8) == "root:secret\n")
            // The blob and info are root's only, even with the root opened.
            let blob = try asNobody(["/bin/cat", mp + "/" + storeName(ref.description) + "/\(layers[0].digest)/blob"])
            #expect(blob.status != 0 && blob.err.contains("Permission denied"), "\(blob)")
        }
        await manager.close()
        try await client.shutdown()
    }

    @Test("podman runs an image whose files belong to a non-root user, as that user and as root, through the store")
    func podmanNonRootFiles() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: storeBinary), "build stargz-store first")
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let client = registryClient(registry.host)
        let user = TarBuilder().dir("home").dir("home/u", mode: 0o700, owner: 1000)
            .file("home/u/secret", Array("for u only\n".utf8), mode: 0o600, owner: 1000)
            .file("home/u/run", Array("#!/bin/sh\necho ran as $(/bin/busybox id -u)\n".utf8), mode: 0o700, owner: 1000)
            .file("etc/rootonly", Array("root's\n".utf8), mode: 0o600)
            .bytes()
        let ref = try Reference("\(registry.host)/owners/app:1-esgz")
        try await TestImage.pushEStargz(client, ref, blobs: [try estargz(try busyboxTar()), try estargz(user)])
        try await client.shutdown()
        try await withTemporaryDirectory("store-owners") { dir in
            let config = try writeStoreConfig(dir, plainHTTP: registry.host)
            let store = try StoreProcess(binary: storeBinary, directory: dir, config: config)
            defer { store.stop() }
            let podman = try TestPodman(additionalLayerStore: store.mountpoint)
            defer { podman.cleanUp() }
            try podman(["pull", "--tls-verify=false", ref.description])
            #expect(store.logText.contains("layer resolved"), "not served lazily")
            // As the files' owner: its own files read and run; root's 0600 file is refused (the modes are in force).
            let asUser = try podman.runContainer(
                ref.description, ["/bin/sh", "-c", "cat /home/u/secret; /home/u/run; cat /etc/rootonly 2>&1; true"],
                options: ["--user", "1000:1000"])
            #expect(asUser.hasPrefix("for u only\nran as 1000\n") && asUser.contains("Permission denied"), "\(asUser)")
            #expect(try podman.runContainer(ref.description, ["/bin/cat", "/home/u/secret", "/etc/rootonly"]) == "for u only\nroot's\n")
        }
    }
}
