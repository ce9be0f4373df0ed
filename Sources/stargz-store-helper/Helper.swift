// SPDX-License-Identifier: Apache-2.0
// stargz-store-helper: what registries.conf's `additional-layer-store-auth-helper` names. containers/image runs it
// once per pull, with no arguments, the pull's credentials as one JSON object on standard input, its output
// discarded and its exit status only warned about. It hands them to the running store over the store's control
// socket and exits 0 once the store holds them; otherwise non-zero with one line on stderr and in syslog (the
// journal), which is where an operator will see it.
//
// Deliberately small: no Foundation, no event loop; every wait bounded.
import CLinuxSys
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// Why the helper stops, and its exit status.
struct HelperFailure: Error {
    var status: Int32
    var message: String

    /// Bad arguments or input: the caller's doing.
    static func usage(_ m: String) -> HelperFailure { HelperFailure(status: 64, message: m) }
    /// The store refused the credentials (nothing changed).
    static func refused(_ m: String) -> HelperFailure { HelperFailure(status: 65, message: m) }
    /// The store could not be reached, or did not answer in time.
    static func unavailable(_ m: String) -> HelperFailure { HelperFailure(status: 69, message: m) }
}

enum Helper {
    static let defaultRoot = "/var/lib/stargz-store"
    /// What is read from standard input at most (the store takes no more).
    static let maxInput = 64 << 10
    static let defaultTimeout = 10

    static let usage = """
        usage: stargz-store-helper [--root DIR] [--timeout SECONDS] [SOCKET]
        Reads {"<image reference>": {"username": …, "password": …, "identityToken": …}} on standard input (as
        containers/image writes it) and hands it to the running stargz-store at SOCKET (default DIR/store.sock,
        DIR default \(defaultRoot); or $STARGZ_STORE_SOCKET). Exits 0 once the store holds the credentials; the
        whole run takes at most --timeout seconds (default \(defaultTimeout)).
        """

    struct Options {
        var socket = defaultRoot + "/store.sock"
        var timeout = defaultTimeout
    }

    /// `environment`: `$STARGZ_STORE_SOCKET`, which containers/image passes on (it passes no arguments), for a
    /// store with another root or `-addr`; `--root` and SOCKET win over it.
    static func parse(_ args: [String], environment socketFromEnvironment: String? = nil) throws(HelperFailure) -> Options? {
        var o = Options()
        if let e = socketFromEnvironment, !e.isEmpty { o.socket = e }
        var root: String? = nil
        var socket: String? = nil
        var i = 0
        func value(_ name: String) throws(HelperFailure) -> String {
            i += 1
            guard i < args.count, !args[i].isEmpty else { throw .usage("\(name) needs a value") }
            return args[i]
        }
        while i < args.count {
            let a = args[i]
            switch a {
            case "-h", "--help": return nil
            case "--root", "-root": root = try value(a)
            case "--timeout":
                let v = try value(a)
                guard let n = Int(v), n >= 1, n <= 600 else { throw .usage("--timeout must be 1…600 seconds, not \(v)") }
                o.timeout = n
            default:
                if let eq = a.firstIndex(of: "="), a.hasPrefix("--root=") || a.hasPrefix("--timeout=") {
                    let name = String(a[..<eq]), v = String(a[a.index(after: eq)...])
                    return try parse(Array(args[..<i]) + [name, v] + Array(args[(i + 1)...]), environment: socketFromEnvironment)
                }
                guard !a.hasPrefix("-"), socket == nil else { throw .usage("unexpected argument \(a)") }
                socket = a
            }
            i += 1
        }
        if let socket { o.socket = socket } else if let root { o.socket = root + "/store.sock" }
        return o
    }

