// SPDX-License-Identifier: Apache-2.0
import Foundation
public import FUSE
import LazyLayer
public import OCI
import Synchronization
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// What a successor process needs to serve the same mount without mounting again: what INIT agreed with the
/// kernel, the namespace's node ids, and every layer served (its lookup key, slot, reference count and how to
/// re-open it from what the store keeps under its root). Versioned: a binary reads the versions it knows and
/// refuses others, naming why (the successor then unmounts and mounts afresh).
public struct HandoverState: Codable, Sendable, Equatable {
    /// The format this binary writes.
    public static let currentVersion = 1
    /// The formats this binary reads.
    public static let readableVersions: ClosedRange<Int> = 1...1

    /// The format.
    public var version: Int
    /// The binary that wrote it (`--version`), for the log.
    public var writer: String
    /// What INIT agreed.
    public var session: SessionParameters
    /// The namespace's node ids (refs, layer directories, `info`, `blob`).
    public var namespace: SavedNamespace
    /// The layers served.
    public var layers: [SavedLayer]
    /// The next layer slot.
    public var nextLayerID: UInt32

    /// One served layer.
    public struct SavedLayer: Codable, Sendable, Equatable {
        /// Its slot: the high 32 bits of its nodes' ids.
        public var id: UInt32
        /// The image reference of its ALS path (the logical one).
        public var reference: String
        /// The digest of its ALS path (layer digest, or TOC digest).
        public var lookup: String
        /// Where the blob is read (a mirror, when registries.conf names one).
        public var source: String
        /// The layer's descriptor in the manifest.
        public var descriptor: Descriptor
        /// The `info` file.
        public var info: String
        /// `use` creates minus `rmdir`s.
        public var references: Int
    }

    /// The namespace table.
    public struct SavedNamespace: Codable, Sendable, Equatable {
        /// The next id.
        public var next: UInt64
        /// Every id given out.
        public var nodes: [SavedNode]
    }

    /// One namespace node.
    public struct SavedNode: Codable, Sendable, Equatable {
        public var id: UInt64
        /// `ref`, `layer`, `info` or `blob`.
        public var kind: String
        public var reference: String
        /// For all but `ref`.
        public var digest: String?
    }

    /// Encodes (sorted keys: the same state, the same bytes).
    public func encoded() -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return Array((try? e.encode(self)) ?? Data())
    }

    /// Decodes a state of a version this binary reads; the error says why not otherwise.
    public static func decode(_ bytes: [UInt8]) throws(StoreError) -> HandoverState {
        struct Probe: Decodable { var version: Int; var writer: String? }
        guard let probe = try? JSONDecoder().decode(Probe.self, from: Data(bytes)) else {
            throw StoreError(.handover, "the handed-over state is not a state of stargz-store (\(bytes.count) bytes)")
        }
        guard readableVersions.contains(probe.version) else {
            throw StoreError(
                .handover,
                "the handed-over state is version \(probe.version) (written by \(probe.writer ?? "an unknown build")); this build reads \(readableVersions)")
        }
        do { return try JSONDecoder().decode(HandoverState.self, from: Data(bytes)) } catch {
            throw StoreError(.handover, "the handed-over state (version \(probe.version)) does not decode", cause: error)
        }
    }
}

/// What a layer's opening read from its blob (the footer and the TOC), kept under the store's root so that a
/// successor re-opens the layer without the registry. The bytes are checked again when the layer is opened (the
/// TOC against its digest), so a damaged file only costs a fetch.
enum LayerTail {
    static let magic: [UInt8] = Array("SGZTAIL1".utf8)

    static func path(_ directory: String, _ digest: Digest) -> String { "\(directory)/\(digest.algorithm)-\(digest.encoded).tail" }

    /// Writes `ranges` (offset and bytes) for `digest`, atomically (a new file renamed into place).
    static func save(_ ranges: [(Int64, [UInt8])], directory: String, digest: Digest) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var out = magic
        func put(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        put(UInt64(ranges.count))
        for (offset, bytes) in ranges {
            put(UInt64(offset))
            put(UInt64(bytes.count))
            out += bytes
        }
        let file = path(directory, digest)
        try Data(out).write(to: URL(fileURLWithPath: file), options: .atomic)
    }

    /// The ranges kept for `digest` (nil: none, or a file that is not one), at most `limit` bytes of them.
    static func load(directory: String, digest: Digest, limit: Int) -> [(Int64, [UInt8])]? {
        guard let data = FileManager.default.contents(atPath: path(directory, digest)), data.count <= limit + 4096 else { return nil }
        let b = Array(data)
        var at = magic.count
        guard b.count >= at + 8, Array(b[0..<magic.count]) == magic else { return nil }
        func get() -> UInt64? {
            guard at + 8 <= b.count else { return nil }
            defer { at += 8 }
            return b[at..<(at + 8)].withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        }
        guard let n = get(), n <= 16 else { return nil }
        var out: [(Int64, [UInt8])] = []
        for _ in 0..<n {
            guard let offset = get(), let length = get(), offset <= UInt64(Int64.max), length <= UInt64(b.count - at) else { return nil }
            out.append((Int64(offset), Array(b[at..<(at + Int(length))])))
            at += Int(length)
        }
        return out
    }

    static func remove(directory: String, digest: Digest) { unlink(path(directory, digest)) }
}

/// The source a lazy layer is opened with: while opening it records what is read (the footer and TOC, to keep
/// under the root), or serves it from what was kept; afterwards it only passes reads through.
final class OpeningSource: BlobSource {
    let base: RegistryBlobSource
    private enum Mode {
        case recording([(Int64, [UInt8])], bytes: Int)
        case serving([(Int64, [UInt8])])
        case passing
    }
    private let mode: Mutex<Mode>
    /// The most bytes recorded (a TOC is bounded by the reader's limits; this keeps a hostile one from growing
    /// the record without end).
    let recordLimit: Int

    init(_ base: RegistryBlobSource, kept: [(Int64, [UInt8])]?, recordLimit: Int) {
        self.base = base
        self.recordLimit = recordLimit
        mode = Mutex(kept.map { .serving($0) } ?? .recording([], bytes: 0))
    }

    var size: Int64 { base.size }
    var name: String { base.name }

    func read(_ ranges: [Range<Int64>]) async throws -> [[UInt8]] {
        let local = mode.withLock { m -> [[UInt8]]? in
            guard case .serving(let kept) = m else { return nil }
            var out: [[UInt8]] = []
            for r in ranges {
                guard let (offset, bytes) = kept.first(where: { $0.0 <= r.lowerBound && r.upperBound <= $0.0 + Int64($0.1.count) }) else {
                    return nil
                }
                out.append(Array(bytes[Int(r.lowerBound - offset)..<Int(r.upperBound - offset)]))
            }
            return out
        }
        if let local { return local }
        let fetched = try await base.read(ranges)
        mode.withLock { m in
            guard case .recording(var list, let total) = m else { return }
            let more = fetched.reduce(0) { $0 + $1.count }
            guard total + more <= recordLimit else {
                m = .passing
                return
            }
            for (r, b) in zip(ranges, fetched) { list.append((r.lowerBound, b)) }
            m = .recording(list, bytes: total + more)
        }
        return fetched
    }

    /// Ends the opening: what was recorded (nil when nothing was, or it was served from what was kept); reads
    /// pass through from now on.
    func finishOpening() -> [(Int64, [UInt8])]? {
        mode.withLock { m in
            defer { m = .passing }
            if case .recording(let list, _) = m, !list.isEmpty { return list }
            return nil
        }
    }
}
