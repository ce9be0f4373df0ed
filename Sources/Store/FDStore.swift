// SPDX-License-Identifier: Apache-2.0
import CLinuxSys
import Foundation
import Synchronization
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// systemd's file descriptor store (sd_notify(3) `FDSTORE=1` with `FDNAME=`, sd_listen_fds(3) `LISTEN_FDS`), without
/// libsystemd: the service hands fds to systemd, which keeps them while the unit restarts (a restart job, or an
/// automatic restart after a crash; not once the unit is stopped or has failed for good) and passes them to the
/// next process as fds 3… with `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`. `FileDescriptorStoreMax=` must allow
/// them.
public enum SystemdFDStore {
    /// Hands `fd` to systemd under `name`; false without `NOTIFY_SOCKET` or when it could not be sent.
    @discardableResult
    public static func store(_ fd: Int32, name: String, environment: [String: String]? = nil) -> Bool {
        SystemdNotify.send("FDSTORE=1\nFDNAME=\(name)", fds: [fd], environment: environment)
    }

    /// Asks systemd to drop what it keeps under `name`.
    @discardableResult
    public static func remove(name: String, environment: [String: String]? = nil) -> Bool {
        SystemdNotify.send("FDSTOREREMOVE=1\nFDNAME=\(name)", environment: environment)
    }

    /// The fds systemd passed to this process, by name (`LISTEN_FDNAMES`; unnamed ones are `unknown`), when
    /// `LISTEN_PID` is this process. They are made close-on-exec, and the variables are removed from the
    /// environment (children must not take them for theirs).
    public static func inherited() -> [String: [Int32]] {
        let env = ProcessInfo.processInfo.environment
        defer {
            unsetenv("LISTEN_PID")
            unsetenv("LISTEN_FDS")
            unsetenv("LISTEN_FDNAMES")
        }
        guard let pid = env["LISTEN_PID"].flatMap(Int32.init), pid == getpid(),
            let n = env["LISTEN_FDS"].flatMap(Int.init), n > 0, n <= 1024
        else { return [:] }
        let names = env["LISTEN_FDNAMES"]?.split(separator: ":", omittingEmptySubsequences: false).map(String.init) ?? []
        var out: [String: [Int32]] = [:]
        for i in 0..<n {
            let fd = Int32(3 + i)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            out[i < names.count ? names[i] : "unknown", default: []].append(fd)
        }
        return out
    }
}

/// What the unit's `ExecStopPost` decides (`stargz-store stop-post UNIT MOUNTPOINT`): systemd 252 tells neither
/// the process nor the stop step whether the unit is stopping for good or restarting, so the step asks systemd
/// which job is running for the unit (`systemctl list-jobs`): a `stop` job (`systemctl stop`, a shutdown) means
/// for good, and the mount is detached; anything else (a `restart` job, an automatic restart after a crash, no job)
/// leaves the mount to the next process, with the fds systemd keeps.
public enum StopPost {
    /// Whether `jobs` (`systemctl list-jobs --no-legend --plain UNIT`: `ID UNIT TYPE STATE` per line) has a stop job for `unit`.
    public static func stoppingForGood(unit: String, jobs: String) -> Bool {
        jobs.split(separator: "\n").contains { line in
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            return f.count >= 3 && f[1] == Substring(unit) && f[2] == "stop"
        }
    }
}

/// The handover state in a memfd that systemd keeps with the FUSE fds: rewritten whenever the state changes,
/// so a process that dies at any moment leaves its successor the state of its last answer.
///
/// Layout: a 32-byte header (`SGZSTAT1`, generation, offset, length) and two body regions used in turn. The body
/// is written first and the header after it, so a write cut short leaves the previous state readable.
public final class StateJournal: Sendable {
    /// The memfd.
    public let fd: Int32
    private let generation = Mutex<UInt64>(0)
    static let magic: [UInt8] = Array("SGZSTAT1".utf8)
    static let headerSize = 32
    /// The largest state (each region's size).
    public static let maxBytes = 16 << 20

    /// A journal in `fd` (inherited: its generation is read) or in a new memfd.
    public init?(inherited: Int32? = nil) {
        if let inherited {
            fd = inherited
            generation.withLock { $0 = Self.header(inherited)?.generation ?? 0 }
        } else {
            let m = CLinuxSys_memfd("stargz-store-state")
            guard m >= 0 else { return nil }
            fd = m
        }
    }

    /// Writes `state` as the current one (false: too large, or the write failed).
    @discardableResult
    public func write(_ state: [UInt8]) -> Bool {
        guard state.count <= Self.maxBytes else { return false }
        return generation.withLock { g in
            let next = g + 1
            let offset = UInt64(4096 + Int(next % 2) * Self.maxBytes)
            guard Self.pwriteAll(fd, state, at: off_t(offset)) else { return false }
            var header = Self.magic
            for v in [next, offset, UInt64(state.count)] { withUnsafeBytes(of: v.littleEndian) { header.append(contentsOf: $0) } }
            guard Self.pwriteAll(fd, header, at: 0) else { return false }
            g = next
            return true
        }
    }

