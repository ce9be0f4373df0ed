// SPDX-License-Identifier: Apache-2.0
import Deploy
import Store
import Testing

@Suite("What the deployment writes and what the daemon reads agree")
struct LayoutAgreementTests {
    @Test("the unit's -config and -root defaults are the daemon's own defaults")
    func defaults() {
        #expect(StoreLayout.Defaults.configPath == StoreDaemon.Paths.defaultConfig)
        #expect(StoreLayout.Defaults.root == StoreDaemon.Paths.defaultRoot)
        #expect(StoreLayout.Defaults.mountpoint.hasPrefix(StoreDaemon.Paths.defaultRoot + "/"))
    }
}
