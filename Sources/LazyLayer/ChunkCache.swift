// SPDX-License-Identifier: Apache-2.0
import Dispatch
import Foundation
public import Logging
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
/// One cache can serve many layers (the store shares one, so that its bound holds for the whole process);
/// each layer files its chunks under its own owner number and drops them when it closes.
/// Called from FUSE reader threads and tasks; the lock is held for a dictionary operation only.
public final class MemoryChunkCache: Sendable {
    struct Key: Hashable, Sendable {
        var owner: UInt64
        var chunk: ChunkKey
    }
    private struct State {
        var hot: [Key: [UInt8]] = [:]
        var cold: [Key: [UInt8]] = [:]
        var hotBytes = 0
        var coldBytes = 0
    }
    private let state = Mutex(State())
    private let owners = Atomic<UInt64>(0)
    /// The bound on the bytes held, both generations together.
    public let capacity: Int

    /// A cache that holds at most `capacity` bytes of chunks.
    public init(capacity: Int) { self.capacity = max(0, capacity) }

    /// A number for a new layer's chunks.
    func newOwner() -> UInt64 { owners.add(1, ordering: .relaxed).newValue }

    func get(_ owner: UInt64, _ k: ChunkKey) -> [UInt8]? {
        let key = Key(owner: owner, chunk: k)
        return state.withLock { s in
            if let v = s.hot[key] { return v }
            guard let v = s.cold.removeValue(forKey: key) else { return nil }
            s.coldBytes -= v.count
            insert(&s, key, v)
            return v
        }
    }

    func put(_ owner: UInt64, _ k: ChunkKey, _ v: [UInt8]) {
        guard v.count <= capacity / 2 else { return }
        let key = Key(owner: owner, chunk: k)
        state.withLock { s in
            if s.hot[key] != nil { return }
            insert(&s, key, v)
        }
    }

    func contains(_ owner: UInt64, _ k: ChunkKey) -> Bool {
        let key = Key(owner: owner, chunk: k)
        return state.withLock { $0.hot[key] != nil || $0.cold[key] != nil }
    }

    /// Forgets every chunk of `owner` (a layer that is closed).
    func drop(owner: UInt64) {
        state.withLock { s in
            s.hot = s.hot.filter { $0.key.owner != owner }
            s.cold = s.cold.filter { $0.key.owner != owner }
            s.hotBytes = s.hot.values.reduce(0) { $0 + $1.count }
            s.coldBytes = s.cold.values.reduce(0) { $0 + $1.count }
        }
    }

    /// Bytes held now.
    public var bytesHeld: Int { state.withLock { $0.hotBytes + $0.coldBytes } }

    private func insert(_ s: inout State, _ k: Key, _ v: [UInt8]) {
        if s.hotBytes + v.count > capacity / 2 {
            s.cold = s.hot
            s.coldBytes = s.hotBytes
            s.hot = [:]
            s.hotBytes = 0
        }
        s.hot[k] = v
        s.hotBytes += v.count
    }
}

/// Decompressed chunks on disk, named by their sha256 (so identical chunks of different layers are stored
/// once), written to a temporary file and renamed into place. A chunk found on disk that this process did
/// not write is verified against its name before its first use, so a damaged cache file is a miss, never
/// wrong bytes; after that it is trusted, as the chunks this process wrote and verified are.
/// The cache survives restarts: what a crash left half-written is removed at start, and a file damaged, truncated
/// or deleted (while the store was down, or truncated while it runs) is a miss and is fetched again. A disk that
/// is full or fails makes the cache a memory-only one for the chunks it cannot take, with one warning, never an
/// error to a reader. (A root who rewrites chunk files in place under a running store is not defended against:
/// docs/security.md.)
public final class DiskChunkCache: Sendable {
    /// The cache directory.
    public let directory: String
    private let queue = DispatchQueue(label: "stargz.chunk-cache.write", attributes: .concurrent)
    /// Chunks verified by this process (written after verification, or checked once when first read).
    private let verified = Mutex<Set<Digest>>([])
    /// Chunks handed to ``store(_:_:)`` and not yet written.
    private let pending = Mutex<[Digest: [UInt8]]>([:])

    /// The bound on the bytes kept; past it the least recently used chunks are removed (nil: no bound).
    public let maxBytes: Int64?
    /// Bytes on disk now (as far as this process knows: counted at start, then kept up to date).
    private let usage = Mutex<Int64>(0)
    private let evicting = Mutex(false)
    let logger: Logger
    /// The errors writes have failed with (each is logged once), and the writes that failed in all.
    private let failing = Mutex((warned: Set<Int32>(), total: 0))

    /// Uses (and creates) `directory`; with `maxBytes`, keeps it under that size. Temporary files a crash left
    /// behind are removed.
    public init(directory: String, maxBytes: Int64? = nil, logger: Logger = Logger(label: "stargz.chunk-cache")) throws {
        self.directory = directory
        self.maxBytes = maxBytes
        self.logger = logger
        try FileManager.default.createDirectory(atPath: directory + "/sha256", withIntermediateDirectories: true)
        // One walk: what a crash left half-written goes; with a bound, the rest is counted.
        var total: Int64 = 0
        Self.entries(directory) { p, name in
            if name.hasPrefix(".wip-") {
                unlink(p)
            } else if maxBytes != nil, !name.hasPrefix("."), let st = Self.attributes(p) {
                total += Int64(st.st_size)
            }
        }
        usage.withLock { $0 = total }
    }

