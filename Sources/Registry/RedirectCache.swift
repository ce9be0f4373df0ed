// SPDX-License-Identifier: Apache-2.0
import Foundation

/// Blob URLs a registry redirected to (signed blob-storage URLs), reused until they expire so that a
/// range read costs one request, not a redirect plus a request.
///
/// An entry lives until the expiry its URL declares (minus a margin) or the configured lifetime,
/// whichever comes first; a failure through a cached URL drops it and the next request goes to the registry.
actor RedirectCache {
    private var entries: [String: (url: String, expires: ContinuousClock.Instant)] = [:]

    func url(for key: String) -> String? {
        guard let e = entries[key] else { return nil }
        if e.expires <= .now {
            entries[key] = nil
            return nil
        }
        return e.url
    }

    func store(_ key: String, url: String, lifetime: Duration) {
        let life = min(lifetime, Self.declaredLifetime(url, now: Date()) ?? lifetime)
        guard life > .zero else { return }
        entries[key] = (url, .now + life)
        if entries.count > 4096 { entries = entries.filter { $0.value.expires > .now } }
    }

    func remove(_ key: String) { entries[key] = nil }

    /// What remains of a signed URL's validity, less 30 s, from its query: `X-Amz-Date` + `X-Amz-Expires`
    /// (S3), `X-Goog-Date` + `X-Goog-Expires` (GCS), `Expires=<unix time>` (CloudFront, GCS v2) or
    /// `se=<ISO 8601>` (Azure SAS). Nil when it declares none.
    static func declaredLifetime(_ url: String, now: Date) -> Duration? {
        guard let items = URLComponents(string: url)?.queryItems else { return nil }
        var q: [String: String] = [:]
        for i in items { if let v = i.value { q[i.name.lowercased()] = v } }
        var end: Date? = nil
        for prefix in ["x-amz-", "x-goog-"] {
            if let d = q[prefix + "date"], let e = q[prefix + "expires"].flatMap(Double.init), let start = compactDate(d) {
                end = start.addingTimeInterval(e)
            }
        }
        if end == nil, let e = q["expires"].flatMap(Double.init) { end = Date(timeIntervalSince1970: e) }
        if end == nil, let se = q["se"] { end = ISO8601DateFormatter().date(from: se) }
        guard let end else { return nil }
        let left = end.timeIntervalSince(now) - 30
        return left > 0 ? .milliseconds(Int64(left * 1000)) : .zero
    }

    /// `20261129T072316Z`.
    private static func compactDate(_ s: String) -> Date? {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        return f.date(from: s)
    }
}
