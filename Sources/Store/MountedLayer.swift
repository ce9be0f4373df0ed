// SPDX-License-Identifier: Apache-2.0
import Dispatch
public import FUSE
public import LazyLayer
public import Logging
public import OCI
public import Registry

/// A layer of an image in a registry, mounted lazily: its TOC read, its tree served through FUSE, its
/// chunks fetched on demand (and by prefetch and background fetch).
public final class MountedLayer: Sendable {
    /// The layer.
    public let layer: LazyLayer
    /// The FUSE session serving it.
    public let session: FUSESession
    /// The layer's descriptor.
    public let descriptor: Descriptor

    init(layer: LazyLayer, session: FUSESession, descriptor: Descriptor) {
        self.layer = layer
        self.session = session
        self.descriptor = descriptor
    }

    /// Opens the layer `descriptor` of `reference` and mounts it at `directory`.
    ///
    /// The TOC digest is checked against the layer's `containerd.io/snapshot/stargz/toc.digest` annotation
    /// when it has one. Prefetch and background fetch start after the mount answers.
    public static func mount(
        client: RegistryClient, reference: Reference, descriptor: Descriptor, at directory: String,
        options: LazyLayerOptions = LazyLayerOptions(), fuse: FUSESession.Options = FUSESession.Options(),
        logger: Logger = Logger(label: "stargz.store"), metrics: LayerMetrics = .none
    ) async throws -> MountedLayer {
        var o = options
        if o.expectedTOCDigest == nil, let t = descriptor.annotations?[AnnotationKey.tocDigest] {
            o.expectedTOCDigest = Digest(t)
        }
        let source = RegistryBlobSource(client: client, reference: reference, digest: descriptor.digest, size: descriptor.size)
        let layer = try await LazyLayer.open(source, options: o, logger: logger, metrics: metrics)
        let session = try await runBlocking { try FUSESession.mount(layer, at: directory, options: fuse, logger: logger) }
        layer.startBackgroundWork()
        return MountedLayer(layer: layer, session: session, descriptor: descriptor)
    }

    /// Unmounts (waiting for the FUSE readers to exit, on a Dispatch thread), then stops the layer's fetches and
    /// background work: no read comes to a closed layer.
    public func unmount() async {
        let s = session
        await runBlocking { s.unmount() }
        await layer.close()
    }
}
