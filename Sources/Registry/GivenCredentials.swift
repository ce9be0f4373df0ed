// SPDX-License-Identifier: Apache-2.0
import Foundation
import OCI
import Synchronization
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// Credentials handed to the store for one image pull (by `stargz-store-helper`, which containers/image runs
/// with the pull's credentials: a pod's pull secret as CRI-O has it), held as tightly as the kubelet holds its own.
///
/// - **Scoped to the repository** of the reference they were given for (`host/ns/repo`; never the host, never
///   another repository). The reference is the *physical* one, which may be a mirror's: they are then used when
///   the image is read through that mirror, which is the only place containers/image used them.
/// - **Kept in one file under `/run`** (mode 0600 in a 0700 directory), rewritten on every change: they survive a
///   restart of the store, not a reboot.
/// - **Dropped** when the last layer that used them is released (`hold`/`release` with the layer's key), or, while
///   no layer holds them, once `ttl` has passed since they were last given (a pull whose layers were all pulled
///   normally, a pull that never came).
///
/// An anonymous pull (`{"ref":{}}`) is accepted and changes nothing: another pull's credentials for the same
/// repository stay (upstream's store overwrote them with nothing).
public final class GivenCredentials: Sendable {
    /// One repository's credentials.
    struct Entry: Codable, Equatable {
        var registry: String
        var repository: String
        var username: String?
        var password: String?
        var identityToken: String?
        /// When they were last given (seconds since 1970: the entry outlives the process).
        var given: Double
        /// The layers that used them (the store's layer keys); dropped when this becomes empty.
        var holders: [String] = []

        var scope: String { registry + "/" + repository }

        var credential: Credential? {
            if let t = identityToken, !t.isEmpty { return .identityToken(t) }
            guard (username ?? "") != "" || (password ?? "") != "" else { return nil }
            return Credential(username: username ?? "", password: password ?? "")
        }
    }

    /// The file's shape.
    struct Saved: Codable {
        var version: Int
        var entries: [Entry]
    }

    /// Bounds on what the helper may hand over (the JSON is the caller's; containers/image sends one key).
    public enum Limits {
        /// The request body.
        public static let maxBytes = 64 << 10
        /// References in one request.
        public static let maxReferences = 16
        /// Repositories held at once; when full, the oldest that no layer holds makes room.
        public static let maxEntries = 1024
        /// The file read back at start.
        static let maxFileBytes = 4 << 20
    }

    /// The file (nil: memory only).
    public let file: String?
    /// How long credentials no layer holds are kept after they were last given.
    public let ttl: Duration
    private let entries: Mutex<[String: Entry]>
    private let now: @Sendable () -> Double
    private let dropped: Mutex<(@Sendable (_ registry: String, _ repository: String) -> Void)?>

    /// Credentials kept in `file` (read back now: what a previous run of the store was given), or in memory only.
    /// A file that cannot be read back is reported in `problem` and replaced at the first change.
    public init(file: String?, ttl: Duration, now: (@Sendable () -> Double)? = nil) {
        self.file = file
        self.ttl = ttl
        self.now = now ?? { Date().timeIntervalSince1970 }
        var loaded: [String: Entry] = [:]
        var problem: String? = nil
        if let file {
            switch Self.read(file) {
            case .success(let list): for e in list { loaded[e.scope] = e }
            case .failure(let why): problem = why.description
            }
        }
        entries = Mutex(loaded)
        dropped = Mutex(nil)
        self.problem = problem
    }

    /// Why the file of a previous run was not read back (nil: read, or there was none).
    public let problem: String?

    /// Called with the repository of every entry dropped (the client forgets authorizations made with them).
    public func onDrop(_ action: @escaping @Sendable (_ registry: String, _ repository: String) -> Void) {
        dropped.withLock { $0 = action }
    }

    /// The scopes (`host/repo`) held now, for logs and tests.
    public var scopes: [String] {
        sweep()
        return entries.withLock { $0.keys.sorted() }
    }

    /// The credential for `repository` on `host`, if one was given for exactly that repository.
    public func credential(host: String, repository: String) -> Credential? {
        sweep()
        let scope = CredentialStore.canonicalHost(host) + "/" + repository
        return entries.withLock { $0[scope]?.credential }
    }

