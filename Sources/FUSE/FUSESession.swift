// SPDX-License-Identifier: Apache-2.0
import CLinuxFUSE
import Dispatch
import Foundation
public import Logging
import Synchronization
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// A mounted FUSE filesystem: the `/dev/fuse` session, its reader threads and its in-flight requests.
///
/// Reader threads (`fuse-reader-N`, each on its own cloned `/dev/fuse` fd) read a request, decode it
/// (``RequestDecoder``), hand it to the ``Dispatcher`` and write what it answers at once; an answer that comes
/// later becomes a task that writes its own reply. `FUSE_INTERRUPT` cancels that task. ``unmount()`` detaches
/// the mount, lets the readers see `ENODEV` and exit, and cancels and drains the tasks.
///
/// A session can also change hands without unmounting: ``suspend()`` stops reading, lets the requests in
/// flight finish and gives back the fds and what INIT agreed; ``adopt(_:at:fds:parameters:options:logger:)`` serves
/// them in another session (another process: the fds travel through systemd's fd store or `SCM_RIGHTS`).
/// Requests that come meanwhile wait in the kernel's queue. ``abandon()`` stops without answering what is in
/// flight: a successor asks the kernel to resend those (`FUSE_NOTIFY_RESEND`), as after a crash.
public final class FUSESession: Sendable {
    /// How the session mounts and serves.
    public struct Options: Sendable {
        /// Reader threads (2…16).
        public var readers: Int
        /// Reads waiting on the network at once; more make the reader threads wait (back-pressure).
        public var maxInFlight: Int
        /// `fsname` shown in /proc/mounts.
        public var fsName: String
        /// The type suffix: `fuse.<subtype>`.
        public var subtype: String
        /// Let other users (the container runtime, overlayfs) use the mount.
        public var allowOther: Bool
        /// How long the kernel may cache names and attributes (the tree never changes).
        public var cacheTimeout: Duration
        /// Whether the kernel may cache "no such name" answers (for ``cacheTimeout``).
        public var cacheNegativeLookups: Bool
        /// Mount read-only (MS_RDONLY). A store that takes `create`/`rmdir` notifications mounts read-write
        /// and still answers every write with EROFS.
        public var readOnly: Bool
        /// Let the kernel check permissions from the modes (`default_permissions`).
        public var defaultPermissions: Bool
        /// Honour setuid/setgid bits (no `nosuid`), as container root filesystems need.
        public var allowSetuid: Bool
        /// Largest read request the kernel sends.
        public var maxRead: Int
        /// How to mount: `mount(2)` needs root (CAP_SYS_ADMIN); the `fusermount3` helper works for any user
        /// (with `user_allow_other` in /etc/fuse.conf for ``allowOther``).
        public var method: MountMethod
        /// The highest protocol minor version to speak (older kernels are met at theirs); 38 is the
        /// version of the ABI header this is built against.
        public var maxMinor: UInt32

        /// Creates options.
        public init(
            readers: Int = 4, maxInFlight: Int = 128, fsName: String = "stargz", subtype: String = "stargz",
            allowOther: Bool = true, cacheTimeout: Duration = .seconds(3600), maxRead: Int = 1 << 20,
            maxMinor: UInt32 = ABI.kernelMinor, method: MountMethod = .automatic, cacheNegativeLookups: Bool = true,
            readOnly: Bool = true, defaultPermissions: Bool = true, allowSetuid: Bool = false
        ) {
            self.method = method
            self.cacheNegativeLookups = cacheNegativeLookups
            self.readOnly = readOnly
            self.defaultPermissions = defaultPermissions
            self.allowSetuid = allowSetuid
            self.readers = min(16, max(2, readers))
            self.maxInFlight = max(1, maxInFlight)
            self.fsName = fsName
            self.subtype = subtype
            self.allowOther = allowOther
            self.cacheTimeout = cacheTimeout
            self.maxRead = max(4096, min(maxRead, 1 << 20))
            self.maxMinor = maxMinor
        }
    }

    /// How a session is mounted (``FUSE/MountMethod``).
    public typealias MountMethod = FUSE.MountMethod

