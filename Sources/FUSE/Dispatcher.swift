// SPDX-License-Identifier: Apache-2.0
import CLinuxFUSE
public import Logging
import Synchronization
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// What the session does with a request once the dispatcher has seen it.
public enum Outcome {
    /// Write this reply now.
    case reply(Reply)
    /// Run this in a task and reply with its result (or its error's errno); `FUSE_INTERRUPT` cancels it.
    case later(@Sendable () async throws -> Reply)
    /// Cancel the request `target` if it is in flight; no reply.
    case interrupt(target: UInt64)
    /// No reply (FORGET).
    case none
    /// Reply this and stop reading (DESTROY).
    case destroy(Reply)
}

/// Routes decoded requests to a ``FileSystem``: one line per operation, and the protocol state that is the
/// session's rather than the tree's (the negotiated minor, directory handles). No I/O: what needs the network
/// comes back as ``Outcome/later(_:)`` for the session to run.
public final class Dispatcher: Sendable {
    let fs: any FileSystem
    let options: FUSESession.Options
    let logger: Logger
    /// The minor agreed at INIT (0 before), read for every request.
    private let negotiated = Atomic<UInt32>(0)
    /// The flags the kernel offered at INIT and those answered.
    private let offered = Atomic<UInt64>(0)
    private let answered = Atomic<UInt64>(0)
    private struct State {
        var directories: [UInt64: [DirectoryEntry]] = [:]
        var nextHandle: UInt64 = 1
    }
    private let state = Mutex(State())

    /// The capability flags asked for at INIT (those the kernel offers are taken).
    static let wantedFlags = UInt64(FUSE_ASYNC_READ) | UInt64(FUSE_PARALLEL_DIROPS) | UInt64(FUSE_MAX_PAGES)
        | UInt64(FUSE_CACHE_SYMLINKS) | UInt64(FUSE_DO_READDIRPLUS) | UInt64(FUSE_READDIRPLUS_AUTO)

    public init(_ fs: any FileSystem, options: FUSESession.Options, logger: Logger) {
        self.fs = fs
        self.options = options
        self.logger = logger
    }

    /// The protocol minor agreed at INIT (0 before).
    public var minor: UInt32 { negotiated.load(ordering: .acquiring) }

    /// What was agreed at INIT, for a successor that adopts the session.
    public var parameters: SessionParameters {
        SessionParameters(
            minor: minor, kernelFlags: offered.load(ordering: .acquiring), flags: answered.load(ordering: .acquiring))
    }

    /// Takes what a predecessor agreed at INIT (an adopted session gets no INIT).
    func adopt(_ p: SessionParameters) {
        offered.store(p.kernelFlags, ordering: .releasing)
        answered.store(p.flags, ordering: .releasing)
        negotiated.store(p.minor, ordering: .releasing)
    }

    /// Directory handles open now.
    public var openDirectories: Int { state.withLock { $0.directories.count } }

    /// How replies are laid out now.
    public var encoder: ReplyEncoder {
        ReplyEncoder(minor: minor, cacheTimeout: UInt64(options.cacheTimeout.components.seconds))
    }

    /// What to do with `request`.
    public func handle(_ request: Request) -> Outcome {
        let node = request.header.node
        do throws(FUSEError) {
            switch request.operation {
            case .initialize(let i): return .reply(.initialized(negotiate(i)))
            case .destroy: return .destroy(.ok)
            case .forget: return .none
            case .interrupt(let target): return .interrupt(target: target)
            case .lookup(let name): return try lookup(node, name)
            case .getattr: return .reply(.attributes(try fs.attributes(node: node)))
            case .readlink: return .reply(.data(try fs.readlink(node: node)))
            case .open(let flags): return try open(node, flags)
            case .read(_, let offset, let size): return try read(node, offset, size)
            case .acknowledge: return .reply(.ok)
            case .opendir: return .reply(.opened(handle: opendir(try fs.entries(directory: node)), flags: Self.dirOpenFlags))
            case .readdir(let fh, let offset, let size, let plus): return .reply(.data(try readdir(node, fh, offset, size, plus)))
            case .releasedir(let fh): return releasedir(fh)
            case .getxattr(let name, let size):
                return try xattrReply(try fs.xattr(node: node, name: String(decoding: name, as: UTF8.self)), size)
            case .listxattr(let size):
                var list: [UInt8] = []
                for n in try fs.xattrNames(node: node) { list += Array(n.utf8) + [0] }
                return try xattrReply(list, size)
            case .statfs: return .reply(.statistics(fs.statistics()))
            case .access(let mask):
                if mask & UInt32(W_OK) != 0 { throw FUSEError(EROFS) }
                _ = try fs.attributes(node: node)
                return .reply(.ok)
            case .create(let name, _, _):
                guard let n = fs as? any ChangeNotifications else { throw FUSEError(EROFS) }
                throw n.created(parent: node, name: name)
            case .rmdir(let name):
                guard let n = fs as? any ChangeNotifications else { throw FUSEError(EROFS) }
                if let e = n.removedDirectory(parent: node, name: name) { throw e }
                return .reply(.ok)
            case .modify: throw FUSEError(EROFS)
            case .unsupported: throw FUSEError(ENOSYS)
            }
        } catch {
            log(error, request.header)
            return .reply(.status(error.errno))
        }
    }

