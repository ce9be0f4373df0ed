// SPDX-License-Identifier: Apache-2.0
import Foundation
import TOML

/// Reads containers-registries.conf(5): which hosts are insecure (plain HTTP) and which mirrors to try.
///
/// Version 2 (`[[registry]]` with `prefix`, `location`, `insecure`, `blocked`, `[[registry.mirror]]`) and
/// version 1 (`[registries.insecure] registries = [...]`) are both read. Settings apply per host: a prefix
/// with a repository path (`example.com/team`) applies to the whole host. A `location` other than the prefix
/// becomes the first place tried, before the prefix's own host.
public enum RegistriesConf {
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

    /// Reads `files` (missing ones are skipped) into per-host settings; later files override earlier ones.
    public static func load(_ files: [String]) throws -> [String: HostConfiguration] {
        var hosts: [String: HostConfiguration] = [:]
        for f in files {
            guard let data = FileManager.default.contents(atPath: f) else { continue }
            for (k, v) in try parse(String(decoding: data, as: UTF8.self), path: f) { hosts[k] = v }
        }
        return hosts
    }

    /// Parses one file's text; `path` names it in errors.
    public static func parse(_ text: String, path: String) throws -> [String: HostConfiguration] {
        let root: TOMLTable
        do { root = try TOML.parse(text) } catch {
            throw RegistryError(.invalidConfiguration, "\(path): \(error)")
        }
        func bad(_ what: String) -> RegistryError { RegistryError(.invalidConfiguration, "\(path): \(what)") }
        var hosts: [String: HostConfiguration] = [:]
        // Version 1.
        if let v1 = root["registries"]?.table {
            for (k, v) in v1.entries {
                guard k == "insecure", let list = v.table?["registries"]?.array else { continue }
                for h in list {
                    guard let s = h.string else { throw bad("registries.insecure.registries holds a \(h.typeName)") }
                    hosts[hostOf(s), default: HostConfiguration()].insecure = true
                }
            }
        }
        // Version 2.
        guard let regs = root["registry"] else { return hosts }
        guard let list = regs.array else { throw bad("registry must be an array of tables ([[registry]])") }
        for (n, r) in list.enumerated() {
            guard let t = r.table else { throw bad("registry[\(n)] is a \(r.typeName), not a table") }
            func string(_ k: String) throws -> String? {
                guard let v = t[k] else { return nil }
                guard let s = v.string else { throw bad("registry[\(n)].\(k) must be a string, not a \(v.typeName)") }
                return s
            }
            func bool(_ k: String, in tt: TOMLTable, _ at: String) throws -> Bool {
                guard let v = tt[k] else { return false }
                guard let b = v.boolean else { throw bad("\(at).\(k) must be true or false, not a \(v.typeName)") }
                return b
            }
            let location = try string("location")
            guard let prefix = try string("prefix") ?? location, !prefix.isEmpty else {
                throw bad("registry[\(n)] has neither prefix nor location")
            }
            if prefix.hasPrefix("*.") { continue }  // wildcard subdomains: not a host we can key on
            let host = hostOf(prefix)
            var h = hosts[host] ?? HostConfiguration()
            h.insecure = try bool("insecure", in: t, "registry[\(n)]")
            var mirrors: [Mirror] = []
            if let ms = t["mirror"] {
                guard let arr = ms.array else { throw bad("registry[\(n)].mirror must be an array of tables ([[registry.mirror]])") }
                for (j, m) in arr.enumerated() {
                    guard let mt = m.table, let loc = mt["location"]?.string, !loc.isEmpty else {
                        throw bad("registry[\(n)].mirror[\(j)] needs a location string")
                    }
                    mirrors.append(Mirror(host: hostOf(loc), insecure: try bool("insecure", in: mt, "registry[\(n)].mirror[\(j)]")))
                }
            }
            if let loc = location, hostOf(loc) != host {
                mirrors.append(Mirror(host: hostOf(loc), insecure: h.insecure))
            }
            h.mirrors = mirrors
            hosts[host] = h
        }
        return hosts
    }

    /// `host[:port]` of `host[:port][/path]`.
    static func hostOf(_ s: String) -> String {
        String(s.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
    }
}
