// SPDX-License-Identifier: Apache-2.0
// Test support: a real registry (Debian's docker-registry, Docker distribution 2.8) on 127.0.0.1.
import Foundation
import Synchronization

/// A docker-registry process on a free loopback port, with its storage in a temporary directory.
///
/// Start with ``start(basicAuth:)``; ``stop()`` kills it and removes its storage (also on deinit).
public final class LocalRegistry: Sendable {
    /// `127.0.0.1:PORT`.
    public let host: String
    /// The port.
    public let port: Int
    /// The storage and config directory.
    public let directory: String
    private let process: Mutex<Process?>
    private let helpers: Mutex<[Process]>
    /// The token server (`127.0.0.1:PORT`) when started with token auth.
    public let tokenServer: String?
    private let output: Mutex<String>

    private init(
        host: String, port: Int, directory: String, process: Process, helpers: [Process], tokenServer: String?, output: String
    ) {
        self.host = host
        self.port = port
        self.directory = directory
        self.process = Mutex(process)
        self.helpers = Mutex(helpers)
        self.tokenServer = tokenServer
        self.output = Mutex(output)
    }

    /// The registry's log so far (one line per request it served, among others; the last 4 MiB).
    public var log: String { output.withLock { $0 } }

    deinit { stop() }

    /// How many tokens the token server has issued (token auth only).
    public func tokensIssued() throws -> Int {
        guard let t = tokenServer else { throw SupportError("this registry has no token server") }
        let reply = try httpGet(t, "/__stats")
        guard let split = reply.range(of: "\r\n\r\n"),
            let obj = try JSONSerialization.jsonObject(with: Data(reply[split.upperBound...].utf8)) as? [String: Int],
            let n = obj["tokens"]
        else { throw SupportError("bad stats reply: \(reply)") }
        return n
    }

