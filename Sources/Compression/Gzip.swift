// SPDX-License-Identifier: Apache-2.0
internal import CLibdeflate
internal import CZlib

/// Compresses whole buffers into single gzip members with libdeflate.
///
/// One instance per thread: the libdeflate compressor holds mutable state.
/// Output is deterministic for a given input and level.
public final class GzipMemberCompressor {
    private let compressor: OpaquePointer
    /// The compression level (0...12 for libdeflate; 0 stores).
    public let level: Int

    /// Creates a compressor at `level` (clamped to 0...12).
    public init(level: Int) {
        let lvl = max(0, min(12, level))
        guard let c = libdeflate_alloc_compressor(Int32(lvl)) else {
            fatalError("libdeflate_alloc_compressor failed (out of memory)")
        }
        self.compressor = c
        self.level = lvl
    }

    deinit { libdeflate_free_compressor(compressor) }

    /// An upper bound on the output size for `count` input bytes.
    public func bound(_ count: Int) -> Int { libdeflate_gzip_compress_bound(compressor, count) }

    /// Appends one complete gzip member holding `input` to `output`.
    public func compress(_ input: UnsafeRawBufferPointer, appendingTo output: inout [UInt8]) {
        let start = output.count
        let cap = bound(input.count)
        output.append(contentsOf: repeatElement(0, count: cap))
        let written = output.withUnsafeMutableBytes { out in
            libdeflate_gzip_compress(
                compressor, input.baseAddress, input.count, out.baseAddress! + start, cap)
        }
        precondition(written > 0, "libdeflate_gzip_compress cannot fail with a bound-sized buffer")
        output.removeLast(cap - written)
    }

    /// Returns one complete gzip member holding `input`.
    public func compress(_ input: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        input.withUnsafeBytes { compress($0, appendingTo: &out) }
        return out
    }
}

/// Decompresses gzip members, fast path with libdeflate, streaming path with zlib.
///
/// One instance per thread.
public final class GzipDecompressor {
    private let decompressor: OpaquePointer

    /// Creates a decompressor.
    public init() {
        guard let d = libdeflate_alloc_decompressor() else {
            fatalError("libdeflate_alloc_decompressor failed (out of memory)")
        }
        decompressor = d
    }

    deinit { libdeflate_free_decompressor(decompressor) }

    /// The ISIZE trailer of a gzip member that ends exactly at the end of `member`.
    public static func trailerSize(_ member: UnsafeRawBufferPointer) -> Int? {
        guard member.count >= 18 else { return nil }
        let b = member.count - 4
        return Int(member[b]) | Int(member[b + 1]) << 8 | Int(member[b + 2]) << 16 | Int(member[b + 3]) << 24
    }

    /// Decompresses exactly one gzip member whose uncompressed size is `expectedSize`.
    ///
    /// - Returns: the number of compressed bytes consumed.
    /// - Throws: `CompressionError` when the data is corrupt or its size differs.
    @discardableResult
    public func decompressMember(
        _ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer
    ) throws(CompressionError) -> Int {
        var consumed = 0
        var produced = 0
        let r = libdeflate_gzip_decompress_ex(
            decompressor, input.baseAddress, input.count, output.baseAddress, output.count, &consumed, &produced)
        switch r {
        case LIBDEFLATE_SUCCESS:
            guard produced == output.count else {
                throw CompressionError(
                    .corruptData, "gzip member decompressed to \(produced) bytes, expected \(output.count)")
            }
            return consumed
        case LIBDEFLATE_INSUFFICIENT_SPACE:
            throw CompressionError(.outputLimitExceeded, "gzip member is larger than \(output.count) bytes")
        case LIBDEFLATE_SHORT_OUTPUT:
            throw CompressionError(.corruptData, "gzip member is shorter than \(output.count) bytes")
        default:
            throw CompressionError(.corruptData, "invalid gzip member (libdeflate error \(r.rawValue))")
        }
    }

