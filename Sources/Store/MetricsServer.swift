// SPDX-License-Identifier: Apache-2.0
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Counters of the store, rendered in the Prometheus text format.
public final class StoreMetrics: Sendable {
    private let counters = Mutex<[String: Int64]>([:])
    /// Values computed at scrape time (gauges and totals summed over live layers).
    let live = Mutex<(@Sendable () -> [String: Int64])?>(nil)

    init() {}

    /// Adds to a counter.
    public func add(_ name: String, _ n: Int64 = 1) { counters.withLock { $0[name, default: 0] += n } }

    static let help: [String: (String, String)] = [
        "stargz_store_layers_resolved_total": ("counter", "Layers resolved and served lazily."),
        "stargz_store_layers_refused_total": ("counter", "Layers the store did not serve (not eStargz, not verifiable, not found)."),
        "stargz_store_layers_released_total": ("counter", "Layers released after their last reference went away."),
        "stargz_store_layers_served": ("gauge", "Layers served now."),
        "stargz_fs_fetched_bytes_total": ("counter", "Compressed bytes fetched from registries for chunks."),
        "stargz_fs_fetch_requests_total": ("counter", "Range requests made for chunks."),
        "stargz_fs_chunks_fetched_total": ("counter", "Chunks fetched and verified."),
        "stargz_fs_verification_failures_total": ("counter", "Chunks whose bytes did not match their digest."),
    ]

    /// The exposition text.
    public func render() -> String {
        var values = counters.withLock { $0 }
        if let f = live.withLock({ $0 }) { for (k, v) in f() { values[k, default: 0] += v } }
        var out = ""
        for (name, (type, text)) in Self.help.sorted(by: { $0.key < $1.key }) {
            out += "# HELP \(name) \(text)\n# TYPE \(name) \(type)\n\(name) \(values[name] ?? 0)\n"
        }
        return out
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