    /// The current state (nil: none written, or not a journal).
    public func read() -> [UInt8]? {
        guard let h = Self.header(fd), h.length <= UInt64(Self.maxBytes) else { return nil }
        var out = [UInt8](repeating: 0, count: Int(h.length))
        var have = 0
        while have < out.count {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + have, $0.count - have, off_t(h.offset) + off_t(have)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return nil }
            have += n
        }
        return out
    }

    static func header(_ fd: Int32) -> (generation: UInt64, offset: UInt64, length: UInt64)? {
        var h = [UInt8](repeating: 0, count: headerSize)
        guard h.withUnsafeMutableBytes({ pread(fd, $0.baseAddress, headerSize, 0) }) == headerSize, Array(h[0..<8]) == magic else {
            return nil
        }
        func at(_ i: Int) -> UInt64 { h[i..<(i + 8)].withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) } }
        return (at(8), at(16), at(24))
    }

    static func pwriteAll(_ fd: Int32, _ bytes: [UInt8], at offset: off_t) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, $0.count - done, offset + off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            done += n
        }
        return true
    }
}

/// The handover without systemd: a running store listens on `<root>/handover.sock`; a successor started by hand
/// (or by another supervisor) connects and asks; the running store stops reading, sends its state and the FUSE
/// fds (`SCM_RIGHTS`), waits for the successor's word that it serves them, and exits without unmounting. Only root,
/// or the store's own user, is heard (`SO_PEERCRED`); the socket is 0600.
///
/// The exchange: the successor sends `HANDOVER 1\n`; the predecessor answers one message: an 8-byte length, then
/// that many bytes of state, with the fds attached; the successor answers one byte, `1` when it serves them (`0`,
/// or nothing: the predecessor serves them again).
public enum HandoverChannel {
    static let request = Array("HANDOVER 1\n".utf8)

