// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Deploy
import Registry
import Foundation
import Store

/// `stargz doctor`: checks that a node can serve layers lazily, with a one-line fix for each failure.
struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check this node: FUSE, the store's binary, config, unit and mount, storage.conf, registries.conf and its auth helper, disk, kernel.",
        discussion: "Exits with status 1 when a check fails; warnings do not fail.")

    @Option(help: "Check the files under this directory instead of / (systemd is then not asked).")
    var prefix: String?

    @Flag(help: "Print the checks as JSON.")
    var json = false

    @OptionGroup var layout: LayoutOptions

    func run() throws {
        let live = prefix == nil && FileManager.default.fileExists(atPath: "/run/systemd/system")
        var env = DoctorEnvironment(
            prefix: prefix ?? "", layout: layout.layout, runner: live ? ProcessRunner() : nil,
            environment: ProcessInfo.processInfo.environment,
            defaultCacheBytes: StoreConfiguration.Defaults.diskCacheMiB << 20,
            validateConfig: { text in
                do {
                    _ = try StoreConfiguration.parse(text, path: "config.toml")
                    return []
                } catch { return ["\(error)"] }
            })
        // CRI-O's global_auth_file, read under the prefix too.
        let root = prefix ?? ""
        env.pullSecretFiles = CredentialStore.pullSecretFiles(crio: CredentialStore.crioConfigFiles(directory: root + "/etc/crio"))
        let checks = Doctor.run(env)
        if json {
            Terminal.printJSON(checks.map(CheckJSON.init))
        } else {
            for c in checks {
                let label = c.status == .failed ? "FAILED" : c.status.rawValue
                print(label.padding(toLength: 9, withPad: " ", startingAt: 0) + c.name.padding(toLength: 17, withPad: " ", startingAt: 0) + c.detail)
                if let fix = c.fix, c.status == .failed || c.status == .warning { print(String(repeating: " ", count: 26) + "fix: " + fix) }
            }
        }
        if checks.contains(where: { $0.status == .failed }) { throw ExitCode.failure }
    }
}

struct CheckJSON: Encodable {
    var name: String
    var status: String
    var detail: String
    var fix: String?
    init(_ c: DoctorCheck) {
        name = c.name
        status = c.status.rawValue
        detail = c.detail
        fix = c.fix
    }
}