    /// A reply for request bytes that could not be decoded (nil: not even a header, nothing to answer).
    public func handle(_ failure: DecodeFailure) -> (unique: UInt64, Reply)? {
        guard case .malformed(let unique, let opcode, let why) = failure else { return nil }
        logger.warning("malformed FUSE request", metadata: ["fuse.opcode": "\(opcode)", "fuse.unique": "\(unique)", "error": "\(why)"])
        return (unique, .status(EIO))
    }

    func log(_ error: FUSEError, _ h: RequestHeader) {
        logger.log(
            level: error.isRoutineAnswer ? .trace : .debug, "fuse op failed",
            metadata: ["fuse.op": "\(Opcode(rawValue: h.opcode).map { "\($0)" } ?? "\(h.opcode)")", "fuse.unique": "\(h.unique)", "error": "\(error)"])
    }

    // MARK: Operations

    func negotiate(_ i: InitRequest) -> InitReply {
        var out = InitReply(major: ABI.kernelMajor, minor: 0)
        // A newer major: answer ours and the kernel retries with it; an older one cannot be served.
        guard i.major == ABI.kernelMajor else { return out }
        out.minor = min(i.minor, options.maxMinor)
        out.maxReadahead = i.maxReadahead
        out.flags = i.flags & Self.wantedFlags
        out.maxBackground = 64
        out.congestionThreshold = 48
        out.maxWrite = 4096
        out.timeGranularity = 1
        out.maxPages = UInt16(options.maxRead / 4096)
        offered.store(i.flags, ordering: .releasing)
        answered.store(out.flags, ordering: .releasing)
        negotiated.store(out.minor, ordering: .releasing)
        return out
    }

    func lookup(_ parent: UInt64, _ name: UnsafeRawBufferPointer) throws(FUSEError) -> Outcome {
        do throws(FUSEError) {
            switch try fs.lookup(parent: parent, name: name) {
            case .now(let a): return .reply(.entry(a))
            case .later(let work): return .later { .entry(try await work()) }
            }
        } catch where error.errno == ENOENT && options.cacheNegativeLookups {
            // A negative entry the kernel may cache: a container start looks up many missing names.
            return .reply(.negativeEntry)
        }
    }

    func open(_ node: UInt64, _ flags: UInt32) throws(FUSEError) -> Outcome {
        if flags & UInt32(O_ACCMODE) != UInt32(O_RDONLY) || flags & UInt32(O_TRUNC) != 0 { throw FUSEError(EROFS) }
        try fs.open(node: node, flags: flags)
        return .reply(.opened(handle: 0, flags: UInt32(FOPEN_KEEP_CACHE)))
    }

    func read(_ node: UInt64, _ offset: UInt64, _ size: UInt32) throws(FUSEError) -> Outcome {
        switch try fs.read(node: node, offset: offset, size: Int(size)) {
        case .now(let bytes): return .reply(.data(bytes))
        case .later(let work): return .later { .data(try await work()) }
        }
    }

    static let dirOpenFlags = UInt32(FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR)

    func opendir(_ list: [DirectoryEntry]) -> UInt64 {
        state.withLock { s in
            let id = s.nextHandle
            s.nextHandle += 1
            s.directories[id] = list
            return id
        }
    }

    func readdir(_ node: UInt64, _ fh: UInt64, _ offset: UInt64, _ size: UInt32, _ plus: Bool) throws(FUSEError) -> [UInt8] {
        // A handle this session did not open (a predecessor's, handed over): the directory is listed again (a
        // tree that does not change lists the same).
        var list: [DirectoryEntry]
        if let open = state.withLock({ $0.directories[fh] }) { list = open } else { list = try fs.entries(directory: node) }
        return try encoder.directoryListing(
            list, directory: node, offset: offset, size: size, plus: plus,
            attributes: { (n: UInt64) throws(FUSEError) in try fs.attributes(node: n) })
    }

    func releasedir(_ fh: UInt64) -> Outcome {
        state.withLock { _ = $0.directories.removeValue(forKey: fh) }
        return .reply(.ok)
    }

    func xattrReply(_ value: [UInt8], _ size: UInt32) throws(FUSEError) -> Outcome {
        if size == 0 { return .reply(.xattrSize(UInt32(value.count))) }
        if value.count > Int(size) { throw FUSEError(ERANGE) }
        return .reply(.data(value))
    }
}

/// What the kernel and the daemon agreed at INIT: all a successor process needs to serve the same /dev/fuse
/// session without mounting again (the kernel sends INIT once per connection).
public struct SessionParameters: Codable, Sendable, Equatable {
    /// The protocol minor agreed.
    public var minor: UInt32
    /// The capability flags the kernel offered.
    public var kernelFlags: UInt64
    /// The capability flags answered.
    public var flags: UInt64

    /// Creates parameters.
    public init(minor: UInt32, kernelFlags: UInt64, flags: UInt64) {
        self.minor = minor
        self.kernelFlags = kernelFlags
        self.flags = flags
    }

    /// Whether the kernel resends requests read but not answered when asked (`FUSE_HAS_RESEND`, Linux 6.9+): a
    /// successor then loses none of a dead process's requests.
    public var kernelCanResend: Bool { kernelFlags & ABI.hasResend != 0 }
}
