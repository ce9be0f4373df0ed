// SPDX-License-Identifier: Apache-2.0
import CLinuxFUSE
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

// The FUSE wire protocol, without a kernel: request bytes to typed requests, typed replies to bytes. Layouts are
// those of <linux/fuse.h> (7.38); the sizes that older protocol minors use are named in `ABI`. Nothing here
// performs I/O, so every case is testable on byte fixtures (Tests/FUSETests).

/// The sizes of the ABI's structures, and the shorter ones that older protocol minors speak.
public enum ABI {
    /// `struct fuse_in_header`.
    public static let inHeaderSize = MemoryLayout<fuse_in_header>.size
    /// `struct fuse_out_header`.
    public static let outHeaderSize = MemoryLayout<fuse_out_header>.size
    /// `struct fuse_entry_out`: 128 bytes; 120 (FUSE_COMPAT_ENTRY_OUT_SIZE) before minor 9.
    public static func entryOutSize(minor: UInt32) -> Int { minor < 9 ? 120 : MemoryLayout<fuse_entry_out>.size }
    /// `struct fuse_attr_out`: 104 bytes; 96 (FUSE_COMPAT_ATTR_OUT_SIZE) before minor 9.
    public static func attrOutSize(minor: UInt32) -> Int { minor < 9 ? 96 : MemoryLayout<fuse_attr_out>.size }
    /// `struct fuse_statfs_out`: 80 bytes; 48 (FUSE_COMPAT_STATFS_SIZE) before minor 4.
    public static func statfsOutSize(minor: UInt32) -> Int { minor < 4 ? 48 : MemoryLayout<fuse_statfs_out>.size }
    /// `struct fuse_init_out`: 64 bytes; 8 (FUSE_COMPAT_INIT_OUT_SIZE) before minor 5, 24
    /// (FUSE_COMPAT_22_INIT_OUT_SIZE) before minor 23.
    public static func initOutSize(minor: UInt32) -> Int { minor < 5 ? 8 : minor < 23 ? 24 : MemoryLayout<fuse_init_out>.size }
    /// `struct fuse_create_in` as the kernel sends it before the name: 16 bytes; 8 (a `fuse_open_in`) before
    /// minor 12.
    public static func createInSize(minor: UInt32) -> Int { minor < 12 ? 8 : MemoryLayout<fuse_create_in>.size }
    /// `struct fuse_read_in`: 40 bytes; 24 before minor 9 (no lock owner, no flags).
    public static let readInMinimumSize = 24
    /// The protocol version of the header this is built against.
    public static let kernelMajor = UInt32(FUSE_KERNEL_VERSION)
    /// The highest minor of the header this is built against.
    public static let kernelMinor = UInt32(FUSE_KERNEL_MINOR_VERSION)
    /// 7.40 (Linux 6.9), newer than the vendored header: the INIT flag by which the kernel says it can resend the
    /// requests a daemon read but did not answer (`FUSE_HAS_RESEND`, bit 39, in `flags2`)…
    public static let hasResend: UInt64 = 1 << 39
    /// …the notification that asks it to (`FUSE_NOTIFY_RESEND`: a bare `fuse_out_header` with `unique` 0 and this
    /// code as `error`)…
    public static let notifyResend: Int32 = 7
    /// …and the bit it sets in the `unique` of a request it resends (`FUSE_UNIQUE_RESEND`; replies carry the
    /// `unique` as it came).
    public static let uniqueResend: UInt64 = 1 << 63
}

/// The fixed part of every request (`struct fuse_in_header`).
public struct RequestHeader: Sendable, Equatable {
    /// The request's length in bytes, header included.
    public var length: UInt32
    /// The opcode (see ``Opcode``).
    public var opcode: UInt32
    /// The request's id; the reply carries it.
    public var unique: UInt64
    /// The node the request is about.
    public var node: UInt64
    /// The caller's credentials and process.
    public var uid: UInt32, gid: UInt32, pid: UInt32
    /// Length of request extensions, in 8-byte units (none unless negotiated).
    public var extensionLength: UInt16
}

/// `FUSE_INIT`'s arguments.
public struct InitRequest: Sendable, Equatable {
    public var major: UInt32
    public var minor: UInt32
    public var maxReadahead: UInt32
    /// The capability flags: `flags`, and `flags2` in the high 32 bits when the kernel sets FUSE_INIT_EXT.
    public var flags: UInt64
}

/// `FUSE_INIT`'s answer.
public struct InitReply: Sendable, Equatable {
    public var major: UInt32
    public var minor: UInt32
    public var maxReadahead: UInt32 = 0
    /// The capability flags (the high 32 bits go to `flags2`, with FUSE_INIT_EXT, from minor 36).
    public var flags: UInt64 = 0
    public var maxBackground: UInt16 = 0
    public var congestionThreshold: UInt16 = 0
    public var maxWrite: UInt32 = 0
    public var timeGranularity: UInt32 = 0
    public var maxPages: UInt16 = 0
}

