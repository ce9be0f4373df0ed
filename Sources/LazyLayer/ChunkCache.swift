// SPDX-License-Identifier: Apache-2.0
import Dispatch
import Foundation
import OCI
import Synchronization

/// Identifies a chunk inside a blob: its compressed member and the offset inside it.
struct ChunkKey: Hashable, Sendable {
    var compressedOffset: Int64
    var innerOffset: Int64
}

/// A bounded memory cache of decompressed, verified chunks: two generations, so that a lookup or an
/// insert is O(1) and what was not used for a generation falls out (an approximate LRU).
///
/// Called from FUSE reader threads and tasks; the lock is held for a dictionary operation only.
final class MemoryChunkCache: Sendable {
    private struct State {
        var hot: [ChunkKey: [UInt8]] = [:]
        var cold: [ChunkKey: [UInt8]] = [:]
        var hotBytes = 0
        var coldBytes = 0
    }
    private let state = Mutex(State())
    /// The bound on the bytes held, both generations together.
    let capacity: Int

    init(capacity: Int) { self.capacity = max(0, capacity) }

    func get(_ k: ChunkKey) -> [UInt8]? {
        state.withLock { s in
            if let v = s.hot[k] { return v }
            guard let v = s.cold.removeValue(forKey: k) else { return nil }
            s.coldBytes -= v.count
            insert(&s, k, v)
            return v
        }
    }

    func put(_ k: ChunkKey, _ v: [UInt8]) {
        guard v.count <= capacity / 2 else { return }
        state.withLock { s in
            if s.hot[k] != nil { return }
            insert(&s, k, v)
        }
    }

    private func insert(_ s: inout State, _ k: ChunkKey, _ v: [UInt8]) {
        if s.hotBytes + v.count > capacity / 2 {
            s.cold = s.hot
            s.coldBytes = s.hotBytes
            s.hot = [:]
            s.hotBytes = 0
        }
        s.hot[k] = v
        s.hotBytes += v.count
    }

    /// Bytes held now.
    var bytesHeld: Int { state.withLock { $0.hotBytes + $0.coldBytes } }
}

/// Decompressed chunks on disk, named by their sha256 (so identical chunks of different layers are stored
/// once), written to a temporary file and renamed into place. A chunk read back is verified against its
/// name before use, so a damaged cache file is a miss, never wrong bytes. The cache survives restarts.
public final class DiskChunkCache: Sendable {
    /// The cache directory.
    public let directory: String
    private let queue = DispatchQueue(label: "stargz.chunk-cache.write", attributes: .concurrent)

    /// Uses (and creates) `directory`.
    public init(directory: String) throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory + "/sha256", withIntermediateDirectories: true)
    }

    func path(_ d: Digest) -> String {
        "\(directory)/sha256/\(d.encoded.prefix(2))/\(d.encoded)"
    }

    /// Reads and verifies a chunk of `size` bytes; nil when absent or damaged (a damaged file is removed).
    /// Blocks on disk: for FUSE reader threads and blocking-pool work only.
    func get(_ d: Digest, size: Int) -> [UInt8]? {
        let p = path(d)
        let fd = open(p, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out = [UInt8](repeating: 0, count: size)
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, size, 0) }
        guard n == size, Digest.sha256(of: out) == d else {
            unlink(p)
            return nil
        }
        return out
    }

    /// Whether a chunk file is present (not verified).
    func contains(_ d: Digest) -> Bool { access(path(d), F_OK) == 0 }

    /// Stores a verified chunk, off the cooperative pool; returns when it is on disk.
    func put(_ d: Digest, _ bytes: [UInt8]) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            queue.async {
                self.write(d, bytes)
                c.resume()
            }
        }
    }

    private func write(_ d: Digest, _ bytes: [UInt8]) {
        let final = path(d)
        if access(final, F_OK) == 0 { return }
        let dir = (final as NSString).deletingLastPathComponent
        mkdir(dir, 0o700)
        let tmp = "\(dir)/.wip-\(UUID().uuidString)"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        var ok = true
        bytes.withUnsafeBytes { b in
            var off = 0
            while off < b.count {
                let n = Glibc.write(fd, b.baseAddress! + off, b.count - off)
                if n <= 0 {
                    ok = false
                    break
                }
                off += n
            }
        }
        close(fd)
        if !ok || rename(tmp, final) != 0 { unlink(tmp) }
    }
}