    struct State {
        var inFlight: [UInt64: Task<Void, Never>] = [:]
        /// Requests in flight that the kernel interrupted: their cancellation is answered EINTR (any other, as
        /// at unmount, EIO).
        var interrupted: Set<UInt64> = []
        var unmounted = false
        var readersLeft = 0
        /// Every fd of the session (the first and its clones); closed only when nothing can write to them.
        var fds: [Int32] = []
        /// Replies are no longer written: the requests are left to a successor, which has them resent.
        var abandoning = false
    }

    /// Where the filesystem is mounted.
    public let mountPoint: String
    let fd: Int32
    let dispatcher: Dispatcher
    let options: Options
    let logger: Logger
    let state = Mutex(State())
    let slots: DispatchSemaphore
    let readersDone = DispatchSemaphore(value: 0)
    let initialized = DispatchSemaphore(value: 0)
    /// Requests in flight (tasks); unmount waits for them before it closes the fds they reply on.
    let tasks = DispatchGroup()
    /// Set to stop the readers without unmounting; a byte in the `wake` pipe gets them out of `poll`.
    let stopping = Atomic<Bool>(false)
    let wake: (read: Int32, write: Int32)

    private init(mountPoint: String, fd: Int32, fs: any FileSystem, options: Options, logger: Logger) {
        self.mountPoint = mountPoint
        self.fd = fd
        self.dispatcher = Dispatcher(fs, options: options, logger: logger)
        self.options = options
        self.logger = logger
        slots = DispatchSemaphore(value: options.maxInFlight)
        var p: [Int32] = [-1, -1]
        _ = pipe(&p)
        for f in p {
            _ = fcntl(f, F_SETFD, FD_CLOEXEC)
            _ = fcntl(f, F_SETFL, O_NONBLOCK)
        }
        wake = (p[0], p[1])
    }

    deinit {
        close(wake.read)
        close(wake.write)
    }

    /// Mounts `fs` at `mountPoint` (as root, `mount(2)`; otherwise through `fusermount3`) and starts serving.
    /// Returns once the kernel has finished the INIT handshake, so the mount answers at once.
    public static func mount(
        _ fs: any FileSystem, at mountPoint: String, options: Options = Options(),
        logger: Logger = Logger(label: "stargz.fuse")
    ) throws -> FUSESession {
        let fd = try Mount.mount(at: mountPoint, options)
        let session = FUSESession(mountPoint: mountPoint, fd: fd, fs: fs, options: options, logger: logger)
        var fds = [fd]
        for _ in 1..<options.readers {
            if let c = Mount.clone(fd) { fds.append(c) }
        }
        session.start(fds)
        // Wait for INIT, so that the first stat does not race the handshake.
        if session.initialized.wait(timeout: .now() + 10) == .timedOut {
            session.unmount()
            throw FUSEError(ETIMEDOUT, "the kernel did not start the FUSE session at \(mountPoint)")
        }
        return session
    }

    /// Serves a session another process (or ``suspend()``) handed over: `fds` are its /dev/fuse fds (the first
    /// and its clones, each with the requests it read), `parameters` what INIT agreed. Nothing is mounted and no
    /// INIT comes. When the kernel can resend (``SessionParameters/kernelCanResend``), it is asked to, so that
    /// requests a dead predecessor read and never answered are read again here.
    public static func adopt(
        _ fs: any FileSystem, at mountPoint: String, fds: [Int32], parameters: SessionParameters, options: Options = Options(),
        logger: Logger = Logger(label: "stargz.fuse")
    ) throws -> FUSESession {
        guard let first = fds.first else { throw FUSEError(EINVAL, "no /dev/fuse fd to adopt") }
        let session = FUSESession(mountPoint: mountPoint, fd: first, fs: fs, options: options, logger: logger)
        session.dispatcher.adopt(parameters)
        session.start(fds)
        if parameters.kernelCanResend { session.askForResend() }
        return session
    }

    /// Starts one reader thread per fd (each non-blocking, read after `poll`).
    private func start(_ fds: [Int32]) {
        for f in fds {
            let flags = fcntl(f, F_GETFL)
            if flags >= 0 { _ = fcntl(f, F_SETFL, flags | O_NONBLOCK) }
        }
        state.withLock { s in
            s.readersLeft = fds.count
            s.fds = fds
        }
        for (i, f) in fds.enumerated() {
            let t = Thread { [self] in serve(f) }
            t.name = "fuse-reader-\(i)"
            t.start()
        }
    }

