// SPDX-License-Identifier: Apache-2.0
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// A node's attributes as `stat` reports them.
public struct FileAttributes: Sendable, Equatable {
    /// The inode number (the node id).
    public var inode: UInt64
    /// The full mode: file type bits (`S_IFREG`, …) and permissions.
    public var mode: UInt32
    /// Number of links.
    public var linkCount: UInt32
    /// Owner id.
    public var uid: UInt32
    /// Group id.
    public var gid: UInt32
    /// Size in bytes.
    public var size: UInt64
    /// Modification (and change and access) time, seconds since the epoch.
    public var modTime: Int64
    /// Device number for char and block devices (major, minor).
    public var device: (major: UInt32, minor: UInt32)

    /// Creates attributes.
    public init(
        inode: UInt64, mode: UInt32, linkCount: UInt32 = 1, uid: UInt32 = 0, gid: UInt32 = 0, size: UInt64 = 0,
        modTime: Int64 = 0, device: (major: UInt32, minor: UInt32) = (0, 0)
    ) {
        self.inode = inode
        self.mode = mode
        self.linkCount = linkCount
        self.uid = uid
        self.gid = gid
        self.size = size
        self.modTime = modTime
        self.device = device
    }

    public static func == (a: FileAttributes, b: FileAttributes) -> Bool {
        a.inode == b.inode && a.mode == b.mode && a.linkCount == b.linkCount && a.uid == b.uid && a.gid == b.gid
            && a.size == b.size && a.modTime == b.modTime && a.device == b.device
    }
}

/// One directory entry.
public struct DirectoryEntry: Sendable {
    /// The name, raw bytes.
    public var name: [UInt8]
    /// The node it names.
    public var inode: UInt64
    /// The file type bits of its mode (`S_IFDIR`, …).
    public var type: UInt32

    /// Creates an entry.
    public init(name: [UInt8], inode: UInt64, type: UInt32) {
        self.name = name
        self.inode = inode
        self.type = type
    }
}

/// Filesystem totals for `statfs`.
public struct FileSystemStatistics: Sendable {
    /// Total blocks (of `blockSize`).
    public var blocks: UInt64
    /// Number of inodes.
    public var files: UInt64
    /// Block size.
    public var blockSize: UInt32

    /// Creates statistics.
    public init(blocks: UInt64, files: UInt64, blockSize: UInt32 = 4096) {
        self.blocks = blocks
        self.files = files
        self.blockSize = blockSize
    }
}

/// The error a FUSE operation answers with: an errno.
public struct FUSEError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The errno value (positive).
    public var errno: Int32
    /// What went wrong, for logs.
    public var message: String

    /// An errno with an optional message.
    public init(_ errno: Int32, _ message: String = "") {
        self.errno = errno
        self.message = message
    }

    public static func == (a: FUSEError, b: FUSEError) -> Bool { a.errno == b.errno }

    /// An answer a filesystem gives all the time (no such name, no such xattr, not supported, read-only),
    /// not worth a log line above trace.
    public var isRoutineAnswer: Bool { [ENOENT, ENODATA, ENOSYS, EROFS, ERANGE, ENOTDIR].contains(errno) }

    /// ENOENT.
    public static let notFound = FUSEError(ENOENT)

    public var description: String { "errno \(errno)" + (message.isEmpty ? "" : ": \(message)") }

    /// The one mapping from any error to the errno a FUSE reply carries: FUSEError keeps its own, an
    /// ``ErrnoConvertible`` error gives its own, cancellation is EINTR, anything else (fetch or verification
    /// failures) is EIO.
    public init(replyingTo error: any Error) {
        switch error {
        case let e as FUSEError: self = e
        case let e as any ErrnoConvertible: self = FUSEError(e.errno, "\(e)")
        case is CancellationError: self = FUSEError(EINTR, "cancelled")
        default: self = FUSEError(EIO, "\(error)")
        }
    }
}

/// An error that knows the errno it is answered with (a layer's own error type, mapped in one place).
public protocol ErrnoConvertible: Error {
    /// The errno (positive) a FUSE reply carries for it.
    var errno: Int32 { get }
}