    /// Takes the helper's JSON: `{"<image reference>": {"username": …, "password": …, "identityToken": …}}`, every
    /// field optional. Nothing changes unless all of it is good; on success the file is written before this
    /// returns. Returns the scopes that now hold credentials from this call.
    @discardableResult
    public func add(json: [UInt8]) throws(GivenCredentialsError) -> [String] {
        let given = try Self.parse(json, at: now())
        sweep()
        let (before, after, evicted) = try entries.withLock { e throws(GivenCredentialsError) -> ([String: Entry], [String: Entry], [Entry]) in
            let before = e
            var evicted: [Entry] = []
            for var g in given {
                if let have = e[g.scope] { g.holders = have.holders }
                if e[g.scope] == nil && e.count >= Limits.maxEntries {
                    guard let oldest = e.values.filter({ $0.holders.isEmpty }).min(by: { $0.given < $1.given }) else {
                        e = before
                        throw GivenCredentialsError("the store holds credentials for \(Limits.maxEntries) repositories, all in use")
                    }
                    evicted.append(oldest)
                    e[oldest.scope] = nil
                }
                e[g.scope] = g
            }
            return (before, e, evicted)
        }
        do { try save(after) } catch {
            entries.withLock { $0 = before }
            throw error
        }
        for e in evicted { notifyDropped(e) }
        return given.map(\.scope)
    }

    /// Marks the credentials for `repository` on `host` (if any were given) as used by the layer `holder`: they
    /// are kept while it lives.
    public func hold(host: String, repository: String, by holder: String) {
        let scope = CredentialStore.canonicalHost(host) + "/" + repository
        let changed = entries.withLock { e -> [String: Entry]? in
            guard var entry = e[scope], !entry.holders.contains(holder) else { return nil }
            entry.holders.append(holder)
            e[scope] = entry
            return e
        }
        if let changed { try? save(changed) }
    }

    /// The layer `holder` is gone: credentials that only it held are dropped.
    public func release(holder: String) {
        let (changed, gone) = entries.withLock { e -> ([String: Entry]?, [Entry]) in
            var gone: [Entry] = []
            var touched = false
            for (scope, var entry) in e where entry.holders.contains(holder) {
                touched = true
                entry.holders.removeAll { $0 == holder }
                if entry.holders.isEmpty {
                    gone.append(entry)
                    e[scope] = nil
                } else {
                    e[scope] = entry
                }
            }
            return (touched ? e : nil, gone)
        }
        if let changed { try? save(changed) }
        for g in gone { notifyDropped(g) }
    }

    /// Drops what no layer holds and was given more than `ttl` ago.
    public func sweep() {
        let deadline = now() - Double(ttl.components.seconds)
        let (changed, gone) = entries.withLock { e -> ([String: Entry]?, [Entry]) in
            let gone = e.values.filter { $0.holders.isEmpty && $0.given < deadline }
            for g in gone { e[g.scope] = nil }
            return (gone.isEmpty ? nil : e, gone)
        }
        if let changed { try? save(changed) }
        for g in gone { notifyDropped(g) }
    }

    private func notifyDropped(_ e: Entry) {
        dropped.withLock { $0 }?(e.registry, e.repository)
    }

    // MARK: The helper's JSON

