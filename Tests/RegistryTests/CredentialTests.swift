// SPDX-License-Identifier: Apache-2.0
import Foundation
import OCI
@testable import Registry
import TestSupport
import Testing

private func auth(_ user: String, _ password: String) -> String {
    "{\"auth\":\"\(Data("\(user):\(password)".utf8).base64EncodedString())\"}"
}

@Suite("Credentials: the node's pull secret, entries scoped to repositories")
struct CredentialTests {
    @Test("an entry scoped to a repository path wins over the host's, most specific first; keys in any spelling")
    func scopedEntries() throws {
        let file = """
            {"auths": {"https://reg.example:5000": \(auth("host", "h")), "reg.example:5000/team": \(auth("team", "t")),
             "reg.example:5000/team/app": \(auth("app", "a")), "https://index.docker.io/v1/": \(auth("hub", "d")),
             "https://legacy.example/v1/ns": \(auth("legacy", "l")), "reg.example:5000/acme/v2": \(auth("v2", "v"))}}
            """
        let data = Data(file.utf8)
        func user(_ host: String, _ repo: String?) throws -> String? {
            try CredentialStore.lookup(CredentialStore.scopes(host, repo), in: data, file: "config.json")?.username
        }
        #expect(try user("reg.example:5000", "team/app") == "app")
        #expect(try user("reg.example:5000", "team/app/sub") == "app")
        #expect(try user("reg.example:5000", "team/other") == "team")
        #expect(try user("reg.example:5000", "teamwork/app") == "host", "a path prefix is whole components")
        #expect(try user("reg.example:5000", "other/x") == "host")
        #expect(try user("reg.example:5000", nil) == "host")
        #expect(try user("other.example", "team/app") == nil)
        #expect(try user("registry-1.docker.io", "library/busybox") == "hub")
        #expect(try user("legacy.example", "any/repo") == "legacy", "a key with a scheme stands for its host")
        #expect(try user("reg.example:5000", "acme/other") == "host", "a key without a scheme is the scope it names, /v2 and all")
        #expect(try user("reg.example:5000", "acme/v2/app") == "v2")
        #expect(CredentialStore.scopes("reg:1", "a/b/c") == ["reg:1/a/b/c", "reg:1/a/b", "reg:1/a", "reg:1"])
    }

    @Test("CRI-O's global_auth_file: from crio.conf and its drop-ins (the last wins), then the kubelet's config.json")
    func pullSecretFiles() async throws {
        try await withTempDir { dir in
            try FileManager.default.createDirectory(atPath: dir + "/crio.conf.d", withIntermediateDirectories: true)
            try "[crio]\n[crio.image]  # images\nglobal_auth_file = \"/etc/main.json\"\n".write(toFile: dir + "/crio.conf", atomically: true, encoding: .utf8)
            try "[crio.image]\npause_image = \"x\"\nglobal_auth_file = '/var/lib/kubelet/config.json'\n"
                .write(toFile: dir + "/crio.conf.d/00-default", atomically: true, encoding: .utf8)
            try "[crio.runtime]\nglobal_auth_file = \"/not/this/table.json\"\n"
                .write(toFile: dir + "/crio.conf.d/10-other.conf", atomically: true, encoding: .utf8)
            let files = CredentialStore.crioConfigFiles(directory: dir)
            #expect(files == [dir + "/crio.conf", dir + "/crio.conf.d/00-default", dir + "/crio.conf.d/10-other.conf"])
            #expect(CredentialStore.pullSecretFiles(crio: files) == ["/var/lib/kubelet/config.json"])
            #expect(CredentialStore.pullSecretFiles(crio: [dir + "/crio.conf"]) == ["/etc/main.json", "/var/lib/kubelet/config.json"])
            #expect(CredentialStore.pullSecretFiles(crio: []) == ["/var/lib/kubelet/config.json"])
            #expect(CredentialStore.defaultFiles(environment: ["HOME": "/root"]).last == CredentialStore.kubeletConfig)
        }
    }

    @Test("a kubelet-style config.json: its repository entry opens that repository on a private registry, the host's wrong one does not get in the way; another repository's entry opens nothing")
    func privateRegistry() async throws {
        let registry = try LocalRegistry.start(basicAuth: ("alice", "s3cret"))
        defer { registry.stop() }
        try await withTempDir { dir in
            let kubelet = dir + "/config.json"
            let h = registry.host
            try "{\"auths\":{\"\(h)\":\(auth("alice", "wrong")),\"\(h)/private/app\":\(auth("alice", "s3cret"))}}"
                .write(toFile: kubelet, atomically: true, encoding: .utf8)
            let config = RegistryConfiguration(hosts: [h: HostConfiguration(insecure: true)], maxRetries: 0)
            let c = RegistryClient(configuration: config, credentials: CredentialStore(files: [dir + "/auth.json", kubelet]))
            let app = try Reference("\(h)/private/app:v1")
            let other = try Reference("\(h)/private/other:v1")
            do {
                try await TestImage.push(c, app, layers: [TestImage.tar([("f", Array("secret".utf8))])])
                #expect(try await c.resolve(app).decoded.layers.count == 1)
                do {
                    _ = try await c.resolve(other)
                    Issue.record("the host's wrong entry opened another repository")
                } catch let e as RegistryError {
                    #expect(e.code == .unauthorized, "\(e)")
                }
            } catch {
                try? await c.shutdown()
                throw error
            }
            try await c.shutdown()
        }
    }
}
