// SPDX-License-Identifier: Apache-2.0
internal import CZstd

/// Compresses buffers into single zstd frames. One instance per thread.
public final class ZstdFrameCompressor {
    private let cctx: OpaquePointer
    /// The zstd compression level.
    public let level: Int

    /// Creates a compressor at `level` (1...22; 0 means zstd's default 3).
    public init(level: Int) {
        guard let c = ZSTD_createCCtx() else { fatalError("ZSTD_createCCtx failed (out of memory)") }
        cctx = c
        self.level = level
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, Int32(level))
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 0)
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1)
    }

    deinit { ZSTD_freeCCtx(cctx) }

    /// Appends one zstd frame holding `input` to `output`.
    public func compress(_ input: UnsafeRawBufferPointer, appendingTo output: inout [UInt8]) {
        let start = output.count
        let cap = ZSTD_compressBound(input.count)
        output.append(contentsOf: repeatElement(0, count: cap))
        let written = output.withUnsafeMutableBytes { out in
            ZSTD_compress2(cctx, out.baseAddress! + start, cap, input.baseAddress, input.count)
        }
        precondition(ZSTD_isError(written) == 0, "ZSTD_compress2 cannot fail with a bound-sized buffer")
        output.removeLast(cap - written)
    }

    /// Returns one zstd frame holding `input`.
    public func compress(_ input: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        input.withUnsafeBytes { compress($0, appendingTo: &out) }
        return out
    }
}

/// Streaming zstd decompression; follows frame boundaries and skips skippable frames.
public final class ZstdDecompressor {
    private let dctx: OpaquePointer

    /// Creates a decompressor.
    public init() {
        guard let d = ZSTD_createDCtx() else { fatalError("ZSTD_createDCtx failed (out of memory)") }
        dctx = d
    }

    deinit { ZSTD_freeDCtx(dctx) }

    /// Resets the stream state, so the next call starts at a new frame.
    public func reset() { ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only) }

    /// Decompresses from `input`, discarding `skip` output bytes, then filling `output` completely.
    public func decompress(
        _ input: UnsafeRawBufferPointer, skip: Int, into output: UnsafeMutableRawBufferPointer
    ) throws(CompressionError) {
        reset()
        var inBuf = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var remainingSkip = skip
        var scratch = [UInt8](repeating: 0, count: min(max(skip, 1), 128 * 1024))
        var filled = 0
        while filled < output.count {
            var progress = 0
            var rc = 0
            if remainingSkip > 0 {
                let want = min(remainingSkip, scratch.count)
                rc = scratch.withUnsafeMutableBytes { s in
                    var outBuf = ZSTD_outBuffer(dst: s.baseAddress, size: want, pos: 0)
                    let before = inBuf.pos
                    let r = ZSTD_decompressStream(dctx, &outBuf, &inBuf)
                    progress = outBuf.pos + (inBuf.pos - before)
                    remainingSkip -= outBuf.pos
                    return r
                }
            } else {
                var outBuf = ZSTD_outBuffer(dst: output.baseAddress! + filled, size: output.count - filled, pos: 0)
                let before = inBuf.pos
                rc = ZSTD_decompressStream(dctx, &outBuf, &inBuf)
                progress = outBuf.pos + (inBuf.pos - before)
                filled += outBuf.pos
            }
            if ZSTD_isError(rc) != 0 {
                throw CompressionError(.corruptData, "invalid zstd data: \(String(cString: ZSTD_getErrorName(rc)))")
            }
            if progress == 0 {
                throw CompressionError(
                    .truncatedInput, "zstd stream ended after \(filled) of \(output.count) bytes")
            }
        }
    }

    /// Decompresses the whole of `input` (all frames), passing output to `sink` in pieces.
    ///
    /// - Parameter limit: the most output bytes allowed; more is an `outputLimitExceeded` error.
    public func decompressAll(
        _ input: UnsafeRawBufferPointer, limit: Int = .max, _ sink: (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        reset()
        var inBuf = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var out = [UInt8](repeating: 0, count: 256 * 1024)
        var total = 0
        var lastRC = 0
        while true {
            let (rc, produced) = out.withUnsafeMutableBytes { o in
                var outBuf = ZSTD_outBuffer(dst: o.baseAddress, size: o.count, pos: 0)
                let r = ZSTD_decompressStream(dctx, &outBuf, &inBuf)
                return (r, outBuf.pos)
            }
            if ZSTD_isError(rc) != 0 {
                throw CompressionError(.corruptData, "invalid zstd data: \(String(cString: ZSTD_getErrorName(rc)))")
            }
            lastRC = rc
            total += produced
            if total > limit {
                throw CompressionError(.outputLimitExceeded, "zstd data decompresses to more than \(limit) bytes")
            }
            if produced > 0 {
                try out.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[0..<produced])) }
            }
            if inBuf.pos == inBuf.size && produced < out.count { break }
        }
        if lastRC != 0 {
            throw CompressionError(.truncatedInput, "zstd stream ends inside a frame")
        }
    }

    /// Decompresses exactly one frame into a new array, refusing more than `limit` bytes.
    public func decompressFrame(_ input: UnsafeRawBufferPointer, limit: Int) throws -> [UInt8] {
        var result: [UInt8] = []
        try decompressAll(input, limit: limit) { result.append(contentsOf: $0) }
        return result
    }
}

/// A step-wise zstd stream decoder for pull-style streams.
public final class ZstdStreamDecoder {
    private let dctx: OpaquePointer
    private var lastHint = 0

    /// Creates a decoder.
    public init() {
        guard let d = ZSTD_createDCtx() else { fatalError("ZSTD_createDCtx failed (out of memory)") }
        dctx = d
    }

    deinit { ZSTD_freeDCtx(dctx) }

    /// Decodes once; `frameDone` is true when the input so far ends on a frame boundary.
    public func step(
        _ input: UnsafeRawBufferPointer, _ output: UnsafeMutableRawBufferPointer
    ) throws(CompressionError) -> (consumed: Int, produced: Int, frameDone: Bool) {
        var inBuf = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var outBuf = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
        let rc = ZSTD_decompressStream(dctx, &outBuf, &inBuf)
        if ZSTD_isError(rc) != 0 {
            throw CompressionError(.corruptData, "invalid zstd data: \(String(cString: ZSTD_getErrorName(rc)))")
        }
        if inBuf.pos > 0 || outBuf.pos > 0 { lastHint = rc }
        return (inBuf.pos, outBuf.pos, lastHint == 0)
    }
}
