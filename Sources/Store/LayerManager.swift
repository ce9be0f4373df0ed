// SPDX-License-Identifier: Apache-2.0
import Dispatch
import EStargz
import Foundation
public import LazyLayer
public import Logging
public import OCI
public import Registry
import Synchronization

/// How the store resolves and keeps layers.
public struct LayerManagerOptions: Sendable {
    /// The options every lazy layer gets (caches, prefetch, background fetch).
    public var layer: LazyLayerOptions
    /// How long a resolved manifest is reused (upstream `resolve_result_entry_ttl_sec`).
    public var manifestTTL: Duration
    /// The platform whose manifest is used for an index.
    public var platform: Platform
    /// Where each layer's footer and TOC are kept once read (nil: nowhere), so that a successor process
    /// re-opens it without the registry.
    public var tailDirectory: String?

    /// Creates options.
    public init(
        layer: LazyLayerOptions = LazyLayerOptions(), manifestTTL: Duration = .seconds(120), platform: Platform = .current,
        tailDirectory: String? = nil
    ) {
        self.layer = layer
        self.manifestTTL = manifestTTL
        self.platform = platform
        self.tailDirectory = tailDirectory
    }
}

/// A layer the store serves: the lazy tree, the blob, the `info` JSON and its reference count.
public final class StoreLayer: Sendable {
    /// Distinguishes this layer's inode numbers (the high 32 bits).
    public let id: UInt32
    /// The image reference it was resolved for.
    public let reference: Reference
    /// The layer's descriptor in the manifest.
    public let descriptor: Descriptor
    /// The lazily served tree.
    public let lazy: LazyLayer
    /// The compressed blob, read by range.
    public let blob: RegistryBlobSource
    /// The `info` file's bytes.
    public let info: [UInt8]
    let references = Mutex(0)
    /// Whether the layer's work was stopped and its series ended (once only).
    let retired = Mutex(false)

    init(id: UInt32, reference: Reference, descriptor: Descriptor, lazy: LazyLayer, blob: RegistryBlobSource, info: [UInt8]) {
        self.id = id
        self.reference = reference
        self.descriptor = descriptor
        self.lazy = lazy
        self.blob = blob
        self.info = info
    }

    /// The current reference count (`use` creates minus `rmdir`s).
    public var referenceCount: Int { references.withLock { $0 } }
}

/// Resolves `(reference, digest)` to served layers, once per key (concurrent lookups share the work), counts
/// references and releases layers whose count drops to zero.
///
/// `digest` is the layer digest (containers/storage 1.43, Podman 4.3) or the TOC digest (containers/storage
/// ≥ 1.54, current CRI-O). Only layers with a `containerd.io/snapshot/stargz/toc.digest` annotation are served:
/// their TOC is checked against it and every chunk against its digest. Others are "not here" at once, so the
/// client pulls them normally.
public final class LayerManager: Sendable {
    let client: RegistryClient
    let options: LayerManagerOptions
    let logger: Logger
    private struct State {
        var layers: [String: StoreLayer] = [:]
        /// The same layers by id: every FUSE operation inside a layer looks its layer up here.
        var byID: [UInt32: StoreLayer] = [:]
        var resolving: [String: Task<StoreLayer, any Error>] = [:]
        var manifests: [String: (image: ResolvedImage, until: ContinuousClock.Instant)] = [:]
        var nextID: UInt32 = 1
    }
    private let state = Mutex(State())
    /// What the store has done, for `/metrics` (give the client ``StoreMetrics/registryMetrics`` of the same).
    public let metrics: StoreMetrics
    private let changed = Mutex<(@Sendable () -> Void)?>(nil)

    /// Called (synchronously) whenever the served layers or their reference counts change.
    public func onChange(_ action: @escaping @Sendable () -> Void) { changed.withLock { $0 = action } }

    private func didChange() { changed.withLock { $0 }?() }

    /// Creates a manager.
    public init(client: RegistryClient, options: LayerManagerOptions, logger: Logger, metrics: StoreMetrics = StoreMetrics()) {
        self.client = client
        self.options = options
        self.logger = logger
        self.metrics = metrics
    }

    static func key(_ ref: Reference, _ digest: Digest) -> String { "\(ref)/\(digest)" }

