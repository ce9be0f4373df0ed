// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing

@testable import Deploy

/// A fixed config.toml, so golden files do not follow the store's defaults.
let testConfig = """
    # stargz-store configuration
    noprefetch = false
    disk_cache_mib = 2048

    [[resolver.host."registry.example.com".mirrors]]
    host = "mirror.example.com:5000"
    insecure = true

    """

func testNode(storageConf: String? = nil, binary: BinarySource? = nil) throws -> NodeFiles {
    let layout = StoreLayout()
    return NodeFiles(
        storageConf: try storageConf ?? (StorageConf.merge(nodeStorageConf, entry: layout.additionalLayerStoreEntry).text),
        configTOML: testConfig, unit: try SystemdUnit.render(layout: layout, binary: binary), layout: layout)
}

/// Whether Foundation's JSON reader made `n` from `true`/`false` (a boolean NSNumber, type code "c").
func isJSONBoolean(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }

// MARK: Our own reading of the Ignition 3.2.0 spec (coreos/ignition config/v3_2), for the parts we emit.

/// Problems of an Ignition 3.2.0 config: unknown keys, wrong JSON types, missing required fields, invalid
/// values, for `ignition`, `storage.files` and `systemd.units`.
func ignitionProblems(_ config: Any) -> [String] {
    var problems: [String] = []
    func object(_ v: Any?, _ at: String, allowed: Set<String>, required: Set<String> = []) -> [String: Any]? {
        guard let o = v as? [String: Any] else {
            problems.append("\(at) must be an object")
            return nil
        }
        for k in o.keys where !allowed.contains(k) { problems.append("\(at).\(k) is not a field of the spec") }
        for k in required where o[k] == nil { problems.append("\(at).\(k) is required") }
        return o
    }
    func string(_ v: Any?, _ at: String) -> String? {
        guard let s = v as? String else {
            problems.append("\(at) must be a string")
            return nil
        }
        return s
    }
    func bool(_ v: Any?, _ at: String) {
        guard let n = v as? NSNumber, isJSONBoolean(n) else {
            problems.append("\(at) must be a boolean")
            return
        }
    }
    func int(_ v: Any?, _ at: String) -> Int? {
        guard let n = v as? NSNumber, !isJSONBoolean(n), n.doubleValue == Double(n.intValue) else {
            problems.append("\(at) must be an integer")
            return nil
        }
        return n.intValue
    }
    func node(_ o: [String: Any], _ at: String) {
        if let p = string(o["path"], at + ".path") {
            let clean = (p as NSString).standardizingPath
            if !p.hasPrefix("/") || clean != p { problems.append("\(at).path \(p) must be absolute and clean") }
        }
        if o["overwrite"] != nil { bool(o["overwrite"], at + ".overwrite") }
        for owner in ["user", "group"] where o[owner] != nil {
            guard let u = object(o[owner], "\(at).\(owner)", allowed: ["id", "name"]) else { continue }
            if u["id"] != nil { _ = int(u["id"], "\(at).\(owner).id") }
            if u["name"] != nil { _ = string(u["name"], "\(at).\(owner).name") }
            if u["id"] != nil && u["name"] != nil { problems.append("\(at).\(owner) sets both id and name") }
        }
    }
    guard let root = object(config, "config", allowed: ["ignition", "passwd", "storage", "systemd"], required: ["ignition"]) else {
        return problems
    }
    if let ign = object(root["ignition"], "ignition", allowed: ["config", "proxy", "security", "timeouts", "version"], required: ["version"]) {
        if string(ign["version"], "ignition.version") != "3.2.0" { problems.append("ignition.version must be 3.2.0") }
    }
    if let storage = root["storage"],
        let s = object(storage, "storage", allowed: ["directories", "disks", "files", "filesystems", "links", "luks", "raid"])
    {
        var paths = Set<String>()
        for (n, f) in (s["files"] as? [Any] ?? []).enumerated() {
            let at = "storage.files[\(n)]"
            guard let file = object(f, at, allowed: ["path", "overwrite", "user", "group", "append", "contents", "mode"], required: ["path"]) else {
                continue
            }
            node(file, at)
            if let p = file["path"] as? String, !paths.insert(p).inserted { problems.append("\(at).path \(p) is a duplicate") }
            if file["mode"] != nil, let m = int(file["mode"], at + ".mode") {
                if m < 0 || m > 0o7777 { problems.append("\(at).mode \(m) is out of range") }
                if m & 0o7000 != 0 { problems.append("\(at).mode \(m) sets special bits") }
            }
            var source: String?
            if file["contents"] != nil,
                let c = object(file["contents"], at + ".contents", allowed: ["compression", "httpHeaders", "source", "verification"])
            {
                if c["source"] != nil { source = string(c["source"], at + ".contents.source") }
                if let comp = c["compression"] as? String, !["", "gzip"].contains(comp) { problems.append("\(at).contents.compression") }
            }
            if let source {
                let scheme = source.split(separator: ":", maxSplits: 1).first.map(String.init) ?? ""
                if !["http", "https", "tftp", "gs", "s3", "data"].contains(scheme) { problems.append("\(at) source scheme \(scheme)") }
                if scheme == "data" && DataURL.decode(source) == nil { problems.append("\(at) source is not a valid data URL") }
            }
            if (file["overwrite"] as? Bool) == true && source == nil { problems.append("\(at) overwrites without a source") }
        }
    }
    if let systemd = root["systemd"], let sd = object(systemd, "systemd", allowed: ["units"]) {
        var names = Set<String>()
        for (n, u) in (sd["units"] as? [Any] ?? []).enumerated() {
            let at = "systemd.units[\(n)]"
            guard let unit = object(u, at, allowed: ["contents", "dropins", "enabled", "mask", "name"], required: ["name"]) else { continue }
            if let name = string(unit["name"], at + ".name") {
                let ext = (name as NSString).pathExtension
                if !["service", "socket", "device", "mount", "automount", "swap", "target", "path", "timer", "snapshot", "slice", "scope"].contains(ext) {
                    problems.append("\(at).name \(name) has no unit extension")
                }
                if !names.insert(name).inserted { problems.append("\(at).name is a duplicate") }
            }
            if unit["enabled"] != nil { bool(unit["enabled"], at + ".enabled") }
            if unit["mask"] != nil { bool(unit["mask"], at + ".mask") }
            if unit["contents"] != nil, let c = string(unit["contents"], at + ".contents"), !c.contains("[Install]"),
                (unit["enabled"] as? Bool) == true
            {
                problems.append("\(at) is enabled without an [Install] section")
            }
        }
    }
    return problems
}