    /// `FUSE_NOTIFY_RESEND`: the kernel puts every request read but not answered back in its queue.
    func askForResend() {
        var header = fuse_out_header(len: UInt32(ABI.outHeaderSize), error: ABI.notifyResend, unique: 0)
        let n = withUnsafeBytes(of: &header) { write(fd, $0.baseAddress, $0.count) }
        if n != ABI.outHeaderSize {
            logger.warning("the kernel did not take FUSE_NOTIFY_RESEND", metadata: ["error": "\(String(cString: strerror(errno)))"])
        } else {
            logger.debug("asked the kernel to resend the requests a predecessor read and did not answer")
        }
    }

    /// Stops reading (requests that come wait in the kernel), lets those in flight finish and answer, and gives
    /// back the fds, open, with what INIT agreed, for ``adopt(_:at:fds:parameters:options:logger:)``. The mount
    /// stays. The session is over: ``unmount()`` does nothing after this. Blocks.
    public func suspend() -> (fds: [Int32], parameters: SessionParameters) {
        stopReaders()
        tasks.wait()
        return (state.withLock { $0.fds }, dispatcher.parameters)
    }

    /// Like ``suspend()``, but requests in flight are cancelled and never answered: the kernel keeps them as read
    /// and resends them to a successor that asks (``SessionParameters/kernelCanResend``). For a kernel that
    /// cannot, use ``suspend()``.
    public func abandon() -> (fds: [Int32], parameters: SessionParameters) {
        let running = state.withLock { s -> [Task<Void, Never>] in
            s.abandoning = true
            return Array(s.inFlight.values)
        }
        stopReaders()
        for t in running { t.cancel() }
        tasks.wait()
        return (state.withLock { $0.fds }, dispatcher.parameters)
    }

    /// Stops the reader threads and waits for them; no more requests are read. Marks the session over.
    private func stopReaders() {
        let first = state.withLock { s in
            defer { s.unmounted = true }
            return !s.unmounted
        }
        guard first else { return }
        stopping.store(true, ordering: .releasing)
        var one: UInt8 = 1
        _ = write(wake.write, &one, 1)
        let n = state.withLock { $0.readersLeft }
        for _ in 0..<n { readersDone.wait() }
    }

    /// The protocol minor version agreed with the kernel.
    public var negotiatedMinor: UInt32 { dispatcher.minor }

    /// What INIT agreed (for a successor).
    public var parameters: SessionParameters { dispatcher.parameters }

    /// The session's /dev/fuse fds: the first and its clones, each with the requests it read (a successor needs
    /// every one: the kernel ends what a closed clone read).
    public var fileDescriptors: [Int32] { state.withLock { $0.fds } }

    /// Detaches the mount, waits for the reader threads to exit, and cancels requests still in flight.
    /// Safe to call more than once. Blocks: call it from a thread, not from async code that must not block.
    public func unmount() {
        let first = state.withLock { s in
            defer { s.unmounted = true }
            return !s.unmounted
        }
        guard first else { return }
        if let why = Mount.detach(mountPoint) {
            logger.warning("cannot unmount; the mount stays until it is unmounted by hand", metadata: ["mountpoint": "\(mountPoint)", "error": "\(why)"])
        }
        let running = state.withLock { Array($0.inFlight.values) }
        for t in running { t.cancel() }
        let n = state.withLock { $0.readersLeft }
        for _ in 0..<n { readersDone.wait() }
        tasks.wait()
        for f in state.withLock({ $0.fds }) where close(f) != 0 && errno != EINTR {
            logger.warning("closing a /dev/fuse fd failed", metadata: ["error": "\(String(cString: strerror(errno)))"])
        }
    }

    // MARK: Reader threads

