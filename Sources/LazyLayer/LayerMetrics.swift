// SPDX-License-Identifier: Apache-2.0
public import CoreMetrics

/// What a lazy layer measures, through swift-metrics (the store exports them at `/metrics`).
///
/// Upstream's per-layer series, under its names and labels (`operation_type`, `layer`: the layer digest):
/// `stargz_fs_operation_duration_milliseconds` (`mount`; opening: `stargz_toc_get`, `stargz_toc_json_deserialize`; each
/// range request: `remote_registry_get`; `prefetch_total`, `background_fetch_total`),
/// `stargz_fs_operation_duration_microseconds` (`read_on_demand` for every read, `node_readdir`),
/// `stargz_fs_operation_count` (`on_demand_read_access_count`, `on_demand_remote_registry_fetch_count`) and
/// `stargz_fs_bytes_served` (`on_demand_bytes_served`, `on_demand_bytes_fetched`). Then totals over all layers,
/// ours: chunk fetches, bytes, verification failures, and where each chunk a read needed came from (memory,
/// disk, or a fetch).
///
/// The per-layer series are the layer's to end (``destroy()``) when it is released; the totals stay.
public struct LayerMetrics: Sendable {
    /// The label names and values of upstream's series (the store's histograms' buckets are set by name).
    public enum Name {
        public static let milliseconds = "stargz_fs_operation_duration_milliseconds"
        public static let microseconds = "stargz_fs_operation_duration_microseconds"
        public static let count = "stargz_fs_operation_count"
        public static let bytes = "stargz_fs_bytes_served"
    }

    /// `mount`: resolving the layer (manifest, footer, TOC), which the store measures.
    public let mount: Recorder
    let tocGet, tocParse, registryGet, prefetch, backgroundFetch: Recorder
    let readOnDemand, readdir: Recorder
    let readCount, fetchCount: Counter
    let bytesServed, bytesFetched: Meter
    let fetchRequests, fetchedBytes, chunksFetched, verificationFailures: Counter
    let memoryHits, diskHits, misses: Counter

    /// The metrics of layer `layer` (its digest), made by `factory`.
    public init(layer: String, factory: any MetricsFactory = MetricsSystem.factory) {
        func op(_ name: String, _ operation: String) -> [(String, String)] { [("operation_type", operation), ("layer", layer)] }
        // Names and labels as upstream's; the histograms' buckets are the exporter's to set (by name).
        func ms(_ operation: String) -> Recorder {
            Recorder(label: Name.milliseconds, dimensions: op(Name.milliseconds, operation), aggregate: true, factory: factory)
        }
        func us(_ operation: String) -> Recorder {
            Recorder(label: Name.microseconds, dimensions: op(Name.microseconds, operation), aggregate: true, factory: factory)
        }
        mount = ms("mount")
        tocGet = ms("stargz_toc_get")
        tocParse = ms("stargz_toc_json_deserialize")
        registryGet = ms("remote_registry_get")
        prefetch = ms("prefetch_total")
        backgroundFetch = ms("background_fetch_total")
        readOnDemand = us("read_on_demand")
        readdir = us("node_readdir")
        readCount = Counter(label: Name.count, dimensions: op(Name.count, "on_demand_read_access_count"), factory: factory)
        fetchCount = Counter(label: Name.count, dimensions: op(Name.count, "on_demand_remote_registry_fetch_count"), factory: factory)
        bytesServed = Meter(label: Name.bytes, dimensions: op(Name.bytes, "on_demand_bytes_served"), factory: factory)
        bytesFetched = Meter(label: Name.bytes, dimensions: op(Name.bytes, "on_demand_bytes_fetched"), factory: factory)
        fetchRequests = Counter(label: "stargz_fs_fetch_requests_total", factory: factory)
        fetchedBytes = Counter(label: "stargz_fs_fetched_bytes_total", factory: factory)
        chunksFetched = Counter(label: "stargz_fs_chunks_fetched_total", factory: factory)
        verificationFailures = Counter(label: "stargz_fs_verification_failures_total", factory: factory)
        memoryHits = Counter(label: "stargz_fs_chunk_lookups_total", dimensions: [("tier", "memory")], factory: factory)
        diskHits = Counter(label: "stargz_fs_chunk_lookups_total", dimensions: [("tier", "disk")], factory: factory)
        misses = Counter(label: "stargz_fs_chunk_lookups_total", dimensions: [("tier", "fetch")], factory: factory)
    }

    /// Metrics that go nowhere.
    public static let none = LayerMetrics(layer: "", factory: NOOPMetricsHandler.instance)

    /// Ends the layer's own series (the totals over all layers stay).
    public func destroy() {
        for r in [mount, tocGet, tocParse, registryGet, prefetch, backgroundFetch, readOnDemand, readdir] { r.destroy() }
        for c in [readCount, fetchCount] { c.destroy() }
        for m in [bytesServed, bytesFetched] { m.destroy() }
    }

    /// Records the time since `start` in `perSecond`ths of a second (milliseconds by default; 1e6 for the
    /// microsecond histogram).
    public func record(_ r: Recorder, since start: ContinuousClock.Instant, perSecond: Double = 1e3) {
        let d = (ContinuousClock.now - start).components
        r.record(Double(d.seconds) * perSecond + Double(d.attoseconds) * perSecond / 1e18)
    }

    /// Records the time since `start` in microseconds.
    func recordMicroseconds(_ r: Recorder, since start: ContinuousClock.Instant) { record(r, since: start, perSecond: 1e6) }
}
