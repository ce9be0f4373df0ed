// SPDX-License-Identifier: Apache-2.0
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOPosix

/// A blob file on local disk whose blocking calls (open, stat, read, write, close) run on NIO's thread pool for
/// blocking work, never on a thread of the Swift concurrency pool. Failures are ``RegistryError``s
/// (`invalidConfiguration`, as for any path that cannot be used) that name the path, with the system's error as cause.
struct BlobFile: Sendable {
    /// The path, for messages.
    let path: String
    private let fd: CInt

    private init(path: String, fd: CInt) {
        self.path = path
        self.fd = fd
    }

    /// Creates `path`, or empties it, for writing.
    static func create(_ path: String) async throws -> BlobFile {
        try await onPool {
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o666)
            guard fd >= 0 else { throw failure("cannot write", path, "open") }
            return BlobFile(path: path, fd: fd)
        }
    }

    /// The size of the file at `path`.
    static func size(of path: String) async throws -> Int64 {
        try await onPool {
            var st = stat()
            guard stat(path, &st) == 0 else { throw failure("cannot read", path, "stat") }
            return Int64(st.st_size)
        }
    }

    /// Up to `count` bytes of the file at `path` from `offset` (fewer at its end), opening and closing it in the
    /// same step, so that nothing stays open when the reader goes away.
    static func read(_ path: String, at offset: Int64, count: Int) async throws -> ByteBuffer {
        try await onPool {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw failure("cannot read", path, "open") }
            defer { _ = close(fd) }
            var out = ByteBufferAllocator().buffer(capacity: count)
            try out.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
                var done = 0
                while done < count {
                    let n = pread(fd, raw.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                    if n < 0 && errno == EINTR { continue }
                    guard n >= 0 else { throw failure("cannot read", path, "pread") }
                    if n == 0 { break }
                    done += n
                }
                return done
            }
            return out
        }
    }

    /// Writes all of `buffer` at `offset`.
    func write(_ buffer: ByteBuffer, at offset: Int64) async throws {
        guard buffer.readableBytes > 0 else { return }
        let (fd, path) = (self.fd, self.path)
        try await Self.onPool {
            try buffer.withUnsafeReadableBytes { raw in
                var done = 0
                while done < raw.count {
                    let n = pwrite(fd, raw.baseAddress! + done, raw.count - done, off_t(offset) + off_t(done))
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { throw Self.failure("cannot write", path, "pwrite") }
                    done += n
                }
            }
        }
    }

    /// Closes the file. It runs even when the task is cancelled, so the descriptor is never left open; an error
    /// (a delayed write failing on a network file system) is thrown, the descriptor closed all the same.
    func closeFile() async throws {
        let (fd, path) = (self.fd, self.path)
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            NIOThreadPool.singleton.submit { _ in
                let failed = close(fd) != 0 && errno != EINTR
                c.resume(with: failed ? .failure(Self.failure("cannot write", path, "close")) : .success(()))
            }
        }
    }

    private static func onPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive(body)
    }

    /// The error for a failed system call, read from `errno`.
    private static func failure(_ what: String, _ path: String, _ call: String) -> RegistryError {
        RegistryError(.invalidConfiguration, "\(what) \(path)", cause: IOError(errnoCode: errno, reason: call))
    }
}
