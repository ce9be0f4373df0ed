// SPDX-License-Identifier: Apache-2.0
import Foundation

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
}

/// Finds credentials where Podman and Docker keep them.
///
/// Order: `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`, `/run/containers/<uid>/auth.json`,
/// `$HOME/.config/containers/auth.json`, `$DOCKER_CONFIG/config.json` or `$HOME/.docker/config.json`.
/// Each file's `auths` (base64 `user:password`) and `credHelpers`/`credsStore` (a `docker-credential-<name>`
/// helper run with the host on standard input) are used. The first file with an entry for a host wins.
public struct CredentialStore: Sendable {
    /// The files searched, in order.
    public var files: [String]
    /// Credentials given directly (tests, `--creds`), looked up before the files.
    public var explicit: [String: Credential]

    /// Creates a store over `files` (default: the standard locations for this process).
    public init(files: [String]? = nil, explicit: [String: Credential] = [:]) {
        self.files = files ?? CredentialStore.defaultFiles()
        self.explicit = explicit
    }

    /// The standard credential files for this process's environment.
    public static func defaultFiles(environment: [String: String]? = nil) -> [String] {
        let env = environment ?? ProcessInfo.processInfo.environment
        var out: [String] = []
        if let f = env["REGISTRY_AUTH_FILE"], !f.isEmpty { out.append(f) }
        if let x = env["XDG_RUNTIME_DIR"], !x.isEmpty { out.append("\(x)/containers/auth.json") }
        out.append("/run/containers/\(getuid())/auth.json")
        let home = env["HOME"] ?? NSHomeDirectory()
        out.append("\(home)/.config/containers/auth.json")
        if let d = env["DOCKER_CONFIG"], !d.isEmpty { out.append("\(d)/config.json") }
        out.append("\(home)/.docker/config.json")
        return out
    }

    /// The credential for `host` (`registry:port`), or nil for anonymous access.
    public func credential(for host: String) throws -> Credential? {
        if let c = explicit[host] { return c }
        for f in files {
            guard let data = FileManager.default.contents(atPath: f) else { continue }
            if let c = try Self.lookup(host, in: data, file: f) { return c }
        }
        return nil
    }

    static func keys(for host: String) -> [String] {
        var keys = [host, "https://\(host)", "http://\(host)"]
        if host == "docker.io" || host == "registry-1.docker.io" || host == "index.docker.io" {
            keys += ["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io"]
        }
        return keys
    }

    static func lookup(_ host: String, in data: Data, file: String) throws -> Credential? {
        guard let top = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw RegistryError(.invalidConfiguration, "credentials file \(file) is not a JSON object")
        }
        if let helpers = top["credHelpers"] as? [String: String] {
            for k in keys(for: host) { if let h = helpers[k] { return try runHelper(h, host: host) } }
        }
        if let auths = top["auths"] as? [String: Any] {
            for (k, v) in auths {
                let normalized = k.replacingOccurrences(of: "https://", with: "").replacingOccurrences(of: "http://", with: "")
                    .split(separator: "/").first.map(String.init) ?? k
                guard keys(for: host).contains(k) || normalized == host
                    || (host == "docker.io" && normalized == "index.docker.io")
                else { continue }
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
                    return Credential(username: "<token>", password: token)
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
