// SPDX-License-Identifier: Apache-2.0
import Foundation
import TOML
import Testing

@testable import Deploy

let entry = "/var/lib/stargz-store/store:ref"

/// A storage.conf shaped like Fedora's and the Machine Config Operator's: comments, nested option tables.
let nodeStorageConf = """
    # This file is the configuration file for all tools
    # that use the containers/storage library.
    [storage]

    # Default Storage Driver, Must be set for proper operation.
    driver = "overlay"

    # Temporary storage location
    runroot = "/var/run/containers/storage"

    # Primary Read/Write location of container storage
    graphroot = "/var/lib/containers/storage"

    [storage.options]
    # Storage options to be passed to underlying storage drivers

    # AdditionalImageStores is used to pass paths to additional Read/Only image stores
    additionalimagestores = [
    ]

    # Size is used to set a maximum size of the container image.
    size = ""

    # OverrideKernelCheck tells the driver to ignore kernel checks based on kernel version
    override_kernel_check = "true"

    [storage.options.overlay]
    mountopt = "nodev,metacopy=on"  # trailing comment

    [storage.options.thinpool]
    autoextend_percent = "20"
    autoextend_threshold = "80"

    """

@Suite("storage.conf merge")
struct StorageConfTests {
    /// The parsed input with `additionallayerstores` set to `stores`: what the merge must produce.
    func expected(_ input: String, _ stores: [String]) throws -> TOMLTable {
        var root = try TOML.parse(input)
        var storage = root["storage"]?.table ?? TOMLTable()
        var options = storage["options"]?.table ?? TOMLTable()
        options["additionallayerstores"] = .array(stores.map { .string($0) })
        storage["options"] = .table(options)
        root["storage"] = .table(storage)
        return root
    }

    @Test("every key and comment of a node's storage.conf is kept; only the store is added")
    func keepsEverything() throws {
        let r = try StorageConf.merge(nodeStorageConf, entry: entry)
        #expect(r.changed && r.keptFormatting)
        #expect(try TOML.parse(r.text).sameTable(as: try expected(nodeStorageConf, [entry])))
        // Every original line is still there, in order; one line was added.
        let before = nodeStorageConf.split(separator: "\n", omittingEmptySubsequences: false)
        let after = r.text.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(after.count == before.count + 1)
        #expect(after.filter { !$0.hasPrefix("additionallayerstores") } == before)
        try expectGolden("storage.conf", r.text)
    }

    @Test("adding twice is a no-op: the second run returns the input byte for byte")
    func idempotent() throws {
        let once = try StorageConf.merge(nodeStorageConf, entry: entry)
        let twice = try StorageConf.merge(once.text, entry: entry)
        #expect(!twice.changed)
        #expect(twice.text == once.text)
    }