/// How a filesystem answers an operation: at once, on the FUSE reader thread that asked, or later, after
/// awaiting something (the network), in a task the session starts, owns, and cancels on `FUSE_INTERRUPT` or unmount.
public enum Answer<Value: Sendable>: Sendable {
    /// The answer, now.
    case now(Value)
    /// Work that produces the answer; run in a task, never on a reader thread.
    case later(@Sendable () async throws -> Value)

    /// The answer, awaiting it if it comes later.
    public var value: Value {
        get async throws {
            switch self {
            case .now(let v): v
            case .later(let work): try await work()
            }
        }
    }

    /// The answer if it is at hand now; nil if it needs work.
    public var immediate: Value? {
        if case .now(let v) = self { return v }
        return nil
    }
}

/// A read-only tree served through FUSE. It knows nothing of the protocol.
///
/// Node ids are stable for the life of the mount; 1 is the root. Every method is called on a FUSE reader
/// thread and must not block on the network: what needs the network is answered ``Answer/later(_:)``.
/// Lookups are not counted: nodes live as long as the filesystem, so `forget` needs nothing.
public protocol FileSystem: Sendable {
    /// The node `name` names in directory `parent` (ENOENT: none; the kernel may cache that answer when it comes
    /// at once).
    func lookup(parent: UInt64, name: UnsafeRawBufferPointer) throws(FUSEError) -> Answer<FileAttributes>
    /// The attributes of a node.
    func attributes(node: UInt64) throws(FUSEError) -> FileAttributes
    /// The target of a symlink.
    func readlink(node: UInt64) throws(FUSEError) -> [UInt8]
    /// A directory's entries, without `.` and `..`.
    func entries(directory: UInt64) throws(FUSEError) -> [DirectoryEntry]
    /// An extended attribute's value; ENODATA when there is none.
    func xattr(node: UInt64, name: String) throws(FUSEError) -> [UInt8]
    /// The names of a node's extended attributes.
    func xattrNames(node: UInt64) throws(FUSEError) -> [String]
    /// Checks that a node can be opened for reading (flags as `open(2)` has them).
    func open(node: UInt64, flags: UInt32) throws(FUSEError)
    /// Totals for `statfs`.
    func statistics() -> FileSystemStatistics
    /// The bytes of `[offset, offset+size)` (a short result at the end of the file): at once when they are at
    /// hand, later when they must be fetched.
    func read(node: UInt64, offset: UInt64, size: Int) throws(FUSEError) -> Answer<[UInt8]>
}

/// A capability: the filesystem takes `create(2)` and `rmdir(2)` as notifications (the Additional Layer Store
/// protocol counts a layer's users with a `create` of `<layer>/use` and releases it with an `rmdir` of the layer
/// directory). The mount must then be read-write (``FUSESession/Options/readOnly`` false); every other write is
/// still EROFS. A filesystem that does not adopt this answers both with EROFS.
public protocol ChangeNotifications: FileSystem {
    /// A `create` of `name` in `parent`; returns the error the create answers with (the tree never creates).
    func created(parent: UInt64, name: UnsafeRawBufferPointer) -> FUSEError
    /// An `rmdir` of `name` in `parent`; returns the error it answers with, or nil for success.
    func removedDirectory(parent: UInt64, name: UnsafeRawBufferPointer) -> FUSEError?
}

extension FileSystem {
    /// A lookup of a name held in an array, awaiting the answer if it comes later.
    public func lookup(parent: UInt64, nameBytes name: [UInt8]) async throws -> FileAttributes {
        let answer = try name.withUnsafeBytes { b in try lookup(parent: parent, name: b) }
        return try await answer.value
    }

    /// The bytes of a read that is answered at once (from what is at hand), nil if it would fetch.
    public func cachedRead(node: UInt64, offset: UInt64, size: Int) throws(FUSEError) -> [UInt8]? {
        try read(node: node, offset: offset, size: size).immediate
    }

    /// A read, awaiting the bytes if they must be fetched.
    public func readBytes(node: UInt64, offset: UInt64, size: Int) async throws -> [UInt8] {
        try await read(node: node, offset: offset, size: size).value
    }
}