@Suite("MachineConfig, Butane, Ignition, ContainerRuntimeConfig")
struct ManifestTests {
    @Test("the checker catches what it must: unknown fields, wrong types, a missing version, bad modes")
    func checkerCanFail() throws {
        let good = try JSONSerialization.jsonObject(with: Data(Manifests.ignition(try testNode()).json().utf8))
        #expect(ignitionProblems(good).isEmpty)
        var bad = try #require(good as? [String: Any])
        bad["ignition"] = ["version": "3.1.0"]
        var storage = try #require(bad["storage"] as? [String: Any])
        var files = try #require(storage["files"] as? [[String: Any]])
        files[0]["mode"] = "0644"
        files[0]["contents"] = ["inline": "x"]
        files[1]["path"] = "etc/relative"
        storage["files"] = files
        bad["storage"] = storage
        bad["systemd"] = ["units": [["name": "stargz-store", "enabled": "yes"]]]
        let problems = ignitionProblems(bad)
        for expected in ["ignition.version", "mode must be an integer", "contents.inline", "must be absolute", "unit extension", "enabled must be a boolean"] {
            #expect(problems.contains { $0.contains(expected) }, "\(expected) not reported in \(problems)")
        }
    }

    @Test("the MachineConfig: golden, parses as YAML, the role label, Ignition 3.2.0 fields, data URLs decode to the exact files")
    func machineConfig() throws {
        // The release tarball: the unit's download step installs the store and its helper, which the drop-in names.
        let node = try testNode(binary: try BinarySource(url: "https://mirror.example/stargz-swift-0.1.0-linux-amd64.tar.gz", sha256: sha))
        let yaml = Manifests.machineConfig(node, name: "99-worker-stargz", role: "worker").yaml()
        try expectGolden("machineconfig.yaml", yaml)
        let mc = try #require(try parseYAML(yaml) as? [String: Any])
        #expect(mc["apiVersion"] as? String == "machineconfiguration.openshift.io/v1")
        #expect(mc["kind"] as? String == "MachineConfig")
        let metadata = try #require(mc["metadata"] as? [String: Any])
        #expect(metadata["name"] as? String == "99-worker-stargz")
        #expect((metadata["labels"] as? [String: String])?["machineconfiguration.openshift.io/role"] == "worker")
        let config = try #require((mc["spec"] as? [String: Any])?["config"])
        #expect(ignitionProblems(config) == [])

        let ign = try #require(config as? [String: Any])
        let files = try #require((ign["storage"] as? [String: Any])?["files"] as? [[String: Any]])
        var decoded: [String: (String, Int)] = [:]
        for f in files {
            let source = try #require((f["contents"] as? [String: Any])?["source"] as? String)
            #expect(source.hasPrefix("data:text/plain;charset=utf-8;base64,"))
            decoded[try #require(f["path"] as? String)] = (String(decoding: try #require(DataURL.decode(source)), as: UTF8.self), try #require(f["mode"] as? Int))
            #expect(f["overwrite"] as? Bool == true)
        }
        #expect(decoded["/etc/containers/storage.conf"]?.0 == node.storageConf)
        #expect(decoded["/etc/containers/storage.conf"]?.1 == 420)
        #expect(decoded["/etc/stargz-store/config.toml"]?.0 == testConfig)
        #expect(decoded["/etc/stargz-store/config.toml"]?.1 == 420)
        #expect(decoded["/etc/containers/registries.conf.d/99-stargz-store-helper.conf"]?.0 == StoreLayout().registriesDropIn)
        #expect(decoded["/etc/containers/registries.conf.d/99-stargz-store-helper.conf"]?.1 == 420)
        let units = try #require((ign["systemd"] as? [String: Any])?["units"] as? [[String: Any]])
        #expect(units.count == 1)
        #expect(units[0]["name"] as? String == "stargz-store.service")
        #expect(units[0]["enabled"] as? Bool == true)
        #expect(units[0]["contents"] as? String == node.unit)
    }

    @Test("plain Ignition JSON is the MachineConfig's spec.config, and passes the same checks")
    func ignitionJSON() throws {
        let node = try testNode()
        let json = Manifests.ignition(node).json()
        try expectGolden("ignition.json", json)
        let ign = try JSONSerialization.jsonObject(with: Data(json.utf8))
        #expect(ignitionProblems(ign) == [])
        let mc = try #require(try parseYAML(Manifests.machineConfig(node, name: "x", role: "worker").yaml()) as? [String: Any])
        let fromYAML = try #require((mc["spec"] as? [String: Any])?["config"])
        #expect(NSDictionary(dictionary: try #require(ign as? [String: Any])).isEqual(to: try #require(fromYAML as? [String: Any])))
    }

    @Test("Butane (variant: openshift): golden, parses, inline contents are the exact files")
    func butane() throws {
        let node = try testNode()
        let yaml = Manifests.butane(node, name: "99-master-stargz", role: "master").yaml()
        try expectGolden("butane.yaml", yaml)
        let b = try #require(try parseYAML(yaml) as? [String: Any])
        #expect(b["variant"] as? String == "openshift")
        #expect(b["version"] as? String == "4.8.0")
        #expect(((b["metadata"] as? [String: Any])?["labels"] as? [String: String])?["machineconfiguration.openshift.io/role"] == "master")
        let files = try #require((b["storage"] as? [String: Any])?["files"] as? [[String: Any]])
        let inline = files.map { ($0["path"] as? String ?? "", ($0["contents"] as? [String: Any])?["inline"] as? String ?? "") }
        #expect(
            inline.map(\.0) == [
                "/etc/containers/storage.conf", "/etc/stargz-store/config.toml", "/etc/tmpfiles.d/stargz-store.conf",
                "/etc/containers/registries.conf.d/99-stargz-store-helper.conf",
            ])
        #expect(inline.map(\.1) == [node.storageConf!, testConfig, StoreLayout().tmpfilesConf, StoreLayout().registriesDropIn])
        let unit = try #require(((b["systemd"] as? [String: Any])?["units"] as? [[String: Any]])?.first)
        #expect(unit["contents"] as? String == node.unit)
    }