    /// The most layers of an image resolved ahead of the client's asking.
    static let maxLayersAhead = 32

    /// A layer already resolved, if any.
    public func layer(_ ref: Reference, _ digest: Digest) -> StoreLayer? {
        state.withLock { $0.layers[Self.key(ref, digest)] }
    }

    /// Whether `(ref, digest)` is resolved or being resolved (asked for, or ahead of the ask).
    func isKnown(_ ref: Reference, _ digest: Digest) -> Bool {
        state.withLock { $0.layers[Self.key(ref, digest)] != nil || $0.resolving[Self.key(ref, digest)] != nil }
    }

    /// A layer resolved ahead and not asked for yet (waits for its resolution; nil if there is none).
    func resolvedAhead(_ ref: Reference, _ digest: Digest) async -> StoreLayer? {
        guard let t = state.withLock({ $0.resolving[Self.key(ref, digest)] }) else { return nil }
        return try? await t.value
    }

    /// A layer by its id.
    public func layer(id: UInt32) -> StoreLayer? {
        state.withLock { $0.byID[id] }
    }

    /// Resolves a layer (network: manifest, config, footer and TOC), or returns the one resolved before.
    public func resolve(_ ref: Reference, _ digest: Digest) async throws -> StoreLayer {
        let key = Self.key(ref, digest)
        let (have, pending, _) = resolution(ref, digest, ahead: false)
        if let have { return have }
        do {
            let layer = try await pending!.value  // nil only when `have` is set
            // The first waiter to come back files the layer (and counts it); the others get the same one.
            let (kept, first) = state.withLock { s -> (StoreLayer, Bool) in
                s.resolving[key] = nil
                if let l = s.layers[key] { return (l, false) }
                s.layers[key] = layer
                s.byID[layer.id] = layer
                metrics.layersServed.set(s.layers.count)
                return (layer, true)
            }
            if first {
                didChange()
                metrics.layersResolved.increment()
                // Credentials handed over for the repository the layer is read from are kept while it lives.
                client.credentials.given?.hold(host: kept.blob.reference.registry, repository: kept.blob.reference.repository, by: key)
                kept.lazy.startBackgroundWork()
            }
            return kept
        } catch {
            if state.withLock({ $0.resolving.removeValue(forKey: key) != nil }) {
                metrics.layersRefused.increment()
            }
            throw error
        }
    }

    /// The layer filed for `(ref, digest)`, or else its resolution under way, started now if there is none
    /// (and whether this call started it).
    private func resolution(
        _ ref: Reference, _ digest: Digest, ahead: Bool
    ) -> (filed: StoreLayer?, task: Task<StoreLayer, any Error>?, started: Bool) {
        let key = Self.key(ref, digest)
        return state.withLock { s in
            if let l = s.layers[key] { return (l, nil, false) }
            if let t = s.resolving[key] { return (nil, t, false) }
            let t = Task { try await self.resolveUncached(ref, digest, ahead: ahead) }
            s.resolving[key] = t
            return (nil, t, true)
        }
    }

    private func image(_ ref: Reference) async throws -> ResolvedImage {
        let k = ref.description
        if let c = state.withLock({ s in s.manifests[k].flatMap { $0.until > .now ? $0.image : nil } }) { return c }
        let image = try await client.resolve(ref, platform: options.platform)
        let until = ContinuousClock.now + options.manifestTTL
        state.withLock { $0.manifests[k] = (image, until) }
        return image
    }

    /// Why a registry's error keeps a layer from being served: the image is not there, or it could not be asked.
    static func storeError(_ error: any Error, _ what: String) -> any Error {
        switch error {
        case let e as StoreError: return e
        case is CancellationError: return error
        case let e as RegistryError where e.code == .notFound || e.code == .platformNotFound:
            return StoreError(.notFound, what, cause: e)
        case let e as EStargzError: return StoreError(.refused, what, cause: e)
        default: return StoreError(.resolveFailed, what, cause: error)
        }
    }

