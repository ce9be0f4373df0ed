// SPDX-License-Identifier: Apache-2.0
import AsyncHTTPClient
import Foundation
public import Logging
import NIOCore
import NIOHTTP1
import OCI

/// A client of the OCI distribution API: manifests, blobs (whole, ranges), pushes.
///
/// It authenticates as registries ask (anonymous, basic, bearer tokens from the `WWW-Authenticate` challenge,
/// cached per host and repository and refreshed on expiry or on a 401), retries connection errors, 429 and
/// 5xx with backoff (one ``RetryPolicy`` for requests, blob streams, range reads and token fetches), follows
/// redirects itself (credentials are never sent to another host) and checks the digest of every manifest and
/// blob it returns.
///
/// Runs in the Swift concurrency pool; blob files are read and written on NIO's thread pool for blocking I/O.
/// Call ``shutdown()`` when done.
public final class RegistryClient: Sendable {
    /// The settings in force.
    public let configuration: RegistryConfiguration
    /// Where credentials come from.
    public let credentials: CredentialStore
    let http: HTTPClient
    let tokens = TokenCache()
    let singleRangeBlobs = KeySet()
    let redirects = RedirectCache()
    let logger: Logger
    /// Requests, faults, retries and calls given up.
    public let metrics: RegistryMetrics

