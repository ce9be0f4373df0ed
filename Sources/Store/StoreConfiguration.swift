// SPDX-License-Identifier: Apache-2.0
import Foundation
public import Registry
import TOML

/// The stargz-store config.toml, with upstream's key names and defaults (stargz-store-behaviour.md §2).
public struct StoreConfiguration: Sendable, Equatable {
    /// Every default, in one place.
    public enum Defaults {
        public static let resolveResultEntryTTLSeconds: Int64 = 120
        public static let prefetchSize: Int64 = 0
        public static let maxConcurrency: Int64 = 2
        public static let fetchingTimeoutSeconds: Int64 = 300
        public static let maxRetries: Int64 = 5
        public static let minWaitMilliseconds: Int64 = 30
        public static let memoryCacheMiB: Int64 = 8
        public static let diskCacheMiB: Int64 = 10240
        public static let fuseTimeoutSeconds: Int64 = 1
        public static let fuseReaderThreads: Int64 = 8
        public static let readAroundSize: Int64 = 64 << 10
        public static let silencePeriodMilliseconds: Int64 = 5000
        public static let credentialsDirectory = "/run/stargz-store"
        public static let credentialsTTLSeconds: Int64 = 86400
        public static let crioConfigDirectory = "/etc/crio"
    }

    public var noPrefetch = false
    public var noBackgroundFetch = false
    public var prefetchSize = Defaults.prefetchSize
    public var resolveResultEntryTTLSeconds = Defaults.resolveResultEntryTTLSeconds
    public var maxConcurrency = Defaults.maxConcurrency
    public var disableVerification = false
    public var fetchingTimeoutSeconds = Defaults.fetchingTimeoutSeconds
    public var maxRetries = Defaults.maxRetries
    public var minWaitMilliseconds = Defaults.minWaitMilliseconds
    /// `[directory_cache]`-style bound on the memory cache (our key: `memory_cache_mib`).
    public var memoryCacheMiB = Defaults.memoryCacheMiB
    /// The bound on the chunk cache under `-root` (our key: `disk_cache_mib`; least recently used evicted).
    public var diskCacheMiB = Defaults.diskCacheMiB
    /// How long the kernel keeps names and attributes (upstream `[fuse] attr_timeout` and `entry_timeout`, which
    /// upstream's store ignores for a fixed 1 s; here the smaller of the two applies to both).
    public var fuseAttrTimeoutSeconds = Defaults.fuseTimeoutSeconds
    public var fuseEntryTimeoutSeconds = Defaults.fuseTimeoutSeconds
    /// FUSE reader threads, each on its own cloned /dev/fuse fd (our key: `[fuse] reader_threads`, 2…16).
    public var fuseReaderThreads = Defaults.fuseReaderThreads
    /// An on-demand fetch of a small file also takes its small neighbours within this many compressed bytes
    /// (our key: `read_around_size`; 0: none).
    public var readAroundSize = Defaults.readAroundSize
    /// Quiet after the last on-demand read before background fetching resumes (the key upstream's snapshotter
    /// has, `[background_fetch] silence_period_msec`; upstream's store fixes it at 5 s).
    public var silencePeriodMilliseconds = Defaults.silencePeriodMilliseconds
    /// Where `/metrics` is served (`host:port`; upstream key, which upstream's store ignores). Nil: nowhere.
    public var metricsAddress: String?
    /// `[credentials] dir`: where the credentials stargz-store-helper hands over are kept (a tmpfs: they last until
    /// a reboot; the unit's RuntimeDirectory).
    public var credentialsDirectory = Defaults.credentialsDirectory
    /// `[credentials] ttl_sec`: how long credentials no layer holds are kept after they were last given.
    public var credentialsTTLSeconds = Defaults.credentialsTTLSeconds
    /// `[credentials] crio_config_dir`: where crio.conf and crio.conf.d are (for `global_auth_file`, the node's pull
    /// secret).
    public var crioConfigDirectory = Defaults.crioConfigDirectory
    /// `[[resolver.host."H".mirrors]]`.
    public var hosts: [String: HostConfiguration] = [:]

    /// The defaults.
    public init() {}

