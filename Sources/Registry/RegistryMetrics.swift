// SPDX-License-Identifier: Apache-2.0
import AsyncHTTPClient
public import CoreMetrics
import NIOCore

/// A failed attempt worth another one, by what went wrong: what `stargz_registry_faults_total` counts by `kind`.
public enum RegistryFault: String, CaseIterable, Sendable {
    /// A 500, 502, 503 or 504.
    case serverError = "status_5xx"
    /// A 429.
    case rateLimited = "status_429"
    /// No reply, or no more of the body, within the timeout.
    case timeout
    /// The connection refused, reset or closed before the reply was whole.
    case connection
    /// A reply that does not fit what was asked (a short body, a wrong `Content-Range`).
    case badReply = "bad_reply"
    /// A blob storage URL (a registry's redirect) refused with a 4xx: expired or revoked; the registry is asked again.
    case expiredURL = "expired_url"

    /// The kind of a transport error, or of a ``RegistryError`` a reply was judged by.
    public init(classifying error: any Error) {
        var e: any Error = error
        for _ in 0..<8 {  // causes nest a few deep at most; the bound only guards against a cycle
            switch e {
            case let r as RegistryError:
                if r.code == .badResponse && r.cause == nil { self = .badReply; return }
                if r.status == 429 { self = .rateLimited; return }
                if let s = r.status, (500..<600).contains(s) { self = .serverError; return }
                guard let cause = r.cause else { self = .connection; return }
                e = cause
            case let h as HTTPClientError:
                self = [.deadlineExceeded, .readTimeout, .connectTimeout, .writeTimeout].contains(h) ? .timeout : .connection
                return
            case let c as ChannelError:
                if case .connectTimeout = c { self = .timeout } else { self = .connection }
                return
            default:
                self = .connection
                return
            }
        }
        self = .connection
    }
}

/// What a ``RegistryClient`` counts, through swift-metrics (the store exports them at `/metrics`): every attempt
/// sent, the failed attempts worth a retry (faults) by kind, the retries made and the calls given up once their
/// retries were spent.
public struct RegistryMetrics: Sendable {
    /// `stargz_registry_requests_total`: HTTP requests sent (every attempt, redirects and auth rounds included).
    let requests: Counter
    /// `stargz_registry_retries_total`.
    let retries: Counter
    /// `stargz_registry_failures_total`: calls that failed after their last retry.
    let exhausted: Counter
    private let faults: [RegistryFault: Counter]

    /// The client's metrics, made by `factory`.
    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        requests = Counter(label: "stargz_registry_requests_total", factory: factory)
        retries = Counter(label: "stargz_registry_retries_total", factory: factory)
        exhausted = Counter(label: "stargz_registry_failures_total", factory: factory)
        faults = Dictionary(
            uniqueKeysWithValues: RegistryFault.allCases.map {
                ($0, Counter(label: "stargz_registry_faults_total", dimensions: [("kind", $0.rawValue)], factory: factory))
            })
    }

    /// Counts a fault.
    func fault(_ kind: RegistryFault) { faults[kind]?.increment() }
}