    /// Decompresses a multi-member gzip stream starting at `input[0]`, skipping `skip` output bytes and then
    /// filling `output` completely.
    ///
    /// Uses zlib's streaming inflate, so it stops as soon as `output` is full. Members are followed across
    /// boundaries.
    public static func inflate(
        _ input: UnsafeRawBufferPointer, skip: Int, into output: UnsafeMutableRawBufferPointer
    ) throws(CompressionError) {
        var inflater = try GzipStreamInflater()
        var remainingSkip = skip
        var filled = 0
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: min(max(skip, 1), 64 * 1024), alignment: 16)
        defer { scratch.deallocate() }
        var offset = 0
        while filled < output.count {
            if offset >= input.count && !inflater.hasPendingOutput {
                throw CompressionError(.truncatedInput, "gzip stream ended after \(filled) of \(output.count) bytes")
            }
            let n: (consumed: Int, produced: Int, end: Bool)
            if remainingSkip > 0 {
                let want = min(remainingSkip, scratch.count)
                n = try inflater.step(
                    UnsafeRawBufferPointer(rebasing: input[offset...]),
                    UnsafeMutableRawBufferPointer(rebasing: scratch[0..<want]))
                remainingSkip -= n.produced
            } else {
                n = try inflater.step(
                    UnsafeRawBufferPointer(rebasing: input[offset...]),
                    UnsafeMutableRawBufferPointer(rebasing: output[filled...]))
                filled += n.produced
            }
            offset += n.consumed
            if n.consumed == 0 && n.produced == 0 {
                if n.end && offset >= input.count {
                    throw CompressionError(
                        .truncatedInput, "gzip stream ended after \(filled) of \(output.count) bytes")
                }
                if !n.end {
                    throw CompressionError(.corruptData, "gzip stream made no progress at input byte \(offset)")
                }
            }
        }
    }
}

/// A streaming zlib gzip inflater that continues across gzip member boundaries.
public struct GzipStreamInflater: ~Copyable {
    private var stream: UnsafeMutablePointer<z_stream>
    private var finishedMember = false
    /// True when zlib may still hold output for the current input.
    public private(set) var hasPendingOutput = false
    /// When false, the inflater stops at the end of the first member.
    public let multiMember: Bool
    /// True once the first member ended and `multiMember` is false.
    public private(set) var isFinished = false

    /// Creates an inflater.
    public init(multiMember: Bool = true) throws(CompressionError) {
        self.multiMember = multiMember
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let rc = CZlib_inflateInit2(stream, 15 + 16)
        guard rc == Z_OK else {
            stream.deallocate()
            throw CompressionError(.libraryFailure, "inflateInit2 failed (\(rc))")
        }
    }

    deinit {
        inflateEnd(stream)
        stream.deallocate()
    }

    /// Runs inflate once. Returns bytes consumed, bytes produced and whether a member ended.
    public mutating func step(
        _ input: UnsafeRawBufferPointer, _ output: UnsafeMutableRawBufferPointer
    ) throws(CompressionError) -> (consumed: Int, produced: Int, end: Bool) {
        if isFinished { return (0, 0, true) }
        if finishedMember {
            // Only start a new member if there is input for it; trailing garbage is not tolerated.
            guard input.count > 0 else { return (0, 0, true) }
            inflateReset(stream)
            finishedMember = false
        }
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = UInt32(min(input.count, Int(UInt32.max)))
        stream.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_out = UInt32(min(output.count, Int(UInt32.max)))
        let availIn = stream.pointee.avail_in
        let availOut = stream.pointee.avail_out
        let rc = inflate(stream, Z_NO_FLUSH)
        let consumed = Int(availIn - stream.pointee.avail_in)
        let produced = Int(availOut - stream.pointee.avail_out)
        hasPendingOutput = stream.pointee.avail_out == 0
        switch rc {
        case Z_OK:
            return (consumed, produced, false)
        case Z_BUF_ERROR:
            return (consumed, produced, false)
        case Z_STREAM_END:
            finishedMember = true
            hasPendingOutput = false
            if !multiMember { isFinished = true }
            return (consumed, produced, true)
        default:
            let msg = stream.pointee.msg.map { String(cString: $0) } ?? "error \(rc)"
            throw CompressionError(.corruptData, "invalid gzip data: \(msg)")
        }
    }
}
