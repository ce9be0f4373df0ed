// SPDX-License-Identifier: Apache-2.0
import Dispatch
public import FUSE
import LazyLayer
public import Logging
import OCI
import Synchronization
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// The Additional Layer Store namespace containers/storage reads:
/// `<mount>/<base64 ref>/<digest>/{diff/, info, blob}` and the `use` / `rmdir` notifications.
///
/// Inode numbers: the root is 1; refs, layer directories, `info` and `blob` get numbers below 2^32 from a
/// table; a layer's tree is `(layer id << 32) | node`. Resolving a layer (a LOOKUP of `diff`, `blob` or
/// `info`) needs the network: the reader thread waits for it (at most the resolve timeout).
///
/// Only root reaches it: the root directory is 0700 and owned by root, and the daemon mounts with
/// `default_permissions`, so the kernel refuses any other account a lookup before the store hears of it (no
/// resolution, no request to a registry, no reference taken). Inside a layer the kernel checks each node's own
/// mode, owner and group as the TOC gives them.
public final class StoreFileSystem: FileSystem, ChangeNotifications {
    let manager: LayerManager
    let logger: Logger
    let resolveTimeout: Duration
    let rootPermissions: UInt32

    /// The permissions of the namespace root: root only.
    public static let rootOnly: UInt32 = 0o700

    enum Node: Hashable, Sendable {
        case ref(Reference)
        case layer(Reference, Digest)
        case info(Reference, Digest)
        case blob(Reference, Digest)
    }
    private struct Table {
        var byID: [UInt64: Node] = [:]
        var byNode: [Node: UInt64] = [:]
        var next: UInt64 = 2
    }
    private let table = Mutex(Table())

    /// Creates the namespace over a layer manager.
    ///
    /// - Parameter rootPermissions: the namespace root's permission bits; the daemon always uses
    ///   ``rootOnly``. Tests open it to others to exercise the checks inside a layer.
    public init(
        manager: LayerManager, logger: Logger, resolveTimeout: Duration = .seconds(30),
        rootPermissions: UInt32 = StoreFileSystem.rootOnly
    ) {
        self.manager = manager
        self.logger = logger
        self.resolveTimeout = resolveTimeout
        self.rootPermissions = rootPermissions & 0o7777
    }

    func id(_ n: Node) -> UInt64 {
        let (id, new) = table.withLock { t -> (UInt64, Bool) in
            if let i = t.byNode[n] { return (i, false) }
            let i = t.next
            t.next += 1
            t.byID[i] = n
            t.byNode[n] = i
            return (i, true)
        }
        // Kept before the kernel hears of the id: a successor must know every id the kernel may ask about.
        if new { changed.withLock { $0 }?() }
        return id
    }

    private let changed = Mutex<(@Sendable () -> Void)?>(nil)

    /// Called (synchronously) whenever a node id is given out.
    public func onChange(_ action: @escaping @Sendable () -> Void) { changed.withLock { $0 = action } }

    func node(_ id: UInt64) -> Node? { table.withLock { $0.byID[id] } }

    /// The node ids given out, for a successor (``restore(_:)``): the kernel keeps using them across the handover.
    public func snapshot() -> HandoverState.SavedNamespace {
        table.withLock { t in
            let nodes = t.byID.map { id, n -> HandoverState.SavedNode in
                switch n {
                case .ref(let r): HandoverState.SavedNode(id: id, kind: "ref", reference: r.description, digest: nil)
                case .layer(let r, let d): HandoverState.SavedNode(id: id, kind: "layer", reference: r.description, digest: d.description)
                case .info(let r, let d): HandoverState.SavedNode(id: id, kind: "info", reference: r.description, digest: d.description)
                case .blob(let r, let d): HandoverState.SavedNode(id: id, kind: "blob", reference: r.description, digest: d.description)
                }
            }
            return HandoverState.SavedNamespace(next: t.next, nodes: nodes.sorted { $0.id < $1.id })
        }
    }