    private func resolveUncached(_ ref: Reference, _ digest: Digest, ahead: Bool = false) async throws -> StoreLayer {
        let start = ContinuousClock.now
        let image: ResolvedImage
        do { image = try await self.image(ref) } catch { throw Self.storeError(error, "the manifest of \(ref)") }
        guard let index = image.decoded.layers.firstIndex(where: {
            $0.digest == digest || $0.annotations?[AnnotationKey.tocDigest] == digest.description
        }) else {
            throw StoreError(.notFound, "\(ref) has no layer \(digest)")
        }
        let d = image.decoded.layers[index]
        guard let toc = d.annotations?[AnnotationKey.tocDigest].flatMap(Digest.init) else {
            throw StoreError(.refused, "layer \(d.digest) of \(ref) is not eStargz (no TOC digest annotation)")
        }
        let config = try? JSONSerialization.jsonObject(with: Data(image.config)) as? [String: Any]
        let diffIDs = (config?["rootfs"] as? [String: Any])?["diff_ids"] as? [String] ?? []
        guard diffIDs.count == image.decoded.layers.count else {
            throw StoreError(.refused, "config of \(ref) lists \(diffIDs.count) diff_ids for \(image.decoded.layers.count) layers")
        }
        var o = options.layer
        o.expectedTOCDigest = toc
        // The files of a layer fit in its tar, whose size the converter annotates.
        if let size = d.annotations?[AnnotationKey.uncompressedSize].flatMap(Int64.init) { o.limits.maxUncompressedSize = size }
        // The blob is read where the manifest was found (a mirror, when registries.conf names one).
        let source = RegistryBlobSource(client: client, reference: image.source, digest: d.digest, size: d.size)
        let opening = ContinuousClock.now
        if !ahead { resolveAhead(ref, image, after: index, byTOC: digest == toc && digest != d.digest) }
        let lazy: LazyLayer
        let layerMetrics = metrics.beginLayer(d.digest)
        do { lazy = try await openLazy(source, o, layerMetrics) } catch {
            metrics.endLayer(d.digest)
            throw Self.storeError(error, "the TOC of layer \(d.digest) of \(ref)")
        }
        let opened = ContinuousClock.now
        layerMetrics.record(layerMetrics.mount, since: start)
        let info = Self.info(d, diffID: diffIDs[index], toc: toc, asTOC: digest == toc && digest != d.digest)
        let id = state.withLock { s in
            defer { s.nextID += 1 }
            return s.nextID
        }
        let layer = StoreLayer(id: id, reference: ref, descriptor: d, lazy: lazy, blob: source, info: info)
        logger.info(
            "layer resolved; served lazily with verification of the TOC digest and every chunk digest",
            metadata: [
                "image.ref": "\(ref)", "layer.digest": "\(d.digest)", "toc.digest": "\(toc)",
                "latency": "\((ContinuousClock.now - start).milliseconds)ms",
                "manifest.latency": "\((opening - start).milliseconds)ms",
                "toc.latency": "\((opened - opening).milliseconds)ms",
                "remote-snapshot-prepared": "true", "ahead": "\(ahead)",
            ])
        return layer
    }

    /// Opens a lazy layer from its footer and TOC as kept under the root when they are (checked again as the
    /// registry's would be), else from the registry, keeping what was read.
    private func openLazy(_ source: RegistryBlobSource, _ o: LazyLayerOptions, _ layerMetrics: LayerMetrics) async throws -> LazyLayer {
        let limit = Int(o.limits.maxTOCSize + o.limits.maxTOCSize / 128) + (2 << 20)
        if let dir = options.tailDirectory, let kept = LayerTail.load(directory: dir, digest: source.digest, limit: limit) {
            let opening = OpeningSource(source, kept: kept, recordLimit: limit)
            do {
                let lazy = try await LazyLayer.open(opening, options: o, logger: logger, metrics: layerMetrics)
                _ = opening.finishOpening()
                return lazy
            } catch {
                logger.warning("the footer and TOC kept for a layer do not open it; reading them again", metadata: ["layer.digest": "\(source.digest)", "error": "\(error)"])
                LayerTail.remove(directory: dir, digest: source.digest)
            }
        }
        let opening = OpeningSource(source, kept: nil, recordLimit: limit)
        let lazy = try await LazyLayer.open(opening, options: o, logger: logger, metrics: layerMetrics)
        if let dir = options.tailDirectory, let read = opening.finishOpening() {
            do { try LayerTail.save(read, directory: dir, digest: source.digest) } catch {
                logger.warning("cannot keep a layer's footer and TOC", metadata: ["layer.digest": "\(source.digest)", "error": "\(error)"])
            }
        }
        return lazy
    }

