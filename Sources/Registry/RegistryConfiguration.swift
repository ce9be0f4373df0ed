// SPDX-License-Identifier: Apache-2.0

/// How to reach one registry host.
public struct HostConfiguration: Sendable, Equatable {
    /// Use plain HTTP (registries.conf `insecure = true`, config.toml mirror `insecure = true`).
    public var insecure: Bool
    /// Mirrors tried in order before the host itself, for pulls.
    public var mirrors: [Mirror]
    /// Extra headers sent with every request to this host.
    public var headers: [String: String]

    /// Creates a host configuration.
    public init(insecure: Bool = false, mirrors: [Mirror] = [], headers: [String: String] = [:]) {
        self.insecure = insecure
        self.mirrors = mirrors
        self.headers = headers
    }
}

/// A pull-through mirror of a registry.
public struct Mirror: Sendable, Equatable {
    /// The mirror host (`mirror.example.com:5000`).
    public var host: String
    /// Use plain HTTP.
    public var insecure: Bool

    /// Creates a mirror.
    public init(host: String, insecure: Bool = false) {
        self.host = host
        self.insecure = insecure
    }
}

/// Settings of a ``RegistryClient``.
public struct RegistryConfiguration: Sendable {
    /// Per-host settings, keyed by `host[:port]`.
    public var hosts: [String: HostConfiguration]
    /// registries.conf's `[[registry]]` entries: mirrors, locations and blocked sources by reference prefix
    /// (``pullSources(_:)``); a host's ``HostConfiguration/mirrors`` apply where no rule matches.
    public var rules: [PullRule] = []
    /// Bound on manifest, token and other small requests (upstream `request_timeout_sec`, 30 s).
    public var requestTimeout: Duration
    /// Bound on a blob or range fetch (upstream `fetching_timeout_sec`, 300 s).
    public var fetchTimeout: Duration
    /// When and how often requests, blob streams, range reads and token fetches are tried again; ``maxRetries``
    /// and ``retryBaseDelay`` are two of its fields.
    public var retryPolicy: RetryPolicy
    /// Retries after connection errors, 429 and 5xx (not 501): ``retryPolicy``'s ``RetryPolicy/maxRetries``.
    public var maxRetries: Int {
        get { retryPolicy.maxRetries }
        set { retryPolicy.maxRetries = newValue }
    }
    /// First backoff delay; it doubles per retry (capped at 10 s, with jitter), or follows `Retry-After` (at most
    /// 30 s): ``retryPolicy``'s ``RetryPolicy/baseDelay``.
    public var retryBaseDelay: Duration {
        get { retryPolicy.baseDelay }
        set { retryPolicy.baseDelay = newValue }
    }
    /// The User-Agent header.
    public var userAgent: String
    /// Blobs larger than this are uploaded in chunks (`PATCH`); nil uploads them with one `PUT`, falling
    /// back to 32 MiB chunks if the registry answers 413 (request entity too large).
    public var uploadChunkSize: Int?
    /// How long a redirected blob URL (blob storage) is reused when it carries no expiry of its own.
    public var redirectLifetime: Duration

    /// Creates a configuration.
    public init(
        hosts: [String: HostConfiguration] = [:], requestTimeout: Duration = .seconds(30),
        fetchTimeout: Duration = .seconds(300), maxRetries: Int = 5, retryBaseDelay: Duration = .milliseconds(200),
        userAgent: String = "stargz-swift/0.1", uploadChunkSize: Int? = nil, redirectLifetime: Duration = .seconds(600)
    ) {
        self.uploadChunkSize = uploadChunkSize.map { max(1, $0) }
        self.redirectLifetime = redirectLifetime
        self.hosts = hosts
        self.requestTimeout = requestTimeout
        self.fetchTimeout = fetchTimeout
        self.retryPolicy = RetryPolicy(maxRetries: maxRetries, baseDelay: retryBaseDelay)
        self.userAgent = userAgent
    }

    /// The settings for `host` (defaults when none are configured).
    public func host(_ host: String) -> HostConfiguration { hosts[host] ?? HostConfiguration() }

    /// The API endpoint for a host: `registry-1.docker.io` stands in for `docker.io`.
    public static func endpoint(for host: String) -> String { host == "docker.io" ? "registry-1.docker.io" : host }
}