    /// Keys read (others warn).
    static let known: Set<String> = [
        "http_cache_type", "filesystem_cache_type", "resolve_result_entry_ttl_sec", "resolve_result_entry", "prefetch_size",
        "prefetch_timeout_sec", "prefetch_async_size", "noprefetch", "no_background_fetch", "debug", "allow_no_verification",
        "disable_verification", "max_concurrency", "no_prometheus", "log_file_access", "metadata_store", "metrics_address",
        "debug_address", "memory_cache_mib", "disk_cache_mib", "blob", "directory_cache", "fuse", "resolver", "kubeconfig_keychain",
        "read_around_size", "background_fetch", "background_fetch.silence_period_msec", "background_fetch.fetch_period_msec",
        "background_fetch.max_queue_size", "background_fetch.emit_metric_period_sec", "fuse.reader_threads", "fuse.passthrough",
        "blob.valid_interval", "blob.check_always", "blob.chunk_size", "blob.fetching_timeout_sec", "blob.force_single_range_mode",
        "blob.prefetch_chunk_size", "blob.max_retries", "blob.min_wait_msec", "blob.max_wait_msec",
        "directory_cache.max_lru_cache_entry", "directory_cache.max_cache_fds", "directory_cache.sync_add",
        "directory_cache.direct", "fuse.attr_timeout", "fuse.entry_timeout", "kubeconfig_keychain.enable_keychain",
        "kubeconfig_keychain.kubeconfig_path", "resolver.host", "credentials", "credentials.dir", "credentials.ttl_sec",
        "credentials.crio_config_dir",
    ]

    /// Parses config.toml text. Returns the configuration and warnings (unknown keys); throws on values of
    /// the wrong type or range, naming every bad key.
    public static func parse(_ text: String, path: String) throws(StoreError) -> (StoreConfiguration, [String]) {
        let root: TOMLTable
        do { root = try TOML.parse(text) } catch { throw StoreError(.configuration, "\(path): \(error)", cause: error) }
        var c = StoreConfiguration()
        var problems: [String] = []
        var badKeys: [String] = []
        var warnings: [String] = []
        for (k, v) in root.entries {
            if case .table(let t) = v, ["blob", "directory_cache", "fuse", "kubeconfig_keychain", "background_fetch", "credentials"].contains(k) {
                for (k2, _) in t.entries where !known.contains("\(k).\(k2)") { warnings.append("unknown key \(k).\(k2)") }
            } else if !known.contains(k) {
                warnings.append("unknown key \(k)")
            }
        }
        func bool(_ t: TOMLTable?, _ key: String, _ name: String, _ into: inout Bool) {
            guard let v = t?[key] else { return }
            if let b = v.boolean { into = b } else { bad(name, "must be true or false, not a \(v.typeName)") }
        }
        func int(_ t: TOMLTable?, _ key: String, _ name: String, min: Int64 = 0, max: Int64 = .max, _ into: inout Int64) {
            guard let v = t?[key] else { return }
            guard let i = v.integer else { return bad(name, "must be an integer, not a \(v.typeName)") }
            guard i >= min else { return bad(name, "must be at least \(min), not \(i)") }
            guard i <= max else { return bad(name, "must be at most \(max), not \(i)") }
            into = i
        }
        func bad(_ key: String, _ why: String) {
            badKeys.append(key)
            problems.append("\(key) \(why)")
        }
        bool(root, "noprefetch", "noprefetch", &c.noPrefetch)
        bool(root, "no_background_fetch", "no_background_fetch", &c.noBackgroundFetch)
        bool(root, "disable_verification", "disable_verification", &c.disableVerification)
        int(root, "prefetch_size", "prefetch_size", &c.prefetchSize)
        int(root, "resolve_result_entry_ttl_sec", "resolve_result_entry_ttl_sec", &c.resolveResultEntryTTLSeconds)
        int(root, "max_concurrency", "max_concurrency", min: 1, &c.maxConcurrency)
        int(root, "memory_cache_mib", "memory_cache_mib", min: 1, &c.memoryCacheMiB)
        int(root, "disk_cache_mib", "disk_cache_mib", min: 1, &c.diskCacheMiB)
        let blob = root["blob"]?.table
        int(blob, "fetching_timeout_sec", "blob.fetching_timeout_sec", min: 1, &c.fetchingTimeoutSeconds)
        int(blob, "max_retries", "blob.max_retries", &c.maxRetries)
        int(blob, "min_wait_msec", "blob.min_wait_msec", &c.minWaitMilliseconds)
        int(root, "read_around_size", "read_around_size", max: 16 << 20, &c.readAroundSize)
        let fuse = root["fuse"]?.table
        int(fuse, "attr_timeout", "fuse.attr_timeout", max: 86400, &c.fuseAttrTimeoutSeconds)
        int(fuse, "entry_timeout", "fuse.entry_timeout", max: 86400, &c.fuseEntryTimeoutSeconds)
        int(fuse, "reader_threads", "fuse.reader_threads", min: 2, max: 16, &c.fuseReaderThreads)
        int(root["background_fetch"]?.table, "silence_period_msec", "background_fetch.silence_period_msec", max: 3_600_000,
            &c.silencePeriodMilliseconds)
        let credentials = root["credentials"]?.table
        int(credentials, "ttl_sec", "credentials.ttl_sec", min: 1, max: 30 * 86400, &c.credentialsTTLSeconds)
        for (key, path) in [("dir", \StoreConfiguration.credentialsDirectory), ("crio_config_dir", \.crioConfigDirectory)] {
            guard let v = credentials?[key] else { continue }
            guard let s = v.string, s.hasPrefix("/"), !s.contains("\0") else {
                bad("credentials.\(key)", "must be an absolute path")
                continue
            }
            c[keyPath: path] = s
        }
        if let v = root["metrics_address"] {
            if let a = v.string { c.metricsAddress = a.isEmpty ? nil : a } else { bad("metrics_address", "must be a string") }
        }
        if let hosts = root["resolver"]?.table?["host"]?.table {
            for (host, v) in hosts.entries {
                guard let mirrors = v.table?["mirrors"]?.array else { continue }
                var h = HostConfiguration()
                for (i, m) in mirrors.enumerated() {
                    let name = "resolver.host.\"\(host)\".mirrors[\(i)]"
                    guard let t = m.table, let mh = t["host"]?.string, !mh.isEmpty else {
                        bad(name, "needs a host string")
                        continue
                    }
                    var insecure = false
                    bool(t, "insecure", "\(name).insecure", &insecure)
                    if let headers = t["header"]?.table {
                        for (hk, hv) in headers.entries {
                            if let s = hv.string { h.headers[hk] = s } else if let a = hv.array?.compactMap(\.string), let f = a.first { h.headers[hk] = f }
                        }
                    }
                    // A mirror naming the host itself marks the host insecure (upstream's way to use plain HTTP).
                    if mh == host { h.insecure = insecure } else { h.mirrors.append(Mirror(host: mh, insecure: insecure)) }
                }
                c.hosts[host] = h
            }
        }
        if c.disableVerification { bad("disable_verification", "is refused: content verification can't be disabled") }
        guard problems.isEmpty else {
            throw StoreError(.configuration, "\(path): " + problems.joined(separator: "; "), key: badKeys.first)
        }
        return (c, warnings)
    }