    /// Parses and bounds the helper's JSON (the shape containers/image's `json.Marshal` writes; unknown fields are
    /// ignored as Go's decoder ignores them). Messages never quote a secret.
    static func parse(_ json: [UInt8], at time: Double) throws(GivenCredentialsError) -> [Entry] {
        guard json.count <= Limits.maxBytes else {
            throw GivenCredentialsError("the credentials are \(json.count) bytes, more than \(Limits.maxBytes)")
        }
        guard let any = try? JSONSerialization.jsonObject(with: Data(json)), let top = any as? [String: Any] else {
            throw GivenCredentialsError("the credentials are not a JSON object {\"<image reference>\": {\"username\": …, \"password\": …}}")
        }
        guard !top.isEmpty else { throw GivenCredentialsError("the credentials name no image reference") }
        guard top.count <= Limits.maxReferences else {
            throw GivenCredentialsError("the credentials name \(top.count) image references, more than \(Limits.maxReferences)")
        }
        var out: [Entry] = []
        for key in top.keys.sorted() {
            let ref: Reference
            do { ref = try Reference(key, defaultTag: false) } catch {
                throw GivenCredentialsError("\"\(key.prefix(256))\" is not an image reference: \(error)")
            }
            guard let fields = top[key] as? [String: Any] else {
                throw GivenCredentialsError("the credentials for \(ref) are not a JSON object")
            }
            var strings: [String: String] = [:]
            for name in ["username", "password", "identityToken"] {
                guard let v = fields[name] else { continue }
                guard let s = v as? String else { throw GivenCredentialsError("\(name) for \(ref) is not a string") }
                guard !s.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) else {
                    throw GivenCredentialsError("\(name) for \(ref) has a control character")
                }
                if !s.isEmpty { strings[name] = s }
            }
            if strings["identityToken"] == nil && strings["username"] == nil && strings["password"] == nil { continue }  // anonymous
            out.append(Entry(
                registry: CredentialStore.canonicalHost(ref.registry), repository: ref.repository, username: strings["username"],
                password: strings["password"], identityToken: strings["identityToken"], given: time))
        }
        return out
    }

    // MARK: The file

    private func save(_ e: [String: Entry]) throws(GivenCredentialsError) {
        guard let file else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes: Data
        do { bytes = try encoder.encode(Saved(version: 1, entries: e.values.sorted { $0.scope < $1.scope })) } catch {
            throw GivenCredentialsError("cannot encode the credentials: \(error)")
        }
        let dir = (file as NSString).deletingLastPathComponent
        if mkdir(dir, 0o700) != 0 && errno != EEXIST {
            throw GivenCredentialsError("cannot create \(dir): \(String(cString: strerror(errno)))")
        }
        // Written to a new file made 0600 (never wider, whatever the umask), then renamed over the old one.
        let tmp = file + ".new"
        unlink(tmp)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw GivenCredentialsError("cannot write \(tmp): \(String(cString: strerror(errno)))") }
        let written = bytes.withUnsafeBytes { p -> Int in
            var off = 0
            while off < p.count {
                let n = write(fd, p.baseAddress! + off, p.count - off)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return -1 }
                off += n
            }
            return off
        }
        let synced = fchmod(fd, 0o600) == 0
        close(fd)
        guard written == bytes.count, synced, rename(tmp, file) == 0 else {
            let why = String(cString: strerror(errno))
            unlink(tmp)
            throw GivenCredentialsError("cannot write \(file): \(why)")
        }
    }

    private static func read(_ file: String) -> Result<[Entry], ReadProblem> {
        var st = stat()
        guard lstat(file, &st) == 0 else {
            return errno == ENOENT ? .success([]) : .failure(ReadProblem("cannot read \(file): \(String(cString: strerror(errno)))"))
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { return .failure(ReadProblem("\(file) is not a regular file")) }
        guard st.st_uid == getuid(), st.st_mode & 0o077 == 0 else {
            return .failure(ReadProblem("\(file) is not owned by this user with mode 0600; not trusted"))
        }
        guard st.st_size <= Limits.maxFileBytes, let data = FileManager.default.contents(atPath: file) else {
            return .failure(ReadProblem("\(file) is larger than \(Limits.maxFileBytes) bytes or unreadable"))
        }
        guard let saved = try? JSONDecoder().decode(Saved.self, from: data), saved.version == 1 else {
            return .failure(ReadProblem("\(file) is not a credentials file of this store"))
        }
        return .success(Array(saved.entries.prefix(Limits.maxEntries)))
    }

    struct ReadProblem: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }
}

/// Credentials the store would not take: bad JSON, a bad reference, too much, or a file it could not write.
public struct GivenCredentialsError: Error, CustomStringConvertible, Equatable, Sendable {
    /// One line, without secrets.
    public var description: String

    init(_ description: String) { self.description = description }
}
