// SPDX-License-Identifier: Apache-2.0
import CLinuxFUSE
import Dispatch
import Foundation
public import Logging
import Synchronization
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// A mounted FUSE filesystem: the `/dev/fuse` session, its reader threads and its in-flight reads.
///
/// Reader threads (`fuse-reader-N`, each on its own cloned `/dev/fuse` fd) answer metadata and cached reads
/// inline; a read that must wait for the network becomes a task that writes its own reply. `FUSE_INTERRUPT`
/// cancels that task. ``unmount()`` detaches the mount, lets the readers see `ENODEV` and exit, and cancels
/// and drains the tasks.
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
            maxMinor: UInt32 = 38, method: MountMethod = .automatic, cacheNegativeLookups: Bool = true,
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

    /// How a session is mounted.
    public enum MountMethod: Sendable {
        /// `mount(2)` when running as root, else the helper.
        case automatic
        /// `mount(2)`.
        case syscall
        /// `fusermount3`, which mounts and hands the /dev/fuse fd back over a socket.
        case helper
    }

    struct State {
        var inFlight: [UInt64: Task<Void, Never>] = [:]
        var directories: [UInt64: [DirectoryEntry]] = [:]
        var nextHandle: UInt64 = 1
        var minor: UInt32 = 0
        var unmounted = false
        var readersLeft = 0
        /// Every fd of the session (the first and its clones); closed only when nothing can write to them.
        var fds: [Int32] = []
    }

    /// Where the filesystem is mounted.
    public let mountPoint: String
    let fd: Int32
    let fs: any FileSystem
    let options: Options
    let logger: Logger
    let state = Mutex(State())
    let slots: DispatchSemaphore
    let readersDone = DispatchSemaphore(value: 0)
    let initialized = DispatchSemaphore(value: 0)
    /// Reads in flight (tasks); unmount waits for them before it closes the fds they reply on.
    let tasks = DispatchGroup()

    private init(mountPoint: String, fd: Int32, fs: any FileSystem, options: Options, logger: Logger) {
        self.mountPoint = mountPoint
        self.fd = fd
        self.fs = fs
        self.options = options
        self.logger = logger
        slots = DispatchSemaphore(value: options.maxInFlight)
    }

    /// Mounts `fs` read-only at `mountPoint` (we must be root, or have CAP_SYS_ADMIN) and starts serving.
    /// Returns once the kernel has finished the INIT handshake, so the mount answers at once.
    public static func mount(
        _ fs: any FileSystem, at mountPoint: String, options: Options = Options(),
        logger: Logger = Logger(label: "stargz.fuse")
    ) throws -> FUSESession {
        var st = stat()
        guard stat(mountPoint, &st) == 0, (st.st_mode & 0o170000) == 0o040000 else {
            let e = errno
            throw FUSEError(e == 0 ? ENOTDIR : e, "mount point \(mountPoint) is not a directory")
        }
        let useHelper = options.method == .helper || (options.method == .automatic && geteuid() != 0)
        let fd = useHelper ? try mountWithHelper(mountPoint, options) : try mountWithSyscall(mountPoint, options)
        let session = FUSESession(mountPoint: mountPoint, fd: fd, fs: fs, options: options, logger: logger)
        var fds = [fd]
        for _ in 1..<options.readers {
            let c = open("/dev/fuse", O_RDWR | O_CLOEXEC)
            if c >= 0 && CLinuxFUSE_clone(c, fd) == 0 {
                fds.append(c)
            } else if c >= 0 {
                close(c)
            }
        }
        session.state.withLock { s in
            s.readersLeft = fds.count
            s.fds = fds
        }
        for (i, f) in fds.enumerated() {
            let t = Thread { session.serve(f) }
            t.name = "fuse-reader-\(i)"
            t.start()
        }
        // Wait for INIT, so that the first stat does not race the handshake.
        if session.initialized.wait(timeout: .now() + 10) == .timedOut {
            session.unmount()
            throw FUSEError(ETIMEDOUT, "the kernel did not start the FUSE session at \(mountPoint)")
        }
        return session
    }

    private static func mountWithSyscall(_ mountPoint: String, _ options: Options) throws -> Int32 {
        let fd = open("/dev/fuse", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw FUSEError(errno, "cannot open /dev/fuse") }
        var data = "fd=\(fd),rootmode=40000,user_id=\(getuid()),group_id=\(getgid()),max_read=\(options.maxRead)"
        if options.allowOther { data += ",allow_other" }
        if options.defaultPermissions { data += ",default_permissions" }
        var flags = UInt(MS_NODEV)
        if !options.allowSetuid { flags |= UInt(MS_NOSUID) }
        if options.readOnly { flags |= UInt(MS_RDONLY) }
        guard Glibc.mount(options.fsName, mountPoint, "fuse.\(options.subtype)", flags, data) == 0 else {
            let e = errno
            close(fd)
            throw FUSEError(e, "mount(2) of \(mountPoint) failed: \(String(cString: strerror(e)))")
        }
        return fd
    }

    /// Runs `fusermount3` with one end of a socket pair as `_FUSE_COMMFD`; it mounts and sends the fd back.
    private static func mountWithHelper(_ mountPoint: String, _ options: Options) throws -> Int32 {
        let candidates: [String] = ["/usr/bin/fusermount3", "/bin/fusermount3"]
        guard let helper = candidates.first(where: { (p: String) in access(p, X_OK) == 0 }) else {
            throw FUSEError(ENOENT, "fusermount3 is not installed (apt-get install fuse3)")
        }
        var sv: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &sv) == 0 else {
            throw FUSEError(errno, "socketpair failed")
        }
        defer { close(sv[1]) }
        var opts = "nodev,fsname=\(options.fsName),subtype=\(options.subtype),max_read=\(options.maxRead)"
        opts += options.readOnly ? ",ro" : ",rw"
        opts += options.allowSetuid ? ",suid" : ",nosuid"
        if options.defaultPermissions { opts += ",default_permissions" }
        if options.allowOther { opts += ",allow_other" }
        // The child gets our end as fd 3 (posix_spawn: Foundation's Process would close it).
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, sv[0], 3)
        let argv = [helper, "-o", opts, "--", mountPoint]
        var env = ProcessInfo.processInfo.environment
        env["_FUSE_COMMFD"] = "3"
        let envv = env.map { "\($0.key)=\($0.value)" }
        var pid: pid_t = 0
        let rc = withCStrings(argv) { a in withCStrings(envv) { e in posix_spawn(&pid, helper, &actions, nil, a, e) } }
        close(sv[0])
        guard rc == 0 else { throw FUSEError(rc, "cannot run \(helper)") }
        let fd = CLinuxFUSE_receiveFD(sv[1])
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        guard fd >= 0 else {
            throw FUSEError(EPERM, "\(helper) did not mount \(mountPoint) (exit status \(status >> 8))")
        }
        return fd
    }

    /// The protocol minor version agreed with the kernel.
    public var negotiatedMinor: UInt32 { state.withLock { $0.minor } }

    /// Detaches the mount, waits for the reader threads to exit, and cancels reads still in flight.
    /// Safe to call more than once. Blocks: call it from a thread, not from async code that must not block.
    public func unmount() {
        let first = state.withLock { s in
            defer { s.unmounted = true }
            return !s.unmounted
        }
        if first {
            if umount2(mountPoint, Int32(MNT_DETACH)) != 0 {
                // Not root: the setuid helper can still do it.
                let p = Process()
                p.executableURL = URL(fileURLWithPath: "/usr/bin/fusermount3")
                p.arguments = ["-u", "-z", mountPoint]
                try? p.run()
                p.waitUntilExit()
            }
            let running = state.withLock { Array($0.inFlight.values) }
            for t in running { t.cancel() }
            let n = state.withLock { $0.readersLeft }
            for _ in 0..<n { readersDone.wait() }
            tasks.wait()
            for f in state.withLock({ $0.fds }) { close(f) }
        }
    }

    // MARK: Reader threads

    private func serve(_ fd: Int32) {
        let capacity = 64 * 1024 + 4096
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
        defer {
            buf.deallocate()
            state.withLock { $0.readersLeft -= 1 }
            readersDone.signal()
        }
        while true {
            let n = read(fd, buf.baseAddress, capacity)
            if n < 0 {
                let e = errno
                if e == EINTR || e == EAGAIN || e == ENOENT { continue }
                if e != ENODEV { logger.warning("reading /dev/fuse failed", metadata: ["error": "\(String(cString: strerror(e)))"]) }
                return
            }
            guard n >= MemoryLayout<fuse_in_header>.size else { continue }
            let request = UnsafeRawBufferPointer(rebasing: buf[0..<n])
            if !dispatch(request, fd) { return }
        }
    }

    /// Handles one request; false when the session is over (DESTROY).
    private func dispatch(_ request: UnsafeRawBufferPointer, _ fd: Int32) -> Bool {
        let h = request.loadUnaligned(as: fuse_in_header.self)
        let body = UnsafeRawBufferPointer(rebasing: request[MemoryLayout<fuse_in_header>.size..<min(request.count, Int(h.len))])
        guard let op = Opcode(rawValue: h.opcode) else {
            reply(fd, h.unique, error: ENOSYS)
            return true
        }
        if op.isWrite && op != .create && op != .rmdir {
            reply(fd, h.unique, error: EROFS)
            return true
        }
        do throws(FUSEError) {
            switch op {
            case .initialize: handleInit(fd, h, body)
            case .destroy:
                reply(fd, h.unique, error: 0)
                return false
            case .forget, .batchForget: break  // nodes are never freed; nothing to count
            case .interrupt:
                let target = body.loadUnaligned(as: fuse_interrupt_in.self).unique
                let t = state.withLock { $0.inFlight[target] }
                t?.cancel()
            case .lookup:
                let name = cString(body)
                do {
                    let a = try fs.lookup(parent: h.nodeid, name: name)
                    replyEntry(fd, h.unique, a)
                } catch let e where e.errno == EAGAIN {
                    // The tree must fetch before it can answer: a task does, and replies.
                    let parent = h.nodeid, unique = h.unique, bytes = Array(name), fs = self.fs
                    submit(fd, unique, "lookup") { [self] in
                        replyEntry(fd, unique, try await fs.lookup(parent: parent, name: bytes))
                    }
                } catch let e where e.errno == ENOENT && options.cacheNegativeLookups {
                    // A negative entry the kernel may cache: a container start looks up many missing names.
                    var out = fuse_entry_out()
                    setTimeouts(&out)
                    replyStruct(fd, h.unique, &out, size: entryOutSize)
                }
            case .create:
                let name = cString(UnsafeRawBufferPointer(rebasing: body[MemoryLayout<fuse_create_in>.size...]))
                try fs.create(parent: h.nodeid, name: name)
                throw FUSEError(EIO, "create answered without an error")
            case .rmdir:
                try fs.rmdir(parent: h.nodeid, name: cString(body))
                reply(fd, h.unique, error: 0)
            case .getattr:
                var out = fuse_attr_out()
                out.attr = try encode(fs.attributes(node: h.nodeid))
                out.attr_valid = UInt64(options.cacheTimeout.components.seconds)
                replyStruct(fd, h.unique, &out, size: attrOutSize)
            case .readlink:
                let target = try fs.readlink(node: h.nodeid)
                target.withUnsafeBytes { reply(fd, h.unique, $0) }
            case .open:
                let inp = body.loadUnaligned(as: fuse_open_in.self)
                if inp.flags & UInt32(O_ACCMODE) != UInt32(O_RDONLY) || inp.flags & UInt32(O_TRUNC) != 0 {
                    throw FUSEError(EROFS)
                }
                try fs.open(node: h.nodeid, flags: inp.flags)
                var out = fuse_open_out()
                out.open_flags = UInt32(FOPEN_KEEP_CACHE)
                replyStruct(fd, h.unique, &out, size: MemoryLayout<fuse_open_out>.size)
            case .read:
                handleRead(fd, h, body.loadUnaligned(as: fuse_read_in.self))
            case .release, .flush, .fsync, .fsyncdir:
                reply(fd, h.unique, error: 0)
            case .opendir:
                let list = try fs.entries(directory: h.nodeid)
                let handle = state.withLock { s in
                    let id = s.nextHandle
                    s.nextHandle += 1
                    s.directories[id] = list
                    return id
                }
                var out = fuse_open_out()
                out.fh = handle
                out.open_flags = UInt32(FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR)
                replyStruct(fd, h.unique, &out, size: MemoryLayout<fuse_open_out>.size)
            case .readdir, .readdirplus:
                try handleReaddir(fd, h, body.loadUnaligned(as: fuse_read_in.self), plus: op == .readdirplus)
            case .releasedir:
                let fh = body.loadUnaligned(as: fuse_release_in.self).fh
                state.withLock { _ = $0.directories.removeValue(forKey: fh) }
                reply(fd, h.unique, error: 0)
            case .getxattr:
                let size = body.loadUnaligned(as: fuse_getxattr_in.self).size
                let name = String(decoding: cString(UnsafeRawBufferPointer(rebasing: body[MemoryLayout<fuse_getxattr_in>.size...])), as: UTF8.self)
                let value = try fs.xattr(node: h.nodeid, name: name)
                try replyXattr(fd, h.unique, value, size: size)
            case .listxattr:
                let size = body.loadUnaligned(as: fuse_getxattr_in.self).size
                var list: [UInt8] = []
                for n in try fs.xattrNames(node: h.nodeid) { list += Array(n.utf8) + [0] }
                try replyXattr(fd, h.unique, list, size: size)
            case .statfs:
                let s = fs.statistics()
                var out = fuse_statfs_out()
                out.st.blocks = s.blocks
                out.st.files = s.files
                out.st.bsize = s.blockSize
                out.st.frsize = s.blockSize
                out.st.namelen = 255
                replyStruct(fd, h.unique, &out, size: MemoryLayout<fuse_statfs_out>.size)
            case .access:
                let mask = body.loadUnaligned(as: fuse_access_in.self).mask
                if mask & UInt32(W_OK) != 0 { throw FUSEError(EROFS) }
                _ = try fs.attributes(node: h.nodeid)
                reply(fd, h.unique, error: 0)
            default:
                reply(fd, h.unique, error: ENOSYS)
            }
        } catch {
            logger.log(
                level: error.isRoutineAnswer ? .trace : .debug, "fuse op failed",
                metadata: ["fuse.op": "\(op)", "fuse.unique": "\(h.unique)", "error": "\(error)"])
            reply(fd, h.unique, error: error.errno)
        }
        return true
    }

    private func handleInit(_ fd: Int32, _ h: fuse_in_header, _ body: UnsafeRawBufferPointer) {
        let inp = body.loadUnaligned(as: fuse_init_in.self)
        var out = fuse_init_out()
        out.major = UInt32(FUSE_KERNEL_VERSION)
        guard inp.major == out.major else {
            // A newer major: answer ours and the kernel retries with it; an older one cannot be served.
            replyStruct(fd, h.unique, &out, size: 8)
            return
        }
        let minor = min(inp.minor, options.maxMinor)
        out.minor = minor
        out.max_readahead = inp.max_readahead
        let wanted = UInt32(FUSE_ASYNC_READ) | UInt32(FUSE_PARALLEL_DIROPS) | UInt32(FUSE_MAX_PAGES)
            | UInt32(FUSE_CACHE_SYMLINKS) | UInt32(FUSE_DO_READDIRPLUS) | UInt32(FUSE_READDIRPLUS_AUTO)
        out.flags = inp.flags & wanted
        out.max_background = 64
        out.congestion_threshold = 48
        out.max_write = 4096
        out.time_gran = 1
        out.max_pages = UInt16(options.maxRead / 4096)
        state.withLock { $0.minor = minor }
        // Older kernels read a shorter reply (FUSE_COMPAT_INIT_OUT_SIZE, FUSE_COMPAT_22_INIT_OUT_SIZE).
        let size = minor < 5 ? 8 : minor < 23 ? 24 : MemoryLayout<fuse_init_out>.size
        replyStruct(fd, h.unique, &out, size: size)
        initialized.signal()
    }

    private func handleRead(_ fd: Int32, _ h: fuse_in_header, _ inp: fuse_read_in) {
        let node = h.nodeid, offset = inp.offset, size = Int(inp.size)
        do throws(FUSEError) {
            if let bytes = try fs.cachedRead(node: node, offset: offset, size: size) {
                bytes.withUnsafeBytes { reply(fd, h.unique, $0) }
                return
            }
        } catch {
            reply(fd, h.unique, error: error.errno)
            return
        }
        // A miss: a task fetches and replies.
        let fs = self.fs
        submit(fd, h.unique, "read") { [self] in
            let bytes = try await fs.read(node: node, offset: offset, size: size)
            bytes.withUnsafeBytes { reply(fd, h.unique, $0) }
        }
    }

    /// Runs work that waits on the network in a task that replies itself (or with the errno of its error);
    /// the reader thread waits only when too many are in flight. FUSE_INTERRUPT cancels the task.
    private func submit(_ fd: Int32, _ unique: UInt64, _ op: String, _ work: @escaping @Sendable () async throws -> Void) {
        slots.wait()
        tasks.enter()
        state.withLock { s in
            s.inFlight[unique] = Task { [self] in
                defer {
                    state.withLock { _ = $0.inFlight.removeValue(forKey: unique) }
                    slots.signal()
                    tasks.leave()
                }
                do {
                    try await work()
                } catch {
                    let e = FUSEError(replyingTo: error)
                    logger.log(
                        level: e.isRoutineAnswer ? .trace : .debug, "fuse op failed",
                        metadata: ["fuse.op": "\(op)", "fuse.unique": "\(unique)", "error": "\(e)"])
                    reply(fd, unique, error: e.errno)
                }
            }
        }
    }

    private func handleReaddir(_ fd: Int32, _ h: fuse_in_header, _ inp: fuse_read_in, plus: Bool) throws(FUSEError) {
        guard let list = state.withLock({ $0.directories[inp.fh] }) else { throw FUSEError(EBADF) }
        var out = [UInt8]()
        out.reserveCapacity(Int(inp.size))
        var index = Int(inp.offset)
        let total = list.count + 2
        while index < total {
            let name: [UInt8]
            let inode: UInt64
            let type: UInt32
            switch index {
            case 0: (name, inode, type) = ([0x2e], h.nodeid, 0o040000)
            case 1: (name, inode, type) = ([0x2e, 0x2e], 0, 0o040000)
            default:
                let e = list[index - 2]
                (name, inode, type) = (e.name, e.inode, e.type)
            }
            let recordSize = plus ? CLinuxFUSE_direntplusSize(name.count) : CLinuxFUSE_direntSize(name.count)
            if out.count + recordSize > Int(inp.size) { break }
            var d = fuse_dirent()
            d.ino = inode == 0 ? 1 : inode
            d.off = UInt64(index + 1)
            d.namelen = UInt32(name.count)
            d.type = type >> 12
            if plus {
                var e = fuse_entry_out()
                if index >= 2 {
                    // Counts as a lookup for the kernel; ours are not counted, so nothing to track.
                    let a = try fs.attributes(node: inode)
                    e.nodeid = inode
                    e.attr = encode(a)
                    setTimeouts(&e)
                }
                withUnsafeBytes(of: &e) { out.append(contentsOf: $0) }
            }
            let start = out.count
            withUnsafeBytes(of: &d) { out.append(contentsOf: $0.prefix(CLinuxFUSE_nameOffset())) }
            out.append(contentsOf: name)
            let used = out.count - start
            let padded = CLinuxFUSE_direntSize(name.count)
            out.append(contentsOf: repeatElement(0, count: padded - used))
            index += 1
        }
        out.withUnsafeBytes { reply(fd, h.unique, $0) }
    }

    private func replyXattr(_ fd: Int32, _ unique: UInt64, _ value: [UInt8], size: UInt32) throws(FUSEError) {
        if size == 0 {
            var out = fuse_getxattr_out()
            out.size = UInt32(value.count)
            replyStruct(fd, unique, &out, size: MemoryLayout<fuse_getxattr_out>.size)
        } else if value.count > Int(size) {
            throw FUSEError(ERANGE)
        } else {
            value.withUnsafeBytes { reply(fd, unique, $0) }
        }
    }

    // MARK: Encoding

    private var entryOutSize: Int { negotiatedMinor < 9 ? 120 : MemoryLayout<fuse_entry_out>.size }
    private var attrOutSize: Int { negotiatedMinor < 9 ? 96 : MemoryLayout<fuse_attr_out>.size }

    private func setTimeouts(_ e: inout fuse_entry_out) {
        let t = UInt64(options.cacheTimeout.components.seconds)
        e.entry_valid = t
        e.attr_valid = t
    }

    private func encode(_ a: FileAttributes) -> fuse_attr {
        var r = fuse_attr()
        r.ino = a.inode
        r.size = a.size
        r.blocks = (a.size + 511) / 512
        r.atime = UInt64(bitPattern: a.modTime)
        r.mtime = UInt64(bitPattern: a.modTime)
        r.ctime = UInt64(bitPattern: a.modTime)
        r.mode = a.mode
        r.nlink = a.linkCount
        r.uid = a.uid
        r.gid = a.gid
        r.rdev = UInt32(CLinuxFUSE_makedev(a.device.major, a.device.minor))
        r.blksize = 4096
        return r
    }

    private func replyEntry(_ fd: Int32, _ unique: UInt64, _ a: FileAttributes) {
        var out = fuse_entry_out()
        out.nodeid = a.inode
        out.attr = encode(a)
        setTimeouts(&out)
        replyStruct(fd, unique, &out, size: entryOutSize)
    }

    private func replyStruct<T>(_ fd: Int32, _ unique: UInt64, _ value: inout T, size: Int) {
        withUnsafeBytes(of: &value) { reply(fd, unique, UnsafeRawBufferPointer(rebasing: $0.prefix(size))) }
    }

    /// One message: the header and the payload, one `writev`.
    private func reply(_ fd: Int32, _ unique: UInt64, _ payload: UnsafeRawBufferPointer) {
        var header = fuse_out_header()
        header.len = UInt32(MemoryLayout<fuse_out_header>.size + payload.count)
        header.error = 0
        header.unique = unique
        write(fd, &header, payload)
    }

    private func reply(_ fd: Int32, _ unique: UInt64, error: Int32) {
        var header = fuse_out_header()
        header.len = UInt32(MemoryLayout<fuse_out_header>.size)
        header.error = -error
        header.unique = unique
        write(fd, &header, UnsafeRawBufferPointer(start: nil, count: 0))
    }

    private func write(_ fd: Int32, _ header: inout fuse_out_header, _ payload: UnsafeRawBufferPointer) {
        withUnsafeMutableBytes(of: &header) { hp in
            var iov = [
                iovec(iov_base: hp.baseAddress, iov_len: hp.count),
                iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count),
            ]
            let n = payload.count > 0 ? 2 : 1
            // ENOENT: the request was interrupted and is gone; nothing to do.
            _ = writev(fd, &iov, Int32(n))
        }
    }

    private func cString(_ b: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        let end = b.firstIndex(of: 0) ?? b.count
        return UnsafeRawBufferPointer(rebasing: b[0..<end])
    }
}

/// Runs `body` with a NULL-terminated C array of the strings.
private func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> R) -> R {
    var ptrs: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    ptrs.append(nil)
    defer { for p in ptrs { free(p) } }
    return body(ptrs)
}
