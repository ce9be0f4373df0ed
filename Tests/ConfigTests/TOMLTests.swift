// SPDX-License-Identifier: Apache-2.0
import Foundation
import OCI
import Registry
import Store
import TOML
import Testing

@Suite("TOML")
struct TOMLTests {
    @Test("the forms config files use: tables, arrays of tables, dotted and quoted keys, inline tables, strings, numbers")
    func valid() throws {
        let doc = #"""
            # comment
            title = "TOML \"example\"" # trailing comment
            'literal key' = 'C:\path'
            a.b.c = 1_000
            hex = 0xff
            neg = -17
            pi = 3.14
            exp = 5e+2
            yes = true
            when = 1979-05-27T07:32:00Z
            day = 1979-05-27
            list = [ 1, 2,
              3, ]  # multi-line with a trailing comma
            nested = [[1, 2], ["a"]]
            inline = { x = 1, y.z = "two" }
            multi = """
            first
            second \
               joined"""
            raw = '''
            keep \n as is'''
            unicode = "caf\u00e9 \U0001F600"

            [server."quoted.name"]
            port = 8080

            [[resolver.host."docker.io".mirrors]]
            host = "mirror-1.example.com"
            insecure = true
            [[resolver.host."docker.io".mirrors]]
            host = "mirror-2.example.com"
            header = { "X-Test" = ["1"] }

            [[fruit]]
            name = "apple"
            [fruit.physical]
            color = "red"
            [[fruit]]
            name = "banana"
            [fruit.physical]
            color = "yellow"
            """#
        let t = try TOML.parse(doc)
        #expect(t["title"]?.string == "TOML \"example\"")
        #expect(t["literal key"]?.string == #"C:\path"#)
        #expect(t["a"]?.table?["b"]?.table?["c"]?.integer == 1000)
        #expect(t["hex"]?.integer == 255)
        #expect(t["neg"]?.integer == -17)
        #expect(t["pi"]?.double == 3.14)
        #expect(t["exp"]?.double == 500)
        #expect(t["yes"]?.boolean == true)
        #expect(t["when"] == .datetime("1979-05-27T07:32:00Z"))
        #expect(t["day"] == .datetime("1979-05-27"))
        #expect(t["list"] == .array([.integer(1), .integer(2), .integer(3)]))
        #expect(t["nested"]?.array?.count == 2)
        #expect(t["inline"]?.table?["y"]?.table?["z"]?.string == "two")
        #expect(t["multi"]?.string == "first\nsecond joined")
        #expect(t["raw"]?.string == #"keep \n as is"#)
        #expect(t["unicode"]?.string == "café 😀")
        #expect(t["server"]?.table?["quoted.name"]?.table?["port"]?.integer == 8080)
        let mirrors = t["resolver"]?.table?["host"]?.table?["docker.io"]?.table?["mirrors"]?.array ?? []
        #expect(mirrors.compactMap { $0.table?["host"]?.string } == ["mirror-1.example.com", "mirror-2.example.com"])
        #expect(mirrors.first?.table?["insecure"]?.boolean == true)
        let fruit = t["fruit"]?.array ?? []
        #expect(fruit.compactMap { $0.table?["physical"]?.table?["color"]?.string } == ["red", "yellow"])
        #expect(t.keys.first == "title")
    }

    @Test("malformed documents are errors that give the line", arguments: [
        ("a = 1\na = 2", 2),
        ("[t]\nx = 1\n[t]\ny = 2", 3),
        ("x = \"unterminated\n", 1),
        ("x = 1 2", 1),
        ("x = 012", 1),
        ("x = [1, 2", 1),
        ("ok = 1\n\nx = { a = 1 }\nx.b = 2", 4),
        ("s = \"bad \\q escape\"", 1),
        ("= 1", 1),
        ("x = 1__0", 1),
        ("[a]\nb = 1\n[a.b]\nc = 1", 3),
    ])
    func invalid(_ text: String, _ line: Int) {
        do {
            _ = try TOML.parse(text)
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.line == line, "\(text): \(error)")
        }
    }
}

@Suite("registries.conf")
struct RegistriesConfTests {
    @Test("version 2: insecure hosts, mirrors in order, a location that redirects the prefix")
    func v2() throws {
        let text = """
            unqualified-search-registries = ["docker.io"]

            [[registry]]
            location = "registry.internal:5000"
            insecure = true

            [[registry]]
            prefix = "docker.io"
            location = "docker.io"
            [[registry.mirror]]
            location = "mirror.example.com"
            [[registry.mirror]]
            location = "10.0.0.1:5000/dockerhub"
            insecure = true

            [[registry]]
            prefix = "quay.io/team"
            location = "quay-proxy.example.com/team"
            """
        let conf = try RegistriesConf.parse(text, path: "/etc/containers/registries.conf")
        #expect(conf.hosts["registry.internal:5000"]?.insecure == true)
        #expect(conf.hosts["docker.io"]?.insecure != true)
        #expect(conf.hosts["10.0.0.1:5000"]?.insecure == true)
        var c = RegistryConfiguration()
        c.rules = conf.rules
        func sources(_ r: String) throws -> [String] { try c.pullSources(try Reference(r)).map(\.description) }
        #expect(try sources("busybox:1") == [
            "mirror.example.com/library/busybox:1", "10.0.0.1:5000/dockerhub/library/busybox:1", "docker.io/library/busybox:1",
        ])
        #expect(try sources("quay.io/team/app:v2") == ["quay-proxy.example.com/team/app:v2"])
        #expect(try sources("quay.io/teamwork/app:v2") == ["quay.io/teamwork/app:v2"], "a prefix is whole components")
        #expect(try sources("quay.io/other/app:v2") == ["quay.io/other/app:v2"])
    }

    @Test("as OpenShift writes ImageDigestMirrorSet and ImageTagMirrorSet: digest-only and tag-only mirrors, a blocked source, the longest prefix winning, drop-ins replacing a prefix")
    func openShift() throws {
        let idms = """
            unqualified-search-registries = []
            additional-layer-store-auth-helper = ""

            [[registry]]
              prefix = ""
              location = "quay.io/openshift-release-dev/ocp-release"
              blocked = true

              [[registry.mirror]]
                location = "mirror.corp:5000/ocp/release"
                pull-from-mirror = "digest-only"

            [[registry]]
              prefix = ""
              location = "quay.io/openshift-release-dev"

              [[registry.mirror]]
                location = "mirror.corp:5000/ocp"
                pull-from-mirror = "tag-only"

            [[registry]]
              prefix = ""
              location = "registry.example.com/legacy"
              mirror-by-digest-only = true

              [[registry.mirror]]
                location = "mirror.corp:5000/legacy"
            """
        let digest = "sha256:" + String(repeating: "ab", count: 32)
        let conf = try RegistriesConf.parse(idms, path: "01-image-idms.conf")
        var c = RegistryConfiguration()
        c.rules = conf.rules
        func sources(_ r: String) throws -> [String] { try c.pullSources(try Reference(r)).map(\.description) }
        #expect(try sources("quay.io/openshift-release-dev/ocp-release@\(digest)") == ["mirror.corp:5000/ocp/release@\(digest)"])
        do {
            _ = try c.pullSources(try Reference("quay.io/openshift-release-dev/ocp-release:4.22"))
            Issue.record("a blocked source was given for a tag")
        } catch let e as RegistryError {
            #expect(e.code == .blocked)
        }
        #expect(try sources("quay.io/openshift-release-dev/other:4.22") == [
            "mirror.corp:5000/ocp/other:4.22", "quay.io/openshift-release-dev/other:4.22",
        ])
        #expect(try sources("quay.io/openshift-release-dev/other@\(digest)") == ["quay.io/openshift-release-dev/other@\(digest)"])
        #expect(try sources("registry.example.com/legacy/app:1") == ["registry.example.com/legacy/app:1"])
        #expect(try sources("registry.example.com/legacy/app@\(digest)") == [
            "mirror.corp:5000/legacy/app@\(digest)", "registry.example.com/legacy/app@\(digest)",
        ])
        // A later file's entry for the same prefix replaces the earlier one.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("regconf-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try idms.write(toFile: dir + "/a.conf", atomically: true, encoding: .utf8)
        try "[[registry]]\nlocation = \"registry.example.com/legacy\"\n".write(toFile: dir + "/b.conf", atomically: true, encoding: .utf8)
        c.rules = try RegistriesConf.load([dir + "/a.conf", dir + "/b.conf"]).rules
        #expect(try sources("registry.example.com/legacy/app@\(digest)") == ["registry.example.com/legacy/app@\(digest)"])
        #expect(c.rules.count == 3)
    }

    @Test("a host's insecure setting is the last file's word; the host's own entry outranks a wildcard that covers it (prefixes rank by their length)")
    func dropInsAndWildcards() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("regconf-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "[[registry]]\nlocation = \"reg.corp\"\ninsecure = true\n[[registry]]\nlocation = \"other.corp\"\ninsecure = true\n"
            .write(toFile: dir + "/a.conf", atomically: true, encoding: .utf8)
        try "[[registry]]\nlocation = \"reg.corp\"\n".write(toFile: dir + "/b.conf", atomically: true, encoding: .utf8)
        let conf = try RegistriesConf.load([dir + "/a.conf", dir + "/b.conf"])
        #expect(conf.hosts["reg.corp"]?.insecure == false, "the drop-in's entry says secure")
        #expect(conf.hosts["other.corp"]?.insecure == true)
        var c = RegistryConfiguration()
        c.rules = try RegistriesConf.parse(
            "[[registry]]\nprefix = \"*.example.com\"\nblocked = true\n[[registry]]\nlocation = \"registry.example.com\"\n",
            path: "w.conf"
        ).rules
        #expect(try c.pullSources(try Reference("registry.example.com/app:1")).map(\.description) == ["registry.example.com/app:1"])
        #expect(throws: RegistryError.self) { try c.pullSources(try Reference("cdn.example.com/app:1")) }
    }

    @Test("version 1: [registries.insecure]")
    func v1() throws {
        let hosts = try RegistriesConf.parse(
            "[registries.search]\nregistries = ['docker.io']\n[registries.insecure]\nregistries = ['a.example:5000', 'b.example']\n",
            path: "r.conf"
        ).hosts
        #expect(hosts["a.example:5000"]?.insecure == true)
        #expect(hosts["b.example"]?.insecure == true)
    }

    @Test("a wrong type or a syntax error names the file and what is wrong")
    func errors() {
        for (text, needle) in [
            ("[[registry]]\nlocation = \"x\"\ninsecure = \"yes\"", "insecure"),
            ("[[registry]]\ninsecure = true", "neither prefix nor location"),
            ("[[registry]\nlocation = 'x'", "line 1"),
            ("registry = 1", "array of tables"),
            ("[[registry]]\nlocation = 'x.io'\n[[registry.mirror]]\nlocation = 'm.io'\npull-from-mirror = 'sometimes'", "pull-from-mirror"),
            ("[[registry]]\nlocation = 'x.io'\npull-from-mirror = 'all'", "non-mirror"),
            ("[[registry]]\nlocation = 'x.io'\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = 'm.io'\npull-from-mirror = 'all'", "mirror-by-digest-only"),
        ] {
            do {
                _ = try RegistriesConf.parse(text, path: "/etc/containers/registries.conf")
                Issue.record("accepted: \(text)")
            } catch {
                #expect("\(error)".contains("/etc/containers/registries.conf"), "\(error)")
                #expect("\(error)".contains(needle), "\(error)")
            }
        }
    }
}

@Suite("stargz-store config.toml")
struct StoreConfigurationTests {
    @Test("upstream keys parse; unknown keys warn; the printed defaults read back as the defaults")
    func keys() throws {
        let text = """
            noprefetch = true
            no_background_fetch = true
            prefetch_size = 1048576
            resolve_result_entry_ttl_sec = 30
            metrics_address = "127.0.0.1:9090"
            disk_cache_mib = 512
            shiny_new_key = 1
            [blob]
            fetching_timeout_sec = 60
            max_retries = 2
            chunk_size = 50000
            [directory_cache]
            max_lru_cache_entry = 5000
            [[resolver.host."docker.io".mirrors]]
            host = "mirror.example.com:5000"
            insecure = true
            [[resolver.host."registry.internal:5000".mirrors]]
            host = "registry.internal:5000"
            insecure = true
            header = { "X-Test" = ["yes"] }
            """
        let (c, warnings) = try StoreConfiguration.parse(text, path: "/etc/stargz-store/config.toml")
        #expect(c.noPrefetch && c.noBackgroundFetch && c.prefetchSize == 1 << 20 && c.resolveResultEntryTTLSeconds == 30)
        #expect(c.metricsAddress == "127.0.0.1:9090" && c.diskCacheMiB == 512)
        #expect(c.fetchingTimeoutSeconds == 60 && c.maxRetries == 2)
        #expect(c.hosts["docker.io"]?.mirrors == [Mirror(host: "mirror.example.com:5000", insecure: true)])
        #expect(c.hosts["registry.internal:5000"]?.insecure == true)
        #expect(c.hosts["registry.internal:5000"]?.headers["X-Test"] == "yes")
        #expect(warnings == ["unknown key shiny_new_key"])
        let (d, w2) = try StoreConfiguration.parse(StoreConfiguration.defaultTOML, path: "default")
        #expect(d == StoreConfiguration() && w2.isEmpty)
    }

    @Test("bad values fail at start, naming every key at fault")
    func bad() {
        do {
            _ = try StoreConfiguration.parse("noprefetch = \"yes\"\n[blob]\nmax_retries = -1\n", path: "/c.toml")
            Issue.record("accepted bad values")
        } catch {
            let m = "\(error)"
            #expect(m.contains("/c.toml") && m.contains("noprefetch") && m.contains("blob.max_retries"), "\(m)")
        }
        #expect(throws: (any Error).self) { try StoreConfiguration.parse("disable_verification = true", path: "/c.toml") }
    }
}