/// A request's operation and arguments. Names borrow the buffer the request was read into: they are valid
/// until the reader thread reads the next request, and are copied by whatever must keep them.
public enum Operation {
    case initialize(InitRequest)
    case destroy
    /// `FORGET` and `BATCH_FORGET`: never answered.
    case forget
    /// Cancel the request `target`.
    case interrupt(target: UInt64)
    case lookup(name: UnsafeRawBufferPointer)
    case getattr
    case readlink
    case open(flags: UInt32)
    case read(handle: UInt64, offset: UInt64, size: UInt32)
    /// `RELEASE`, `FLUSH`, `FSYNC`, `FSYNCDIR`: nothing to do but say so.
    case acknowledge(Opcode)
    case opendir
    case readdir(handle: UInt64, offset: UInt64, size: UInt32, plus: Bool)
    case releasedir(handle: UInt64)
    case getxattr(name: UnsafeRawBufferPointer, size: UInt32)
    case listxattr(size: UInt32)
    case statfs
    case access(mask: UInt32)
    case create(name: UnsafeRawBufferPointer, flags: UInt32, mode: UInt32)
    case rmdir(name: UnsafeRawBufferPointer)
    /// Any other operation that would change the tree.
    case modify(Opcode)
    /// An opcode this server does not implement (or does not know).
    case unsupported(UInt32)
}

/// A decoded request.
public struct Request {
    public var header: RequestHeader
    public var operation: Operation
}

/// Why request bytes could not be decoded.
public enum DecodeFailure: Error, Equatable, Sendable {
    /// Fewer bytes than a header: nothing can be answered.
    case truncatedHeader(Int)
    /// The header's length disagrees with the bytes read, or the body is shorter than the operation's
    /// arguments: answered EIO.
    case malformed(unique: UInt64, opcode: UInt32, String)
}

/// A reply's payload, typed; ``ReplyEncoder`` lays it out for the negotiated minor.
public enum Reply: Sendable {
    /// An error (a positive errno), or 0 for a success with no payload.
    case status(Int32)
    /// A `fuse_entry_out` for a node.
    case entry(FileAttributes)
    /// A `fuse_entry_out` with node id 0: "no such name", cacheable by the kernel for the entry timeout.
    case negativeEntry
    case attributes(FileAttributes)
    /// Raw bytes: file contents, a symlink target, an xattr value or list, a directory listing.
    case data([UInt8])
    case opened(handle: UInt64, flags: UInt32)
    /// The size an xattr value or list would have (a probe with size 0).
    case xattrSize(UInt32)
    case statistics(FileSystemStatistics)
    case initialized(InitReply)

    /// Success with no payload.
    public static let ok = Reply.status(0)
}

