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

    @Test("registries.conf as an ImageDigestMirrorSet with NeverContactSource writes it: the layer is resolved and read through the mirror; the blocked source gets no request")
    func blockedSourceMirror() async throws {
        let mirror = try LocalRegistry.start()
        defer { mirror.stop() }
        let source = try LocalRegistry.start()
        defer { source.stop() }
        let proxy = try FaultProxy(upstream: source.host, [])  // counts every request the source would get
        defer { proxy.stop() }
        let direct = registryClient(mirror.host)
        let blob = try fixture("kitchen-sink.esgz")
        let layer = try #require(try await TestImage.pushEStargz(direct, try Reference("\(mirror.host)/mirrored/ns/app:1"), blobs: [blob]).first)
        let pushed = try await direct.resolve(try Reference("\(mirror.host)/mirrored/ns/app:1"))
        try await direct.shutdown()
        let conf = """
            [[registry]]
              prefix = ""
              location = "\(proxy.host)/ns"
              blocked = true
              [[registry.mirror]]
                location = "\(mirror.host)/mirrored/ns"
                pull-from-mirror = "digest-only"
            """
        var configuration = RegistryConfiguration(
            hosts: [mirror.host: HostConfiguration(insecure: true), proxy.host: HostConfiguration(insecure: true)], maxRetries: 0)
        configuration.rules = try RegistriesConf.parse(conf, path: "99-idms.conf").rules
        let client = RegistryClient(configuration: configuration, credentials: CredentialStore(files: []))
        let manager = LayerManager(
            client: client, options: LayerManagerOptions(layer: LazyLayerOptions(prefetch: false, backgroundFetch: false)),
            logger: Logger(label: "test"))
        let byDigest = try Reference("\(proxy.host)/ns/app@\(pushed.manifest.descriptor.digest)")
        let served = try await manager.resolve(byDigest, layer.digest)
        #expect(served.blob.reference.registry == mirror.host, "read from the mirror")
        #expect(try await served.blob.read([0..<4096]) == [Array(blob[0..<4096])])
        // A tag: the mirror serves digests only, and the source is blocked.
        do {
            _ = try await manager.resolve(try Reference("\(proxy.host)/ns/app:1"), layer.digest)
            Issue.record("resolved a tag from a blocked source")
        } catch {
            #expect("\(error)".contains("blocks"), "\(error)")
        }
        await manager.close()
        try await client.shutdown()
        #expect(try proxy.stats()["requests"] == 0, "the blocked source was contacted")
    }
}