    /// Creates a client with its own HTTP connection pool.
    public init(
        configuration: RegistryConfiguration = RegistryConfiguration(), credentials: CredentialStore = CredentialStore(),
        logger: Logger = Logger(label: "stargz.registry"), metrics: RegistryMetrics = RegistryMetrics()
    ) {
        self.configuration = configuration
        self.credentials = credentials
        self.logger = logger
        self.metrics = metrics
        var c = HTTPClient.Configuration(redirectConfiguration: .disallow)
        c.timeout = .init(connect: .seconds(15), read: .seconds(Int64(configuration.fetchTimeout.components.seconds)))
        c.decompression = .disabled
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: c)
    }

    /// Shuts the connection pool down.
    public func shutdown() async throws { try await http.shutdown() }

    // MARK: Requests

    /// One request of the distribution API.
    struct Call {
        var method: HTTPMethod
        /// `host[:port]` as in the reference (mirrors substitute it).
        var host: String
        /// The repository, for the token scope.
        var repository: String
        /// `pull` or `pull,push`.
        var actions: String
        /// The path (`/v2/…`), or a full URL (upload locations, redirects).
        var path: String
        var headers: [(String, String)] = []
        var body: [UInt8]? = nil
        /// A body streamed from a file range instead (re-read on every attempt).
        var file: FileChunks? = nil
        var timeout: Duration
        /// Whether the request may be repeated after a failure (not for body streams).
        var idempotent = true
        /// For blob GETs: where a redirect to blob storage is remembered and reused.
        var redirectKey: String? = nil
    }

    func baseURL(_ host: String) -> String {
        let insecure = configuration.hosts[host]?.insecure ?? isMirrorInsecure(host)
        return "\(insecure ? "http" : "https")://\(RegistryConfiguration.endpoint(for: host))"
    }

    private func isMirrorInsecure(_ host: String) -> Bool {
        for h in configuration.hosts.values { if let m = h.mirrors.first(where: { $0.host == host }) { return m.insecure } }
        return false
    }

    /// Runs `operation` under the configured ``RegistryConfiguration/retryPolicy``, counting its retries and
    /// whether it gave up, and logging each retry with `message` and `metadata` (read at the retry).
    func withRetries<Value>(
        _ message: @autoclosure () -> Logger.Message, _ metadata: @autoclosure () -> Logger.Metadata = [:],
        _ operation: (_ attempt: Int) async throws -> RetryPolicy.Outcome<Value>
    ) async throws -> Value {
        try await configuration.retryPolicy.run(
            onRetry: { attempt, failure, delay in
                metrics.retries.increment()
                var m = metadata()
                m["attempt"] = "\(attempt)"
                m["retry.delay"] = "\(delay)"
                m["error"] = "\(failure)"
                logger.debug(message(), metadata: m)
            },
            onExhausted: { _ in metrics.exhausted.increment() }, operation)
    }

    /// The outcome of a blob or range read's attempt that threw `error` after its reply came: a retry (counted
    /// as a fault of its kind) when the reply broke off or did not fit, or when the transport failed; otherwise
    /// the error, thrown as ``RetryPolicy/outcome(after:idempotent:wrap:)`` says.
    func bodyOutcome<Value>(after error: any Error, wrap: (any Error) -> any Error) throws -> RetryPolicy.Outcome<Value> {
        if error is NIOTooManyBytesError {
            // Larger than anything asked for: the same request would bring the same, so it is not repeated.
            throw RegistryError(.badResponse, "the reply is larger than the ranges asked for", status: 206, cause: error)
        }
        if let e = error as? RegistryError, Self.isResumable(e) {
            metrics.fault(.badReply)
            return .retry(e)
        }
        return try transportOutcome(after: error, idempotent: true, wrap: wrap)
    }

    /// ``RetryPolicy/outcome(after:idempotent:wrap:)`` for an attempt whose transport failed, counting the failure
    /// as a fault of its kind when it is retried.
    func transportOutcome<Value>(
        after error: any Error, idempotent: Bool, wrap: (any Error) -> any Error
    ) throws -> RetryPolicy.Outcome<Value> {
        let outcome: RetryPolicy.Outcome<Value> = try configuration.retryPolicy.outcome(after: error, idempotent: idempotent, wrap: wrap)
        metrics.fault(RegistryFault(classifying: error))
        return outcome
    }

    /// Sends `call`, handling auth challenges, redirects and retries. The caller consumes the body.
    ///
    /// Transport errors and the ``RetryPolicy/retryableStatuses`` are retried under the configured
    /// ``RegistryConfiguration/retryPolicy`` when the call is idempotent; an auth challenge answered, a redirect
    /// followed or a stale cached blob URL dropped goes round again without counting as an attempt. A blob
    /// storage URL refused with 401 or 403 right after the registry's redirect to it (expired on the way) costs an
    /// attempt and asks the registry again.
    func send(_ call: Call) async throws -> HTTPClientResponse {
        var authRetried = false
        let origin = call.path.hasPrefix("http://") || call.path.hasPrefix("https://") ? call.path : baseURL(call.host) + call.path
        var url = origin
        var redirectCount = 0
        var sendAuth = true
        var fromCache = false
        var freshAuth: String? = nil  // what the last challenge earned, used for this call even if short-lived
        if let key = call.redirectKey, let cached = await redirects.url(for: key) {
            url = cached
            sendAuth = hostPart(cached) == hostPart(origin)
            fromCache = true
        }
        let policy = configuration.retryPolicy
        return try await withRetries("retrying", ["http.method": "\(call.method)"]) {
            (attempt: Int) async throws -> RetryPolicy.Outcome<HTTPClientResponse> in
            while true {
                try Task.checkCancellation()
                var req = HTTPClientRequest(url: url)
                req.method = call.method
                req.headers.add(name: "User-Agent", value: configuration.userAgent)
                for (k, v) in configuration.host(call.host).headers { req.headers.add(name: k, value: v) }
                for (k, v) in call.headers { req.headers.add(name: k, value: v) }
                if sendAuth, let auth = try await authorization(call, fresh: freshAuth) {
                    req.headers.add(name: "Authorization", value: auth)
                }
                if let f = call.file {
                    req.body = .stream(f, length: .known(f.length))
                } else if let b = call.body {
                    req.body = .bytes(ByteBuffer(bytes: b))
                    req.headers.replaceOrAdd(name: "Content-Length", value: String(b.count))
                } else if call.method == .PUT || call.method == .POST || call.method == .PATCH {
                    req.headers.replaceOrAdd(name: "Content-Length", value: "0")
                }
                let response: HTTPClientResponse
                metrics.requests.increment()
                do {
                    response = try await http.execute(req, timeout: .seconds(Int64(call.timeout.components.seconds)))
                } catch let e as CancellationError {
                    throw e
                } catch {
                    if fromCache, let key = call.redirectKey {
                        // The storage URL may have gone stale; ask the registry again.
                        await redirects.remove(key)
                        (url, sendAuth, fromCache) = (origin, true, false)
                    }
                    return try transportOutcome(after: error, idempotent: call.idempotent) {
                        RegistryError(
                            .transport, "\(call.method) \(redact(url)) failed after \(attempt) attempts", cause: $0)
                    }
                }
                let status = Int(response.status.code)
                // Right after a redirect, a 403 (or a 401 with no challenge to answer) is the storage URL refusing.
                let challenged = status == 401 && response.headers.first(name: "WWW-Authenticate") != nil
                let refusedURL = fromCache
                    ? (400..<500).contains(status) && status != 416
                    : redirectCount > 0 && (status == 403 || (status == 401 && !challenged))
                if refusedURL, let key = call.redirectKey {
                    // An expired or revoked storage URL: forget it and go through the registry. A URL from the
                    // cache costs no attempt (the registry was not asked); one the registry just gave does.
                    _ = try? await response.body.collect(upTo: 1 << 20)
                    metrics.fault(.expiredURL)
                    await redirects.remove(key)
                    let fresh = !fromCache
                    (url, sendAuth, fromCache, redirectCount) = (origin, true, false, 0)
                    logger.debug(
                        "blob storage URL refused; asking the registry again", metadata: ["http.status": "\(status)"])
                    if fresh {
                        return .retry(RegistryError(.denied, "\(call.method): the blob storage URL the registry redirected to answered \(status)", status: status))
                    }
                    continue
                }
                switch status {
                case 401 where !authRetried:
                    authRetried = true
                    let challenge = response.headers.first(name: "WWW-Authenticate") ?? ""
                    _ = try? await response.body.collect(upTo: 1 << 20)
                    freshAuth = try await authenticate(call, challenge: challenge, status: status)
                    continue
                case 301, 302, 303, 307, 308:
                    _ = try? await response.body.collect(upTo: 1 << 20)
                    guard let loc = response.headers.first(name: "Location"), redirectCount < 10 else {
                        throw RegistryError(
                            .badResponse, "\(call.method) \(redact(url)): redirect without a Location", status: status)
                    }
                    redirectCount += 1
                    let next = resolve(location: loc, against: url)
                    // Never carry credentials to another host.
                    if hostPart(next) != hostPart(url) { sendAuth = false }
                    url = next
                    continue
                case _ where RetryPolicy.retryableStatuses.contains(status):
                    let retryAfter = RetryPolicy.retryAfter(response.headers.first(name: "Retry-After"))
                    let body = (try? await response.body.collect(upTo: 1 << 16)).map { Array(buffer: $0) } ?? []
                    let failure = errorFor(status: status, body: body, what: "\(call.method) \(redact(url))")
                    guard policy.decision(forStatus: status, idempotent: call.idempotent) == .retry else {
                        throw failure
                    }
                    metrics.fault(RegistryFault(classifying: failure))
                    return .retry(failure, retryAfter: retryAfter)
                default:
                    if redirectCount > 0, let key = call.redirectKey, (200..<300).contains(status) {
                        await redirects.store(key, url: url, lifetime: configuration.redirectLifetime)
                    }
                    return .success(response)
                }
            }
        }
    }

    func scope(_ call: Call) -> String { "repository:\(call.repository):\(call.actions)" }

    private func resolve(location: String, against url: String) -> String {
        if location.hasPrefix("http://") || location.hasPrefix("https://") { return location }
        guard let base = URL(string: url), let u = URL(string: location, relativeTo: base) else { return location }
        return u.absoluteString
    }

    func hostPart(_ url: String) -> String {
        guard let u = URL(string: url) else { return url }
        return "\(u.scheme ?? ""):\(u.host ?? ""):\(u.port ?? 0)"
    }

    /// Forgets the bearer tokens and basic authorizations kept for `repository` on `host` (`host` as in a
    /// reference; Docker Hub's names are one), so that nothing made with dropped credentials is used again.
    public func forgetAuthorizations(host: String, repository: String) async {
        await tokens.forget(host: host, repository: repository)
    }

    /// The URL without its query (signed redirect URLs carry secrets there).
    func redact(_ url: String) -> String { url.split(separator: "?", maxSplits: 1).first.map(String.init) ?? url }

    private func authorization(_ call: Call, fresh: String?) async throws -> String? {
        if let fresh { return fresh }
        return await tokens.authorization(host: call.host, scope: scope(call))
    }

    /// Answers a 401 challenge: gets a bearer token or settles on basic credentials; returns the
    /// `Authorization` value to retry with.
    private func authenticate(_ call: Call, challenge: String, status: Int) async throws -> String {
        let c = AuthChallenge(challenge)
        let cred = try credentials.credential(for: call.host, repository: call.repository)
        switch c.scheme {
        case "bearer":
            guard let realm = c.parameters["realm"] else {
                throw RegistryError(.unauthorized, "\(call.host): bearer challenge without a realm", status: status)
            }
            let token = try await fetchToken(
                realm: realm, service: c.parameters["service"], scope: scope(call), credential: cred, host: call.host)
            await tokens.store(host: call.host, scope: scope(call), value: "Bearer \(token.token)", expiresIn: token.expiresIn)
            return "Bearer \(token.token)"
        case "basic":
            guard let cred else {
                throw RegistryError(.unauthorized, "\(call.host) asks for basic authentication and no credentials were found for it", status: status)
            }
            let raw = Data("\(cred.username):\(cred.password)".utf8).base64EncodedString()
            // Kept for the repository and actions only: credentials may be scoped to a repository.
            await tokens.store(host: call.host, scope: scope(call), value: "Basic \(raw)", expiresIn: nil, basic: true)
            return "Basic \(raw)"
        default:
            throw RegistryError(.unauthorized, "\(call.host) answered 401 with an unsupported challenge \"\(challenge)\"", status: status)
        }
    }

    /// `application/x-www-form-urlencoded`: everything but unreserved characters as %XX.
    static func formEncoded(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                let hex = String(b, radix: 16, uppercase: true)
                out += (hex.count == 1 ? "%0" : "%") + hex
            }
        }
        return out
    }

    struct Token {
        var token: String
        var expiresIn: Int?
    }

    private func fetchToken(realm: String, service: String?, scope: String, credential: Credential?, host: String) async throws -> Token {
        guard var comps = URLComponents(string: realm) else {
            throw RegistryError(.unauthorized, "\(host): invalid token realm \"\(realm)\"")
        }
        var items = comps.queryItems ?? []
        if let service { items.append(URLQueryItem(name: "service", value: service)) }
        items.append(URLQueryItem(name: "scope", value: scope))
        comps.queryItems = items
        guard var url = comps.string else { throw RegistryError(.unauthorized, "\(host): invalid token realm \"\(realm)\"") }
        var req = HTTPClientRequest(url: url)
        req.headers.add(name: "User-Agent", value: configuration.userAgent)
        if let credential, credential.isIdentityToken {
            // An identity token is an OAuth2 refresh token: POSTed to the realm as a form (the distribution token
            // spec's OAuth2 flow, which containers/image uses for it), never sent as basic credentials.
            url = realm
            req = HTTPClientRequest(url: url)
            req.method = .POST
            req.headers.add(name: "User-Agent", value: configuration.userAgent)
            req.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
            var form = [("grant_type", "refresh_token"), ("refresh_token", credential.password), ("client_id", "stargz-swift")]
            if let service { form.append(("service", service)) }
            form.append(("scope", scope))
            req.body = .bytes(ByteBuffer(string: form.map { "\(Self.formEncoded($0))=\(Self.formEncoded($1))" }.joined(separator: "&")))
        } else if let credential {
            let raw = Data("\(credential.username):\(credential.password)".utf8).base64EncodedString()
            req.headers.add(name: "Authorization", value: "Basic \(raw)")
        }
        let request = req
        let policy = configuration.retryPolicy
        return try await withRetries("retrying a token request") { (_: Int) async throws -> RetryPolicy.Outcome<Token> in
            do {
                let timeout = TimeAmount.seconds(Int64(configuration.requestTimeout.components.seconds))
                metrics.requests.increment()
                let r = try await http.execute(request, timeout: timeout)
                let body = Array(buffer: try await r.body.collect(upTo: 1 << 20))
                let status = Int(r.status.code)
                guard status == 200 else {
                    let failure = RegistryError(
                        .unauthorized, "token request to \(redact(url)) for \(scope) answered \(status)", status: status)
                    guard policy.decision(forStatus: status, idempotent: true) == .retry else { throw failure }
                    metrics.fault(RegistryFault(classifying: failure))
                    return .retry(failure, retryAfter: RetryPolicy.retryAfter(r.headers.first(name: "Retry-After")))
                }
                guard let obj = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
                    let token = (obj["token"] as? String) ?? (obj["access_token"] as? String), !token.isEmpty
                else {
                    throw RegistryError(.badResponse, "token reply from \(redact(url)) has no token")
                }
                return .success(Token(token: token, expiresIn: obj["expires_in"] as? Int))
            } catch {
                return try transportOutcome(after: error, idempotent: true) {
                    RegistryError(.transport, "token request to \(redact(url)) failed", cause: $0)
                }
            }
        }
    }

    /// A typed error for a failed reply, with the registry's error code.
    func errorFor(status: Int, body: [UInt8], what: String) -> RegistryError {
        var codes: [String] = []
        if let obj = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
            let errors = obj["errors"] as? [[String: Any]]
        {
            for e in errors {
                let code = e["code"] as? String ?? "?"
                let msg = e["message"] as? String ?? ""
                codes.append(msg.isEmpty ? code : "\(code): \(msg)")
            }
        }
        let detail = codes.isEmpty ? "" : " (" + codes.joined(separator: "; ") + ")"
        let message = "\(what) answered \(status)\(detail)"
        switch status {
        case 401: return RegistryError(.unauthorized, message, status: status)
        case 403: return RegistryError(.denied, message, status: status)
        case 404: return RegistryError(.notFound, message, status: status)
        case 416: return RegistryError(.rangeNotSatisfiable, message, status: status)
        case 429: return RegistryError(.tooManyRequests, message, status: status)
        case 500...599: return RegistryError(.serverError, message, status: status)
        default: return RegistryError(.badResponse, message, status: status)
        }
    }

    /// Reads a whole small body, failing with the registry's error on a non-success status.
    func expect(_ response: HTTPClientResponse, _ ok: Set<Int>, what: String, limit: Int = 16 << 20) async throws -> [UInt8] {
        let status = Int(response.status.code)
        let body: [UInt8]
        do {
            body = Array(buffer: try await response.body.collect(upTo: limit))
        } catch {
            throw RegistryError(.badResponse, "\(what): reading the reply failed", status: status, cause: error)
        }
        guard ok.contains(status) else { throw errorFor(status: status, body: body, what: what) }
        return body
    }
}

