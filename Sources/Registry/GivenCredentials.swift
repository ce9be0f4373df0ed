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
        /// The holders are a previous run's: they keep the entry only until the TTL.
        var provisional = false
        /// When a layer last took hold of them (0: never).
        var lastHeld: Double = 0

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
    /// The entries by scope. Every change computes the new state, writes it to the file and only then takes it,
    /// in one critical section: the file never lags behind or runs ahead of what the store uses, and two changes
    /// never write it out of order (a few KB on a tmpfs; lookups only read).
    private let entries: Mutex<[String: Entry]>
    private let now: @Sendable () -> Double
    private let changed: Mutex<(@Sendable (_ registry: String, _ repository: String) -> Void)?>

    /// Credentials kept in `file` (read back now: what a previous run of the store was given), or in memory only.
    /// A file that cannot be read back is reported in `problem` and replaced at the first change. Layers that held
    /// credentials in the previous run hold them provisionally: they keep them only until the TTL, unless a
    /// layer of this run takes hold of them again.
    public init(file: String?, ttl: Duration, now: (@Sendable () -> Double)? = nil) {
        self.file = file
        self.ttl = ttl
        self.now = now ?? { Date().timeIntervalSince1970 }
        var loaded: [String: Entry] = [:]
        var problem: String? = nil
        if let file {
            switch Self.read(file) {
            case .success(let list):
                for var e in list {
                    e.provisional = !e.holders.isEmpty
                    loaded[e.scope] = e
                }
            case .failure(let why): problem = why.description
            }
        }
        entries = Mutex(loaded)
        changed = Mutex(nil)
        self.problem = problem
    }

    /// Why the file of a previous run was not read back (nil: read, or there was none).
    public let problem: String?

    /// Called with the repository of every entry dropped or given new credentials (the client forgets the
    /// authorizations made with the old ones).
    public func onChange(_ action: @escaping @Sendable (_ registry: String, _ repository: String) -> Void) {
        changed.withLock { $0 = action }
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
    /// field optional. Nothing changes unless all of it is good and written to the file. Returns the scopes
    /// that now hold credentials from this call.
    @discardableResult
    public func add(json: [UInt8]) throws(GivenCredentialsError) -> [String] {
        let given = try Self.parse(json, at: now())
        let touched = try change { e throws(GivenCredentialsError) -> [Entry] in
            var touched: [Entry] = []
            for var g in given {
                if let have = e[g.scope] {
                    g.holders = have.holders
                    g.provisional = have.provisional
                    g.lastHeld = have.lastHeld
                    if have.credential != g.credential { touched.append(have) }
                } else if e.count >= Limits.maxEntries {
                    guard let oldest = e.values.filter({ $0.holders.isEmpty }).min(by: { $0.given < $1.given }) else {
                        throw GivenCredentialsError("the store holds credentials for \(Limits.maxEntries) repositories, all in use")
                    }
                    touched.append(oldest)
                    e[oldest.scope] = nil
                }
                e[g.scope] = g
            }
            return touched
        }
        notify(touched)
        return given.map(\.scope)
    }

    /// Marks the credentials for `repository` on `host` (if any were given) as used by the layer `holder`: they
    /// are kept while it lives. The first layer of this run to take hold ends the previous run's provisional
    /// holders.
    public func hold(host: String, repository: String, by holder: String) {
        let scope = CredentialStore.canonicalHost(host) + "/" + repository
        let time = now()
        _ = try? change { e throws(GivenCredentialsError) in
            guard var entry = e[scope], entry.provisional || !entry.holders.contains(holder) else { return }
            if entry.provisional {
                entry.holders = []
                entry.provisional = false
            }
            entry.holders.append(holder)
            entry.lastHeld = time
            e[scope] = entry
        }
    }

    /// The layer `holder` is gone: credentials that only it held are dropped, unless they were given again since
    /// a layer last took hold of them (a pull of the same repository under way, whose layers have not been
    /// looked up yet): those stay until the TTL or their own layers' release.
    public func release(holder: String) {
        let gone = (try? change { e throws(GivenCredentialsError) -> [Entry] in
            var gone: [Entry] = []
            for (scope, var entry) in e where entry.holders.contains(holder) {
                entry.holders.removeAll { $0 == holder }
                if entry.holders.isEmpty && entry.given <= entry.lastHeld {
                    gone.append(entry)
                    e[scope] = nil
                } else {
                    e[scope] = entry
                }
            }
            return gone
        }) ?? []
        notify(gone)
    }

    /// Drops what no layer of this run holds and was given more than `ttl` ago.
    public func sweep() {
        let deadline = now() - Double(ttl.components.seconds)
        let expired = entries.withLock { e in e.values.contains { ($0.holders.isEmpty || $0.provisional) && $0.given < deadline } }
        guard expired else { return }
        let gone = (try? change { e throws(GivenCredentialsError) -> [Entry] in
            let gone = e.values.filter { ($0.holders.isEmpty || $0.provisional) && $0.given < deadline }
            for g in gone { e[g.scope] = nil }
            return gone
        }) ?? []
        notify(gone)
    }

    /// Applies `body` to a copy of the entries, writes the copy to the file when it differs, and takes it: all
    /// under the lock. When `body` or the write fails, nothing changes.
    private func change<T>(_ body: (inout [String: Entry]) throws(GivenCredentialsError) -> T) throws(GivenCredentialsError) -> T {
        try entries.withLock { e throws(GivenCredentialsError) -> T in
            var next = e
            let result = try body(&next)
            if next != e {
                try save(next)
                e = next
            }
            return result
        }
    }

    private func notify(_ list: [Entry]) {
        guard !list.isEmpty, let action = changed.withLock({ $0 }) else { return }
        for e in list { action(e.registry, e.repository) }
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
                throw GivenCredentialsError("\"\(key.prefix(256))\" is not an image reference: \(String(describing: error).prefix(200))")
            }
            guard let fields = top[key] as? [String: Any] else {
                throw GivenCredentialsError("the credentials for \(ref) are not a JSON object")
            }
            var strings: [String: String] = [:]
            // Go's decoder matches field names regardless of case (PR #1674 spells one `identitytoken`).
            let byLowercase = Dictionary(fields.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { a, _ in a })
            for name in ["username", "password", "identityToken"] {
                guard let v = byLowercase[name.lowercased()] else { continue }
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
        if let why = Self.unsafeDirectory(dir) { throw GivenCredentialsError(why) }
        // Written to a new file of its own made 0600 (never wider, whatever the umask), then renamed over the old one.
        var template = Array((file + ".XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw GivenCredentialsError("cannot write beside \(file): \(String(cString: strerror(errno)))") }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        let tmp = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
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
        let private600 = fchmod(fd, 0o600) == 0
        close(fd)
        guard written == bytes.count, private600, rename(tmp, file) == 0 else {
            let why = String(cString: strerror(errno))
            unlink(tmp)
            throw GivenCredentialsError("cannot write \(file): \(why)")
        }
    }

    /// Why `dir` must not hold credentials (nil: it may): a directory of this user that no one else can enter.
    static func unsafeDirectory(_ dir: String) -> String? {
        var st = stat()
        guard lstat(dir, &st) == 0 else { return "cannot read \(dir): \(String(cString: strerror(errno)))" }
        guard st.st_mode & S_IFMT == S_IFDIR else { return "\(dir) is not a directory; credentials are not kept there" }
        guard st.st_uid == geteuid(), st.st_mode & 0o077 == 0 else {
            return "\(dir) is not this user's with mode 0700; credentials are not kept there"
        }
        return nil
    }

    private static func read(_ file: String) -> Result<[Entry], ReadProblem> {
        let dir = (file as NSString).deletingLastPathComponent
        if access(dir, F_OK) == 0, let why = unsafeDirectory(dir) { return .failure(ReadProblem(why)) }
        let fd = open(file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            return errno == ENOENT ? .success([]) : .failure(ReadProblem("cannot read \(file): \(String(cString: strerror(errno)))"))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { return .failure(ReadProblem("\(file) is not a regular file")) }
        guard st.st_uid == geteuid(), st.st_mode & 0o077 == 0 else {
            return .failure(ReadProblem("\(file) is not owned by this user with mode 0600; not trusted"))
        }
        guard st.st_size <= Limits.maxFileBytes else {
            return .failure(ReadProblem("\(file) is larger than \(Limits.maxFileBytes) bytes"))
        }
        var data = [UInt8](repeating: 0, count: Int(st.st_size) + 1)
        var have = 0
        while have < data.count {
            let n = data.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + have, $0.count - have) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { return .failure(ReadProblem("cannot read \(file): \(String(cString: strerror(errno)))")) }
            if n == 0 { break }
            have += n
        }
        guard have <= Limits.maxFileBytes, let saved = try? JSONDecoder().decode(Saved.self, from: Data(data[..<have])), saved.version == 1
        else {
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
