// SPDX-License-Identifier: Apache-2.0
import EStargz
import Foundation
import LazyLayer
import Logging
import OCI
import Registry
@testable import Store
import TestSupport
import Testing

@Suite("Layer manager against a real docker-registry (no kernel)")
struct LayerManagerTests {
    @Test("resolving one layer resolves the image's other eStargz layers ahead, under the key the client uses; they start no background work until asked")
    func resolveAhead() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let client = registryClient(registry.host)
        let ref = try Reference("\(registry.host)/ahead/img:1")
        let blobs = [try fixture("kitchen-sink.esgz"), try fixture("app.prio.esgz"), try fixture("kitchen-sink.chunk64k.esgz")]
        let layers = try await TestImage.pushEStargz(client, ref, blobs: blobs)
        let tocs = try layers.map { try #require($0.annotations?[AnnotationKey.tocDigest].flatMap(Digest.init)) }
        let options = LayerManagerOptions(layer: LazyLayerOptions(prefetch: false, backgroundFetch: false))

        // By layer digest, as Podman 4.3 asks.
        let manager = LayerManager(client: client, options: options, logger: Logger(label: "test"))
        let first = try await manager.resolve(ref, layers[0].digest)
        #expect(first.lazy.backgroundWorkStarted)
        #expect(manager.isKnown(ref, layers[1].digest) && manager.isKnown(ref, layers[2].digest))
        #expect(!manager.isKnown(ref, tocs[1]), "ahead layers are filed under the key form the client used")
        let ahead = try #require(await manager.resolvedAhead(ref, layers[2].digest))
        #expect(!ahead.lazy.backgroundWorkStarted, "no background work for a layer nobody asked for")
        let second = try await manager.resolve(ref, layers[2].digest)
        #expect(second === ahead && second.lazy.backgroundWorkStarted)
        #expect(manager.metrics.render().contains("stargz_store_layers_resolved_total 2"))
        await manager.close()

        // By TOC digest, as containers/storage ≥ 1.54 asks.
        let byTOC = LayerManager(client: client, options: options, logger: Logger(label: "test"))
        _ = try await byTOC.resolve(ref, tocs[1])
        #expect(byTOC.isKnown(ref, tocs[0]) && byTOC.isKnown(ref, tocs[2]))
        #expect(!byTOC.isKnown(ref, layers[0].digest))
        let viaTOC = try await byTOC.resolve(ref, tocs[0])
        #expect(String(decoding: viaTOC.info, as: UTF8.self).contains("\"toc-digest\""))
        await byTOC.close()
        try await client.shutdown()
    }
}
