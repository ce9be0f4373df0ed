// SPDX-License-Identifier: Apache-2.0
// Test support: systemd's side of sd_notify and of the file descriptor store, since systemd does not run here.
import CLinuxSys
import Dispatch
import Foundation
import Synchronization
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// Plays systemd's part of the protocols a `Type=notify` service with `FileDescriptorStoreMax=` speaks, as
/// sd_notify(3) and sd_listen_fds(3) document them: a datagram socket at `NOTIFY_SOCKET` that takes `READY=1`,
/// keeps the fds of `FDSTORE=1` messages under their `FDNAME=` (a later fd of the same name replaces the earlier,
/// as systemd keeps one per distinct fd and the store names each of its fds once) and drops them on
/// `FDSTOREREMOVE=1`; and a launcher that starts the next process with the kept fds as 3, 4, … and `LISTEN_PID`,
/// `LISTEN_FDS`, `LISTEN_FDNAMES`, as systemd does on a restart.
public final class FakeSystemd: Sendable {
    /// The socket (`NOTIFY_SOCKET`).
    public let socketPath: String
    let sock: Int32
    private let kept = Mutex<[(name: String, fd: Int32)]>([])
    private let readyCount = Mutex(0)
    private let ready = DispatchSemaphore(value: 0)

    /// Listens at `directory/notify.sock`.
    public init(directory: String) throws {
        socketPath = directory + "/notify.sock"
        unlink(socketPath)
        sock = unixSocket(socketPath, datagram: true, connect: false)
        guard sock >= 0 else { throw SupportError("cannot bind \(socketPath)") }
        let t = Thread { [self] in receive() }
        t.name = "fake-systemd"
        t.start()
    }

    deinit {
        shutdown(sock, Int32(SHUT_RDWR))
        close(sock)
        for k in kept.withLock({ $0 }) { close(k.fd) }
    }

    private func receive() {
        var buf = [UInt8](repeating: 0, count: 4096)
        var fds = [Int32](repeating: -1, count: 64)
        while true {
            var n: Int32 = 0
            let got = buf.withUnsafeMutableBytes { b in
                fds.withUnsafeMutableBufferPointer { f in CLinuxSys_receiveWithFDs(sock, b.baseAddress, UInt(b.count), f.baseAddress, 64, &n) }
            }
            guard got >= 0 else { return }
            let text = String(decoding: buf[0..<got], as: UTF8.self)
            let fields = Dictionary(
                text.split(separator: "\n").map { line -> (String, String) in
                    let parts = line.split(separator: "=", maxSplits: 1)
                    return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
                }, uniquingKeysWith: { $1 })
            let received = Array(fds.prefix(Int(n)))
            if fields["FDSTORE"] == "1" {
                let name = fields["FDNAME"] ?? "stored"
                kept.withLock { k in
                    for old in k where old.name == name { close(old.fd) }
                    k.removeAll { $0.name == name }
                    for f in received { k.append((name, f)) }
                }
            } else {
                for f in received { close(f) }  // systemd closes fds that come without FDSTORE=1
            }
            if fields["FDSTOREREMOVE"] == "1", let name = fields["FDNAME"] {
                kept.withLock { k in
                    for old in k where old.name == name { close(old.fd) }
                    k.removeAll { $0.name == name }
                }
            }
            if fields["READY"] == "1" {
                readyCount.withLock { $0 += 1 }
                ready.signal()
            }
        }
    }

    /// Waits for the next `READY=1`.
    public func waitReady(timeout: Double = 120) -> Bool {
        ready.wait(timeout: .now() + timeout) == .success
    }

    /// The names of the fds kept, in the order they came.
    public var storedNames: [String] { kept.withLock { $0.map(\.name) } }

    /// Starts `binary ARGS…` as systemd starts a service: its environment plus `NOTIFY_SOCKET`, the kept fds as
    /// 3… with `LISTEN_*` (when `withStoredFDs`), standard error to `log`, signals unblocked. Returns its pid.
    public func start(_ binary: String, _ arguments: [String], environment: [String: String], log: String, withStoredFDs: Bool) throws -> Int32 {
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { $1 }
        env["NOTIFY_SOCKET"] = socketPath
        env["LISTEN_PID"] = nil
        env["LISTEN_FDS"] = nil
        env["LISTEN_FDNAMES"] = nil
        let fds = withStoredFDs ? kept.withLock { $0 } : []
        if !fds.isEmpty {
            env["LISTEN_FDS"] = String(fds.count)
            env["LISTEN_FDNAMES"] = fds.map(\.name).joined(separator: ":")
        }
        // Copies above the range they go to, so that no dup2 is a no-op that keeps FD_CLOEXEC.
        let high = fds.map { fcntl($0.fd, F_DUPFD_CLOEXEC, 200) }
        defer { for h in high { close(h) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        for (i, h) in high.enumerated() { posix_spawn_file_actions_adddup2(&actions, h, Int32(3 + i)) }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK))
        // LISTEN_PID is the service's own pid: a shell sets it and execs the binary in its place.
        let argv = ["/bin/sh", "-c", "LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"", binary] + arguments
        let envp = env.map { "\($0)=\($1)" }
        var pid: pid_t = 0
        let r = withCStrings(argv) { a in withCStrings(envp) { e in posix_spawn(&pid, "/bin/sh", &actions, &attr, a, e) } }
        guard r == 0 else { throw SupportError("cannot start \(binary): \(String(cString: strerror(r)))") }
        return pid
    }
}

/// Runs `argv` with `environment` added to this process's, its output to /dev/null, and waits for it with
/// `waitpid` (not Foundation's Process: a child that leaves a daemon behind, as `podman run -d` leaves conmon, is
/// then still reaped); its exit status.
public func spawnAndWait(_ argv: [String], environment: [String: String] = [:]) throws -> Int32 {
    var env = ProcessInfo.processInfo.environment
    env.merge(environment) { $1 }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    var pid: pid_t = 0
    let r = withCStrings(argv) { a in withCStrings(env.map { "\($0)=\($1)" }) { e in posix_spawn(&pid, argv[0], &actions, nil, a, e) } }
    guard r == 0 else { throw SupportError("cannot start \(argv[0]): \(String(cString: strerror(r)))") }
    return waitForExit(pid)
}

/// A close-on-exec unix socket bound to `path` or connected to it; -1 when it cannot be.
public func unixSocket(_ path: String, datagram: Bool, connect: Bool) -> Int32 {
    CLinuxSys_unixSocket(path, datagram ? 1 : 0, connect ? 1 : 0)
}

/// `kill(pid, signal)`, then ``waitForExit(_:)``.
@discardableResult
public func stopProcess(_ pid: Int32, _ signal: Int32) -> Int32 {
    kill(pid, signal)
    return waitForExit(pid)
}

/// `waitpid` for a child; its exit status (128 + the signal for a signal).
@discardableResult
public func waitForExit(_ pid: Int32) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let termsig = status & 0x7f
    return termsig == 0 ? (status >> 8) & 0xff : 128 + termsig
}

private func withCStrings<R>(_ strings: [String], _ body: (UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for p in pointers { free(p) } }
    return pointers.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
}
