// SPDX-License-Identifier: Apache-2.0
import EStargz
import Foundation
import OCI
import Registry
import TestSupport
import Testing

/// A real registry behind a proxy that misbehaves on demand.
@Suite("Registry faults (proxy in front of a real docker-registry)")
struct FaultTests {
    struct Setup {
        var registry: LocalRegistry
        var ref: Reference
        var layer: Descriptor
        var blob: [UInt8]
    }

    /// A registry holding one image whose layer is a 300 kB blob.
    func setup() async throws -> Setup {
        let registry = try LocalRegistry.start()
        let c = client(registry.host)
        let ref = try Reference("\(registry.host)/faults/img:v1")
        try await TestImage.push(c, ref, layers: [SampleLayer.tar()])
        let image = try await c.resolve(ref)
        let blob = try await c.fetchBlob(ref, image.decoded.layers[0])
        try await c.shutdown()
        return Setup(registry: registry, ref: ref, layer: image.decoded.layers[0], blob: blob)
    }

    func client(_ host: String, retries: Int = 3) -> RegistryClient {
        RegistryClient(configuration: RegistryConfiguration(
            hosts: [host: HostConfiguration(insecure: true)], maxRetries: retries, retryBaseDelay: .milliseconds(5)))
    }

    /// Runs `body` with a client, shutting it down on every path.
    func withClient(_ host: String, retries: Int = 3, _ body: (RegistryClient) async throws -> Void) async throws {
        let c = client(host, retries: retries)
        do {
            try await body(c)
        } catch {
            try? await c.shutdown()
            throw error
        }
        try await c.shutdown()
    }

    func via(_ proxy: FaultProxy, _ ref: Reference) -> Reference {
        Reference(registry: proxy.host, repository: ref.repository, tag: ref.tag)
    }

    @Test("500 and 429 are retried; the bytes are right", arguments: [500, 429, 503])
    func retriesStatus(_ status: Int) async throws {
        let s = try await setup()
        defer { s.registry.stop() }
        let proxy = try FaultProxy(upstream: s.registry.host, ["--match", "/blobs/", "--fail-status", "\(status)", "--fail-times", "2"])
        try await withClient(proxy.host) { (c: RegistryClient) async throws in
            let got = try await c.fetchBlob(via(proxy, s.ref), s.layer)
            #expect(got == s.blob)
            #expect(try proxy.stats()["faults"] == 2)
        }
    }

    @Test("after the configured retries, a clear error with the status and the registry's code")
    func givesUp() async throws {
        let s = try await setup()
        defer { s.registry.stop() }
        let proxy = try FaultProxy(upstream: s.registry.host, ["--match", "/manifests/", "--fail-status", "500", "--fail-times", "100"])
        try await withClient(proxy.host, retries: 2) { (c: RegistryClient) async throws in
            do {
                _ = try await c.resolve(via(proxy, s.ref))
                Issue.record("resolved through a broken registry")
            } catch let e as RegistryError {
                #expect(e.code == .serverError)
                #expect(e.status == 500)
                #expect(e.message.contains("INJECTED"))
            }
            #expect(try proxy.stats()["faults"] == 3)
        }
    }

    @Test("a response cut mid-body is resumed with a range request; the digest still checks")
    func cutMidBody() async throws {
        let s = try await setup()
        defer { s.registry.stop() }
        let proxy = try FaultProxy(upstream: s.registry.host, ["--match", "/blobs/", "--cut-after", "50000", "--cut-times", "2"])
        try await withClient(proxy.host) { (c: RegistryClient) async throws in
            let got = try await c.fetchBlob(via(proxy, s.ref), s.layer)
            #expect(got == s.blob)
            #expect(try proxy.stats()["faults"] == 2)
            // A range read cut short is retried, never returned short.
            let r = try await c.readRange(via(proxy, s.ref), s.layer.digest, offset: 5000, length: 200_000)
            #expect(r == Array(s.blob[5000..<205_000]))
            #expect(s.blob.count > 205_000)
        }
    }

    @Test("a registry that ignores ranges: reads still return exactly the requested bytes")
    func ignoresRanges() async throws {
        let s = try await setup()
        defer { s.registry.stop() }
        let proxy = try FaultProxy(upstream: s.registry.host, ["--ignore-range"])
        try await withClient(proxy.host) { (c: RegistryClient) async throws in
            let ref = via(proxy, s.ref)
            #expect(try await c.readRange(ref, s.layer.digest, offset: 777, length: 1234) == Array(s.blob[777..<2011]))
            let many = try await c.readRanges(ref, s.layer.digest, [10..<20, 50_000..<60_000, 0..<1])
            #expect(many == [Array(s.blob[10..<20]), Array(s.blob[50_000..<60_000]), [s.blob[0]]])
        }
    }

