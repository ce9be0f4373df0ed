// SPDX-License-Identifier: Apache-2.0
import AsyncHTTPClient
import EStargz
import Foundation
import LazyLayer
import Logging
import OCI
import Registry
@testable import Store
import TestSupport
import Testing

/// The exposition's lines that start with `prefix`.
private func lines(_ text: String, _ prefix: String) -> [Substring] {
    text.split(separator: "\n").filter { $0.hasPrefix(prefix) }
}

@Suite("/metrics: swift-metrics into swift-prometheus, upstream's names (real docker-registry, no kernel)")
struct MetricsTests {
    @Test("upstream's series: names, labels, help, and its buckets (1…16384 ms, 1…1024 µs); a layer's series end with its last user")
    func upstreamSeries() throws {
        let metrics = StoreMetrics()
        let digest = Digest.sha256(of: Array("layer".utf8))
        let a = metrics.beginLayer(digest)
        let b = metrics.beginLayer(digest)  // the same layer under a second image: one series
        a.record(a.mount, since: .now - .milliseconds(3))
        b.record(b.mount, since: .now - .milliseconds(3000))
        let text = metrics.render()
        let name = LayerMetrics.Name.milliseconds
        #expect(text.contains("# TYPE \(name) histogram"))
        #expect(text.contains("# HELP \(name) Latency in milliseconds"))
        let buckets = lines(text, "\(name)_bucket{operation_type=\"mount\",layer=\"\(digest)\"")
        #expect(buckets.count == 16, "15 buckets and +Inf: \(buckets)")
        #expect(buckets.first?.contains("le=\"1.0\"") == true && buckets.dropLast().last?.contains("le=\"16384.0\"") == true)
        // 3 ms is in le=4 and up; 3000 ms in le=4096 and up.
        #expect(buckets.first { $0.contains("le=\"2.0\"") }?.hasSuffix(" 0") == true)
        #expect(buckets.first { $0.contains("le=\"4.0\"") }?.hasSuffix(" 1") == true)
        #expect(buckets.first { $0.contains("le=\"4096.0\"") }?.hasSuffix(" 2") == true)
        #expect(lines(text, "\(LayerMetrics.Name.microseconds)_bucket{operation_type=\"read_on_demand\"").count == 12)
        for series in [
            "stargz_fs_operation_count{operation_type=\"on_demand_read_access_count\"",
            "stargz_fs_bytes_served{operation_type=\"on_demand_bytes_served\"", "stargz_fs_chunk_lookups_total{tier=\"disk\"}",
            "stargz_store_layers_served",
        ] {
            #expect(!lines(text, series).isEmpty, "\(series) is missing")
        }
        metrics.endLayer(digest)
        #expect(metrics.render().contains("layer=\"\(digest)\""), "still used by the other image")
        metrics.endLayer(digest)
        let after = metrics.render()
        #expect(!after.contains("layer=\"\(digest)\""), "the layer's series end with its last user")
        #expect(after.contains("stargz_fs_chunk_lookups_total{tier=\"disk\"}"), "the totals stay")
    }

    @Test("faults are counted by kind: timeouts, connections cut, replies that do not fit, statuses")
    func faultKinds() {
        #expect(RegistryFault(classifying: HTTPClientError.readTimeout) == .timeout)
        #expect(RegistryFault(classifying: HTTPClientError.deadlineExceeded) == .timeout)
        #expect(RegistryFault(classifying: HTTPClientError.remoteConnectionClosed) == .connection)
        #expect(RegistryFault(classifying: RegistryError(.badResponse, "ended after 3 bytes")) == .badReply)
        #expect(RegistryFault(classifying: RegistryError(.transport, "GET", cause: HTTPClientError.readTimeout)) == .timeout)
        #expect(RegistryFault(classifying: RegistryError(.serverError, "503", status: 503)) == .serverError)
        #expect(RegistryFault(classifying: RegistryError(.tooManyRequests, "429", status: 429)) == .rateLimited)
        #expect(RegistryFault(classifying: POSIXError(.ECONNRESET)) == .connection)
    }

