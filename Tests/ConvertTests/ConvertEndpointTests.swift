// SPDX-License-Identifier: Apache-2.0
import Convert
import EStargz
import Foundation
import OCI
import Registry
import Synchronization
import TestSupport
import Testing

/// Conversion between registries and OCI image layouts, and of multi-platform indexes.
@Suite("Image conversion: OCI layouts and indexes (real docker-registry, skopeo)")
struct ConvertEndpointTests {
    func client(_ registry: LocalRegistry) -> RegistryClient {
        RegistryClient(configuration: RegistryConfiguration(
            hosts: [registry.host: HostConfiguration(insecure: true)], maxRetries: 2, retryBaseDelay: .milliseconds(10)))
    }

    /// Checks every layer of the layout's image with the reference implementation.
    func verifyLayout(_ layout: OCILayoutImage, tars: [[UInt8]], dir: String) async throws {
        let m = try await layout.manifest(nil).manifest()
        #expect(m.layers.count == tars.count)
        for (i, l) in m.layers.enumerated() {
            #expect(l.annotations?[AnnotationKey.tocDigest] != nil)
            try Data(tars[i]).write(to: URL(fileURLWithPath: dir + "/tar\(i)"))
            let v = try Refgen.verify(blob: layout.blobPath(l.digest), tar: dir + "/tar\(i)")
            #expect(v.status == 0, "refgen: \(v.output)")
        }
    }

    @Test("oci:DIR:TAG written by skopeo converts to a layout skopeo can push; registry ↔ layout both ways; re-run is a no-op")
    func ociLayout() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let c = client(registry)
        let plain = try Reference("\(registry.host)/layout/app:1")
        let tars = [SampleLayer.tar(), TestImage.tar([("etc/motd", Array("layout\n".utf8))])]
        try await TestImage.push(c, plain, layers: tars)
        try await withTemporaryDirectory("convert") { dir in
            // skopeo writes the source layout: our reader meets another tool's layout.
            try run("/usr/bin/skopeo", ["copy", "--src-tls-verify=false", "docker://\(plain)", "oci:\(dir)/src:plain"])
            let converter = ImageConverter(client: c)
            let src = try #require(OCILayoutImage(parsing: "oci:\(dir)/src:plain"))
            let dst = try #require(OCILayoutImage(parsing: "oci:\(dir)/out:esgz"))
            let report = try await converter.convert(from: src, to: dst)
            #expect(!report.alreadyConverted)
            try await verifyLayout(dst, tars: tars, dir: dir)
            let again = try await converter.convert(from: dst, to: dst)
            #expect(again.alreadyConverted)

            // skopeo reads our layout and pushes it; the registry has the eStargz image with its annotations.
            let pushed = try Reference("\(registry.host)/layout/app:skopeo")
            try run("/usr/bin/skopeo", ["copy", "--dest-tls-verify=false", "oci:\(dir)/out:esgz", "docker://\(pushed)"])
            let image = try await c.resolve(pushed)
            #expect(image.decoded.layers.allSatisfy { $0.annotations?[AnnotationKey.tocDigest] != nil })

            // Layout → registry, and registry → layout.
            let toRegistry = try Reference("\(registry.host)/layout/app:esgz")
            _ = try await converter.convert(from: src, to: RegistryImage(client: c, reference: toRegistry))
            let r = try await c.resolve(toRegistry)
            #expect(r.decoded.layers.map(\.digest) == image.decoded.layers.map(\.digest))
            let back = OCILayoutImage(directory: dir + "/back", tag: "v1")
            _ = try await converter.convert(from: RegistryImage(client: c, reference: plain), to: back)
            try await verifyLayout(back, tars: tars, dir: dir)

            // A missing tag names itself and the tags there are.
            do {
                _ = try await converter.convert(from: OCILayoutImage(directory: dir + "/src", tag: "nope"), to: back)
                Issue.record("converted a missing tag")
            } catch let e as RegistryError {
                #expect(e.code == .notFound)
                #expect(e.message.contains("nope") && e.message.contains("plain"))
            }
        }
        try await c.shutdown()
    }

    @Test("--all-platforms: every platform converted, a shared layer converted once, an OCI index pushed")
    func allPlatforms() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let c = client(registry)
        let shared = SampleLayer.tar()
        let amd = TestImage.tar([("etc/arch", Array("amd64\n".utf8))])
        let arm = TestImage.tar([("etc/arch", Array("arm64\n".utf8))])
        let platforms = [Platform(architecture: "amd64", os: "linux"), Platform(architecture: "arm64", os: "linux", variant: "v8")]
        var entries: [Descriptor] = []
        for (p, own) in zip(platforms, [amd, arm]) {
            let ref = try Reference("\(registry.host)/multi/app:\(p.architecture)")
            let digest = try await TestImage.push(c, ref, layers: [shared, own], platform: p)
            let m = try await c.fetchManifest(ref)
            entries.append(Descriptor(mediaType: MediaType.ociManifest, digest: digest, size: m.descriptor.size, platform: p))
        }
        let src = try Reference("\(registry.host)/multi/app:1")
        let indexBytes = Array(try JSONEncoder().encode(Index(manifests: entries)))
        try await c.pushManifest(src, bytes: indexBytes, mediaType: MediaType.ociIndex)

        let dst = try Reference("\(registry.host)/multi/app:1-esgz")
        let converting = Mutex<[Digest: Int]>([:])
        let report = try await ImageConverter(client: c).convert(
            from: src, to: dst, options: ImageConvertOptions(allPlatforms: true)
        ) { event in
            if case .layer(_, let d, _, .converting) = event { converting.withLock { $0[d, default: 0] += 1 } }
        }
        #expect(report.pushed.mediaType == MediaType.ociIndex)
        let counts = converting.withLock { $0 }
        #expect(counts.count == 3, "three distinct layers: \(counts)")
        #expect(counts.values.allSatisfy { $0 == 1 })
        let index = try await c.fetchManifest(dst).index()
        #expect(index.manifests.compactMap(\.platform) == platforms)
        var firstLayers: [Digest] = []
        for (m, p) in zip(index.manifests, platforms) {
            let image = try await c.resolve(dst, platform: p)
            #expect(image.manifest.descriptor.digest == m.digest)
            #expect(image.decoded.layers.allSatisfy { $0.annotations?[AnnotationKey.tocDigest] != nil })
            firstLayers.append(image.decoded.layers[0].digest)
        }
        #expect(firstLayers[0] == firstLayers[1])
        let again = try await ImageConverter(client: c).convert(from: dst, to: dst, options: ImageConvertOptions(allPlatforms: true))
        #expect(again.alreadyConverted)
        try await c.shutdown()
    }
}