    /// Takes the node ids a predecessor gave out (before the first request is served).
    public func restore(_ saved: HandoverState.SavedNamespace) throws(StoreError) {
        var t = Table()
        for n in saved.nodes {
            guard n.id >= 2, n.id < 1 << 32, let ref = try? Reference(n.reference) else {
                throw StoreError(.handover, "namespace node \(n.id) (\(n.kind) \(n.reference)) is not one this store gives out")
            }
            let node: Node
            switch (n.kind, n.digest.flatMap(Digest.init)) {
            case ("ref", nil): node = .ref(ref)
            case ("layer", let d?): node = .layer(ref, d)
            case ("info", let d?): node = .info(ref, d)
            case ("blob", let d?): node = .blob(ref, d)
            default: throw StoreError(.handover, "namespace node \(n.id) has an unknown kind \(n.kind)")
            }
            guard t.byID[n.id] == nil, t.byNode[node] == nil else { throw StoreError(.handover, "namespace node \(n.id) twice") }
            t.byID[n.id] = node
            t.byNode[node] = n.id
        }
        t.next = max(saved.next, (saved.nodes.map(\.id).max() ?? 1) + 1)
        table.withLock { $0 = t }
    }

    /// A `<base64 ref>` or `<digest>` directory: searchable by anyone who got past the root.
    static func dirAttributes(_ inode: UInt64) -> FileAttributes { FileAttributes(inode: inode, mode: 0o040555, linkCount: 2) }

    /// The answer for a name in a layer directory: at once when the layer is resolved, else after resolving it
    /// (off the reader threads).
    func withLayer(
        _ ref: Reference, _ digest: Digest, _ answer: @escaping @Sendable (StoreLayer) throws(FUSEError) -> FileAttributes
    ) throws(FUSEError) -> Answer<FileAttributes> {
        if let l = manager.layer(ref, digest) { return .now(try answer(l)) }
        return .later { [self] in try answer(try await resolveAsync(ref, digest)) }
    }

    /// Resolves a layer off the reader threads; a layer the store does not serve is ENOENT ("not here"), and so
    /// is one whose resolution takes longer than the resolve timeout: the lookup stops waiting then (the
    /// resolution goes on, shared, and files the layer for the next lookup if it succeeds). The log line says
    /// whether the layer was refused, not found, or failed to resolve, and why.
    func resolveAsync(_ ref: Reference, _ digest: Digest) async throws -> StoreLayer {
        do {
            return try await Self.first(within: resolveTimeout) { try await self.manager.resolve(ref, digest) }
        } catch {
            let e = error as? StoreError ?? StoreError(.resolveFailed, "resolving \(ref) \(digest)", cause: error)
            logger.info(
                "layer not served; the client pulls it normally",
                metadata: [
                    "image.ref": "\(ref)", "layer.digest": "\(digest)", "reason": "\(e.code)", "error": "\(e)",
                    "remote-snapshot-prepared": "false",
                ])
            throw FUSEError(ENOENT, "\(e.code): \(e)")
        }
    }