    // MARK: Handover

    /// The layers served now, for a successor (``restore(_:)``). Layers resolved ahead and not asked for yet are
    /// left out: a successor resolves them again when asked.
    public func snapshot() -> (layers: [HandoverState.SavedLayer], nextID: UInt32) {
        state.withLock { s in
            let layers = s.layers.map { key, l in
                HandoverState.SavedLayer(
                    id: l.id, reference: l.reference.description, lookup: String(key.dropFirst(l.reference.description.count + 1)),
                    source: l.blob.reference.description, descriptor: l.descriptor, info: String(decoding: l.info, as: UTF8.self),
                    references: l.referenceCount)
            }
            return (layers.sorted { $0.id < $1.id }, s.nextID)
        }
    }

    /// Serves the layers a predecessor served, with the same slots and reference counts, each re-opened from what
    /// is kept under the root (the registry only for what is not). Returns the layers that could not be opened
    /// (their nodes answer EIO until the client looks them up again).
    public func restore(_ saved: [HandoverState.SavedLayer], nextID: UInt32) async -> [String: any Error] {
        var failed: [String: any Error] = [:]
        for l in saved {
            let key = "\(l.reference)/\(l.lookup)"
            do {
                let ref = try Reference(l.reference)
                let source = try Reference(l.source)
                let d = l.descriptor
                guard let toc = d.annotations?[AnnotationKey.tocDigest].flatMap(Digest.init) else {
                    throw StoreError(.refused, "layer \(d.digest) has no TOC digest annotation")
                }
                var o = options.layer
                o.expectedTOCDigest = toc
                if let size = d.annotations?[AnnotationKey.uncompressedSize].flatMap(Int64.init) { o.limits.maxUncompressedSize = size }
                let blob = RegistryBlobSource(client: client, reference: source, digest: d.digest, size: d.size)
                let layerMetrics = metrics.beginLayer(d.digest)
                let lazy: LazyLayer
                do { lazy = try await openLazy(blob, o, layerMetrics) } catch {
                    metrics.endLayer(d.digest)
                    throw error
                }
                let layer = StoreLayer(id: l.id, reference: ref, descriptor: d, lazy: lazy, blob: blob, info: Array(l.info.utf8))
                layer.references.withLock { $0 = l.references }
                state.withLock { s in
                    s.layers[key] = layer
                    s.byID[layer.id] = layer
                    metrics.layersServed.set(s.layers.count)
                }
                client.credentials.given?.hold(host: source.registry, repository: source.repository, by: key)
                lazy.startBackgroundWork()
            } catch {
                failed[key] = error
            }
        }
        state.withLock { s in s.nextID = max(s.nextID, nextID, (saved.map(\.id).max() ?? 0) + 1) }
        return failed
    }

    /// Starts resolving the image's other eStargz layers, which the client asks for next, one after the other:
    /// their footers and TOCs then come in parallel with this one's instead of a round trip each, later. They
    /// are filed under the key the client uses (layer or TOC digest, like this lookup) and start no background
    /// work until the client asks for them; one the client never asks for is dropped after the manifest TTL.
    ///
    /// At most ``maxLayersAhead`` layers are resolved ahead: the manifest is the image author's, and each TOC
    /// costs a request and memory (Linux overlayfs stacks some 500 layers at most; real images have tens).
    private func resolveAhead(_ ref: Reference, _ image: ResolvedImage, after index: Int, byTOC: Bool) {
        let all = image.decoded.layers
        let order = Array(all.indices.dropFirst(index + 1)) + Array(all.indices.prefix(index))  // the next ones first
        for other in order.prefix(Self.maxLayersAhead).map({ all[$0] }) {
            guard let toc = other.annotations?[AnnotationKey.tocDigest].flatMap(Digest.init) else { continue }
            let digest = byTOC ? toc : other.digest
            let key = Self.key(ref, digest)
            let (_, task, isNew) = resolution(ref, digest, ahead: true)
            guard isNew, let started = task else { continue }
            let ttl = options.manifestTTL
            Task { [self] in
                try? await Task.sleep(for: ttl)
                let unclaimed = state.withLock { s in
                    guard s.resolving[key] == started else { return false }
                    s.resolving[key] = nil
                    return true
                }
                // A resolve() that took the task before it was dropped files the layer itself: it is not retired.
                if unclaimed, let layer = try? await started.value, state.withLock({ $0.byID[layer.id] == nil }) {
                    await retire(layer)
                    logger.debug("dropped a layer resolved ahead that was never asked for", metadata: ["image.ref": "\(ref)", "layer.digest": "\(digest)"])
                }
            }
        }
    }

