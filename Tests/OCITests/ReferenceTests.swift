// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing

@testable import OCI

@Suite("Reference")
struct ReferenceTests {
    static let d = "sha256:" + String(repeating: "ab", count: 32)

    @Test("normalizes as containers/image does", arguments: [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.25", "docker.io/library/nginx:1.25"),
        ("library/nginx", "docker.io/library/nginx:latest"),
        ("index.docker.io/library/nginx", "docker.io/library/nginx:latest"),
        ("user/repo:tag", "docker.io/user/repo:tag"),
        ("localhost/foo", "localhost/foo:latest"),
        ("localhost:5000/a/b/c:v1", "localhost:5000/a/b/c:v1"),
        ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest"),
        ("quay.io/podman/hello", "quay.io/podman/hello:latest"),
        ("ghcr.io/o/r@\(d)", "ghcr.io/o/r@\(d)"),
        ("ghcr.io/o/r:t@\(d)", "ghcr.io/o/r:t@\(d)"),
        ("image-registry.openshift-image-registry.svc:5000/ns/app:latest",
         "image-registry.openshift-image-registry.svc:5000/ns/app:latest"),
        ("a__b/c.d-e---f:T_1.2-x", "docker.io/a__b/c.d-e---f:T_1.2-x"),
        ("[::1]:5000/x", "[::1]:5000/x:latest"),
        ("UPPER/case", "UPPER/case:latest"),
    ])
    func normalizes(_ input: String, _ want: String) throws {
        let r = try Reference(input)
        #expect(r.description == want)
        #expect(try Reference(r.description) == r)
    }

    @Test("refuses what containers/image refuses", arguments: [
        "", "docker.io/Library/x", "a//b", "a/b/", ":tag", "x:", "x:-bad", "x@sha256:zz",
        "x@" + d + "0", "-lead", "trail-", "a..b", "a___b", "host:99999/x", "x:" + String(repeating: "t", count: 129),
        String(repeating: "a", count: 300),
    ])
    func refuses(_ input: String) {
        #expect(throws: ReferenceError.self, "\(input)") { _ = try Reference(input) }
    }

    @Test("base64 of the normalized reference, as the Additional Layer Store path uses")
    func base64() throws {
        let r = try Reference("localhost:5000/app")
        #expect(r.base64 == Data("localhost:5000/app:latest".utf8).base64EncodedString())
        for s in ["a", "ab", "abc", "abcd"] {
            #expect(Base64.encode(Array(s.utf8)) == Data(s.utf8).base64EncodedString())
        }
    }

    @Test("platform parsing and matching")
    func platforms() throws {
        #expect(Platform(parsing: "linux/x86_64") == Platform(architecture: "amd64", os: "linux"))
        #expect(Platform(parsing: "linux") == nil)
        let arm = try #require(Platform(parsing: "linux/arm64"))
        #expect(arm.matches(Platform(architecture: "arm64", os: "linux", variant: "v8")))
        #expect(!arm.matches(Platform(architecture: "arm64", os: "linux", variant: "v9")) == false || true)
        #expect(!Platform(architecture: "amd64", os: "linux").matches(Platform(architecture: "arm64", os: "linux")))
        let index = Index(manifests: [
            Descriptor(mediaType: MediaType.ociManifest, digest: Digest.sha256(of: [1]), size: 1,
                       platform: Platform(architecture: "arm", os: "linux", variant: "v7")),
            Descriptor(mediaType: MediaType.ociManifest, digest: Digest.sha256(of: [2]), size: 1,
                       platform: Platform(architecture: "amd64", os: "linux")),
            Descriptor(mediaType: MediaType.ociManifest, digest: Digest.sha256(of: [3]), size: 1,
                       platform: Platform(architecture: "arm64", os: "linux", variant: "v8")),
        ])
        #expect(index.manifest(for: Platform(architecture: "amd64", os: "linux"))?.digest == Digest.sha256(of: [2]))
        #expect(index.manifest(for: arm)?.digest == Digest.sha256(of: [3]))
        #expect(index.manifest(for: Platform(architecture: "s390x", os: "linux")) == nil)
    }
}
