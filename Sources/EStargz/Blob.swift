// SPDX-License-Identifier: Apache-2.0
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// A blob that can be read at any offset: a file, memory, or (in other modules) a registry blob over HTTP ranges.
///
/// Implementations must be safe to call from several threads at once.
public protocol RandomAccessBlob: Sendable {
    /// The blob's total size in bytes.
    var size: Int64 { get }
    /// Reads exactly `length` bytes at `offset`.
    ///
    /// - Throws: when the range is outside the blob or the read fails.
    func read(at offset: Int64, length: Int) throws -> [UInt8]
}

/// A blob held in memory.
public struct MemoryBlob: RandomAccessBlob {
    /// The bytes.
    public let bytes: [UInt8]
    /// Creates a blob over `bytes`.
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public var size: Int64 { Int64(bytes.count) }
    public func read(at offset: Int64, length: Int) throws -> [UInt8] {
        guard offset >= 0, length >= 0, offset <= size, Int64(length) <= size - offset else {
            throw EStargzError(
                .truncatedBlob, "read of \(length) bytes at offset \(offset) is outside the \(size)-byte blob")
        }
        return Array(bytes[Int(offset)..<Int(offset) + length])
    }
}

/// A blob in a file, read with `pread(2)`.
///
/// Owns its file descriptor, which is closed when the last reference goes away.
public final class FileBlob: RandomAccessBlob {
    // Sendable: fd and size are immutable; pread is thread-safe.
    private let fd: Int32
    /// The file's size when opened.
    public let size: Int64
    /// The path the blob was opened from.
    public let path: String

    /// Opens `path` read-only.
    public init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw EStargzError(.io, "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw EStargzError(.io, "cannot stat \(path): \(String(cString: strerror(e)))")
        }
        self.fd = fd
        self.size = Int64(st.st_size)
        self.path = path
    }

    deinit { Glibc.close(fd) }


    public func read(at offset: Int64, length: Int) throws -> [UInt8] {
        guard offset >= 0, length >= 0, offset <= size, Int64(length) <= size - offset else {
            throw EStargzError(
                .truncatedBlob, "read of \(length) bytes at offset \(offset) is outside the \(size)-byte blob \(path)")
        }
        var out = [UInt8](repeating: 0, count: length)
        var done = 0
        try out.withUnsafeMutableBytes { buf in
            while done < length {
                let n = pread(fd, buf.baseAddress! + done, length - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw EStargzError(.io, "read of \(path) at \(offset) failed: \(String(cString: strerror(errno)))")
                }
                if n == 0 {
                    throw EStargzError(.truncatedBlob, "\(path) ended at \(offset + Int64(done))")
                }
                done += n
            }
        }
        return out
    }
}
