// SPDX-License-Identifier: Apache-2.0
public import CoreMetrics
import Foundation
public import LazyLayer
import NIOCore
import NIOHTTP1
import NIOPosix
public import OCI
public import Prometheus
public import Registry
import Synchronization

/// The store's metrics, in one Prometheus registry served at `/metrics`: the store's own counters, the registry
/// client's (``RegistryMetrics``) and the layers' (``LayerMetrics``: upstream's names, labelled by layer), all made
/// through swift-metrics with ``factory``. Nothing is bootstrapped globally, so several stores (tests) keep theirs
/// apart.
public final class StoreMetrics: Sendable {
    /// Where the series live.
    public let registry = PrometheusCollectorRegistry()
    /// Makes swift-metrics' metrics in ``registry``, with their help text and histogram buckets.
    public let factory: any MetricsFactory
    let layersResolved, layersRefused, layersReleased: CoreMetrics.Counter
    let layersServed: CoreMetrics.Meter
    /// Per layer digest: its metrics and the layers using them (a layer shared by two images is one series).
    private let layers = Mutex<[String: (metrics: LayerMetrics, users: Int)]>([:])

    /// Creates the store's registry.
    public init() {
        let factory = PrometheusExporter(registry: registry)
        self.factory = factory
        layersResolved = CoreMetrics.Counter(label: "stargz_store_layers_resolved_total", factory: factory)
        layersRefused = CoreMetrics.Counter(label: "stargz_store_layers_refused_total", factory: factory)
        layersReleased = CoreMetrics.Counter(label: "stargz_store_layers_released_total", factory: factory)
        layersServed = CoreMetrics.Meter(label: "stargz_store_layers_served", factory: factory)
        layersServed.set(0)
    }

    /// The registry client's metrics, in this registry.
    public var registryMetrics: RegistryMetrics { RegistryMetrics(factory: factory) }

    /// The metrics of the layer `digest`, for one more layer (``endLayer(_:)`` when it goes).
    public func beginLayer(_ digest: Digest) -> LayerMetrics {
        layers.withLock { l in
            let key = digest.description
            let m = l[key]?.metrics ?? LayerMetrics(layer: key, factory: factory)
            l[key] = (m, (l[key]?.users ?? 0) + 1)
            return m
        }
    }

    /// One layer of `digest` less; its series end with the last (under the lock, so that a layer of the same
    /// digest beginning meanwhile gets series of its own, not ones about to go).
    public func endLayer(_ digest: Digest) {
        layers.withLock { l in
            let key = digest.description
            guard let e = l[key] else { return }
            if e.users > 1 {
                l[key] = (e.metrics, e.users - 1)
                return
            }
            l[key] = nil
            e.metrics.destroy()
        }
    }

    /// The exposition text (Prometheus' text format 0.0.4).
    public func render() -> String { registry.emitToString() }
}

/// swift-metrics' factory over a ``PrometheusCollectorRegistry``, as swift-prometheus' own, plus what the store
/// needs of it: each series' help text, and the buckets of upstream's histograms (values in their unit, as
/// upstream's: `le="1"` is one millisecond or microsecond).
struct PrometheusExporter: MetricsFactory {
    let registry: PrometheusCollectorRegistry

    static let help: [String: String] = [
        "stargz_store_layers_resolved_total": "Layers resolved and served lazily.",
        "stargz_store_layers_refused_total": "Layers the store did not serve (not eStargz, not verifiable, not found).",
        "stargz_store_layers_released_total": "Layers released after their last reference went away.",
        "stargz_store_layers_served": "Layers served now.",
        "stargz_fs_fetched_bytes_total": "Compressed bytes fetched from registries for chunks.",
        "stargz_fs_fetch_requests_total": "Range requests made for chunks.",
        "stargz_fs_chunks_fetched_total": "Chunks fetched and verified.",
        "stargz_fs_verification_failures_total": "Chunks whose bytes did not match their digest (each is fetched once more, then EIO).",
        "stargz_fs_chunk_lookups_total": "Chunks reads needed, by where they were found: memory, disk, or fetch (not cached).",
        LayerMetrics.Name.milliseconds: "Latency in milliseconds of stargz snapshotter operations. Broken down by operation type and layer sha.",
        LayerMetrics.Name.microseconds: "Latency in microseconds of stargz snapshotter operations. Broken down by operation type and layer sha.",
        LayerMetrics.Name.count: "The count of stargz snapshotter operations. Broken down by operation type and layer sha.",
        LayerMetrics.Name.bytes: "The number of bytes served per stargz snapshotter operations. Broken down by operation type and layer sha.",
        "stargz_registry_requests_total": "HTTP requests sent to registries and blob storage (every attempt).",
        "stargz_registry_faults_total": "Failed attempts worth a retry, by kind (status_5xx, status_429, timeout, connection, bad_reply, expired_url).",
        "stargz_registry_retries_total": "Attempts made again after a fault.",
        "stargz_registry_failures_total": "Registry calls that failed after their last retry.",
    ]