/// Bearer tokens and basic authorizations, per host and scope.
actor TokenCache {
    struct Entry {
        var value: String
        var expires: ContinuousClock.Instant?
    }
    private var entries: [String: Entry] = [:]

    func authorization(host: String, scope: String) -> String? {
        guard let e = entries["\(host) \(scope)"] else { return nil }
        if let exp = e.expires, exp < .now {
            entries["\(host) \(scope)"] = nil
            return nil
        }
        return e.value
    }

    /// Forgets every authorization for `repository` on `host` (its credentials were dropped).
    func forget(host: String, repository: String) {
        let h = CredentialStore.canonicalHost(host)
        entries = entries.filter { key, _ in
            guard let space = key.firstIndex(of: " ") else { return true }
            let scope = key[key.index(after: space)...]
            return !(CredentialStore.canonicalHost(String(key[..<space])) == h && scope.hasPrefix("repository:\(repository):"))
        }
    }

    /// Keeps an authorization for `scope` on `host`: a bearer token until shortly before it expires, basic
    /// credentials (`basic`) until the registry refuses them.
    func store(host: String, scope: String, value: String, expiresIn: Int?, basic: Bool = false) {
        guard !basic else {
            entries["\(host) \(scope)"] = Entry(value: value, expires: nil)
            return
        }
        // Refresh 5 s before the server's expiry (60 s when it names none, as the distribution spec says);
        // a token that lives 5 s or less is used for the request at hand only.
        let life = (expiresIn ?? 60) - 5
        entries["\(host) \(scope)"] = Entry(value: value, expires: .now + .seconds(max(0, life)))
    }
}

/// A parsed `WWW-Authenticate` header.
struct AuthChallenge {
    var scheme: String
    var parameters: [String: String]

    init(_ header: String) {
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        let space = trimmed.firstIndex(of: " ") ?? trimmed.endIndex
        scheme = trimmed[..<space].lowercased()
        parameters = [:]
        var rest = trimmed[space...].drop(while: { $0 == " " })
        while !rest.isEmpty {
            guard let eq = rest.firstIndex(of: "=") else { break }
            let key = rest[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            rest = rest[rest.index(after: eq)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                // A backslash quotes the next character (a trailing one is kept as it is).
                var escaped = false
                while let c = rest.first, escaped || c != "\"" {
                    if c == "\\" && !escaped {
                        escaped = true
                    } else {
                        value.append(c)
                        escaped = false
                    }
                    rest = rest.dropFirst()
                }
                if escaped { value.append("\\") }
                rest = rest.dropFirst()
            } else {
                let end = rest.firstIndex(of: ",") ?? rest.endIndex
                value = rest[..<end].trimmingCharacters(in: .whitespaces)
                rest = rest[end...]
            }
            parameters[key] = value
            rest = rest.drop(while: { $0 == "," || $0 == " " })
        }
    }
}