    @Test(
        "layouts: no storage table, no options table, options implied by a subtable, dotted keys, multi-line lists, other stores",
        arguments: [
            ("", [entry]),
            ("[storage]\ndriver = \"overlay\"", [entry]),
            ("[storage]\ndriver = \"overlay\"\n[storage.options.overlay]\nmountopt = \"nodev\"\n", [entry]),
            ("[storage.options]", [entry]),
            ("[storage]\noptions.size = \"\"\n", [entry]),
            ("storage.options.additionallayerstores = []\n", [entry]),
            (
                "[storage.options]\n# the stores\nadditionallayerstores = [\n  \"/mnt/other:ref\", # another store\n  '/var/lib/stargz-store/store/',\n]\nsize = \"\"\n",
                ["/mnt/other:ref", entry]
            ),
            ("[storage.options]\nadditionallayerstores = [\"/mnt/a\"]\n", ["/mnt/a", entry]),
            ("[storage]\n[storage.options]\nadditionallayerstores=[\"/var/lib/stargz-store/store\",\"/mnt/b:ref\"] # old\n", [entry, "/mnt/b:ref"]),
            ("[storage]\noptions = { size = \"\", additionallayerstores = [] }\n", [entry]),
            ("[storage]\ndriver = \"overlay\"\n[[storage.weird]]\nx = \"\"\"\n[storage.options]\n\"\"\"\n", [entry]),
        ])
    func layouts(input: String, stores: [String]) throws {
        let r = try StorageConf.merge(input, entry: entry)
        #expect(r.changed)
        #expect(try TOML.parse(r.text).sameTable(as: try expected(input, stores)), "\(r.text)")
        let again = try StorageConf.merge(r.text, entry: entry)
        #expect(!again.changed && again.text == r.text)
        // Comments outside the replaced value survive.
        if input.contains("# the stores") { #expect(r.text.contains("# the stores\nadditionallayerstores = [")) }
    }

    @Test("an inline options table cannot be edited in place: the settings are kept, the formatting is not")
    func inlineFallsBack() throws {
        let r = try StorageConf.merge("[storage]\noptions = { size = \"10G\" } # inline\n", entry: entry)
        #expect(!r.keptFormatting)
        #expect(try TOML.parse(r.text).sameTable(as: try expected("[storage]\noptions = { size = \"10G\" }\n", [entry])))
    }

    @Test(
        "malformed input is refused with its line",
        arguments: [
            ("[storage]\ndriver = \"overlay\"\ngraphroot = \n", 3),
            ("[storage]\n[storage]\n", 2),
            ("[storage]\ndriver = \"overlay\"\n\n[storage.options]\nadditionallayerstores = \"/x:ref\"\n", 5),
            ("storage = 1\n", 1),
            ("[storage.options]\nadditionallayerstores = [1]\n", 2),
        ])
    func malformed(input: String, line: Int) throws {
        let error = #expect(throws: DeployError.self) { try StorageConf.merge(input, entry: entry, source: "node.conf") }
        #expect(error?.code == .malformedInput)
        #expect(error?.line == line)
        #expect(error?.message.hasPrefix("node.conf") == true)
    }

    @Test("stargz deploy storage-conf: --output written atomically; a malformed --from writes nothing")
    func command() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let good = try dir.write("/good.conf", nodeStorageConf, mode: 0o640)
        let out = dir.path + "/out.conf"
        #expect(try stargz(["deploy", "storage-conf", "--from", good, "--output", out]).status == 0)
        #expect(dir.read("/out.conf") == Data(try StorageConf.merge(nodeStorageConf, entry: entry).text.utf8))

        // In place: twice gives the same bytes and keeps the mode.
        #expect(try stargz(["deploy", "storage-conf", "--from", good, "--output", good]).status == 0)
        let first = dir.read("/good.conf")
        #expect(try stargz(["deploy", "storage-conf", "--from", good, "--output", good]).status == 0)
        #expect(dir.read("/good.conf") == first)
        #expect(try dir.mode("/good.conf") == 0o640)

        let bad = try dir.write("/bad.conf", "[storage]\ndriver = \"overlay\n")
        #expect(try stargz(["deploy", "storage-conf", "--from", bad, "--output", dir.path + "/never.conf"]).status == 1)
        let refused = try stargz(["deploy", "storage-conf", "--from", bad])
        #expect(refused.status == 1 && refused.out.isEmpty && refused.err.contains("line 2"))
        #expect(try stargz(["deploy", "storage-conf", "--from", good]).out == String(decoding: try #require(dir.read("/good.conf")), as: UTF8.self))
        #expect(!dir.exists("/never.conf"))
        try dir.write("/kept.conf", "original\n")
        #expect(try stargz(["deploy", "storage-conf", "--from", bad, "--output", dir.path + "/kept.conf"]).status == 1)
        #expect(dir.read("/kept.conf") == Data("original\n".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains("stargz-tmp") }.isEmpty)
    }

    @Test("the mount point of an entry")
    func mountpoints() {
        #expect(StorageConf.mountpoint(ofEntry: "/a/b:ref") == "/a/b")
        #expect(StorageConf.mountpoint(ofEntry: "/a/b/") == "/a/b")
        #expect(StorageConf.mountpoint(ofEntry: "/a/b") == "/a/b")
    }
}
