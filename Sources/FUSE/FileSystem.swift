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

    /// The one mapping from any error to the errno a FUSE reply carries: FUSEError keeps its own,
    /// cancellation is EINTR, anything else (fetch or verification failures) is EIO.
    public init(replyingTo error: any Error) {
        switch error {
        case let e as FUSEError: self = e
        case is CancellationError: self = FUSEError(EINTR, "cancelled")
        default: self = FUSEError(EIO, "\(error)")
        }
    }
}

/// A read-only tree served through FUSE. It knows nothing of the protocol.
///
/// Node ids are stable for the life of the mount; 1 is the root. The metadata operations and
/// ``cachedRead(node:offset:size:)`` are called on FUSE reader threads and must not block on the network;
/// ``read(node:offset:size:)`` is called in a task when the cached read had nothing.
/// Lookups are not counted: nodes live as long as the filesystem, so `forget` needs nothing.
public protocol FileSystem: Sendable {
    /// The node `name` names in directory `parent`. EAGAIN sends the lookup to the async variant, in a task.
    func lookup(parent: UInt64, name: UnsafeRawBufferPointer) throws(FUSEError) -> FileAttributes
    /// A lookup that needs the network (after the synchronous one answered EAGAIN). Runs in a task.
    func lookup(parent: UInt64, name: [UInt8]) async throws -> FileAttributes
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
    /// The bytes of `[offset, offset+size)` if they are at hand without waiting for the network
    /// (a short result at the end of the file); nil sends the read to ``read(node:offset:size:)``.
    func cachedRead(node: UInt64, offset: UInt64, size: Int) throws(FUSEError) -> [UInt8]?
    /// Reads bytes, fetching what is missing. Runs in a task; cancelled by a FUSE interrupt.
    func read(node: UInt64, offset: UInt64, size: Int) async throws -> [UInt8]
    /// See the extension: EROFS unless a tree takes notifications this way.
    func create(parent: UInt64, name: UnsafeRawBufferPointer) throws(FUSEError)
    /// See the extension: EROFS unless a tree takes notifications this way.
    func rmdir(parent: UInt64, name: UnsafeRawBufferPointer) throws(FUSEError)
}

extension FileSystem {
    /// By default the synchronous lookup answers everything.
    public func lookup(parent: UInt64, name: [UInt8]) async throws -> FileAttributes {
        try lookup(parent: parent, nameBytes: name)
    }

    /// The synchronous lookup, for a name held in an array.
    public func lookup(parent: UInt64, nameBytes name: [UInt8]) throws(FUSEError) -> FileAttributes {
        let r: Result<FileAttributes, FUSEError> = name.withUnsafeBytes { b in
            do throws(FUSEError) { return .success(try lookup(parent: parent, name: b)) } catch { return .failure(error) }
        }
        return try r.get()
    }

    /// A `create(2)` of `name` in `parent` (the store counts references this way). Read-only trees: EROFS.
    public func create(parent: UInt64, name: UnsafeRawBufferPointer) throws(FUSEError) { throw FUSEError(EROFS) }
    /// An `rmdir(2)` of `name` in `parent` (the store's release notification). Read-only trees: EROFS.
    public func rmdir(parent: UInt64, name: UnsafeRawBufferPointer) throws(FUSEError) { throw FUSEError(EROFS) }
}
