// SPDX-License-Identifier: Apache-2.0
import Convert
import EStargz
import Foundation
import OCI
import Registry
import TestSupport
import Testing

@Suite("Podman pulls and runs converted images (real podman + docker-registry)")
struct PodmanTests {
    @Test("a plain image converted to eStargz is pulled by podman and runs")
    func pullAndRun() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let client = RegistryClient(
            configuration: RegistryConfiguration(hosts: [registry.host: HostConfiguration(insecure: true)]))
        let src = try Reference("\(registry.host)/e2e/busybox:1")
        let dst = try Reference("\(registry.host)/e2e/busybox:1-esgz")
        try await TestImage.push(client, src, layers: [try busyboxTar()], cmd: ["/bin/cat", "/etc/os-release"])
        _ = try await ImageConverter(client: client).convert(
            from: src, to: dst, options: ImageConvertOptions(writer: WriterOptions(prioritizedFiles: ["bin/busybox"])))
        try await client.shutdown()
        let podman = try TestPodman()
        defer { podman.cleanUp() }
        try podman(["pull", "--tls-verify=false", dst.description])
        #expect(try podman.runContainer(dst.description) == "NAME=\"stargz-swift test\"\n")
        #expect(try podman.runContainer(dst.description, ["/bin/echo", "hello from eStargz"]) == "hello from eStargz\n")
    }
}
