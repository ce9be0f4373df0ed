// SPDX-License-Identifier: Apache-2.0
import Convert
import EStargz
import Foundation
import OCI
import Registry
import TestSupport
import Testing

/// Everything here talks to a real docker-registry on 127.0.0.1.
@Suite("Registry (real docker-registry)")
struct RegistryTests {
    func client(
        _ registry: LocalRegistry, credentials: CredentialStore = CredentialStore(files: []), extraInsecure: String? = nil
    ) -> RegistryClient {
        var hosts = [registry.host: HostConfiguration(insecure: true)]
        if let h = extraInsecure { hosts[h] = HostConfiguration(insecure: true) }
        return RegistryClient(
            configuration: RegistryConfiguration(
                hosts: hosts, maxRetries: 2,
                retryBaseDelay: .milliseconds(10)),
            credentials: credentials)
    }

    @Test("push a plain image, fetch it back with digests checked, and read byte ranges")
    func pushFetchRange() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let c = client(registry)
        let ref = try Reference("\(registry.host)/test/plain:v1")
        let tar = SampleLayer.tar()
        let digest = try await TestImage.push(c, ref, layers: [tar], docker: true)
        let image = try await c.resolve(ref)
        #expect(image.manifest.descriptor.digest == digest)
        #expect(image.decoded.layers.count == 1)
        let layer = image.decoded.layers[0]
        let blob = try await c.fetchBlob(ref, layer)
        #expect(Digest.sha256(of: blob) == layer.digest)
        for (off, len) in [(0, 1), (1, 4096), (Int(layer.size) - 10, 10), (12345, 65536)] {
            let got = try await c.readRange(ref, layer.digest, offset: Int64(off), length: len)
            #expect(got == Array(blob[off..<(off + len)]), "range \(off)+\(len)")
        }
        #expect(try await c.blobSize(ref, layer.digest) == layer.size)
        #expect(try await c.blobSize(ref, Digest.sha256(of: [9])) == nil)
        try await c.shutdown()
    }

    @Test("a missing tag, a missing repository and a wrong digest are clear errors naming them")
    func notFound() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let c = client(registry)
        let ref = try Reference("\(registry.host)/test/nothing:nope")
        do {
            _ = try await c.resolve(ref)
            Issue.record("resolved a missing tag")
        } catch let e as RegistryError {
            #expect(e.code == .notFound)
            #expect(e.message.contains("nope"))
        }
        let img = try Reference("\(registry.host)/test/one:v1")
        try await TestImage.push(c, img, layers: [TestImage.tar([("a", Array("x".utf8))])])
        do {
            _ = try await c.fetchManifest(img, reference: Digest.sha256(of: [1, 2, 3]).description)
            Issue.record("fetched a manifest by a digest it does not have")
        } catch let e as RegistryError {
            #expect(e.code == .notFound)
        }
        try await c.shutdown()
    }

    @Test("basic auth: works with credentials from an auth.json, fails clearly without")
    func basicAuth() async throws {
        let registry = try LocalRegistry.start(basicAuth: ("alice", "s3cret"))
        defer { registry.stop() }
        try await withTempDir { dir in
            let auth = "{\"auths\":{\"\(registry.host)\":{\"auth\":\"\(Data("alice:s3cret".utf8).base64EncodedString())\"}}}"
            try auth.write(toFile: dir + "/auth.json", atomically: true, encoding: .utf8)
            let c = client(registry, credentials: CredentialStore(files: [dir + "/missing.json", dir + "/auth.json"]))
            let ref = try Reference("\(registry.host)/private/img:v1")
            try await TestImage.push(c, ref, layers: [TestImage.tar([("f", Array("secret".utf8))])])
            let image = try await c.resolve(ref)
            #expect(image.decoded.layers.count == 1)
            try await c.shutdown()
            let anonymous = client(registry)
            do {
                _ = try await anonymous.resolve(ref)
                Issue.record("resolved without credentials")
            } catch let e as RegistryError {
                #expect(e.code == .unauthorized)
                #expect(e.message.contains(registry.host))
            }
            try await anonymous.shutdown()
        }
    }

    @Test("token auth: bearer tokens from the challenge's realm, with credentials only sent to the token server")
    func tokenAuth() async throws {
        let registry = try LocalRegistry.start(tokenAuth: ("bob", "pw", 60))
        defer { registry.stop() }
        let creds = CredentialStore(files: [], explicit: [registry.host: Credential(username: "bob", password: "pw")])
        let c = client(registry, credentials: creds)
        let ref = try Reference("\(registry.host)/tok/img:v1")
        try await TestImage.push(c, ref, layers: [TestImage.tar([("f", Array("token".utf8))])])
        let image = try await c.resolve(ref)
        let blob = try await c.fetchBlob(ref, image.decoded.layers[0])
        #expect(Digest.sha256(of: blob) == image.decoded.layers[0].digest)
        // Tokens are reused while they live: more reads of the same repository ask for no new one.
        let issued = try registry.tokensIssued()
        for _ in 0..<3 { _ = try await c.fetchManifest(ref) }
        _ = try await c.readRange(ref, image.decoded.layers[0].digest, offset: 1, length: 10)
        #expect(try registry.tokensIssued() == issued)
        try await c.shutdown()
        // Wrong credentials: the token server refuses, a clear unauthorized error.
        let bad = client(registry, credentials: CredentialStore(files: [], explicit: [registry.host: Credential(username: "bob", password: "wrong")]))
        do {
            _ = try await bad.resolve(ref)
            Issue.record("resolved with wrong credentials")
        } catch let e as RegistryError {
            #expect(e.code == .unauthorized)
        }
        try await bad.shutdown()
        // No credentials: an anonymous token without access; the registry still says no.
        let anon = client(registry)
        await #expect(throws: RegistryError.self) { _ = try await anon.resolve(ref) }
        try await anon.shutdown()
    }

    @Test("an identity token is an OAuth2 refresh token: POSTed to the realm as a form, never sent as basic credentials")
    func identityToken() async throws {
        let registry = try LocalRegistry.start(tokenAuth: ("bob", "pw", 60), refreshToken: "refresh+/=tok")
        defer { registry.stop() }
        let push = client(registry, credentials: CredentialStore(files: [], explicit: [registry.host: Credential(username: "bob", password: "pw")]))
        let ref = try Reference("\(registry.host)/tok/id:v1")
        try await TestImage.push(push, ref, layers: [TestImage.tar([("f", Array("identity".utf8))])])
        try await push.shutdown()
        let stats = { () throws -> [String: Int] in
            let reply = try httpGet(registry.tokenServer!, "/__stats")
            return try JSONSerialization.jsonObject(with: Data(reply[reply.range(of: "\r\n\r\n")!.upperBound...].utf8)) as! [String: Int]
        }
        let before = try stats()["oauth2"] ?? 0
        let c = client(registry, credentials: CredentialStore(files: [], explicit: [registry.host: .identityToken("refresh+/=tok")]))
        let image = try await c.resolve(ref)
        #expect(image.decoded.layers.count == 1)
        #expect(try stats()["oauth2"] == before + 1, "the token did not come from the OAuth2 exchange")
        try await c.shutdown()
        let wrong = client(registry, credentials: CredentialStore(files: [], explicit: [registry.host: .identityToken("refresh+/=other")]))
        await #expect(throws: RegistryError.self) { _ = try await wrong.resolve(ref) }
        try await wrong.shutdown()
    }

    @Test("short-lived tokens: a token about to expire is refreshed before the request, not after a failure")
    func tokenExpiry() async throws {
        // The token server says expires_in=3; the client refreshes 5 s before expiry, so every request needs a fresh token.
        let registry = try LocalRegistry.start(tokenAuth: ("bob", "pw", 3))
        defer { registry.stop() }
        let creds = CredentialStore(files: [], explicit: [registry.host: Credential(username: "bob", password: "pw")])
        let c = client(registry, credentials: creds)
        let ref = try Reference("\(registry.host)/tok/short:v1")
        try await TestImage.push(c, ref, layers: [TestImage.tar([("f", Array("short".utf8))])])
        let before = try registry.tokensIssued()
        for _ in 0..<4 { _ = try await c.fetchManifest(ref) }
        // Each fetch drops the stale token before sending (never sends a token it knows has expired); the
        // registry challenges the bare request, and one new token serves the retry.
        #expect(try registry.tokensIssued() == before + 4)
        try await c.shutdown()
    }

    @Test("a cached token the registry stops accepting mid-run is refreshed on its 401 and the request succeeds")
    func tokenRefreshOn401() async throws {
        let registry = try LocalRegistry.start(tokenAuth: ("bob", "pw", 300))
        defer { registry.stop() }
        let creds = CredentialStore(files: [], explicit: [registry.host: Credential(username: "bob", password: "pw")])
        let c = client(registry, credentials: creds)
        let ref = try Reference("\(registry.host)/tok/mid:v1")
        try await TestImage.push(c, ref, layers: [TestImage.tar([("f", Array("mid".utf8))])])
        try await c.shutdown()
        // The proxy lets two manifest requests through (the bare one and the one with the new token), then
        // treats the next as if its token had expired: the registry's own 401 challenge comes back.
        let proxy = try FaultProxy(
            upstream: registry.host, ["--match", "/manifests/", "--fail-status", "401", "--fail-times", "1", "--fail-skip", "2"])
        defer { proxy.stop() }
        let via = Reference(registry: proxy.host, repository: ref.repository, tag: ref.tag)
        let pc = client(
            registry, credentials: CredentialStore(files: [], explicit: [proxy.host: Credential(username: "bob", password: "pw")]),
            extraInsecure: proxy.host)
        let before = try registry.tokensIssued()
        let first = try await pc.fetchManifest(via)
        #expect(try registry.tokensIssued() == before + 1)
        let second = try await pc.fetchManifest(via)
        #expect(second.descriptor.digest == first.descriptor.digest)
        #expect(try proxy.stats()["faults"] == 1)
        #expect(try registry.tokensIssued() == before + 2)
        try await pc.shutdown()
    }

    @Test("convert registry to registry: layers become eStargz, the reference accepts each, re-running is a no-op")
    func convertImage() async throws {
        let registry = try LocalRegistry.start()
        defer { registry.stop() }
        let c = client(registry)
        let src = try Reference("\(registry.host)/test/app:1.0")
        let dst = try Reference("\(registry.host)/test/app:1.0-esgz")
        let tars = [SampleLayer.tar(), TestImage.tar([("etc/second", Array("layer two\n".utf8)), ("usr/bin/app", Array(repeating: 7, count: 100_000))])]
        try await TestImage.push(c, src, layers: tars, docker: true)
        let converter = ImageConverter(client: c)
        let opts = ImageConvertOptions(writer: WriterOptions(prioritizedFiles: ["usr/bin/app"]))
        let report = try await converter.convert(from: src, to: dst, options: opts)
        #expect(!report.alreadyConverted)
        let image = try await c.resolve(dst)
        #expect(image.manifest.descriptor.mediaType == MediaType.ociManifest)
        let config = try JSONSerialization.jsonObject(with: Data(image.config)) as? [String: Any]
        let diffIDs = (config?["rootfs"] as? [String: Any])?["diff_ids"] as? [String] ?? []
        #expect(diffIDs.count == 2)
        try await withTempDir { dir in
            for (i, layer) in image.decoded.layers.enumerated() {
                let toc = try #require(layer.annotations?[AnnotationKey.tocDigest])
                #expect(layer.annotations?[AnnotationKey.uncompressedSize] != nil)
                let path = dir + "/layer\(i)"
                try await c.downloadBlob(dst, layer, to: path)
                try Data(tars[i]).write(to: URL(fileURLWithPath: dir + "/tar\(i)"))
                let v = try Refgen.verify(blob: path, tar: dir + "/tar\(i)")
                #expect(v.status == 0, "refgen: \(v.output)")
                let reader = try EStargzReader(blob: try FileBlob(path: path), options: ReaderOptions(expectedTOCDigest: Digest(toc)))
                let r = try reader.verify(expectedDiffID: Digest(diffIDs[i]))
                #expect(r.uncompressedSize == Int64(layer.annotations?[AnnotationKey.uncompressedSize] ?? "") ?? -1)
            }
        }
        let again = try await converter.convert(from: dst, to: dst, options: opts)
        #expect(again.alreadyConverted)
        #expect(again.pushed.digest == image.manifest.descriptor.digest)
        try await c.shutdown()
    }
}

func withTempDir(_ body: (String) async throws -> Void) async throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("reg-test-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try await body(dir)
}