    /// Everything on standard input, up to ``maxInput``.
    static func readInput() throws(HelperFailure) -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let n = buf.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw .usage("cannot read standard input: \(errorText())") }
            if n == 0 { break }
            out += buf[..<n]
            guard out.count <= maxInput else { throw .usage("more than \(maxInput) bytes on standard input; not credentials") }
        }
        guard !out.isEmpty else { throw .usage("nothing on standard input (expected the credentials JSON)") }
        return out
    }

    /// Connects, checks that the store's end is root (or this user), sends, and reads the answer.
    static func handOver(_ json: [UInt8], _ o: Options) throws(HelperFailure) {
        let deadline = monotonicSeconds() + Double(o.timeout)
        // The connect itself is bounded by the run's alarm (main).
        let fd = CLinuxSys_unixSocket(o.socket, 0, 1)
        guard fd >= 0 else {
            let e = errno
            switch e {
            case ENAMETOOLONG: throw .usage("socket path \(o.socket) is too long")
            case ENOENT: throw .unavailable("stargz-store is not running: there is no socket at \(o.socket)")
            case ECONNREFUSED: throw .unavailable("stargz-store is not running: nothing listens on \(o.socket)")
            case EACCES, EPERM: throw .unavailable("cannot connect to \(o.socket): \(errorText(e)) (the store takes credentials from root only)")
            default: throw .unavailable("cannot connect to \(o.socket): \(errorText(e))")
            }
        }
        defer { close(fd) }
        setTimeout(fd, deadline)
        var cred = CLinuxSys_PeerCredentials()
        guard CLinuxSys_peerCredentials(fd, &cred) == 0 else {
            throw .unavailable("cannot tell who serves \(o.socket): \(errorText())")
        }
        guard cred.uid == 0 || cred.uid == getuid() else {
            throw .unavailable("\(o.socket) is served by uid \(cred.uid), not root: the credentials are not handed over")
        }
        let head = "POST /v1/credentials HTTP/1.1\r\nHost: stargz-store\r\nUser-Agent: stargz-store-helper\r\n"
            + "Content-Type: application/json\r\nContent-Length: \(json.count)\r\nConnection: close\r\n\r\n"
        try send(fd, Array(head.utf8) + json, deadline, o.socket)
        let reply = try receive(fd, deadline, o.socket)
        try judge(reply, o.socket)
    }

    /// The store's answer: 2xx is success; otherwise its one-line reason.
    static func judge(_ reply: [UInt8], _ socket: String) throws(HelperFailure) {
        let text = String(decoding: reply, as: UTF8.self)
        let statusLine = text.prefix { $0 != "\r" && $0 != "\n" }
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let code = Int(parts[1]) else {
            throw .unavailable("\(socket) did not answer as stargz-store does (\(statusLine.prefix(80)))")
        }
        if (200..<300).contains(code) { return }
        var reason = ""
        let separator: [UInt8] = [13, 10, 13, 10]
        if let split = reply.indices.dropLast(3).first(where: { Array(reply[$0..<($0 + 4)]) == separator }) {
            reason = String(decoding: reply[(split + 4)...].prefix { $0 != 10 && $0 != 13 }, as: UTF8.self)
        }
        if reason.isEmpty { reason = parts.count > 2 ? String(parts[2]) : "status \(code)" }
        throw .refused("stargz-store refused the credentials (\(code)): \(reason)")
    }

    static func send(_ fd: Int32, _ bytes: [UInt8], _ deadline: Double, _ socket: String) throws(HelperFailure) {
        var off = 0
        while off < bytes.count {
            setTimeout(fd, deadline)
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, $0.count - off, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw timedOutOr("cannot write to \(socket)", deadline) }
            off += n
        }
    }

    static func receive(_ fd: Int32, _ deadline: Double, _ socket: String) throws(HelperFailure) -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while out.count < 16 << 10 {
            setTimeout(fd, deadline)
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n == 0 { break }
            guard n > 0 else { throw timedOutOr("no answer from \(socket)", deadline) }
            out += buf[..<n]
        }
        return out
    }

    static func timedOutOr(_ what: String, _ deadline: Double) -> HelperFailure {
        let e = errno
        if e == EAGAIN || e == EWOULDBLOCK || monotonicSeconds() >= deadline {
            return .unavailable("\(what): no answer within the time allowed (--timeout)")
        }
        return .unavailable("\(what): \(errorText(e))")
    }

    /// Each wait on the socket ends at the deadline.
    static func setTimeout(_ fd: Int32, _ deadline: Double) {
        let left = max(0.001, deadline - monotonicSeconds())
        var tv = timeval(tv_sec: Int(left), tv_usec: Int((left - Double(Int(left))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    static func errorText(_ e: Int32 = errno) -> String { String(cString: strerror(e)) }

    /// One line to stderr and to syslog (journald reads /dev/log), where an operator sees it: containers/image
    /// throws the helper's stderr away.
    static func report(_ message: String) {
        let line = "stargz-store-helper: " + message + "\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
        openlog("stargz-store-helper", LOG_PID, LOG_DAEMON)
        message.withCString { m in withVaList([m]) { vsyslog(LOG_ERR, "%s", $0) } }
        closelog()
    }

    static func main(_ args: [String]) -> Int32 {
        do {
            guard let o = try parse(args, environment: getenv("STARGZ_STORE_SOCKET").map { String(cString: $0) }) else {
                print(usage)
                return 0
            }
            // containers/image waits for the helper without a limit, so every wait here has one: the whole run,
            // standard input and syslog included, ends at --timeout (SIGALRM: one line, exit 69).
            signal(SIGPIPE, SIG_IGN)
            signal(SIGALRM) { _ in
                // Async-signal-safe: a static string and write(2).
                let line: StaticString = "stargz-store-helper: no answer within the time allowed (--timeout); the store may not hold the credentials\n"
                _ = write(2, line.utf8Start, line.utf8CodeUnitCount)
                _exit(69)
            }
            alarm(UInt32(o.timeout))
            try handOver(try readInput(), o)
            return 0
        } catch {
            report(error.message)
            return error.status
        }
    }
}
