// SPDX-License-Identifier: Apache-2.0
import Foundation
import TOML
import Testing

@testable import Deploy

@Suite("registries.conf drop-in naming the auth helper")
struct AuthHelperDropInTests {
    @Test("the drop-in: golden, one top-level key naming the helper, the rest comments")
    func content() throws {
        let layout = StoreLayout()
        try expectGolden("99-stargz-store-helper.conf", layout.registriesDropIn)
        let table = try TOML.parse(layout.registriesDropIn)
        #expect(table.keys == ["additional-layer-store-auth-helper"])
        #expect(table["additional-layer-store-auth-helper"]?.string == "/usr/local/bin/stargz-store-helper")
        let lines = layout.registriesDropIn.split(separator: "\n")
        #expect(lines.dropLast().allSatisfy { $0.hasPrefix("# ") })
        #expect(lines.last == "additional-layer-store-auth-helper = \"/usr/local/bin/stargz-store-helper\"")
        #expect(layout.registriesDropIn.hasSuffix("\"\n"))
    }

    @Test("its path: a *.conf in /etc/containers/registries.conf.d that sorts after the Machine Config Operator's 01-image-searchRegistries.conf")
    func path() throws {
        let path = StoreLayout.Defaults.registriesDropInPath
        #expect(path == "/etc/containers/registries.conf.d/99-stargz-store-helper.conf")
        let name = (path as NSString).lastPathComponent
        #expect((path as NSString).deletingLastPathComponent == "/etc/containers/registries.conf.d")
        #expect(name.hasSuffix(".conf"))
        // containers/image merges the drop-ins in byte order; the last non-empty value wins.
        for earlier in ["01-image-searchRegistries.conf", "000-shortnames.conf", "50-mirrors.conf", "98-zzz.conf", "99-Other.conf"] {
            #expect(earlier.utf8.lexicographicallyPrecedes(name.utf8), "\(earlier) sorts after \(name)")
        }
    }

    @Test("the helper sits beside the store's binary unless placed elsewhere; the drop-in follows it, quoted for TOML")
    func helperPath() throws {
        #expect(StoreLayout().helperPath == StoreLayout.Defaults.helperPath)
        #expect(StoreLayout(binaryPath: "/opt/stargz/bin/stargz-store").helperPath == "/opt/stargz/bin/stargz-store-helper")
        let custom = StoreLayout(binaryPath: "/opt/stargz/bin/stargz-store", helperPath: "/usr/libexec/stargz+/helper")
        #expect(custom.helperPath == "/usr/libexec/stargz+/helper")
        #expect(try TOML.parse(custom.registriesDropIn)["additional-layer-store-auth-helper"]?.string == "/usr/libexec/stargz+/helper")
        #expect(throws: Never.self) { try custom.validate() }
    }

    @Test(
        "bad helper and drop-in paths are refused",
        arguments: [
            StoreLayout(helperPath: "relative/helper"), StoreLayout(helperPath: "/usr/bin/\"helper\""),
            StoreLayout(helperPath: "/usr/bin/my helper"), StoreLayout(registriesDropInPath: "/etc/containers/registries.conf.d/99-stargz"),
            StoreLayout(registriesDropInPath: "/etc/containers/registries.conf.d/.conf"),
            StoreLayout(registriesDropInPath: "/etc/containers/registries.conf.d/../99-x.conf"),
        ])
    func refused(_ layout: StoreLayout) {
        let e = #expect(throws: DeployError.self) { try layout.validate() }
        #expect(e?.code == .invalidArgument)
    }
}