    /// Upstream's buckets: powers of two from 1 to 16384 milliseconds, and from 1 to 1024 microseconds.
    static let buckets: [String: [Double]] = [
        LayerMetrics.Name.milliseconds: (0...14).map { Double(1 << $0) },
        LayerMetrics.Name.microseconds: (0...10).map { Double(1 << $0) },
    ]
    static let defaultBuckets: [Double] = [1, 10, 100, 1000, 10000]

    /// The series' name as given (no namespace or unit added) with its help text.
    static func descriptor(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: help[label] ?? "")
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: Self.descriptor(label), labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: Self.descriptor(label), labels: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return registry.makeGauge(descriptor: Self.descriptor(label), labels: dimensions) }
        return registry.makeValueHistogram(
            descriptor: Self.descriptor(label), labels: dimensions, buckets: Self.buckets[label] ?? Self.defaultBuckets)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: Self.descriptor(label), labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(
            descriptor: Self.descriptor(label), labels: dimensions,
            buckets: (Self.buckets[label] ?? Self.defaultBuckets).map { .milliseconds($0) })
    }

    func destroyCounter(_ handler: any CounterHandler) {
        if let c = handler as? Prometheus.Counter { registry.unregisterCounter(c) }
    }

    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let c = handler as? Prometheus.Counter { registry.unregisterCounter(c) }
    }

    func destroyRecorder(_ handler: any RecorderHandler) {
        switch handler {
        case let g as Prometheus.Gauge: registry.unregisterGauge(g)
        case let h as ValueHistogram: registry.unregisterValueHistogram(h)
        default: break
        }
    }

    func destroyMeter(_ handler: any MeterHandler) {
        if let g = handler as? Prometheus.Gauge { registry.unregisterGauge(g) }
    }

    func destroyTimer(_ handler: any TimerHandler) {
        if let h = handler as? DurationHistogram { registry.unregisterDurationHistogram(h) }
    }
}

/// `GET /metrics` on `metrics_address` (`host:port`), on NIO's event loops.
public final class MetricsServer: Sendable {
    let channel: any Channel

    private init(channel: any Channel) { self.channel = channel }

    /// Binds and serves until ``close()``.
    public static func start(address: String, metrics: StoreMetrics) async throws -> MetricsServer {
        let parts = address.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count >= 2, let port = Int(parts.last!) else {
            throw StoreError(.configuration, "metrics_address \"\(address)\" is not host:port", key: "metrics_address")
        }
        let host = parts.dropLast().joined(separator: ":")
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // A successor binds the same port while its predecessor hands the session over.
            .serverChannelOption(.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1)
            .childChannelInitializer { ch in
                ch.pipeline.configureHTTPServerPipeline().flatMap {
                    ch.pipeline.addHandler(MetricsHandler(metrics: metrics))
                }
            }
            .bind(host: host.isEmpty ? "0.0.0.0" : host, port: port).get()
        return MetricsServer(channel: channel)
    }

    /// The bound port.
    public var port: Int { channel.localAddress?.port ?? 0 }

    /// Stops serving.
    public func close() async { try? await channel.close().get() }
}

final class MetricsHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let metrics: StoreMetrics

    init(metrics: StoreMetrics) { self.metrics = metrics }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return }
        let ok = head.uri == "/metrics" || head.uri.hasPrefix("/metrics?")
        let body = ok ? metrics.render() : "not found\n"
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: ok ? "text/plain; version=0.0.4" : "text/plain")
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: ok ? .ok : .notFound, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        let keepAlive = head.isKeepAlive
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }
}