    /// The `info` JSON containers/storage reads (one line): the c/storage 1.43 keys, plus `toc-digest` and the
    /// expected DiffID flag when the layer was asked for by TOC digest (c/storage ≥ 1.54).
    static func info(_ d: Descriptor, diffID: String, toc: Digest, asTOC: Bool) -> [UInt8] {
        var fields: [String] = [
            "\"compressed-diff-digest\":\"\(d.digest)\"", "\"compressed-size\":\(d.size)", "\"diff-digest\":\"\(diffID)\"",
        ]
        if let size = d.annotations?[AnnotationKey.uncompressedSize].flatMap(Int64.init) { fields.append("\"diff-size\":\(size)") }
        fields.append("\"compression\":\(d.mediaType.hasSuffix("+zstd") ? 4 : 2)")
        if asTOC {
            fields.append("\"toc-digest\":\"\(toc)\"")
            fields.append("\"flags\":{\"expected-layer-diffid\":\"\(diffID)\"}")
        }
        return Array(("{" + fields.joined(separator: ",") + "}\n").utf8)
    }

    /// `use`: one more reference.
    public func use(_ layer: StoreLayer) {
        let n = layer.references.withLock { c in
            c += 1
            return c
        }
        didChange()
        logger.info("layer is marked as USING", metadata: ["image.ref": "\(layer.reference)", "layer.digest": "\(layer.descriptor.digest)", "refcounter": "\(n)"])
    }

    /// `rmdir`: one reference less; at zero the layer is released (background work stopped, memory freed).
    /// False when the layer is not known (a restart lost the count).
    public func release(_ ref: Reference, _ digest: Digest) -> Bool {
        let key = Self.key(ref, digest)
        guard let layer = state.withLock({ $0.layers[key] }) else {
            // A layer of a previous run (credentials it held are in the file): it is not used any more either.
            client.credentials.given?.release(holder: key)
            return false
        }
        let n = layer.references.withLock { c in
            c -= 1
            return c
        }
        defer { didChange() }
        logger.info("layer is marked as RELEASE", metadata: ["image.ref": "\(ref)", "layer.digest": "\(digest)", "refcounter": "\(n)"])
        if n <= 0 {
            state.withLock { s in
                s.layers[key] = nil
                s.byID[layer.id] = nil
                metrics.layersServed.set(s.layers.count)
            }
            // Called on a FUSE reader thread, which must not wait: the layer's tasks are cancelled and awaited
            // in a task of their own.
            Task { await retire(layer) }
            client.credentials.given?.release(holder: key)
            metrics.layersReleased.increment()
            logger.info("layer released", metadata: ["image.ref": "\(ref)", "layer.digest": "\(digest)"])
        }
        return true
    }

    /// Stops every layer's fetches and background work, and waits for them; the layers are forgotten.
    public func close() async {
        let layers = state.withLock { s in
            defer {
                s.layers = [:]
                s.byID = [:]
                metrics.layersServed.set(0)
            }
            return Array(s.layers.values)
        }
        for l in layers { await retire(l) }
    }

    /// Stops a layer's work and ends its series in the metrics, once (a release after ``close()``, or a layer
    /// resolved ahead that is dropped as it is claimed, comes here a second time).
    private func retire(_ layer: StoreLayer) async {
        let first = layer.retired.withLock { r in
            defer { r = true }
            return !r
        }
        guard first else { return }
        await layer.lazy.close()
        metrics.endLayer(layer.descriptor.digest)
    }
}