/// Decodes requests.
public enum RequestDecoder {
    /// Decodes one request as read from `/dev/fuse`, at the negotiated protocol minor (layouts of a few
    /// arguments depend on it; before INIT any value works, INIT's own layout does not depend on it).
    public static func decode(_ bytes: UnsafeRawBufferPointer, minor: UInt32) throws(DecodeFailure) -> Request {
        guard bytes.count >= ABI.inHeaderSize else { throw .truncatedHeader(bytes.count) }
        let h = bytes.loadUnaligned(as: fuse_in_header.self)
        let header = RequestHeader(
            length: h.len, opcode: h.opcode, unique: h.unique, node: h.nodeid, uid: h.uid, gid: h.gid, pid: h.pid,
            extensionLength: h.total_extlen)
        func fail(_ why: String) -> DecodeFailure { .malformed(unique: h.unique, opcode: h.opcode, why) }
        let extensions = Int(h.total_extlen) * 8
        guard Int(h.len) == bytes.count, Int(h.len) - extensions >= ABI.inHeaderSize else {
            throw fail("length \(h.len) in the header, \(bytes.count) bytes read, \(extensions) of extensions")
        }
        let body = UnsafeRawBufferPointer(rebasing: bytes[ABI.inHeaderSize..<(Int(h.len) - extensions)])
        func arguments<T>(_: T.Type, atLeast size: Int = MemoryLayout<T>.size) throws(DecodeFailure) -> T {
            guard body.count >= size else { throw fail("\(body.count) bytes of arguments, \(size) needed") }
            if body.count >= MemoryLayout<T>.size { return body.loadUnaligned(as: T.self) }
            // An older minor's shorter struct: the fields it has, zeros after.
            var value = zeroed(T.self)
            withUnsafeMutableBytes(of: &value) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: body[0..<body.count])) }
            return value
        }
        func name(from offset: Int) throws(DecodeFailure) -> UnsafeRawBufferPointer {
            guard offset <= body.count else { throw fail("\(body.count) bytes of arguments, a name at \(offset)") }
            let rest = UnsafeRawBufferPointer(rebasing: body[offset...])
            guard let end = rest.firstIndex(of: 0) else { throw fail("the name has no terminating NUL") }
            return UnsafeRawBufferPointer(rebasing: rest[rest.startIndex..<end])
        }
        guard let op = Opcode(rawValue: h.opcode) else { return Request(header: header, operation: .unsupported(h.opcode)) }
        let operation: Operation
        switch op {
        case .initialize:
            let i = try arguments(fuse_init_in.self, atLeast: 8)
            var flags = UInt64(i.flags)
            if i.flags & UInt32(truncatingIfNeeded: FUSE_INIT_EXT) != 0 { flags |= UInt64(i.flags2) << 32 }
            operation = .initialize(InitRequest(major: i.major, minor: i.minor, maxReadahead: i.max_readahead, flags: flags))
        case .destroy: operation = .destroy
        case .forget, .batchForget: operation = .forget
        case .interrupt: operation = .interrupt(target: try arguments(fuse_interrupt_in.self).unique)
        case .lookup: operation = .lookup(name: try name(from: 0))
        case .getattr: operation = .getattr
        case .readlink: operation = .readlink
        case .open: operation = .open(flags: try arguments(fuse_open_in.self, atLeast: 4).flags)
        case .read:
            let r = try arguments(fuse_read_in.self, atLeast: ABI.readInMinimumSize)
            operation = .read(handle: r.fh, offset: r.offset, size: r.size)
        case .release, .flush, .fsync, .fsyncdir: operation = .acknowledge(op)
        case .opendir: operation = .opendir
        case .readdir, .readdirplus:
            let r = try arguments(fuse_read_in.self, atLeast: ABI.readInMinimumSize)
            operation = .readdir(handle: r.fh, offset: r.offset, size: r.size, plus: op == .readdirplus)
        case .releasedir: operation = .releasedir(handle: try arguments(fuse_release_in.self, atLeast: 8).fh)
        case .getxattr:
            let g = try arguments(fuse_getxattr_in.self)
            operation = .getxattr(name: try name(from: MemoryLayout<fuse_getxattr_in>.size), size: g.size)
        case .listxattr: operation = .listxattr(size: try arguments(fuse_getxattr_in.self).size)
        case .statfs: operation = .statfs
        case .access: operation = .access(mask: try arguments(fuse_access_in.self, atLeast: 4).mask)
        case .create:
            let size = ABI.createInSize(minor: minor)
            let c = try arguments(fuse_create_in.self, atLeast: size)
            operation = .create(name: try name(from: size), flags: c.flags, mode: c.mode)
        case .rmdir: operation = .rmdir(name: try name(from: 0))
        default: operation = op.isWrite ? .modify(op) : .unsupported(h.opcode)
        }
        return Request(header: header, operation: operation)
    }
}

/// A value of a C struct with every byte zero, for generic code (a concrete imported struct's `init()` is that).
@inline(__always) func zeroed<T>(_: T.Type) -> T {
    withUnsafeTemporaryAllocation(of: T.self, capacity: 1) { p in
        UnsafeMutableRawBufferPointer(p).initializeMemory(as: UInt8.self, repeating: 0)
        return p[0]
    }
}

/// Lays out replies for the protocol minor agreed at INIT.
public struct ReplyEncoder: Sendable {
    /// The negotiated minor.
    public var minor: UInt32
    /// The entry and attribute cache timeout the kernel is given.
    public var cacheTimeout: UInt64

    public init(minor: UInt32, cacheTimeout: UInt64) {
        self.minor = minor
        self.cacheTimeout = cacheTimeout
    }