    /// Bytes the cache holds.
    public var bytesUsed: Int64 { usage.withLock { $0 } }

    /// Chunk writes that failed (a full or failing disk): those chunks are held in memory only.
    public var failedWrites: Int { failing.withLock { $0.total } }

    /// Calls `body` with the path and name of every entry of the cache's two-level tree (`sha256/<2 hex>/<name>`).
    static func entries(_ directory: String, _ body: (_ path: String, _ name: String) -> Void) {
        let top = directory + "/sha256"
        for sub in (try? FileManager.default.contentsOfDirectory(atPath: top)) ?? [] {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: top + "/" + sub)) ?? [] {
                body("\(top)/\(sub)/\(name)", name)
            }
        }
    }

    private static func attributes(_ path: String) -> stat? {
        var st = stat()
        return stat(path, &st) == 0 ? st : nil
    }

    /// The chunk files: path, size and last use (mtime, in nanoseconds).
    static func files(_ directory: String) -> [(path: String, size: Int64, used: Int)] {
        var out: [(String, Int64, Int)] = []
        entries(directory) { p, name in
            guard !name.hasPrefix("."), let st = attributes(p) else { return }
            out.append((p, Int64(st.st_size), st.st_mtim.tv_sec * 1_000_000_000 + st.st_mtim.tv_nsec))
        }
        return out
    }

    /// The last use stamped on a chunk file, in nanoseconds since the epoch.
    private let lastStamp = Mutex<Int64>(0)

    /// Marks a chunk as used now: its mtime orders the eviction. File times come from a coarse clock (a few
    /// milliseconds), so uses in the same tick would tie; each stamp is later than the one before.
    private func touch(_ d: Digest) {
        guard maxBytes != nil else { return }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let ns = lastStamp.withLock { last in
            last = max(Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec), last + 1)
            return last
        }
        let t = timespec(tv_sec: Int(ns / 1_000_000_000), tv_nsec: Int(ns % 1_000_000_000))
        var times = [t, t]
        utimensat(AT_FDCWD, path(d), &times, 0)
    }

    /// Removes the least recently used chunks until the cache is under 90 % of its bound.
    private func evictIfNeeded() {
        guard let max = maxBytes, usage.withLock({ $0 }) > max else { return }
        // One eviction at a time; a write that finds one running leaves the work to it.
        guard evicting.withLock({ e in
            defer { e = true }
            return !e
        }) else { return }
        defer { evicting.withLock { $0 = false } }
        let all = Self.files(directory).sorted { $0.used < $1.used }
        var total = all.reduce(Int64(0)) { $0 + $1.size }
        for f in all where total > max / 10 * 9 {
            if unlink(f.path) == 0 { total -= f.size }
        }
        usage.withLock { $0 = total }
    }

    func path(_ d: Digest) -> String {
        "\(directory)/sha256/\(d.encoded.prefix(2))/\(d.encoded)"
    }

    /// Reads and verifies a chunk of `size` bytes; nil when absent or damaged (a damaged file is removed).
    /// Blocks on disk: for FUSE reader threads and blocking-pool work only.
    func get(_ d: Digest, size: Int) -> [UInt8]? {
        if let v = pending.withLock({ $0[d] }) { return v }
        let p = path(d)
        let fd = open(p, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out = [UInt8](repeating: 0, count: size)
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, size, 0) }
        guard n == size else {
            forget(d)
            return nil
        }
        touch(d)
        if verified.withLock({ $0.contains(d) }) { return out }
        guard Digest.sha256(of: out) == d else {
            forget(d)
            return nil
        }
        trust(d)
        return out
    }

    /// Bytes `[from, to)` of a chunk of `size` bytes: a `pread` of just that range when the chunk is trusted
    /// already, else the whole chunk read and verified first (and `whole` receives it). Nil when absent or
    /// damaged. The file stays open (a few dozen at most), so that the kernel's readahead follows a reader
    /// that goes through a chunk in order.
    func read(_ d: Digest, size: Int, from: Int, to: Int, whole: (([UInt8]) -> Void)? = nil) -> [UInt8]? {
        if let v = pending.withLock({ $0[d] }) { return v.count == size ? Array(v[from..<to]) : nil }
        if verified.withLock({ $0.contains(d) }), let fd = openFile(d) {
            defer { fd.release() }
            var out = [UInt8](repeating: 0, count: to - from)
            let n = out.withUnsafeMutableBytes { pread(fd.fd, $0.baseAddress, to - from, off_t(from)) }
            if n == to - from { return out }
            // Truncated (or unreadable) since it was verified: a miss, and the file goes, so that the chunk
            // fetched again can take its place.
            forget(d)
            return nil
        }
        guard let all = get(d, size: size) else { return nil }
        whole?(all)
        return Array(all[from..<to])
    }

    /// A shared open file: the fd, how many readers hold it, and whether it has left the open set.
    /// The fd is closed exactly once: when it has left the set and its last reader is done.
    final class OpenFile: Sendable {
        let fd: Int32
        private let state = Mutex((users: 1, retired: false, closed: false))
        init(fd: Int32) { self.fd = fd }

        /// Takes a use unless the file is closed already.
        func acquire() -> Bool {
            state.withLock { s in
                guard !s.closed else { return false }
                s.users += 1
                return true
            }
        }

        func release() { finish { $0.users -= 1 } }
        func retire() { finish { $0.retired = true } }

        private func finish(_ change: (inout (users: Int, retired: Bool, closed: Bool)) -> Void) {
            let close = state.withLock { s in
                change(&s)
                guard s.users == 0, s.retired, !s.closed else { return false }
                s.closed = true
                return true
            }
            if close { Glibc.close(fd) }
        }
    }
    private let files = Mutex<(open: [Digest: OpenFile], order: [Digest])>(([:], []))

    private func openFile(_ d: Digest) -> OpenFile? {
        if let f = files.withLock({ $0.open[d] }), f.acquire() { return f }
        let fd = open(path(d), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        touch(d)
        let f = OpenFile(fd: fd)
        // A file another reader opened meanwhile is replaced (and closed when its readers are done).
        let evicted: [OpenFile] = files.withLock { s in
            var out: [OpenFile] = []
            if let old = s.open.removeValue(forKey: d) {
                s.order.removeAll { $0 == d }
                out.append(old)
            }
            s.open[d] = f
            s.order.append(d)
            while s.order.count > 32 {
                if let o = s.open.removeValue(forKey: s.order.removeFirst()) { out.append(o) }
            }
            return out
        }
        for o in evicted { o.retire() }
        return f
    }

    /// Drops a damaged chunk file: no longer trusted, no longer kept open, removed.
    private func forget(_ d: Digest) {
        verified.withLock { _ = $0.remove(d) }
        let old = files.withLock { s -> OpenFile? in
            s.order.removeAll { $0 == d }
            return s.open.removeValue(forKey: d)
        }
        old?.retire()
        unlink(path(d))
    }

    /// Whether a chunk file is present (not verified).
    func contains(_ d: Digest) -> Bool { pending.withLock { $0[d] != nil } || access(path(d), F_OK) == 0 }

    /// Stores a verified chunk without waiting for the write: until it is on disk, this process finds it in
    /// a table of pending writes. For on-demand reads, whose caller has the bytes already.
    func store(_ d: Digest, _ bytes: [UInt8]) {
        let fresh = pending.withLock { p in
            if p[d] != nil { return false }
            p[d] = bytes
            return true
        }
        guard fresh else { return }
        queue.async {
            self.write(d, bytes)
            _ = self.pending.withLock { $0.removeValue(forKey: d) }
        }
    }

    /// Returns once every write handed to ``store(_:_:)`` before the call has finished.
    func waitForWrites() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            queue.async(flags: .barrier) { c.resume() }
        }
    }

    /// Stores a verified chunk, off the cooperative pool; returns when it is on disk.
    func put(_ d: Digest, _ bytes: [UInt8]) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            queue.async {
                self.write(d, bytes)
                c.resume()
            }
        }
    }

    /// Remembers a verified chunk (the set is bounded: past 500,000 it starts again, and chunks are
    /// verified once more).
    private func trust(_ d: Digest) {
        verified.withLock { v in
            if v.count >= 500_000 { v.removeAll(keepingCapacity: true) }
            v.insert(d)
        }
    }

    /// A chunk could not be written: it stays in memory only. One warning for each kind of failure (a disk that
    /// is nearly full fails the large chunks and takes the small ones: a warning per failure would flood the log).
    private func writeFailed(_ e: Int32) {
        let first = failing.withLock { f in
            f.total += 1
            return f.warned.insert(e).inserted
        }
        guard first else { return }
        logger.warning(
            "the chunk cache cannot take chunks; serving from memory until it can",
            metadata: ["directory": "\(directory)", "error": "\(String(cString: strerror(e)))"])
    }

    private func write(_ d: Digest, _ bytes: [UInt8]) {
        trust(d)
        let final = path(d)
        if access(final, F_OK) == 0 { return }
        let dir = (final as NSString).deletingLastPathComponent
        mkdir(dir, 0o700)
        let tmp = "\(dir)/.wip-\(UUID().uuidString)"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return writeFailed(errno) }
        var failure: Int32 = 0
        bytes.withUnsafeBytes { b in
            var off = 0
            while off < b.count {
                let n = Glibc.write(fd, b.baseAddress! + off, b.count - off)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 {
                    failure = n < 0 ? errno : ENOSPC
                    break
                }
                off += n
            }
        }
        if close(fd) != 0 && failure == 0 { failure = errno }
        if failure == 0 && rename(tmp, final) != 0 { failure = errno }
        if failure != 0 {
            unlink(tmp)
            return writeFailed(failure)
        }

        touch(d)
        usage.withLock { $0 += Int64(bytes.count) }
        evictIfNeeded()
    }
}
