// SPDX-License-Identifier: Apache-2.0

/// An image reference, parsed and normalized as containers/image (docker/reference) does:
/// `nginx` → `docker.io/library/nginx:latest`, `localhost:5000/a/b@sha256:…`, `quay.io/x/y:1.0`.
public struct Reference: Hashable, Sendable, CustomStringConvertible {
    /// The registry host, with port (`docker.io`, `localhost:5000`).
    public var registry: String
    /// The repository path inside the registry (`library/nginx`).
    public var repository: String
    /// The tag, if any.
    public var tag: String?
    /// The digest, if any.
    public var digest: Digest?

    /// The default registry for names without one.
    public static let defaultRegistry = "docker.io"

    /// Parses `ref`; a missing tag and digest becomes `:latest` when `defaultTag` is true (as `podman pull` does).
    public init(_ ref: String, defaultTag: Bool = true) throws(ReferenceError) {
        guard !ref.isEmpty else { throw ReferenceError("empty image reference") }
        guard ref.utf8.count <= 4096 else { throw ReferenceError("image reference is too long") }
        var rest = Substring(ref)
        var digest: Digest? = nil
        if let at = rest.firstIndex(of: "@") {
            let d = rest[rest.index(after: at)...]
            guard let parsed = Digest(d) else {
                throw ReferenceError("invalid digest \"\(d)\" in image reference \"\(ref)\"")
            }
            digest = parsed
            rest = rest[..<at]
        }
        var tag: String? = nil
        // A tag is after the last ':' that follows the last '/'.
        let lastSlash = rest.lastIndex(of: "/")
        if let colon = rest.lastIndex(of: ":"), lastSlash.map({ colon > $0 }) ?? true {
            let t = String(rest[rest.index(after: colon)...])
            guard Reference.isValidTag(t) else { throw ReferenceError("invalid tag \"\(t)\" in image reference \"\(ref)\"") }
            tag = t
            rest = rest[..<colon]
        }
        var name = String(rest)
        guard !name.isEmpty else { throw ReferenceError("image reference \"\(ref)\" has no repository name") }
        var registry = Reference.defaultRegistry
        if let slash = name.firstIndex(of: "/") {
            let first = name[..<slash]
            if first.contains(".") || first.contains(":") || first == "localhost" || first.contains(where: \.isUppercase) {
                registry = String(first)
                name = String(name[name.index(after: slash)...])
            }
        }
        if registry == "index.docker.io" { registry = Reference.defaultRegistry }
        if registry == Reference.defaultRegistry && !name.contains("/") { name = "library/" + name }
        guard Reference.isValidHost(registry) else {
            throw ReferenceError("invalid registry \"\(registry)\" in image reference \"\(ref)\"")
        }
        if name.contains(where: { $0.isUppercase }) {
            throw ReferenceError("repository name must be lowercase: \"\(ref)\"")
        }
        guard Reference.isValidRepository(name) else {
            throw ReferenceError("invalid repository name \"\(name)\" in image reference \"\(ref)\"")
        }
        guard registry.utf8.count + 1 + name.utf8.count <= 255 else {
            throw ReferenceError("repository name must not be more than 255 characters: \"\(ref)\"")
        }
        if tag == nil && digest == nil && defaultTag { tag = "latest" }
        self.registry = registry
        self.repository = name
        self.tag = tag
        self.digest = digest
    }

    /// Creates a reference from parts.
    public init(registry: String, repository: String, tag: String? = nil, digest: Digest? = nil) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    /// `registry/repository`.
    public var name: String { "\(registry)/\(repository)" }

    /// The normalized string: `name[:tag][@digest]`, as containers/image prints it.
    public var description: String {
        var s = name
        if let tag { s += ":" + tag }
        if let digest { s += "@" + digest.description }
        return s
    }

    /// The tag or digest to ask the registry for (the digest wins).
    public var manifestReference: String { digest?.description ?? tag ?? "latest" }

    /// The same repository at another tag (no digest).
    public func with(tag: String) -> Reference { Reference(registry: registry, repository: repository, tag: tag) }

    /// The same repository at a digest (the tag is kept, as c/image does for `name:tag@digest`).
    public func with(digest: Digest) -> Reference {
        Reference(registry: registry, repository: repository, tag: tag, digest: digest)
    }

    /// The reference as the Additional Layer Store path component: standard base64 (padded) of ``description``.
    public var base64: String { Base64.encode(Array(description.utf8)) }

    static func isValidTag(_ t: String) -> Bool {
        let b = Array(t.utf8)
        guard !b.isEmpty, b.count <= 128 else { return false }
        func word(_ c: UInt8) -> Bool { (48...57).contains(c) || (65...90).contains(c) || (97...122).contains(c) || c == 95 }
        guard word(b[0]) else { return false }
        return b.dropFirst().allSatisfy { word($0) || $0 == 46 || $0 == 45 }
    }

    static func isValidHost(_ h: String) -> Bool {
        var host = Substring(h)
        if host.hasPrefix("[") {  // IPv6 literal
            guard let close = host.firstIndex(of: "]") else { return false }
            let rest = host[host.index(after: close)...]
            if rest.isEmpty { return true }
            guard rest.hasPrefix(":"), let p = Int(rest.dropFirst()), (0...65535).contains(p) else { return false }
            return true
        }
        if let colon = host.lastIndex(of: ":") {
            guard let p = Int(host[host.index(after: colon)...]), (0...65535).contains(p) else { return false }
            host = host[..<colon]
        }
        guard !host.isEmpty else { return false }
        return host.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            !label.isEmpty && label.first != "-" && label.last != "-"
                && label.utf8.allSatisfy { (48...57).contains($0) || (65...90).contains($0) || (97...122).contains($0) || $0 == 45 }
        }
    }

    static func isValidRepository(_ r: String) -> Bool {
        r.split(separator: "/", omittingEmptySubsequences: false).allSatisfy { comp in
            // [a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*
            let b = Array(comp.utf8)
            guard let f = b.first, let l = b.last, isAlnum(f), isAlnum(l) else { return false }
            var i = 0
            while i < b.count {
                if isAlnum(b[i]) {
                    i += 1
                    continue
                }
                // A separator run: ".", "_", "__", or any number of "-".
                if b[i] == 46 {
                    i += 1
                } else if b[i] == 95 {
                    i += (i + 1 < b.count && b[i + 1] == 95) ? 2 : 1
                } else if b[i] == 45 {
                    while i < b.count && b[i] == 45 { i += 1 }
                } else {
                    return false
                }
                guard i < b.count, isAlnum(b[i]) else { return false }
            }
            return true
        }
    }

    private static func isAlnum(_ c: UInt8) -> Bool { (48...57).contains(c) || (97...122).contains(c) }
}

/// A reference that does not parse.
public struct ReferenceError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What is wrong, naming the reference.
    public var message: String
    init(_ message: String) { self.message = message }
    public var description: String { message }
}
