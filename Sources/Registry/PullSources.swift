// SPDX-License-Identifier: Apache-2.0
public import OCI

/// One `[[registry]]` of containers-registries.conf(5) (what OpenShift writes for ImageDigestMirrorSet and
/// ImageTagMirrorSet): references under ``prefix`` are pulled from its mirrors, then from ``location``.
public struct PullRule: Sendable, Equatable {
    /// Which references a mirror serves (`pull-from-mirror`).
    public enum MirrorUse: String, Sendable, Equatable {
        /// Tags and digests (the default).
        case all
        /// Only references by digest (IDMS).
        case digestOnly = "digest-only"
        /// Only references by tag (ITMS).
        case tagOnly = "tag-only"
    }

    /// A `[[registry.mirror]]`.
    public struct Mirror: Sendable, Equatable {
        /// `host[:port][/path]`, which takes the place of the prefix.
        public var location: String
        /// Which references it serves.
        public var use: MirrorUse

        /// Creates a mirror.
        public init(location: String, use: MirrorUse = .all) {
            self.location = location
            self.use = use
        }
    }

    /// `host[:port][/path]` (or `*.domain`): the references it covers are this, or this followed by `/`, `:` or `@`.
    public var prefix: String
    /// What takes the place of the prefix when the source itself is asked (nil: the reference as it is).
    public var location: String?
    /// Never ask the source; mirrors only (`blocked = true`, IDMS `NeverContactSource`).
    public var blocked: Bool
    /// Mirrors serve references by digest only (`mirror-by-digest-only`).
    public var mirrorByDigestOnly: Bool
    /// Tried in order, before the source.
    public var mirrors: [Mirror]

    /// Creates a rule.
    public init(prefix: String, location: String? = nil, blocked: Bool = false, mirrorByDigestOnly: Bool = false, mirrors: [Mirror] = []) {
        self.prefix = prefix
        self.location = location
        self.blocked = blocked
        self.mirrorByDigestOnly = mirrorByDigestOnly
        self.mirrors = mirrors
    }

    /// The length of the part of `ref` (`host/repo[:tag][@digest]`) the prefix covers, or nil when it does not
    /// cover it (containers/image's matching: whole components; `*.domain` for subdomains of the host only).
    func match(_ ref: String) -> Int? {
        if prefix.hasPrefix("*.") {
            let host = ref.prefix { $0 != "/" && $0 != "@" }
            let bare = host.split(separator: ":").first.map(String.init) ?? String(host)
            return bare.hasSuffix(prefix.dropFirst()) ? bare.count : nil
        }
        guard ref.hasPrefix(prefix) else { return nil }
        if ref.count == prefix.count { return prefix.count }
        let next = ref[ref.index(ref.startIndex, offsetBy: prefix.count)]
        return next == "/" || next == ":" || next == "@" ? prefix.count : nil
    }
}

extension RegistryConfiguration {
    /// Where `ref` is pulled from, in order, as containers/image decides: the matching rule with the longest
    /// prefix gives its mirrors that serve this kind of reference (by digest or by tag), then its location unless
    /// it is blocked; with no rule, the host's mirrors (config.toml), then the reference itself. Throws when a rule
    /// blocks the source and no mirror serves the reference.
    public func pullSources(_ ref: Reference) throws -> [Reference] {
        let full = ref.description
        // The longest prefix wins (containers/image ranks a `*.domain` rule by its own length too); the length it
        // covers in the reference is what a location takes the place of.
        var best: (rule: PullRule, length: Int)? = nil
        for r in rules {
            guard let n = r.match(full), r.prefix.count > (best?.rule.prefix.count ?? -1) else { continue }
            best = (r, n)
        }
        guard let (rule, covered) = best else {
            return host(ref.registry).mirrors.map { Reference(registry: $0.host, repository: ref.repository, tag: ref.tag, digest: ref.digest) } + [ref]
        }
        let byDigest = ref.digest != nil
        let rest = String(full.dropFirst(covered))
        // The location takes the place of what the prefix covered (for a `*.domain` rule, the host's name).
        func rewritten(_ location: String) -> Reference? { try? Reference(location + rest, defaultTag: false) }
        var out: [Reference] = []
        if !(rule.mirrorByDigestOnly && !byDigest) {
            for m in rule.mirrors where m.use == .all || (m.use == .digestOnly) == byDigest {
                if let r = rewritten(m.location) { out.append(r) }
            }
        }
        if !rule.blocked { out.append(rule.location.flatMap(rewritten) ?? ref) }
        guard !out.isEmpty else {
            throw RegistryError(
                .blocked, "registries.conf blocks \(rule.prefix) and has no mirror for \(byDigest ? "digest" : "tag") references like \(ref)")
        }
        return out
    }
}