    /// The result of `operation`, or a timeout error once `limit` has passed, whichever comes first. Unlike a
    /// task group, this does not wait for an operation that ignores cancellation (an await of a shared task's
    /// value does): the caller is answered at the deadline and the operation is left to finish on its own.
    static func first<T: Sendable>(
        within limit: Duration, _ operation: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let race = Race<T>()
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            race.start(
                c,
                Task {
                    do { race.answer(.success(try await operation())) } catch { race.answer(.failure(error)) }
                },
                Task {
                    guard (try? await Task.sleep(for: limit)) != nil else { return }  // cancelled: answered
                    race.answer(.failure(StoreError(.resolveFailed, "resolving took longer than \(limit)")))
                })
        }
    }

    /// One answer to a continuation from whichever of two tasks comes first; the other is cancelled.
    private final class Race<T: Sendable>: Sendable {
        private struct State {
            var continuation: CheckedContinuation<T, any Error>?
            var early: Result<T, any Error>?
            var tasks: [Task<Void, Never>] = []
            var done = false
        }
        private let state = Mutex(State())

        func start(_ c: CheckedContinuation<T, any Error>, _ a: Task<Void, Never>, _ b: Task<Void, Never>) {
            let early = state.withLock { s -> Result<T, any Error>? in
                s.tasks = [a, b]
                if let e = s.early { return e }
                s.continuation = c
                return nil
            }
            if let early {
                a.cancel()
                b.cancel()
                c.resume(with: early)
            }
        }

        func answer(_ r: Result<T, any Error>) {
            let (c, tasks) = state.withLock { s -> (CheckedContinuation<T, any Error>?, [Task<Void, Never>]) in
                guard !s.done else { return (nil, []) }
                s.done = true
                guard let c = s.continuation else {
                    s.early = r  // before start: start answers
                    return (nil, [])
                }
                s.continuation = nil
                return (c, s.tasks)
            }
            for t in tasks { t.cancel() }
            c?.resume(with: r)
        }
    }

    // MARK: Layer trees

    static func split(_ inode: UInt64) -> (layer: UInt32, node: UInt64)? {
        let high = UInt32(truncatingIfNeeded: inode >> 32)
        return high == 0 ? nil : (high, inode & 0xFFFF_FFFF)
    }

    func tree(_ inode: UInt64) throws(FUSEError) -> (StoreLayer, UInt64) {
        guard let (l, n) = Self.split(inode), let layer = manager.layer(id: l) else { throw FUSEError(ENOENT, "stale node \(inode)") }
        return (layer, n)
    }

    static func outer(_ layer: StoreLayer, _ a: FileAttributes) -> FileAttributes {
        var a = a
        a.inode = UInt64(layer.id) << 32 | a.inode
        return a
    }

    // MARK: FileSystem

    public func lookup(parent: UInt64, name: UnsafeRawBufferPointer) throws(FUSEError) -> Answer<FileAttributes> {
        let text = String(decoding: name, as: UTF8.self)
        if parent == 1 {
            guard let bytes = Base64.decode(Array(name)), let refString = String(validating: bytes, as: UTF8.self),
                let ref = try? Reference(refString)
            else {
                throw FUSEError(EINVAL, "\"\(text)\" is not the base64 of an image reference")
            }
            return .now(Self.dirAttributes(id(.ref(ref))))
        }
        if Self.split(parent) != nil {
            let (layer, n) = try tree(parent)
            switch try layer.lazy.lookup(parent: n, name: name) {
            case .now(let a): return .now(Self.outer(layer, a))
            case .later(let work): return .later { Self.outer(layer, try await work()) }
            }
        }
        switch node(parent) {
        case .ref(let ref):
            guard let d = Digest(text) else { throw FUSEError(EINVAL, "\"\(text)\" is not a digest") }
            return .now(Self.dirAttributes(id(.layer(ref, d))))
        case .layer(let ref, let d):
            switch text {
            case "diff":
                return try withLayer(ref, d) { (layer) throws(FUSEError) in Self.outer(layer, try layer.lazy.attributes(node: 1)) }
            case "info":
                let inode = id(.info(ref, d))
                return try withLayer(ref, d) { FileAttributes(inode: inode, mode: 0o100400, size: UInt64($0.info.count)) }
            case "blob":
                let inode = id(.blob(ref, d))
                return try withLayer(ref, d) { FileAttributes(inode: inode, mode: 0o100400, size: UInt64($0.descriptor.size)) }
            default:
                throw .notFound  // `use` included: it never exists
            }
        default:
            throw .notFound
        }
    }

    public func attributes(node inode: UInt64) throws(FUSEError) -> FileAttributes {
        if inode == 1 { return FileAttributes(inode: 1, mode: 0o040000 | rootPermissions, linkCount: 2) }
        if Self.split(inode) != nil {
            let (layer, n) = try tree(inode)
            return Self.outer(layer, try layer.lazy.attributes(node: n))
        }
        switch node(inode) {
        case .ref, .layer: return Self.dirAttributes(inode)
        case .info(let ref, let d):
            guard let l = manager.layer(ref, d) else { throw .notFound }
            return FileAttributes(inode: inode, mode: 0o100400, size: UInt64(l.info.count))
        case .blob(let ref, let d):
            guard let l = manager.layer(ref, d) else { throw .notFound }
            return FileAttributes(inode: inode, mode: 0o100400, size: UInt64(l.descriptor.size))
        case nil: throw .notFound
        }
    }

    public func readlink(node inode: UInt64) throws(FUSEError) -> [UInt8] {
        let (layer, n) = try tree(inode)
        return try layer.lazy.readlink(node: n)
    }

    public func entries(directory inode: UInt64) throws(FUSEError) -> [DirectoryEntry] {
        if Self.split(inode) != nil {
            let (layer, n) = try tree(inode)
            return try layer.lazy.entries(directory: n).map { e in
                DirectoryEntry(name: e.name, inode: UInt64(layer.id) << 32 | e.inode, type: e.type)
            }
        }
        switch node(inode) {
        case .layer(let ref, let d):
            // `diff` is found by lookup; the listing names the two files of a resolved layer.
            guard manager.layer(ref, d) != nil else { return [] }
            return [
                DirectoryEntry(name: Array("info".utf8), inode: id(.info(ref, d)), type: 0o100000),
                DirectoryEntry(name: Array("blob".utf8), inode: id(.blob(ref, d)), type: 0o100000),
            ]
        case .ref, nil: return []  // not listable; lookups are what matter
        default: throw FUSEError(ENOTDIR)
        }
    }

    public func xattr(node inode: UInt64, name: String) throws(FUSEError) -> [UInt8] {
        guard Self.split(inode) != nil else { throw FUSEError(ENODATA) }
        let (layer, n) = try tree(inode)
        return try layer.lazy.xattr(node: n, name: name)
    }

    public func xattrNames(node inode: UInt64) throws(FUSEError) -> [String] {
        guard Self.split(inode) != nil else { return [] }
        let (layer, n) = try tree(inode)
        return try layer.lazy.xattrNames(node: n)
    }

    public func open(node inode: UInt64, flags: UInt32) throws(FUSEError) {
        if Self.split(inode) != nil {
            let (layer, n) = try tree(inode)
            try layer.lazy.open(node: n, flags: flags)
        }
    }

    public func statistics() -> FileSystemStatistics { FileSystemStatistics(blocks: 0, files: 0) }

    public func read(node inode: UInt64, offset: UInt64, size: Int) throws(FUSEError) -> Answer<[UInt8]> {
        if Self.split(inode) != nil {
            let (layer, n) = try tree(inode)
            return try layer.lazy.read(node: n, offset: offset, size: size)
        }
        switch node(inode) {
        case .info(let ref, let d):
            guard let l = manager.layer(ref, d) else { throw .notFound }
            let from = Int(min(UInt64(l.info.count), offset))
            return .now(Array(l.info[from..<min(l.info.count, from + size)]))
        case .blob(let ref, let d):
            guard let l = manager.layer(ref, d) else { throw .notFound }
            let start = Int64(min(UInt64(l.descriptor.size), offset))
            let end = min(l.descriptor.size, start + Int64(size))
            guard start < end else { return .now([]) }
            return .later { try await l.blob.read([start..<end])[0] }
        default:
            throw .notFound
        }
    }

    // MARK: ChangeNotifications

    /// A `create` of `<layer>/use` counts a user of the layer (containers/storage does it once per mount).
    public func created(parent: UInt64, name: UnsafeRawBufferPointer) -> FUSEError {
        if case .layer(let ref, let d) = node(parent), String(decoding: name, as: UTF8.self) == "use",
            let l = manager.layer(ref, d)
        {
            manager.use(l)
        }
        return .notFound  // what containers/storage expects after counting
    }

    /// An `rmdir` of `<ref>/<digest>` releases a user of the layer.
    public func removedDirectory(parent: UInt64, name: UnsafeRawBufferPointer) -> FUSEError? {
        guard case .ref(let ref) = node(parent) else { return FUSEError(EROFS) }
        guard let d = Digest(String(decoding: name, as: UTF8.self)) else { return FUSEError(EINVAL) }
        guard manager.release(ref, d) else { return FUSEError(EIO, "layer \(ref)/\(d) is not known") }
        return .notFound
    }
}
