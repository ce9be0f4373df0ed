// SPDX-License-Identifier: Apache-2.0
import Foundation
import TOML

/// A user name and secret for one registry.
public struct Credential: Sendable, Equatable {
    /// The user name (`<token>` for identity tokens).
    public var username: String
    /// The password or token.
    public var password: String

    /// Creates a credential.
    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    /// An identity token (an OAuth2 refresh token; `identitytoken` in auth files, `identityToken` from the helper):
    /// exchanged at the token realm, never sent as basic credentials.
    public static func identityToken(_ token: String) -> Credential { Credential(username: "<token>", password: token) }

    /// Whether this is an identity token.
    public var isIdentityToken: Bool { username == "<token>" }
}

/// Finds credentials where Podman, Docker, CRI-O and the kubelet keep them.
///
/// Order: `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`, `/run/containers/<uid>/auth.json`,
/// `$HOME/.config/containers/auth.json`, `$DOCKER_CONFIG/config.json` or `$HOME/.docker/config.json`, then the node's
/// pull secret: the file CRI-O's `global_auth_file` names (crio.conf and its drop-ins) and
/// `/var/lib/kubelet/config.json` (where OpenShift keeps the cluster pull secret). Each file's `auths` (base64
/// `user:password`, or an identity token) and `credHelpers`/`credsStore` (a `docker-credential-<name>` helper run with
/// the host on standard input) are used. The first file with an entry for the image wins; within a file, an entry
/// scoped to a repository path (`host/ns/repo`, `host/ns`) wins over the host's, most specific first, as
/// containers/image matches them.
public struct CredentialStore: Sendable {
    /// The files searched, in order.
    public var files: [String]
    /// Credentials given directly (tests, `--creds`), looked up before the files.
    public var explicit: [String: Credential]
    /// Credentials handed over for a pull (`stargz-store-helper`), looked up first, for their repository only.
    public var given: GivenCredentials?

    /// Creates a store over `files` (default: the standard locations for this process).
    public init(files: [String]? = nil, explicit: [String: Credential] = [:], given: GivenCredentials? = nil) {
        self.files = files ?? CredentialStore.defaultFiles()
        self.explicit = explicit
        self.given = given
    }

    /// The standard credential files for this process's environment.
    public static func defaultFiles(environment: [String: String]? = nil, crio: [String]? = nil) -> [String] {
        let env = environment ?? ProcessInfo.processInfo.environment
        var out: [String] = []
        if let f = env["REGISTRY_AUTH_FILE"], !f.isEmpty { out.append(f) }
        if let x = env["XDG_RUNTIME_DIR"], !x.isEmpty { out.append("\(x)/containers/auth.json") }
        out.append("/run/containers/\(getuid())/auth.json")
        let home = env["HOME"] ?? NSHomeDirectory()
        out.append("\(home)/.config/containers/auth.json")
        if let d = env["DOCKER_CONFIG"], !d.isEmpty { out.append("\(d)/config.json") }
        out.append("\(home)/.docker/config.json")
        for f in pullSecretFiles(crio: crio ?? crioConfigFiles()) where !out.contains(f) { out.append(f) }
        return out
    }

    /// The kubelet's credentials file, where OpenShift keeps the cluster pull secret.
    public static let kubeletConfig = "/var/lib/kubelet/config.json"

    /// The node's pull secret files: CRI-O's `global_auth_file` (from `crio`, the main file and then its drop-ins in
    /// name order, the last that sets it winning), then ``kubeletConfig``.
    public static func pullSecretFiles(crio: [String] = crioConfigFiles()) -> [String] {
        var global: String? = nil
        for f in crio {
            guard let text = try? String(contentsOfFile: f, encoding: .utf8), let v = globalAuthFile(inCrioConf: text) else { continue }
            global = v
        }
        return (global.map { [$0] } ?? []) + (global == kubeletConfig ? [] : [kubeletConfig])
    }

    /// `/etc/crio/crio.conf` and `/etc/crio/crio.conf.d/*` (CRI-O reads drop-ins in name order).
    public static func crioConfigFiles(directory: String = "/etc/crio") -> [String] {
        let dropIns = ((try? FileManager.default.contentsOfDirectory(atPath: directory + "/crio.conf.d")) ?? [])
            .filter { !$0.hasPrefix(".") }.sorted().map { directory + "/crio.conf.d/" + $0 }
        return [directory + "/crio.conf"] + dropIns
    }

    /// The `global_auth_file` of a crio.conf's `[crio.image]` table, if it sets one (nil, too, for a file that is
    /// not TOML: CRI-O would not start with it).
    static func globalAuthFile(inCrioConf text: String) -> String? {
        guard let root = try? TOML.parse(text),
            let v = root["crio"]?.table?["image"]?.table?["global_auth_file"]?.string, !v.isEmpty
        else { return nil }
        return v
    }

