// SPDX-License-Identifier: Apache-2.0

extension GzipDecompressor {
    /// Decompresses a whole multi-member gzip stream, passing output to `sink` in pieces.
    ///
    /// - Parameters:
    ///   - multiMember: follow member boundaries (true) or stop after the first member.
    ///   - limit: the most output bytes allowed.
    /// - Returns: the number of compressed bytes consumed.
    @discardableResult
    public static func inflateAll(
        _ input: UnsafeRawBufferPointer, multiMember: Bool = true, limit: Int = .max,
        _ sink: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> Int {
        var inflater = try GzipStreamInflater(multiMember: multiMember)
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)
        defer { out.deallocate() }
        var offset = 0
        var total = 0
        var ended = false
        while true {
            let step = try inflater.step(UnsafeRawBufferPointer(rebasing: input[offset...]), out)
            offset += step.consumed
            total += step.produced
            if total > limit {
                throw CompressionError(.outputLimitExceeded, "gzip data decompresses to more than \(limit) bytes")
            }
            if step.produced > 0 {
                try sink(UnsafeRawBufferPointer(rebasing: out[0..<step.produced]))
            }
            if step.end { ended = true }
            if inflater.isFinished { break }
            if offset >= input.count && !inflater.hasPendingOutput {
                if step.end || ended && step.produced == 0 && step.consumed == 0 { break }
                if step.consumed == 0 && step.produced == 0 {
                    throw CompressionError(.truncatedInput, "gzip stream is truncated after \(offset) bytes")
                }
            } else if step.consumed == 0 && step.produced == 0 && !step.end {
                throw CompressionError(.corruptData, "gzip stream made no progress at input byte \(offset)")
            }
            if step.produced > 0 || step.consumed > 0 { ended = step.end }
        }
        return offset
    }
}