    private func serve(_ fd: Int32) {
        // The largest request is a WRITE of max_write (4 KiB) or a name-carrying op; the kernel wants room for
        // its maximum pages of payload, so the buffer is that plus the header's page.
        let capacity = 64 * 1024 + 4096
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
        defer {
            buf.deallocate()
            state.withLock { $0.readersLeft -= 1 }
            readersDone.signal()
        }
        // The fd is non-blocking: read until the queue is empty, then wait (epoll, one reader woken per request)
        // for more, or to stop.
        let waiter = CLinuxFUSE_readerWaiter(fd, wake.read)
        guard waiter >= 0 else {
            logger.warning("cannot wait on /dev/fuse", metadata: ["error": "\(String(cString: strerror(errno)))"])
            return
        }
        defer { close(waiter) }
        while true {
            if stopping.load(ordering: .acquiring) { return }
            let n = read(fd, buf.baseAddress, capacity)
            if n < 0 {
                let e = errno
                if e == EAGAIN {
                    let w = CLinuxFUSE_waitForRequest(waiter)
                    if w == 1 { return }
                    if w < 0 {
                        logger.warning("waiting on /dev/fuse failed", metadata: ["error": "\(String(cString: strerror(errno)))"])
                        return
                    }
                    continue
                }
                if e == EINTR || e == ENOENT { continue }
                if e != ENODEV { logger.warning("reading /dev/fuse failed", metadata: ["error": "\(String(cString: strerror(e)))"]) }
                return
            }
            let bytes = UnsafeRawBufferPointer(rebasing: buf[0..<n])
            let request: Request
            do throws(DecodeFailure) {
                request = try RequestDecoder.decode(bytes, minor: dispatcher.minor)
            } catch {
                if let (unique, reply) = dispatcher.handle(error) { send(fd, reply, unique) }
                continue
            }
            if !perform(dispatcher.handle(request), request, fd) { return }
        }
    }

    /// Carries out the dispatcher's answer; false when the session is over (DESTROY).
    private func perform(_ outcome: Outcome, _ request: Request, _ fd: Int32) -> Bool {
        let unique = request.header.unique
        switch outcome {
        case .reply(let r):
            send(fd, r, unique)
            if case .initialize = request.operation { initialized.signal() }
        case .later(let work):
            submit(fd, request.header, work)
        case .interrupt(let target):
            let t = state.withLock { s -> Task<Void, Never>? in
                guard let t = s.inFlight[target] else { return nil }
                s.interrupted.insert(target)
                return t
            }
            t?.cancel()
        case .none:
            break
        case .destroy(let r):
            send(fd, r, unique)
            return false
        }
        return true
    }

    /// Runs work that waits on the network in a task that replies itself (or with the errno of its error);
    /// the reader thread waits only when too many are in flight. FUSE_INTERRUPT cancels the task.
    private func submit(_ fd: Int32, _ header: RequestHeader, _ work: @escaping @Sendable () async throws -> Reply) {
        slots.wait()
        tasks.enter()
        let unique = header.unique
        let late = state.withLock { s -> Task<Void, Never>? in
            let t = Task { [self] in
                defer {
                    state.withLock { s in
                        s.inFlight[unique] = nil
                        s.interrupted.remove(unique)
                    }
                    slots.signal()
                    tasks.leave()
                }
                do {
                    let reply = try await work()
                    if !state.withLock({ $0.abandoning }) { send(fd, reply, unique) }
                } catch {
                    // Left for a successor, which has the kernel resend it.
                    if state.withLock({ $0.abandoning }) { return }
                    var e = FUSEError(replyingTo: error)
                    if e.errno == EINTR, !state.withLock({ $0.interrupted.contains(unique) }) {
                        e = FUSEError(EIO, "cancelled: the filesystem is unmounting")
                    }
                    dispatcher.log(e, header)
                    send(fd, .status(e.errno), unique)
                }
            }
            s.inFlight[unique] = t
            // Unmount has taken its list of tasks to cancel already: this one is cancelled here.
            return s.unmounted ? t : nil
        }
        late?.cancel()
    }

    /// Writes one reply: the header and the payload in one `writev`, checked.
    private func send(_ fd: Int32, _ reply: Reply, _ unique: UInt64) {
        dispatcher.encoder.withEncoded(reply, unique: unique) { header, payload in
            var iov = [
                iovec(iov_base: UnsafeMutableRawPointer(mutating: header.baseAddress), iov_len: header.count),
                iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count),
            ]
            let total = header.count + payload.count
            while true {
                let n = writev(fd, &iov, payload.count > 0 ? 2 : 1)
                if n == total { return }
                let e = n < 0 ? errno : EIO
                if n < 0 && e == EINTR { continue }
                // ENOENT: the request was interrupted and is gone; ENODEV: the mount is gone. Nothing to do.
                if n < 0 && (e == ENOENT || e == ENODEV) { return }
                logger.warning(
                    "writing a FUSE reply failed",
                    metadata: ["fuse.unique": "\(unique)", "written": "\(n)", "length": "\(total)", "error": "\(String(cString: strerror(e)))"])
                return
            }
        }
    }
}