    /// Connects to a running store at `path` and takes its session: its state and fds, or nil when no store
    /// listens there. The caller answers with ``accept(_:_:)``.
    public static func take(from path: String, timeout: Duration = .seconds(120)) throws(StoreError) -> (connection: Int32, state: [UInt8], fds: [Int32])? {
        let sock = CLinuxSys_unixSocket(path, 0, 1)
        guard sock >= 0 else {
            switch errno {
            case ENAMETOOLONG: throw StoreError(.handover, "\(path) is too long for a socket")
            case EMFILE, ENFILE, ENOMEM, ENOBUFS: throw StoreError(.handover, "cannot make a socket: \(String(cString: strerror(errno)))")
            default: return nil  // nothing listens: no predecessor
            }
        }
        var cred = CLinuxSys_PeerCredentials()
        guard CLinuxSys_peerCredentials(sock, &cred) == 0, cred.uid == 0 || cred.uid == geteuid() else {
            close(sock)
            throw StoreError(.handover, "\(path) is served by uid \(cred.uid): not taking a session from it")
        }
        var tv = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        guard request.withUnsafeBytes({ send(sock, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else {
            close(sock)
            throw StoreError(.handover, "cannot ask the store at \(path) for its session")
        }
        // The first message brings the fds and the length.
        var first = [UInt8](repeating: 0, count: 64 << 10)
        var fds = [Int32](repeating: -1, count: 64)
        var nfds: Int32 = 0
        let n = first.withUnsafeMutableBytes { b in
            fds.withUnsafeMutableBufferPointer { f in CLinuxSys_receiveWithFDs(sock, b.baseAddress, UInt(b.count), f.baseAddress, 64, &nfds) }
        }
        let got = Array(fds.prefix(Int(nfds)))
        guard n >= 8 else {
            for f in got { close(f) }
            close(sock)
            throw StoreError(.handover, "the store at \(path) did not hand its session over (\(n < 0 ? String(cString: strerror(errno)) : "closed"))")
        }
        let length = first[0..<8].withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard length <= UInt64(StateJournal.maxBytes) else {
            for f in got { close(f) }
            close(sock)
            throw StoreError(.handover, "the store at \(path) sent a state of \(length) bytes")
        }
        var state = Array(first[8..<n])
        while state.count < Int(length) {
            var more = [UInt8](repeating: 0, count: min(1 << 20, Int(length) - state.count))
            let m = more.withUnsafeMutableBytes { recv(sock, $0.baseAddress, $0.count, 0) }
            guard m > 0 else {
                for f in got { close(f) }
                close(sock)
                throw StoreError(.handover, "the store at \(path) stopped sending its state")
            }
            state += more[0..<m]
        }
        return (sock, Array(state.prefix(Int(length))), got)
    }

    /// Tells the predecessor whether the session was taken, and closes the connection.
    public static func accept(_ connection: Int32, _ taken: Bool) {
        var b: UInt8 = taken ? 1 : 0
        _ = send(connection, &b, 1, Int32(MSG_NOSIGNAL))
        close(connection)
    }
}

/// The predecessor's side of ``HandoverChannel``: listens, and reports a successor's request once.
public final class HandoverListener: Sendable {
    /// The socket's path.
    public let path: String
    let listener: Int32
    let inode: UInt64
    private let waiting = Mutex<[Int: CheckedContinuation<Int32?, Never>]>([:])
    private let nextWaiter = Atomic<Int>(0)
    private let request = Mutex<(done: Bool, connection: Int32?)>((false, nil))

    /// Listens on `path` (a stale socket of a dead store is replaced; anything else is not).
    public init(path: String) throws(StoreError) {
        var st = stat()
        if lstat(path, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFSOCK else { throw StoreError(.setup, "\(path) exists and is not a socket") }
            unlink(path)
        }
        let sock = CLinuxSys_unixSocket(path, 0, 0)
        guard sock >= 0 else { throw StoreError(.setup, "cannot listen on \(path): \(String(cString: strerror(errno)))") }
        guard chmod(path, 0o600) == 0, listen(sock, 4) == 0 else {
            let why = String(cString: strerror(errno))
            Glibc.close(sock)
            throw StoreError(.setup, "cannot listen on \(path): \(why)")
        }
        self.path = path
        listener = sock
        var mine = stat()
        inode = lstat(path, &mine) == 0 ? UInt64(mine.st_ino) : 0
        let t = Thread { [self] in acceptLoop() }
        t.name = "stargz-handover"
        t.start()
    }

    private func acceptLoop() {
        while true {
            let c = accept(listener, nil, nil)
            if c < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return  // closed
            }
            _ = fcntl(c, F_SETFD, FD_CLOEXEC)
            var cred = CLinuxSys_PeerCredentials()
            var tv = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            var buf = [UInt8](repeating: 0, count: HandoverChannel.request.count)
            let n = buf.withUnsafeMutableBytes { recv(c, $0.baseAddress, $0.count, Int32(MSG_WAITALL)) }
            guard CLinuxSys_peerCredentials(c, &cred) == 0, cred.uid == 0 || cred.uid == geteuid(), n == buf.count,
                buf == HandoverChannel.request
            else {
                Glibc.close(c)
                continue
            }
            let (first, waiters) = request.withLock { r -> (Bool, [CheckedContinuation<Int32?, Never>]) in
                guard !r.done else { return (false, []) }
                r = (true, c)
                return (true, waiting.withLock { w in defer { w = [:] }; return Array(w.values) })
            }
            guard first else {
                Glibc.close(c)
                continue
            }
            for w in waiters { w.resume(returning: c) }
        }
    }

    /// Waits for a successor's request; its connection (nil when the listener is closed first, or the wait is
    /// cancelled). Only the first waiter gets a connection.
    public func successor() async -> Int32? {
        let id = nextWaiter.add(1, ordering: .relaxed).newValue
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Int32?, Never>) in
                let ready = request.withLock { r -> Int32?? in
                    if r.done { return .some(r.connection) }
                    if Task.isCancelled { return .some(nil) }
                    waiting.withLock { $0[id] = c }
                    return nil
                }
                if let ready { c.resume(returning: ready) }
            }
        } onCancel: {
            waiting.withLock { $0.removeValue(forKey: id) }?.resume(returning: nil)
        }
    }

    /// Sends the session (`state`, `fds`) on `connection` and waits for the successor's answer: true when it
    /// serves them.
    public static func give(_ connection: Int32, state: [UInt8], fds: [Int32]) -> Bool {
        var message: [UInt8] = []
        withUnsafeBytes(of: UInt64(state.count).littleEndian) { message.append(contentsOf: $0) }
        message += state
        let head = Array(message.prefix(64 << 10))
        let sent = head.withUnsafeBytes { b in
            fds.withUnsafeBufferPointer { f in CLinuxSys_sendWithFDs(connection, nil, b.baseAddress, UInt(b.count), f.baseAddress, Int32(f.count)) }
        }
        guard sent == head.count else { return false }
        var at = head.count
        while at < message.count {
            let n = message.withUnsafeBytes { send(connection, $0.baseAddress! + at, $0.count - at, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return false }
            at += n
        }
        var tv = timeval(tv_sec: 300, tv_usec: 0)
        setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var answer: UInt8 = 0
        let n = recv(connection, &answer, 1, 0)
        Glibc.close(connection)
        return n == 1 && answer == 1
    }

    /// Stops listening (a waiting ``successor()`` returns nil) and removes the socket.
    public func close() {
        let waiters = request.withLock { r -> [CheckedContinuation<Int32?, Never>] in
            if !r.done { r = (true, nil) }
            return waiting.withLock { w in defer { w = [:] }; return Array(w.values) }
        }
        shutdown(listener, Int32(SHUT_RDWR))
        Glibc.close(listener)
        var st = stat()
        if lstat(path, &st) == 0 && UInt64(st.st_ino) == inode { unlink(path) }
        for w in waiters { w.resume(returning: nil) }
    }
}