    /// The credential for an image in `repository` on `host` (`registry:port`), or nil for anonymous access. Without
    /// a repository, only the host's entries count.
    public func credential(for host: String, repository: String? = nil) throws -> Credential? {
        if let given, let repository, let c = given.credential(host: host, repository: repository) { return c }
        let scopes = Self.scopes(host, repository)
        for s in scopes { if let c = explicit[s] { return c } }
        for f in files {
            guard let data = FileManager.default.contents(atPath: f) else { continue }
            if let c = try Self.lookup(scopes, in: data, file: f) { return c }
        }
        return nil
    }

    /// What an entry may be keyed by for an image of `repository` on `host`, most specific first:
    /// `host/a/b/c`, `host/a/b`, `host/a`, `host`.
    static func scopes(_ host: String, _ repository: String?) -> [String] {
        let h = canonicalHost(host)
        var out: [String] = []
        if let repository, !repository.isEmpty {
            var parts = repository.split(separator: "/").map(String.init)
            while !parts.isEmpty {
                out.append(h + "/" + parts.joined(separator: "/"))
                parts.removeLast()
            }
        }
        out.append(h)
        return out
    }

    /// Docker Hub's names are one.
    static func canonicalHost(_ host: String) -> String {
        host == "index.docker.io" || host == "registry-1.docker.io" ? "docker.io" : host
    }

    /// An `auths` key as a scope, as containers/image reads it: a key with a scheme is Docker's legacy form and
    /// stands for its host (`https://index.docker.io/v1/` is `docker.io`); one without is the scope it names
    /// (`host`, `host/ns`, `host/ns/repo`). Docker Hub's names are `docker.io`.
    static func normalizedKey(_ key: String) -> String {
        var k = Substring(key)
        var legacy = false
        for scheme in ["https://", "http://"] where k.hasPrefix(scheme) {
            k = k.dropFirst(scheme.count)
            legacy = true
        }
        if legacy { k = k.prefix { $0 != "/" } }
        while k.hasSuffix("/") { k = k.dropLast() }
        guard let slash = k.firstIndex(of: "/") else { return canonicalHost(String(k)) }
        return canonicalHost(String(k[..<slash])) + String(k[slash...])
    }

    /// The entry for the most specific of `scopes` (``scopes(_:_:)``; the last is the host) in a credentials file.
    static func lookup(_ scopes: [String], in data: Data, file: String) throws -> Credential? {
        guard let top = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw RegistryError(.invalidConfiguration, "credentials file \(file) is not a JSON object")
        }
        let host = scopes.last ?? ""
        if let helpers = top["credHelpers"] as? [String: String] {
            // Helpers are named per host (containers/image and Docker alike).
            for (k, h) in helpers where normalizedKey(k) == host { return try runHelper(h, host: host) }
        }
        if let auths = top["auths"] as? [String: Any] {
            var byScope: [String: (key: String, entry: Any)] = [:]
            for (k, v) in auths {
                let n = normalizedKey(k)
                // Two spellings of one scope (`host`, `https://host`): the one that sorts first decides, so the
                // result does not depend on the file's key order.
                if let have = byScope[n], have.key <= k { continue }
                byScope[n] = (k, v)
            }
            for scope in scopes {
                guard let (k, v) = byScope[scope] else { continue }
                guard let entry = v as? [String: Any] else { continue }
                if let auth = entry["auth"] as? String, !auth.isEmpty {
                    guard let decoded = Data(base64Encoded: auth), let s = String(data: decoded, encoding: .utf8),
                        let colon = s.firstIndex(of: ":")
                    else {
                        throw RegistryError(.invalidConfiguration, "credentials file \(file): the auth entry for \(k) is not base64 user:password")
                    }
                    return Credential(username: String(s[..<colon]), password: String(s[s.index(after: colon)...]))
                }
                if let token = entry["identitytoken"] as? String, !token.isEmpty {
                    return .identityToken(token)
                }
            }
        }
        if let store = top["credsStore"] as? String, !store.isEmpty {
            return try? runHelper(store, host: host)
        }
        return nil
    }

    /// Runs `docker-credential-<helper> get` with the host on standard input.
    static func runHelper(_ helper: String, host: String) throws -> Credential? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["docker-credential-\(helper)", "get"]
        let input = Pipe(), output = Pipe()
        p.standardInput = input
        p.standardOutput = output
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch {
            throw RegistryError(.invalidConfiguration, "cannot run credential helper docker-credential-\(helper)", cause: error)
        }
        input.fileHandleForWriting.write(Data(host.utf8))
        try? input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }
        guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let user = obj["Username"] as? String, let secret = obj["Secret"] as? String
        else {
            throw RegistryError(.invalidConfiguration, "credential helper docker-credential-\(helper) gave no Username/Secret for \(host)")
        }
        return Credential(username: user, password: secret)
    }
}