    @Test("ContainerRuntimeConfig: golden, parses, pool selector, the bare path (or :ref on request)")
    func containerRuntimeConfig() throws {
        let doc = try Manifests.containerRuntimeConfig(name: "stargz-worker", pool: "worker", layout: StoreLayout())
        try expectGolden("containerruntimeconfig.yaml", doc.yaml())
        let c = try #require(try parseYAML(doc.yaml()) as? [String: Any])
        let spec = try #require(c["spec"] as? [String: Any])
        let labels = (spec["machineConfigPoolSelector"] as? [String: Any])?["matchLabels"] as? [String: String]
        #expect(labels == ["pools.operator.machineconfiguration.openshift.io/worker": ""])
        let stores = (spec["containerRuntimeConfig"] as? [String: Any])?["additionalLayerStores"] as? [[String: String]]
        #expect(stores == [["path": "/var/lib/stargz-store/store"]])
        let withRef = try Manifests.containerRuntimeConfig(name: "s", pool: "infra", layout: StoreLayout(), refSuffix: true)
        #expect(withRef.yaml().contains("path: /var/lib/stargz-store/store:ref"))
    }

    @Test("--no-storage-conf leaves storage.conf out; roles and names are checked")
    func optionsAndValidation() throws {
        let node = try testNode(storageConf: nil)
        var n = node
        n.storageConf = nil
        #expect(
            n.files.map(\.path) == [
                "/etc/stargz-store/config.toml", "/etc/tmpfiles.d/stargz-store.conf",
                "/etc/containers/registries.conf.d/99-stargz-store-helper.conf",
            ])
        #expect(ignitionProblems(try JSONSerialization.jsonObject(with: Data(Manifests.ignition(n).json().utf8))) == [])
        n.authHelper = false
        #expect(n.files.map(\.path) == ["/etc/stargz-store/config.toml", "/etc/tmpfiles.d/stargz-store.conf"])
        for bad in ["Worker", "-worker", "work_er", ""] { #expect(throws: DeployError.self) { try Manifests.checkRole(bad) } }
        for good in ["worker", "master", "infra-2"] { #expect(throws: Never.self) { try Manifests.checkRole(good) } }
        #expect(throws: DeployError.self) { try Manifests.checkName("99_worker") }
    }

    @Test("stargz deploy machineconfig writes the three formats; a malformed --storage-conf writes nothing")
    func command() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let conf = try dir.write("/node-storage.conf", nodeStorageConf)
        let config = try dir.write("/config.toml", testConfig)
        let common = ["deploy", "machineconfig", "--role", "worker", "--storage-conf", conf, "--config", config]
        #expect(try stargz(common + ["--output", dir.path + "/mc.yaml"]).status == 0)
        #expect(try stargz(common + ["--format", "ignition", "--output", dir.path + "/ign.json"]).status == 0)
        #expect(try stargz(common + ["--format", "butane", "--output", dir.path + "/bu.yaml"]).status == 0)
        let node = try testNode()
        #expect(dir.read("/mc.yaml") == Data(Manifests.machineConfig(node, name: "99-worker-stargz", role: "worker").yaml().utf8))
        #expect(dir.read("/ign.json") == Data(Manifests.ignition(node).json().utf8))
        #expect(dir.read("/bu.yaml") == Data(Manifests.butane(node, name: "99-worker-stargz", role: "worker").yaml().utf8))

        // Standard output carries the same manifest.
        #expect(try stargz(common).out == Manifests.machineConfig(node, name: "99-worker-stargz", role: "worker").yaml())
        let bad = try dir.write("/bad.conf", "[storage\n")
        let refused = try stargz(["deploy", "machineconfig", "--storage-conf", bad])
        #expect(refused.status == 1 && refused.out.isEmpty && refused.err.contains("line 1"))
        #expect(try stargz(["deploy", "machineconfig", "--storage-conf", bad, "--output", dir.path + "/no.yaml"]).status == 1)
        #expect(!dir.exists("/no.yaml"))
        #expect(try stargz(["deploy", "machineconfig", "--role", "Bad Role"]).status != 0)
        #expect(try stargz(["deploy", "machineconfig", "--binary-url", "https://x/y"]).status != 0)
        // The drop-in: left out with --no-auth-helper, and when the unit downloads a single executable (no helper).
        let dropIn = "/etc/containers/registries.conf.d/99-stargz-store-helper.conf"
        func paths(_ args: [String]) throws -> [String] {
            let r = try stargz(["deploy", "machineconfig", "--format", "ignition", "--no-storage-conf"] + args)
            try #require(r.status == 0, "\(r.err)")
            let ign = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
            return ((ign["storage"] as? [String: Any])?["files"] as? [[String: Any]] ?? []).compactMap { $0["path"] as? String }
        }
        #expect(try paths([]).contains(dropIn))
        #expect(try paths(["--release-url", "https://mirror.example/r.tar.gz", "--sha256", sha]).contains(dropIn))
        #expect(try !paths(["--no-auth-helper"]).contains(dropIn))
        #expect(try !paths(["--binary-url", "https://mirror.example/stargz-store", "--sha256", sha]).contains(dropIn))
        let single = try stargz(["deploy", "machineconfig", "--binary-url", "https://mirror.example/stargz-store", "--sha256", sha])
        #expect(single.err.contains("single executable"), "\(single.err)")
        #expect(try stargz(["deploy", "containerruntimeconfig", "--output", dir.path + "/crc.yaml"]).status == 0)
        #expect(dir.read("/crc.yaml") == Data(try Manifests.containerRuntimeConfig(name: "stargz-worker", pool: "worker", layout: StoreLayout()).yaml().utf8))
    }
}