    @Test("multi-range reads: parsed from multipart/byteranges, or single ranges after a 400")
    func multiRange() async throws {
        let s = try await setup()
        defer { s.registry.stop() }
        let last = Int64(s.blob.count)
        let ranges: [Range<Int64>] = [0..<100, 4096..<8192, (last - 1)..<last, 200..<300]
        let want = ranges.map { Array(s.blob[Int($0.lowerBound)..<Int($0.upperBound)]) }
        try await withClient(s.registry.host) { (c: RegistryClient) async throws in
            #expect(try await c.readRanges(s.ref, s.layer.digest, ranges) == want)
        }
        let proxy = try FaultProxy(upstream: s.registry.host, ["--refuse-multirange"])
        try await withClient(proxy.host) { (pc: RegistryClient) async throws in
            let a = try await pc.readRanges(via(proxy, s.ref), s.layer.digest, ranges)
            let b = try await pc.readRanges(via(proxy, s.ref), s.layer.digest, ranges)
            #expect(a == want)
            #expect(b == want)
            // The second call went straight to single ranges: only one multi-range request was ever sent.
            #expect(try proxy.stats()["multirange"] == 1)
        }
    }

    @Test("redirects to blob storage are followed, without credentials going along")
    func redirects() async throws {
        let s = try await setup()
        defer { s.registry.stop() }
        let proxy = try FaultProxy(upstream: s.registry.host, ["--redirect-blobs"])
        try await withClient(proxy.host) { (c: RegistryClient) async throws in
            let ref = via(proxy, s.ref)
            let rr = try await c.readRange(ref, s.layer.digest, offset: 9, length: 99)
            #expect(rr == Array(s.blob[9..<108]))
            let fb = try await c.fetchBlob(ref, s.layer)
            #expect(fb == s.blob)
            for off in stride(from: 0, to: 50_000, by: 10_000) {
                #expect(try await c.readRange(ref, s.layer.digest, offset: Int64(off), length: 4096) == Array(s.blob[off..<(off + 4096)]))
            }
            let many = try await c.readRanges(ref, s.layer.digest, [0..<10, 1000..<2000])
            #expect(many == [Array(s.blob[0..<10]), Array(s.blob[1000..<2000])])
            // The storage URL is reused until it expires: one redirect for all eight reads.
            #expect(try proxy.stats()["redirects"] == 1)
        }
    }

    @Test("a redirected URL is reused only while its own expiry allows", arguments: [(-10, 4), (3600, 1)])
    func redirectExpiry(_ expires: Int, _ redirects: Int) async throws {
        let s = try await setup()
        defer { s.registry.stop() }
        let proxy = try FaultProxy(upstream: s.registry.host, ["--redirect-blobs", "--redirect-expires", "\(expires)"])
        try await withClient(proxy.host) { (c: RegistryClient) async throws in
            let ref = via(proxy, s.ref)
            for off in [0, 100, 1000, 10_000] {
                #expect(try await c.readRange(ref, s.layer.digest, offset: Int64(off), length: 99) == Array(s.blob[off..<(off + 99)]))
            }
            #expect(try proxy.stats()["redirects"] == redirects)
        }
    }

    @Test("chunked uploads: PATCH chunks then PUT; a 413 to a single PUT falls back to chunks")
    func chunkedUpload() async throws {
        let s = try await setup()
        defer { s.registry.stop() }
        try await withTempDir { dir in
            let path = dir + "/blob"
            var bytes = [UInt8](repeating: 0, count: 300_001)
            for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: i &* 31 &+ i >> 9) }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let d = Descriptor(mediaType: MediaType.ociLayerGzip, digest: Digest.sha256(of: bytes), size: Int64(bytes.count))
            let proxy = try FaultProxy(upstream: s.registry.host, [])
            let chunked = RegistryClient(configuration: RegistryConfiguration(
                hosts: [proxy.host: HostConfiguration(insecure: true)], maxRetries: 2, retryBaseDelay: .milliseconds(5),
                uploadChunkSize: 64 * 1024))
            let ref = Reference(registry: proxy.host, repository: "faults/chunked", tag: "x")
            try await chunked.pushBlob(ref, path: path, descriptor: d)
            #expect(try await chunked.fetchBlob(ref, d) == bytes)
            #expect(try proxy.stats()["PATCH"] == 5)
            try await chunked.shutdown()

            // A registry (or proxy) that refuses a large single PUT with 413.
            var d2 = d
            bytes[7] ^= 0xff
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            d2.digest = Digest.sha256(of: bytes)
            let refusing = try FaultProxy(upstream: s.registry.host, ["--match", "digest=", "--fail-status", "413", "--fail-times", "1"])
            try await withClient(refusing.host) { (c: RegistryClient) async throws in
                let r2 = Reference(registry: refusing.host, repository: "faults/chunked", tag: "y")
                try await c.pushBlob(r2, path: path, descriptor: d2)
                #expect(try await c.fetchBlob(r2, d2) == bytes)
                #expect(try refusing.stats()["faults"] == 1)
                #expect(try refusing.stats()["PATCH"] == 1)
            }
        }
    }

    @Test("a blob whose bytes do not match its digest is an error, not data")
    func corruptBlob() async throws {
        let s = try await setup()
        defer { s.registry.stop() }
        try await withClient(s.registry.host) { (c: RegistryClient) async throws in
            var wrong = s.layer
            wrong.digest = Digest.sha256(of: [1, 2, 3])
            // Ask for the real blob under a digest it does not have: the registry answers 404.
            do {
                _ = try await c.fetchBlob(s.ref, wrong)
                Issue.record("fetched a blob under a wrong digest")
            } catch let e as RegistryError {
                #expect(e.code == .notFound)
            }
            // And a size that does not match is refused.
            var short = s.layer
            short.size -= 1
            await #expect(throws: RegistryError.self) { _ = try await c.fetchBlob(s.ref, short) }
        }
    }
}
