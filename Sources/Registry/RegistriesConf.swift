// SPDX-License-Identifier: Apache-2.0
import Foundation
import TOML

/// Reads containers-registries.conf(5): which hosts are insecure (plain HTTP), and where images are pulled from.
///
/// Version 2 (`[[registry]]` with `prefix`, `location`, `insecure`, `blocked`, `mirror-by-digest-only` and
/// `[[registry.mirror]]` with `location`, `insecure`, `pull-from-mirror`) becomes ``PullRule``s, matched by reference
/// prefix as containers/image matches them; version 1 (`[registries.insecure] registries = [...]`) marks hosts
/// insecure. This is what OpenShift's machine-config-operator writes for ImageDigestMirrorSet and ImageTagMirrorSet.
public enum RegistriesConf {
    /// What the files say.
    public struct Settings: Sendable, Equatable {
        /// Insecure hosts (sources and mirrors).
        public var hosts: [String: HostConfiguration] = [:]
        /// The `[[registry]]` entries, one per prefix.
        public var rules: [PullRule] = []

        /// Empty settings.
        public init() {}
    }

    /// The files in force, as containers/image finds them: `$CONTAINERS_REGISTRIES_CONF`, else
    /// `/etc/containers/registries.conf`, then `registries.conf.d/*.conf` beside it in name order.
    public static func defaultFiles(environment: [String: String]? = nil) -> [String] {
        let environment = environment ?? ProcessInfo.processInfo.environment
        let main = environment["CONTAINERS_REGISTRIES_CONF"] ?? "/etc/containers/registries.conf"
        var files = [main]
        let dropins = (main as NSString).deletingLastPathComponent + "/registries.conf.d"
        if let names = try? FileManager.default.contentsOfDirectory(atPath: dropins) {
            files += names.filter { $0.hasSuffix(".conf") }.sorted().map { dropins + "/" + $0 }
        }
        return files
    }

    /// Reads `files` (missing ones are skipped); a later file's entry for a prefix replaces an earlier one's, as
    /// drop-ins do in containers/image, and so does its word on whether a host it names is insecure.
    public static func load(_ files: [String]) throws -> Settings {
        var out = Settings()
        for f in files {
            guard let data = FileManager.default.contents(atPath: f) else { continue }
            let s = try parse(String(decoding: data, as: UTF8.self), path: f)
            for (k, v) in s.hosts { out.hosts[k] = v }
            for r in s.rules {
                if let i = out.rules.firstIndex(where: { $0.prefix == r.prefix }) { out.rules[i] = r } else { out.rules.append(r) }
            }
        }
        return out
    }

    /// Parses one file's text; `path` names it in errors. Within a file, the first entry for a prefix counts.
    public static func parse(_ text: String, path: String) throws -> Settings {
        let root: TOMLTable
        do { root = try TOML.parse(text) } catch {
            throw RegistryError(.invalidConfiguration, "\(path): \(error)")
        }
        func bad(_ what: String) -> RegistryError { RegistryError(.invalidConfiguration, "\(path): \(what)") }
        var out = Settings()
        // Every host the file names, insecure if any of its entries says so.
        func insecure(_ location: String, _ value: Bool = true) {
            let h = hostOf(location)
            out.hosts[h, default: HostConfiguration()].insecure = out.hosts[h]?.insecure == true || value
        }
        // Version 1.
        if let v1 = root["registries"]?.table {
            for (k, v) in v1.entries {
                guard k == "insecure", let list = v.table?["registries"]?.array else { continue }
                for h in list {
                    guard let s = h.string else { throw bad("registries.insecure.registries holds a \(h.typeName)") }
                    insecure(s)
                }
            }
        }
        // Version 2.
        guard let regs = root["registry"] else { return out }
        guard let list = regs.array else { throw bad("registry must be an array of tables ([[registry]])") }
        for (n, r) in list.enumerated() {
            let at = "registry[\(n)]"
            guard let t = r.table else { throw bad("\(at) is a \(r.typeName), not a table") }
            func string(_ k: String, in tt: TOMLTable, _ at: String) throws -> String? {
                guard let v = tt[k] else { return nil }
                guard let s = v.string else { throw bad("\(at).\(k) must be a string, not a \(v.typeName)") }
                return s
            }
            func bool(_ k: String, in tt: TOMLTable, _ at: String) throws -> Bool {
                guard let v = tt[k] else { return false }
                guard let b = v.boolean else { throw bad("\(at).\(k) must be true or false, not a \(v.typeName)") }
                return b
            }
            let location = try string("location", in: t, at).flatMap { $0.isEmpty ? nil : $0 }
            guard let prefix = try string("prefix", in: t, at).flatMap({ $0.isEmpty ? nil : $0 }) ?? location else {
                throw bad("\(at) has neither prefix nor location")
            }
            if try string("pull-from-mirror", in: t, at) != nil {
                throw bad("\(at).pull-from-mirror must not be set for a non-mirror registry (\(prefix))")
            }
            let wildcard = prefix.hasPrefix("*.")
            if wildcard && location != nil { throw bad("\(at): a location cannot go with a wildcard prefix \(prefix)") }
            var rule = PullRule(
                prefix: prefix, location: wildcard ? nil : location ?? prefix, blocked: try bool("blocked", in: t, at),
                mirrorByDigestOnly: try bool("mirror-by-digest-only", in: t, at))
            // Only the first entry for a prefix counts (containers/image).
            if out.rules.contains(where: { $0.prefix == prefix }) { continue }
            if !wildcard { insecure(rule.location ?? prefix, try bool("insecure", in: t, at)) }
            if let ms = t["mirror"] {
                guard let arr = ms.array else { throw bad("\(at).mirror must be an array of tables ([[registry.mirror]])") }
                for (j, m) in arr.enumerated() {
                    let mat = "\(at).mirror[\(j)]"
                    guard let mt = m.table, let loc = try string("location", in: mt, mat), !loc.isEmpty else {
                        throw bad("\(mat) needs a location string")
                    }
                    let use = try string("pull-from-mirror", in: mt, mat) ?? ""
                    guard use.isEmpty || PullRule.MirrorUse(rawValue: use) != nil else {
                        throw bad("\(mat).pull-from-mirror \"\(use)\" is none of all, digest-only, tag-only")
                    }
                    if rule.mirrorByDigestOnly && !use.isEmpty {
                        throw bad("\(mat): pull-from-mirror cannot go with the registry's mirror-by-digest-only")
                    }
                    insecure(loc, try bool("insecure", in: mt, mat))
                    rule.mirrors.append(PullRule.Mirror(location: loc, use: PullRule.MirrorUse(rawValue: use) ?? .all))
                }
            }
            out.rules.append(rule)
        }
        return out
    }

    /// `host[:port]` of `host[:port][/path]`.
    static func hostOf(_ s: String) -> String {
        String(s.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
    }
}