    /// Calls `body` with the reply's header and payload, laid out on the stack (no copy of a data payload).
    public func withEncoded<R>(
        _ reply: Reply, unique: UInt64, _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> R
    ) -> R {
        func send<T>(_ value: T, size: Int) -> R {
            withUnsafeBytes(of: value) { v in framed(unique, 0, UnsafeRawBufferPointer(rebasing: v[0..<size]), body) }
        }
        switch reply {
        case .status(let e):
            return framed(unique, e, UnsafeRawBufferPointer(start: nil, count: 0), body)
        case .entry(let a):
            return send(entry(a), size: ABI.entryOutSize(minor: minor))
        case .negativeEntry:
            var out = fuse_entry_out()
            out.entry_valid = cacheTimeout
            out.attr_valid = cacheTimeout
            return send(out, size: ABI.entryOutSize(minor: minor))
        case .attributes(let a):
            var out = fuse_attr_out()
            out.attr = Self.attr(a)
            out.attr_valid = cacheTimeout
            return send(out, size: ABI.attrOutSize(minor: minor))
        case .data(let bytes):
            return bytes.withUnsafeBytes { framed(unique, 0, $0, body) }
        case .opened(let handle, let flags):
            var out = fuse_open_out()
            out.fh = handle
            out.open_flags = flags
            return send(out, size: MemoryLayout<fuse_open_out>.size)
        case .xattrSize(let size):
            var out = fuse_getxattr_out()
            out.size = size
            return send(out, size: MemoryLayout<fuse_getxattr_out>.size)
        case .statistics(let s):
            var out = fuse_statfs_out()
            out.st.blocks = s.blocks
            out.st.files = s.files
            out.st.bsize = s.blockSize
            out.st.frsize = s.blockSize
            out.st.namelen = 255
            return send(out, size: ABI.statfsOutSize(minor: minor))
        case .initialized(let i):
            var out = fuse_init_out()
            out.major = i.major
            out.minor = i.minor
            out.max_readahead = i.maxReadahead
            out.flags = UInt32(truncatingIfNeeded: i.flags)
            out.flags2 = UInt32(truncatingIfNeeded: i.flags >> 32)
            out.max_background = i.maxBackground
            out.congestion_threshold = i.congestionThreshold
            out.max_write = i.maxWrite
            out.time_gran = i.timeGranularity
            out.max_pages = i.maxPages
            // The reply's size follows the minor it announces: an older kernel reads a shorter struct.
            return send(out, size: i.major == ABI.kernelMajor ? ABI.initOutSize(minor: i.minor) : 8)
        }
    }

    /// The reply's bytes, header and payload (for tests and fixtures).
    public func bytes(_ reply: Reply, unique: UInt64) -> [UInt8] {
        withEncoded(reply, unique: unique) { h, p in Array(h) + Array(p) }
    }

    private func framed<R>(
        _ unique: UInt64, _ error: Int32, _ payload: UnsafeRawBufferPointer,
        _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> R
    ) -> R {
        var header = fuse_out_header()
        header.len = UInt32(ABI.outHeaderSize + (error == 0 ? payload.count : 0))
        header.error = -error
        header.unique = unique
        return withUnsafeBytes(of: header) { body($0, error == 0 ? payload : UnsafeRawBufferPointer(start: nil, count: 0)) }
    }

    func entry(_ a: FileAttributes) -> fuse_entry_out {
        var out = fuse_entry_out()
        out.nodeid = a.inode
        out.attr = Self.attr(a)
        out.entry_valid = cacheTimeout
        out.attr_valid = cacheTimeout
        return out
    }

    static func attr(_ a: FileAttributes) -> fuse_attr {
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

    /// A `READDIR` or `READDIRPLUS` answer: the records of `entries` from `offset` (0 is `.`, 1 is `..`, then the
    /// list) that fit in `size` bytes. `attributes` gives each listed node's attributes for READDIRPLUS (it counts
    /// as a lookup for the kernel; nodes here are not counted, so nothing is tracked).
    public func directoryListing(
        _ entries: [DirectoryEntry], directory: UInt64, offset: UInt64, size: UInt32, plus: Bool,
        attributes: (UInt64) throws(FUSEError) -> FileAttributes
    ) throws(FUSEError) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(min(Int(size), 1 << 20))
        let total = UInt64(entries.count) + 2
        var index = offset
        while index < total {
            let name: [UInt8]
            let inode: UInt64
            let type: UInt32
            switch index {
            case 0: (name, inode, type) = ([0x2e], directory, 0o040000)
            case 1: (name, inode, type) = ([0x2e, 0x2e], 0, 0o040000)
            default:
                let e = entries[Int(index - 2)]
                (name, inode, type) = (e.name, e.inode, e.type)
            }
            let recordSize = plus ? CLinuxFUSE_direntplusSize(name.count) : CLinuxFUSE_direntSize(name.count)
            if out.count + recordSize > Int(size) { break }
            if plus {
                var e = fuse_entry_out()
                if index >= 2 { e = entry(try attributes(inode)) }
                withUnsafeBytes(of: &e) { out.append(contentsOf: $0) }
            }
            var d = fuse_dirent()
            d.ino = inode == 0 ? 1 : inode
            d.off = index + 1
            d.namelen = UInt32(name.count)
            d.type = type >> 12
            let start = out.count
            withUnsafeBytes(of: &d) { out.append(contentsOf: $0.prefix(CLinuxFUSE_nameOffset())) }
            out.append(contentsOf: name)
            out.append(contentsOf: repeatElement(0, count: CLinuxFUSE_direntSize(name.count) - (out.count - start)))
            index += 1
        }
        return out
    }
}
