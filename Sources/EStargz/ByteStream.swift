// SPDX-License-Identifier: Apache-2.0
#if canImport(Glibc)
@preconcurrency import Glibc
#endif
internal import Compression

/// A sequential source of bytes (a file, memory, or a decompressor over another stream).
public protocol ByteStream: AnyObject {
    /// Reads up to `buffer.count` bytes; returns 0 only at the end of the stream.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
    /// Skips `count` bytes; returns how many were skipped (fewer only at the end).
    func skip(_ count: Int64) throws -> Int64
}

extension ByteStream {
    public func skip(_ count: Int64) throws -> Int64 {
        var left = count
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        defer { buf.deallocate() }
        while left > 0 {
            let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<Int(min(Int64(buf.count), left))]))
            if n == 0 { break }
            left -= Int64(n)
        }
        return count - left
    }

    /// Reads exactly `buffer.count` bytes, or throws `.truncatedBlob`.
    public func readFully(into buffer: UnsafeMutableRawBufferPointer) throws {
        var done = 0
        while done < buffer.count {
            let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            if n == 0 {
                throw EStargzError(.truncatedBlob, "stream ended after \(done) of \(buffer.count) bytes")
            }
            done += n
        }
    }

    /// Reads until the end of the stream; returns the number of bytes read.
    public func readToEnd(into out: inout [UInt8], limit: Int = .max) throws {
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)
        defer { buf.deallocate() }
        while true {
            let n = try read(into: buf)
            if n == 0 { return }
            if out.count + n > limit {
                throw EStargzError(.tocTooLarge, "stream is larger than \(limit) bytes")
            }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: buf[0..<n]))
        }
    }
}

/// Bytes in memory.
public final class MemoryStream: ByteStream {
    private let bytes: [UInt8]
    private var pos = 0
    /// Creates a stream over `bytes`.
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = min(buffer.count, bytes.count - pos)
        if n > 0 {
            bytes.withUnsafeBytes { src in
                buffer.baseAddress!.copyMemory(from: src.baseAddress! + pos, byteCount: n)
            }
        }
        pos += n
        return n
    }
    public func skip(_ count: Int64) throws -> Int64 {
        let n = min(Int(count), bytes.count - pos)
        pos += n
        return Int64(n)
    }
}

/// A file read sequentially, with `lseek` for skips. Owns its descriptor.
public final class FileStream: ByteStream {
    private let fd: Int32
    /// The file's path.
    public let path: String

    /// Opens `path` for reading (`-` is standard input).
    public init(path: String) throws {
        if path == "-" {
            fd = dup(0)
        } else {
            fd = open(path, O_RDONLY | O_CLOEXEC)
        }
        guard fd >= 0 else { throw EStargzError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
        self.path = path
    }

    deinit { close(fd) }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw EStargzError(.io, "read of \(path) failed: \(String(cString: strerror(errno)))")
        }
    }

    public func skip(_ count: Int64) throws -> Int64 {
        let cur = lseek(fd, 0, SEEK_CUR)
        if cur >= 0 {
            let end = lseek(fd, 0, SEEK_END)
            let target = min(Int64(cur) + count, Int64(end))
            _ = lseek(fd, off_t(target), SEEK_SET)
            return target - Int64(cur)
        }
        // Not seekable (a pipe): read and discard.
        var left = count
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        defer { buf.deallocate() }
        while left > 0 {
            let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<Int(min(Int64(buf.count), left))]))
            if n == 0 { break }
            left -= Int64(n)
        }
        return count - left
    }
}

/// Decompresses a gzip (multi-member) stream on the fly.
public final class GzipDecodingStream: ByteStream {
    private let source: any ByteStream
    private var inflater: GzipStreamInflater
    private let inBuf = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)
    private var inStart = 0
    private var inEnd = 0
    private var sourceDone = false

    /// Wraps `source`.
    public init(_ source: any ByteStream) throws {
        self.source = source
        inflater = try GzipStreamInflater(multiMember: true)
    }

    deinit { inBuf.deallocate() }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard buffer.count > 0 else { return 0 }
        while true {
            if inStart == inEnd && !sourceDone && !inflater.hasPendingOutput {
                inStart = 0
                inEnd = try source.read(into: inBuf)
                if inEnd == 0 { sourceDone = true }
            }
            let step = try inflater.step(UnsafeRawBufferPointer(rebasing: inBuf[inStart..<inEnd]), buffer)
            inStart += step.consumed
            if step.produced > 0 { return step.produced }
            if sourceDone && inStart == inEnd {
                if step.end { return 0 }
                throw EStargzError(.truncatedBlob, "gzip stream is truncated")
            }
            if step.consumed == 0 && inStart < inEnd && !step.end {
                throw EStargzError(.corruptData, "gzip stream made no progress")
            }
        }
    }
}

/// Decompresses a zstd stream on the fly.
public final class ZstdDecodingStream: ByteStream {
    private let source: any ByteStream
    private let inflater = ZstdStreamDecoder()
    private let inBuf = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)
    private var inStart = 0
    private var inEnd = 0
    private var sourceDone = false

    /// Wraps `source`.
    public init(_ source: any ByteStream) { self.source = source }
    deinit { inBuf.deallocate() }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard buffer.count > 0 else { return 0 }
        while true {
            if inStart == inEnd && !sourceDone {
                inStart = 0
                inEnd = try source.read(into: inBuf)
                if inEnd == 0 { sourceDone = true }
            }
            let (consumed, produced, frameDone) = try inflater.step(
                UnsafeRawBufferPointer(rebasing: inBuf[inStart..<inEnd]), buffer)
            inStart += consumed
            if produced > 0 { return produced }
            if sourceDone && inStart == inEnd {
                if frameDone { return 0 }
                throw EStargzError(.truncatedBlob, "zstd stream is truncated")
            }
        }
    }
}