@Suite("YAML and JSON emitters")
struct DocumentTests {
    static let strings = [
        "", "plain", "yes", "No", "on", "y", "null", "~", "true", "3.2.0", "0644", "420", "-1", ".5", "1e3", "0x1F",
        "2001-12-14", "12:30", "a: b", "a:b", "trailing:", "#comment", "a #b", "- item", "[x]", "{x}", "*alias", "&anchor",
        "!tag", "|", ">", "%dir", "@at", "`tick`", "'single'", "\"double\"", " lead", "trail ", "tab\there", "multi\nline\n",
        "no final newline\nend", "two newlines\n\n", "\n", "\n\nx", " lead line\nnext\n", "ünïcödé ✓", "bell\u{7}", "nel\u{85}x",
        "ls\u{2028}x", "bom\u{FEFF}", "back\\slash", "cr\r\nlf\n", "data:text/plain;charset=utf-8;base64,AAEC+/8=",
        "machineconfiguration.openshift.io/role", "trailing space line \nx\n", "line\n  indented\n\tTabbed\n",
    ]

    @Test("every string survives YAML (read by PyYAML) and JSON (read by Foundation) exactly")
    func roundTrip() throws {
        let doc = Document.map([
            ("values", .list(Self.strings.map { .string($0) })),
            ("keys", .map(Self.strings.enumerated().map { ("\($0.element)#\($0.offset)", .string($0.element)) })),
            ("nested", .list([.map([("a", .list([.string("x\ny\n"), .integer(-3), .boolean(false)]))]), .list([.string("z")]), .map([]), .list([])])),
        ])
        let fromYAML = try #require(try parseYAML(doc.yaml()) as? [String: Any])
        #expect(fromYAML["values"] as? [String] == Self.strings)
        let keys = try #require(fromYAML["keys"] as? [String: String])
        for (n, s) in Self.strings.enumerated() { #expect(keys["\(s)#\(n)"] == s, "key \(n)") }
        let nested = try #require(fromYAML["nested"] as? [Any])
        #expect(((nested[0] as? [String: Any])?["a"] as? [Any])?.first as? String == "x\ny\n")
        #expect(((nested[0] as? [String: Any])?["a"] as? [Any])?[1] as? Int == -3)
        #expect((nested[2] as? [String: Any])?.isEmpty == true)
        #expect((nested[3] as? [Any])?.isEmpty == true)
        let fromJSON = try #require(try JSONSerialization.jsonObject(with: Data(doc.json().utf8)) as? [String: Any])
        #expect(fromJSON["values"] as? [String] == Self.strings)
    }

    @Test("unambiguous strings stay plain; multi-line text becomes a literal block")
    func style() {
        #expect(Document.yamlScalar("worker") == "worker")
        #expect(Document.yamlScalar("/etc/containers/storage.conf") == "/etc/containers/storage.conf")
        #expect(Document.yamlScalar("3.2.0") == "\"3.2.0\"")
        #expect(Document.yamlScalar("no") == "\"no\"")
        #expect(Document.blockStyle("a\nb\n") == "|")
        #expect(Document.blockStyle("a\nb") == "|-")
        #expect(Document.blockStyle("a\n\n") == "|+")
        #expect(Document.blockStyle("a \nb\n") == nil)
    }
}