    @Test("a client's 5xx and retries are counted: one 503 answered, then the blob")
    func retriesCounted() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let (layer, _) = try await pushLayer(registry)
        let proxy = try FaultProxy(upstream: registry.host, ["--fail-status", "503", "--fail-times", "1", "--match", "/blobs/"])
        defer { proxy.stop() }
        let (client, metrics) = client(proxy)
        let proxied = try Reference("\(proxy.host)/metrics/app:1")
        let bytes = try await client.readRange(proxied, layer.digest, offset: 0, length: 100)
        try await client.shutdown()
        #expect(bytes.count == 100)
        let m = Exposition(metrics.render())
        #expect(m.fault(.serverError) == 1)
        #expect(m["stargz_registry_retries_total"] == 1)
        #expect(m["stargz_registry_failures_total"] == 0)
        #expect(m["stargz_registry_requests_total"] == (try proxy.stats()["requests"] ?? -1))
    }

    /// An eStargz layer pushed to `registry` as `metrics/app:1`, and its blob.
    private func pushLayer(_ registry: LocalRegistry) async throws -> (Descriptor, [UInt8]) {
        let direct = registryClient(registry.host)
        let blob = try fixture("kitchen-sink.esgz")
        let layers = try await TestImage.pushEStargz(direct, try Reference("\(registry.host)/metrics/app:1"), blobs: [blob])
        try await direct.shutdown()
        return (try #require(layers.first), blob)
    }

    /// A client of `proxy` whose metrics go to a store registry of its own.
    private func client(_ proxy: FaultProxy, retries: Int = 3) -> (RegistryClient, StoreMetrics) {
        let metrics = StoreMetrics()
        let client = RegistryClient(
            configuration: RegistryConfiguration(
                hosts: [proxy.host: HostConfiguration(insecure: true)], maxRetries: retries, retryBaseDelay: .milliseconds(1)),
            metrics: metrics.registryMetrics)
        return (client, metrics)
    }

    @Test("a multi-range reply cut mid-body is asked for again: the bytes are right, one connection fault, one retry")
    func multiRangeCut() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let (layer, blob) = try await pushLayer(registry)
        let proxy = try FaultProxy(upstream: registry.host, ["--cut-after", "300", "--cut-times", "1", "--match", "/blobs/"])
        defer { proxy.stop() }
        let (client, metrics) = client(proxy)
        let ranges: [Range<Int64>] = [0..<200, 1000..<3000, 5000..<5100]
        let got = try await client.readRanges(try Reference("\(proxy.host)/metrics/app:1"), layer.digest, ranges)
        try await client.shutdown()
        #expect(got == ranges.map { Array(blob[Int($0.lowerBound)..<Int($0.upperBound)]) })
        let m = Exposition(metrics.render())
        #expect(try proxy.stats()["multirange"] == 2, "asked again as several ranges")
        #expect(m.fault(.connection) + m.fault(.badReply) == 1 && m["stargz_registry_retries_total"] == 1)
    }

    @Test("a storage URL expired when followed sends the client back to the registry, within its retries; then a 403, counted as given up")
    func expiredOnArrival() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let (layer, _) = try await pushLayer(registry)
        let proxy = try FaultProxy(upstream: registry.host, ["--redirect-blobs", "--signed-redirect", "-10"])
        defer { proxy.stop() }
        let (client, metrics) = client(proxy, retries: 2)
        do {
            _ = try await client.readRange(try Reference("\(proxy.host)/metrics/app:1"), layer.digest, offset: 0, length: 100)
            Issue.record("read through an expired URL")
        } catch let e as RegistryError {
            #expect(e.status == 403, "\(e)")
        }
        try await client.shutdown()
        let m = Exposition(metrics.render())
        let stats = try proxy.stats()
        #expect(stats["redirects"] == 3 && stats["signed.expired"] == 3, "one redirect per attempt: \(stats)")
        #expect(m.fault(.expiredURL) == 3 && m["stargz_registry_retries_total"] == 2 && m["stargz_registry_failures_total"] == 1)
    }
}
