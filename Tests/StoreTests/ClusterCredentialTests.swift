// SPDX-License-Identifier: Apache-2.0
import Convert
import Foundation
import OCI
import Registry
import TestSupport
import Testing
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// The environment of a store that finds no credentials file anywhere (no auth.json, no Docker config, CRI-O's
/// configuration in `dir/crio`).
private func noAuthFiles(_ dir: String, registriesConf: String) -> [String: String] {
    ["HOME": dir + "/home", "REGISTRY_AUTH_FILE": "", "XDG_RUNTIME_DIR": "", "DOCKER_CONFIG": "", "CONTAINERS_REGISTRIES_CONF": registriesConf]
}

/// config.toml settings: the helper's credentials and CRI-O's configuration inside the test's directory.
private func credentialSettings(_ dir: String) -> String {
    "[credentials]\ndir = \"\(dir)/run\"\ncrio_config_dir = \"\(dir)/crio\"\n"
}

/// `stat` of `<store>/<base64 ref>/<digest>/diff` as containers/storage looks a layer up: 0, or the errno.
private func lookUp(_ mountpoint: String, _ ref: Reference, _ digest: Digest) -> Int32 {
    var st = stat()
    return stat(layerPath(mountpoint, ref, digest) + "/diff", &st) == 0 ? 0 : errno
}

private func layerPath(_ mountpoint: String, _ ref: Reference, _ digest: Digest) -> String {
    "\(mountpoint)/\(Data(ref.description.utf8).base64EncodedString())/\(digest)"
}