    /// The defaults as TOML (`stargz-store config default`).
    public static var defaultTOML: String {
        """
        # stargz-store configuration (upstream key names). Every value shown is the default.
        noprefetch = false
        no_background_fetch = false
        prefetch_size = \(Defaults.prefetchSize)
        resolve_result_entry_ttl_sec = \(Defaults.resolveResultEntryTTLSeconds)
        max_concurrency = \(Defaults.maxConcurrency)
        memory_cache_mib = \(Defaults.memoryCacheMiB)
        disk_cache_mib = \(Defaults.diskCacheMiB)
        read_around_size = \(Defaults.readAroundSize)

        [blob]
        fetching_timeout_sec = \(Defaults.fetchingTimeoutSeconds)
        max_retries = \(Defaults.maxRetries)
        min_wait_msec = \(Defaults.minWaitMilliseconds)

        [fuse]
        attr_timeout = \(Defaults.fuseTimeoutSeconds)
        entry_timeout = \(Defaults.fuseTimeoutSeconds)
        reader_threads = \(Defaults.fuseReaderThreads)

        [background_fetch]
        silence_period_msec = \(Defaults.silencePeriodMilliseconds)

        [credentials]
        # Where the credentials stargz-store-helper hands over are kept, mode 0600 (a tmpfs: until a reboot).
        dir = "\(Defaults.credentialsDirectory)"
        # How long credentials that no layer uses are kept after they were last given.
        ttl_sec = \(Defaults.credentialsTTLSeconds)
        # CRI-O's configuration, for global_auth_file (the node's pull secret).
        crio_config_dir = "\(Defaults.crioConfigDirectory)"

        # Mirrors and plain-HTTP hosts:
        # [[resolver.host."registry.example.com".mirrors]]
        # host = "mirror.example.com:5000"
        # insecure = true

        """
    }
}

