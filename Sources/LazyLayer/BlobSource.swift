// SPDX-License-Identifier: Apache-2.0
import EStargz

/// Where a layer blob's bytes come from (a registry, in the store). Owned here; the store plugs one in.
public protocol BlobSource: Sendable {
    /// The blob's size in bytes.
    var size: Int64 { get }
    /// How to name the blob in errors and logs (`registry/repo@sha256:…`).
    var name: String { get }
    /// Reads byte ranges; each result has exactly the length of its range or the call throws.
    func read(_ ranges: [Range<Int64>]) async throws -> [[UInt8]]
}

/// A blob in memory, for tests and tools.
public struct MemoryBlobSource: BlobSource {
    /// The bytes.
    public let bytes: [UInt8]
    public let name: String

    /// Wraps bytes.
    public init(_ bytes: [UInt8], name: String = "memory") {
        self.bytes = bytes
        self.name = name
    }

    public var size: Int64 { Int64(bytes.count) }

    public func read(_ ranges: [Range<Int64>]) async throws -> [[UInt8]] {
        try ranges.map { r in
            guard r.lowerBound >= 0, r.upperBound <= size else {
                throw EStargzError(.invalidArgument, "range \(r) is outside the \(size)-byte blob \(name)")
            }
            return Array(bytes[Int(r.lowerBound)..<Int(r.upperBound)])
        }
    }
}

/// The tail of a blob (footer and TOC) held in memory, standing for the whole blob while the TOC is read.
struct TailBlob: RandomAccessBlob {
    let size: Int64
    let start: Int64
    let bytes: [UInt8]
    let name: String

    func read(at offset: Int64, length: Int) throws -> [UInt8] {
        guard offset >= start, length >= 0, offset <= size, Int64(length) <= size - offset else {
            throw EStargzError(.invalidArgument, "\(name): bytes [\(offset), +\(length)) are not in the fetched tail")
        }
        let from = Int(offset - start)
        return Array(bytes[from..<(from + length)])
    }
}