/// containers/image's `json.Marshal` of the helper's input: fields in struct order, empty ones left out, `<`, `>`
/// and `&` escaped, no newline.
private func helperJSON(_ ref: String, username: String = "", password: String = "") -> String {
    func q(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "<": out += "\\u003c"
            case ">": out += "\\u003e"
            case "&": out += "\\u0026"
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
    var fields: [String] = []
    if !username.isEmpty { fields.append("\"username\":" + q(username)) }
    if !password.isEmpty { fields.append("\"password\":" + q(password)) }
    return "{" + q(ref) + ":{" + fields.joined(separator: ",") + "}}"
}

/// Sends `request` on the unix socket at `path` and reads the answer until the server closes (10 s at most: the
/// caller checks how long it took).
private func unixRequest(_ path: String, _ request: String) throws -> String {
    let fd = unixSocket(path, datagram: false, connect: true)
    guard fd >= 0 else { throw SupportError("cannot connect to \(path)") }
    defer { close(fd) }
    var tv = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    let bytes = Array(request.utf8)
    _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { break }
        out += buf[..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

@Suite("The cluster's credentials: stargz-store-helper, the kubelet's pull secret, a mirror (real store, registries, podman)", .serialized)
struct ClusterCredentialTests {
    var storeBinary: String { Paths.repoRoot.appendingPathComponent(".build/debug/stargz-store").path }
    var helperBinary: String { Paths.repoRoot.appendingPathComponent(".build/debug/stargz-store-helper").path }

    /// What registries.conf names for a store under `dir/root`: c/image passes no arguments, so a non-default
    /// root takes a wrapper (as an operator would write one).
    func helperWrapper(_ dir: String) throws -> String {
        let path = dir + "/stargz-store-helper"
        try "#!/bin/sh\nexec '\(helperBinary)' --root '\(dir)/root'\n".write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
        return path
    }

    /// Runs the helper as containers/image does (`exec.Command(h)`, `cmd.Stdin = bytes.NewReader(json)`,
    /// `cmd.Run()`): no arguments, this process's environment, the JSON on standard input, standard output
    /// discarded. Standard error is kept here for the test to read (c/image discards it).
    /// `asNobody`: run by uid 65534 instead (setpriv), which the store must not hear.
    func callHelper(_ helper: String, _ json: String, asNobody: Bool = false) throws -> (status: Int32, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: asNobody ? "/usr/bin/setpriv" : helper)
        p.arguments = asNobody ? ["--reuid=65534", "--regid=65534", "--clear-groups", "--", helper] : []
        let input = Pipe(), errors = Pipe()
        p.standardInput = input
        p.standardOutput = FileHandle.nullDevice
        p.standardError = errors
        try p.run()
        input.fileHandleForWriting.write(Data(json.utf8))
        try input.fileHandleForWriting.close()
        let err = errors.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: err, as: UTF8.self))
    }

    /// Pushes `ref` (a busybox image) as a plain image and its eStargz conversion `ref-esgz`; the eStargz layer's digest.
    func pushLazy(_ client: RegistryClient, _ ref: Reference) async throws -> (Reference, Digest) {
        let lazy = try Reference(ref.description + "-esgz")
        try await TestImage.push(client, ref, layers: [try busyboxTar()], cmd: ["/bin/cat", "/etc/os-release"])
        _ = try await ImageConverter(client: client).convert(from: ref, to: lazy)
        let m = try await client.fetchManifest(lazy).manifest()
        return (lazy, m.layers[0].digest)
    }

    func privateClient(_ host: String) -> RegistryClient {
        RegistryClient(
            configuration: RegistryConfiguration(hosts: [host: HostConfiguration(insecure: true)]),
            credentials: CredentialStore(files: [], explicit: [host: Credential(username: "alice", password: "s3cret")]))
    }

    @Test("private registry, no auth file: refused; after the helper, served lazily and podman runs it; after a restart still, without a second helper call; another repository stays closed")
    func helperHandsOver() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: storeBinary), "build stargz-store first")
        try #require(FileManager.default.isExecutableFile(atPath: helperBinary), "build stargz-store-helper first")
        try #require(!FileManager.default.fileExists(atPath: CredentialStore.kubeletConfig), "this machine has a kubelet pull secret")
        let registry = try LocalRegistry.start(basicAuth: ("alice", "s3cret"))
        defer { registry.stop() }
        let client = privateClient(registry.host)
        let (app, appLayer) = try await pushLazy(client, try Reference("\(registry.host)/private/app:1"))
        let (other, otherLayer) = try await pushLazy(client, try Reference("\(registry.host)/private/other:1"))
        try await client.shutdown()

        try await withTemporaryDirectory("store-helper") { dir in
            try "".write(toFile: dir + "/registries.conf", atomically: true, encoding: .utf8)
            let env = noAuthFiles(dir, registriesConf: dir + "/registries.conf")
            let config = try writeStoreConfig(dir, plainHTTP: registry.host, settings: credentialSettings(dir))
            var store = try StoreProcess(binary: storeBinary, directory: dir, config: config, environment: env)
            defer { store.stop() }
            #expect(lookUp(store.mountpoint, app, appLayer) == ENOENT, "served without credentials")

            let helper = try helperWrapper(dir)
            let handed = try callHelper(helper, helperJSON(app.description, username: "alice", password: "s3cret"))
            #expect(handed.status == 0, "\(handed.stderr)")
            #expect(store.logText.contains("credentials received"))
            #expect(!store.logText.contains("s3cret"), "a secret in the log")
            #expect(lookUp(store.mountpoint, app, appLayer) == 0, "\(store.logText)")
            let osRelease = try String(contentsOfFile: layerPath(store.mountpoint, app, appLayer) + "/diff/etc/os-release", encoding: .utf8)
            #expect(osRelease == "NAME=\"stargz-swift test\"\n")
            #expect(lookUp(store.mountpoint, other, otherLayer) == ENOENT, "the credentials of private/app opened private/other")
            // Held under [credentials] dir, 0600.
            var st = stat()
            #expect(stat(dir + "/run/credentials.json", &st) == 0 && st.st_mode & 0o777 == 0o600)

            let podman = try TestPodman(additionalLayerStore: store.mountpoint)
            defer { podman.cleanUp() }
            try podman(["pull", "--tls-verify=false", "--creds", "alice:s3cret", app.description])
            #expect(store.logText.contains("layer is marked as USING"), "podman did not take the layer from the store")
            #expect(try podman.runContainer(app.description) == "NAME=\"stargz-swift test\"\n")

            // A restart: the layer is looked up again in the new process, which has only the file under /run.
            #expect(store.terminate() == 0)
            store = try StoreProcess(binary: storeBinary, directory: dir, config: config, environment: env)
            #expect(store.logText.contains("\"credentials.held\":\"1\""))
            #expect(try podman.runContainer(app.description, ["/bin/echo", "after restart"]) == "after restart\n")
            #expect(store.logText.contains("layer resolved"), "\(store.logText)")
            #expect(!store.logText.contains("credentials received"), "the helper was called again")
        }
    }

    @Test("the node's pull secret only, in a kubelet-style config.json that CRI-O's global_auth_file names: a repo-scoped entry wins over the host's")
    func kubeletPullSecret() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: storeBinary), "build stargz-store first")
        let registry = try LocalRegistry.start(basicAuth: ("alice", "s3cret"))
        defer { registry.stop() }
        let client = privateClient(registry.host)
        let (app, appLayer) = try await pushLazy(client, try Reference("\(registry.host)/team/app:1"))
        let (other, otherLayer) = try await pushLazy(client, try Reference("\(registry.host)/team/other:1"))
        try await client.shutdown()

        try await withTemporaryDirectory("store-kubelet") { dir in
            try FileManager.default.createDirectory(atPath: dir + "/crio/crio.conf.d", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: dir + "/kubelet", withIntermediateDirectories: true)
            try "[crio.image]\nglobal_auth_file = \"\(dir)/kubelet/config.json\"\n"
                .write(toFile: dir + "/crio/crio.conf.d/10-auth.conf", atomically: true, encoding: .utf8)
            func auth(_ u: String, _ p: String) -> String { Data("\(u):\(p)".utf8).base64EncodedString() }
            // The host's entry is wrong; the repository's is right.
            try "{\"auths\":{\"\(registry.host)\":{\"auth\":\"\(auth("alice", "wrong"))\"},\"\(registry.host)/team/app\":{\"auth\":\"\(auth("alice", "s3cret"))\"}}}"
                .write(toFile: dir + "/kubelet/config.json", atomically: true, encoding: .utf8)
            try "".write(toFile: dir + "/registries.conf", atomically: true, encoding: .utf8)
            let config = try writeStoreConfig(dir, plainHTTP: registry.host, settings: credentialSettings(dir))
            let store = try StoreProcess(
                binary: storeBinary, directory: dir, config: config, environment: noAuthFiles(dir, registriesConf: dir + "/registries.conf"))
            defer { store.stop() }
            #expect(lookUp(store.mountpoint, other, otherLayer) == ENOENT, "the host's (wrong) entry opened team/other")
            let podman = try TestPodman(additionalLayerStore: store.mountpoint)
            defer { podman.cleanUp() }
            try podman(["pull", "--tls-verify=false", "--creds", "alice:s3cret", app.description])
            #expect(store.logText.contains("layer is marked as USING"), "\(store.logText)")
            #expect(lookUp(store.mountpoint, app, appLayer) == 0)
            #expect(try podman.runContainer(app.description, ["/bin/echo", "pull secret"]) == "pull secret\n")
        }
    }

    @Test("a mirror that needs credentials, given them for the mirror's reference: read through the mirror; the blocked source sees no request")
    func mirrorCredentials() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: storeBinary), "build stargz-store first")
        try #require(FileManager.default.isExecutableFile(atPath: helperBinary), "build stargz-store-helper first")
        let source = try LocalRegistry.start()
        defer { source.stop() }
        let mirror = try LocalRegistry.start(basicAuth: ("alice", "s3cret"))
        defer { mirror.stop() }
        let client = privateClient(mirror.host)
        let (physical, layer) = try await pushLazy(client, try Reference("\(mirror.host)/mirror/app:1"))
        try await client.shutdown()
        let logical = try Reference("\(source.host)/app:1-esgz")

        try await withTemporaryDirectory("store-mirror") { dir in
            try """
                [[registry]]
                prefix = "\(source.host)/app"
                location = "\(source.host)/app"
                blocked = true
                [[registry.mirror]]
                location = "\(mirror.host)/mirror/app"
                insecure = true

                """.write(toFile: dir + "/registries.conf", atomically: true, encoding: .utf8)
            let config = try writeStoreConfig(dir, plainHTTP: mirror.host, settings: credentialSettings(dir))
            let store = try StoreProcess(
                binary: storeBinary, directory: dir, config: config, environment: noAuthFiles(dir, registriesConf: dir + "/registries.conf"))
            defer { store.stop() }
            #expect(lookUp(store.mountpoint, logical, layer) == ENOENT, "the mirror served without credentials")
            // containers/image keys the credentials by the physical reference: the mirror's.
            let handed = try callHelper(try helperWrapper(dir), helperJSON(physical.description, username: "alice", password: "s3cret"))
            #expect(handed.status == 0, "\(handed.stderr)")
            #expect(lookUp(store.mountpoint, logical, layer) == 0, "\(store.logText)")
            let motd = try String(contentsOfFile: layerPath(store.mountpoint, logical, layer) + "/diff/etc/os-release", encoding: .utf8)
            #expect(motd == "NAME=\"stargz-swift test\"\n")
            #expect(mirror.log.contains("/v2/mirror/app/"), "the mirror was not read")
            #expect(!source.log.contains("/v2/"), "the blocked source was contacted:\n\(source.log)")
        }
    }

    @Test("malformed JSON, or a store that is not running: the helper exits non-zero with one clear line, and nothing changes")
    func helperFailures() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: storeBinary), "build stargz-store first")
        try #require(FileManager.default.isExecutableFile(atPath: helperBinary), "build stargz-store-helper first")
        let registry = try LocalRegistry.start(basicAuth: ("alice", "s3cret"))
        defer { registry.stop() }
        try await withTemporaryDirectory("store-helper-bad") { dir in
            let helper = try helperWrapper(dir)
            // No store yet.
            let down = try callHelper(helper, helperJSON("\(registry.host)/private/app:1", username: "alice", password: "s3cret"))
            #expect(down.status != 0)
            #expect(down.stderr == "stargz-store-helper: stargz-store is not running: there is no socket at \(dir)/root/store.sock\n")

            try "".write(toFile: dir + "/registries.conf", atomically: true, encoding: .utf8)
            let config = try writeStoreConfig(dir, plainHTTP: registry.host, settings: credentialSettings(dir))
            let store = try StoreProcess(
                binary: storeBinary, directory: dir, config: config, environment: noAuthFiles(dir, registriesConf: dir + "/registries.conf"))
            defer { store.stop() }
            let good = try callHelper(helper, helperJSON("\(registry.host)/private/app:1", username: "alice", password: "s3cret"))
            #expect(good.status == 0, "\(good.stderr)")
            let held = FileManager.default.contents(atPath: dir + "/run/credentials.json")
            #expect(held != nil)
            for bad in ["{\"\(registry.host)/private/app:1\":{\"username\":\"eve\"", "[]", "", "{\"Not A Ref\":{\"username\":\"eve\"}}"] {
                let r = try callHelper(helper, bad)
                #expect(r.status != 0, "\(bad)")
                #expect(r.stderr.hasPrefix("stargz-store-helper: ") && r.stderr.hasSuffix("\n") && r.stderr.filter { $0 == "\n" }.count == 1, "\(r.stderr)")
                #expect(!r.stderr.contains("eve"))
            }
            // The socket itself: a body over the bound is refused by its head (not read), other paths are not there.
            let sock = dir + "/root/store.sock"
            #expect(try unixRequest(sock, "POST /v1/credentials HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n").hasPrefix("HTTP/1.1 413"))
            #expect(try unixRequest(sock, "GET /v1/credentials HTTP/1.1\r\nHost: x\r\n\r\n").hasPrefix("HTTP/1.1 405"))
            #expect(try unixRequest(sock, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").hasPrefix("HTTP/1.1 404"))
            let started = ContinuousClock.now
            #expect(try unixRequest(sock, "not http at all\r\n\r\n").hasPrefix("HTTP/1.1 400"))
            #expect(ContinuousClock.now - started < .seconds(9), "a malformed request was answered but its connection kept open")
            // Another user, with the socket opened to everyone: SO_PEERCRED says who it is, and the store does not listen.
            chmod(dir + "/root/store.sock", 0o666)
            let nobody = try callHelper(helper, helperJSON("\(registry.host)/private/app:1", username: "eve", password: "x"), asNobody: true)
            #expect(nobody.status != 0)
            #expect(nobody.stderr.contains("(403): only root"), "\(nobody.stderr)")
            #expect(FileManager.default.contents(atPath: dir + "/run/credentials.json") == held, "a refused call changed what the store holds")
            // Stopped store: the socket is gone, and the helper says so.
            #expect(store.terminate() == 0)
            let stopped = try callHelper(helper, helperJSON("\(registry.host)/private/app:1", username: "alice", password: "s3cret"))
            #expect(stopped.status != 0 && stopped.stderr.contains("not running"), "\(stopped.stderr)")
        }
    }
}
