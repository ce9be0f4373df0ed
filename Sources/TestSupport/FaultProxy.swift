// SPDX-License-Identifier: Apache-2.0
import Foundation
import Synchronization

/// The fault-injecting proxy (scripts/testing/faultproxy.py) in front of a real registry.
public final class FaultProxy: Sendable {
    /// `127.0.0.1:PORT` of the proxy.
    public let host: String
    private let process: Mutex<Process?>

    /// Starts a proxy to `upstream` with faults given as faultproxy.py arguments
    /// (`--fail-status 500 --fail-times 2`, `--cut-after 1000 --cut-times 1`, `--ignore-range`, …).
    public init(upstream: String, _ faults: [String]) throws {
        let script = Paths.repoRoot.appendingPathComponent("scripts/testing/faultproxy.py").path
        let (p, port) = try startScript("/usr/bin/python3", [script, upstream] + faults)
        host = "127.0.0.1:\(port)"
        process = Mutex(p)
    }

    deinit { stop() }

    /// Counters: requests, faults injected, multi-range requests seen, redirects sent.
    public func stats() throws -> [String: Int] {
        let reply = try httpGet(host, "/__stats")
        guard let split = reply.range(of: "\r\n\r\n") else { throw SupportError("bad stats reply: \(reply)") }
        let body = reply[split.upperBound...]
        return (try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Int]) ?? [:]
    }

    /// Stops the proxy.
    public func stop() {
        process.withLock { p in
            if let proc = p, proc.isRunning {
                // SIGKILL: a child may have inherited a blocked SIGTERM from the test process.
                kill(proc.processIdentifier, SIGKILL)
                proc.waitUntilExit()
            }
            p = nil
        }
    }
}

/// A blocking HTTP/1.0 GET over a plain socket (test support only); returns the raw reply.
public func httpGet(_ host: String, _ path: String) throws -> String {
    let parts = host.split(separator: ":")
    guard parts.count == 2, let port = UInt16(parts[1]) else { throw SupportError("bad host \(host)") }
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SupportError("socket failed") }
    defer { close(fd) }
    // A server that never closes must fail the test, not hang it.
    var timeout = timeval(tv_sec: 30, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = port.bigEndian
    addr.sin_addr.s_addr = inet_addr(String(parts[0]))
    let ok = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
    guard ok else { throw SupportError("connect to \(host) failed") }
    let req = Array("GET \(path) HTTP/1.0\r\nHost: \(host)\r\n\r\n".utf8)
    _ = req.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}