    /// Starts a registry; with `basicAuth`, behind htpasswd basic authentication; with `tokenAuth`, behind a
    /// token server (scripts/testing/tokenserver.py) that gives `user:password` tokens of `lifetime` seconds, and
    /// with `refreshToken`, tokens for that OAuth2 refresh token (an identity token) too.
    public static func start(
        basicAuth: (user: String, password: String)? = nil,
        tokenAuth: (user: String, password: String, lifetime: Int)? = nil, refreshToken: String? = nil
    ) throws -> LocalRegistry {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/docker-registry") else {
            throw SupportError("docker-registry is not installed (apt-get install docker-registry)")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("registry-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
        let port = try freePort()
        var auth = ""
        if let a = basicAuth {
            let r = try run("/usr/bin/htpasswd", ["-Bbn", a.user, a.password])
            try r.write(toFile: dir + "/htpasswd", atomically: true, encoding: .utf8)
            auth = "auth:\n  htpasswd:\n    realm: test-realm\n    path: \(dir)/htpasswd\n"
        }
        var helpers: [Process] = []
        var tokenHost: String? = nil
        if let t = tokenAuth {
            try run("/usr/bin/openssl", [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem", "-subj", "/CN=token-issuer", "-days", "2",
            ])
            let script = Paths.repoRoot.appendingPathComponent("scripts/testing/tokenserver.py").path
            let (proc, port) = try startScript(
                "/usr/bin/python3",
                [script, dir, t.user, t.password, "--lifetime", String(t.lifetime)] + (refreshToken.map { ["--refresh-token", $0] } ?? []))
            helpers.append(proc)
            tokenHost = "127.0.0.1:\(port)"
            auth = """
                auth:
                  token:
                    realm: http://127.0.0.1:\(port)/token
                    service: test-registry
                    issuer: test-issuer
                    rootcertbundle: \(dir)/cert.pem

                """
        }
        let config = """
            version: 0.1
            log:
              level: info
              formatter: text
            storage:
              filesystem:
                rootdirectory: \(dir)/data
              delete:
                enabled: true
            http:
              addr: 127.0.0.1:\(port)
            \(auth)
            """
        try config.write(toFile: dir + "/config.yml", atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/docker-registry")
        p.arguments = ["serve", dir + "/config.yml"]
        let pipe = Pipe()
        p.standardError = pipe
        p.standardOutput = pipe
        try p.run()
        // Wait until it logs that it listens (read its log, no polling).
        let handle = pipe.fileHandleForReading
        var log = ""
        let deadline = Date().addingTimeInterval(30)
        while !log.contains("listening on") {
            let data = handle.availableData
            if data.isEmpty || Date() > deadline {
                p.terminate()
                throw SupportError("docker-registry did not start: \(log)")
            }
            log += String(decoding: data, as: UTF8.self)
        }
        let registry = LocalRegistry(
            host: "127.0.0.1:\(port)", port: port, directory: dir, process: p, helpers: helpers, tokenServer: tokenHost,
            output: log)
        // Keep draining its log so it never blocks on a full pipe; what it says is kept for tests to read.
        handle.readabilityHandler = { [weak registry] h in
            let data = h.availableData
            registry?.output.withLock { s in
                s += String(decoding: data, as: UTF8.self)
                if s.utf8.count > 4 << 20 { s = String(s.suffix(2 << 20)) }
            }
        }
        return registry
    }

    /// Stops the registry and removes its storage.
    public func stop() {
        helpers.withLock { list in
            for h in list where h.isRunning {
                kill(h.processIdentifier, SIGKILL)
                h.waitUntilExit()
            }
            list = []
        }
        process.withLock { p in
            guard let proc = p else { return }
            if proc.isRunning {
                // SIGKILL: a child may have inherited a blocked SIGTERM from the test process.
                kill(proc.processIdentifier, SIGKILL)
                proc.waitUntilExit()
            }
            p = nil
            try? FileManager.default.removeItem(atPath: directory)
        }
    }
}

/// An error of the test support code.
public struct SupportError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
public func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SupportError("socket failed") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
            bind(fd, p, len) == 0 && getsockname(fd, p, &len) == 0
        }
    }
    guard ok else { throw SupportError("bind failed") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// Runs a program and returns its standard output; throws on a non-zero exit.
@discardableResult
public func run(_ exe: String, _ args: [String], environment: [String: String]? = nil) throws -> String {
    let r = try runCapturing(exe, args, environment: environment)
    guard r.status == 0 else {
        throw SupportError("\(exe) \(args.joined(separator: " ")) exited \(r.status): \(r.err)")
    }
    return r.out
}

/// Runs a program and returns its exit status, standard output and standard error, whatever the status.
public func runCapturing(
    _ exe: String, _ args: [String], environment: [String: String]? = nil
) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    if let environment { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

/// Starts a helper script that prints "listening on PORT"; returns the process and the port.
func startScript(_ exe: String, _ args: [String]) throws -> (Process, Int) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    try p.run()
    var line = ""
    while !line.contains("\n") {
        let d = out.fileHandleForReading.availableData
        if d.isEmpty {
            kill(p.processIdentifier, SIGKILL)
            throw SupportError("\(args.first ?? exe) did not start")
        }
        line += String(decoding: d, as: UTF8.self)
    }
    guard let port = line.split(separator: " ").last.flatMap({ Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) else {
        kill(p.processIdentifier, SIGKILL)
        throw SupportError("\(args.first ?? exe) said \(line)")
    }
    return (p, port)
}

/// A plain HTTP server on 127.0.0.1 serving the files of a directory (Python's http.server), as a mirror that
/// nodes download a release from. ``stop()`` kills it.
public final class StaticFileServer {
    /// The port it listens on.
    public let port: Int
    private let process: Process

    /// Starts serving `directory`.
    public init(directory: String) throws {
        let code = """
            import functools, http.server, sys
            handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
            handler.log_message = lambda *args: None
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
            print("listening on", server.server_address[1], flush=True)
            server.serve_forever()
            """
        (process, port) = try startScript("/usr/bin/python3", ["-c", code, directory])
    }

    /// Kills the server and waits for it.
    public func stop() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}
