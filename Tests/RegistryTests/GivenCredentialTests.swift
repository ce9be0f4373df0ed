// SPDX-License-Identifier: Apache-2.0
import Foundation
import OCI
@testable import Registry
import Synchronization
import TestSupport
import Testing

/// A clock the test moves.
private final class TestClock: Sendable {
    let seconds = Mutex(1_800_000_000.0)
    func advance(_ s: Double) { seconds.withLock { $0 += s } }
    var now: @Sendable () -> Double { { self.seconds.withLock { $0 } } }
}

private func mode(_ path: String) -> mode_t {
    var st = stat()
    return stat(path, &st) == 0 ? st.st_mode & 0o7777 : 0
}

@Suite("Credentials handed over by stargz-store-helper: scoped, kept under /run, dropped")
struct GivenCredentialTests {
    @Test("containers/image's JSON as json.Marshal writes it (HTML escapes, no newline): for that repository only")
    func scoped() async throws {
        let given = GivenCredentials(file: nil, ttl: .seconds(3600))
        // "p<&>w" as Go escapes it.
        let scopes = try given.add(json: Array(#"{"reg.example:5000/team/app:v1":{"username":"alice","password":"p\u003c\u0026\u003ew"}}"#.utf8))
        #expect(scopes == ["reg.example:5000/team/app"])
        #expect(given.credential(host: "reg.example:5000", repository: "team/app") == Credential(username: "alice", password: "p<&>w"))
        #expect(given.credential(host: "reg.example:5000", repository: "team/other") == nil, "another repository on the host")
        #expect(given.credential(host: "reg.example:5000", repository: "team") == nil, "a parent path")
        #expect(given.credential(host: "reg.example:5000", repository: "team/app/sub") == nil, "a child path")
        #expect(given.credential(host: "other.example", repository: "team/app") == nil)
        // A tag, a digest or neither name the same repository; Docker Hub's names are one.
        try given.add(json: Array(#"{"docker.io/library/busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000":{"identityToken":"refresh"}}"#.utf8))
        #expect(given.credential(host: "registry-1.docker.io", repository: "library/busybox") == Credential(username: "<token>", password: "refresh"))

        // Through a CredentialStore: looked up before every file, for the repository only.
        let store = CredentialStore(files: [], given: given)
        #expect(try store.credential(for: "reg.example:5000", repository: "team/app")?.username == "alice")
        #expect(try store.credential(for: "reg.example:5000", repository: "team/b") == nil)
        #expect(try store.credential(for: "reg.example:5000") == nil)
    }

    @Test("an anonymous pull ({\"ref\":{}}) is accepted and leaves another pull's credentials alone")
    func anonymous() async throws {
        let given = GivenCredentials(file: nil, ttl: .seconds(3600))
        try given.add(json: Array(#"{"reg.example/app:1":{"username":"u","password":"p"}}"#.utf8))
        #expect(try given.add(json: Array(#"{"reg.example/app:1":{}}"#.utf8)) == [])
        #expect(try given.add(json: Array(#"{"reg.example/app:2":{"username":"","password":""}}"#.utf8)) == [])
        #expect(given.credential(host: "reg.example", repository: "app")?.password == "p")
        #expect(given.scopes == ["reg.example/app"])
    }

    @Test("bad input is refused with a message that quotes no secret, and nothing changes (memory and file)")
    func refused() async throws {
        try await withTemporaryDirectory("given-bad") { dir in
            let file = dir + "/run/credentials.json"
            let given = GivenCredentials(file: file, ttl: .seconds(3600))
            try given.add(json: Array(#"{"reg.example/app:1":{"username":"u","password":"keep"}}"#.utf8))
            let before = try #require(FileManager.default.contents(atPath: file))
            let bad: [(String, String)] = [
                (#"{"reg.example/app:1":{"username":"u","password":"s3cret"}"#, "not a JSON object"),
                (#"["reg.example/app:1"]"#, "not a JSON object"),
                (#"{}"#, "no image reference"),
                (#"{"reg.example/app:1":"s3cret"}"#, "not a JSON object"),
                (#"{"reg.example/app:1":{"username":"u","password":7}}"#, "password for reg.example/app:1 is not a string"),
                (#"{"reg.example/app:1":{"username":"u","password":"a\nb"}}"#, "control character"),
                (#"{"reg.example/App:1":{"username":"u"}}"#, "is not an image reference"),
                (#"{"reg.example/b:1":{"username":"u","password":"new"},"bad ref":{"username":"u"}}"#, "is not an image reference"),
                ("{" + (0..<17).map { "\"r.example/a\($0):1\":{\"username\":\"u\"}" }.joined(separator: ",") + "}", "more than 16"),
                (String(repeating: " ", count: (64 << 10) + 1), "more than 65536"),
            ]
            for (json, why) in bad {
                #expect {
                    try given.add(json: Array(json.utf8))
                } throws: { error in
                    let text = "\(error)"
                    return text.contains(why) && !text.contains("s3cret")
                }
            }
            #expect(given.scopes == ["reg.example/app"], "a half-good request added nothing")
            #expect(given.credential(host: "reg.example", repository: "app")?.password == "keep")
            #expect(FileManager.default.contents(atPath: file) == before)
        }
    }

    @Test("kept in a 0600 file in a 0700 directory and read back by the next run; a file others could write is not trusted")
    func persisted() async throws {
        try await withTemporaryDirectory("given-file") { dir in
            let file = dir + "/run/credentials.json"
            let first = GivenCredentials(file: file, ttl: .seconds(3600))
            try first.add(json: Array(#"{"reg.example/app:1":{"username":"u","password":"p"}}"#.utf8))
            first.hold(host: "reg.example", repository: "app", by: "reg.example/app:1/sha256:aa")
            #expect(mode(file) == 0o600)
            #expect(mode(dir + "/run") == 0o700)
            let second = GivenCredentials(file: file, ttl: .seconds(3600))
            #expect(second.problem == nil)
            #expect(second.credential(host: "reg.example", repository: "app")?.password == "p")
            // Its holder, too: released after the restart, the credentials go.
            second.release(holder: "reg.example/app:1/sha256:aa")
            #expect(second.scopes.isEmpty)
            #expect(GivenCredentials(file: file, ttl: .seconds(3600)).scopes.isEmpty)

            try first.add(json: Array(#"{"reg.example/app:1":{"username":"u","password":"p"}}"#.utf8))
            chmod(file, 0o644)
            let loose = GivenCredentials(file: file, ttl: .seconds(3600))
            #expect(loose.problem?.contains("not trusted") == true)
            #expect(loose.scopes.isEmpty)
            try "not json".write(toFile: file, atomically: false, encoding: .utf8)
            chmod(file, 0o600)
            #expect(GivenCredentials(file: file, ttl: .seconds(3600)).problem?.contains("not a credentials file") == true)
        }
    }

    @Test("dropped when the last layer that used them is released, or, while no layer holds them, after the TTL")
    func dropped() async throws {
        let clock = TestClock()
        let given = GivenCredentials(file: nil, ttl: .seconds(600), now: clock.now)
        let gone = Mutex<[String]>([])
        given.onChange { r, repo in gone.withLock { $0.append(r + "/" + repo) } }
        try given.add(json: Array(#"{"reg.example/held:1":{"username":"u","password":"p"}}"#.utf8))
        try given.add(json: Array(#"{"reg.example/idle:1":{"username":"u","password":"p"}}"#.utf8))
        given.hold(host: "reg.example", repository: "held", by: "layer-a")
        given.hold(host: "reg.example", repository: "held", by: "layer-b")
        given.hold(host: "reg.example", repository: "nothing-given", by: "layer-c")  // no credentials: nothing held
        clock.advance(601)
        #expect(given.scopes == ["reg.example/held"], "the idle entry expired; the held one did not")
        #expect(gone.withLock { $0 } == ["reg.example/idle"])
        given.release(holder: "layer-a")
        #expect(given.credential(host: "reg.example", repository: "held") != nil, "layer-b still holds them")
        given.release(holder: "layer-b")
        #expect(given.credential(host: "reg.example", repository: "held") == nil)
        #expect(gone.withLock { $0 } == ["reg.example/idle", "reg.example/held"])
        // Given again: the TTL starts again.
        try given.add(json: Array(#"{"reg.example/idle:1":{"username":"u","password":"p"}}"#.utf8))
        clock.advance(599)
        try given.add(json: Array(#"{"reg.example/idle:2":{"username":"u","password":"p2"}}"#.utf8))
        clock.advance(599)
        #expect(given.credential(host: "reg.example", repository: "idle")?.password == "p2")
    }

    @Test("a pull that gives them again before its layers are looked up keeps them through the last release of the earlier ones")
    func givenAgainDuringRelease() async throws {
        let clock = TestClock()
        let given = GivenCredentials(file: nil, ttl: .seconds(600), now: clock.now)
        try given.add(json: Array(#"{"reg.example/app:v1":{"username":"u","password":"p"}}"#.utf8))
        given.hold(host: "reg.example", repository: "app", by: "v1-layer")
        clock.advance(5)
        // The helper runs for app:v2 (before any of its layers is looked up), then v1's last layer goes.
        try given.add(json: Array(#"{"reg.example/app:v2":{"username":"u","password":"p"}}"#.utf8))
        given.release(holder: "v1-layer")
        #expect(given.credential(host: "reg.example", repository: "app") != nil, "v2's credentials went with v1's layer")
        given.hold(host: "reg.example", repository: "app", by: "v2-layer")
        given.release(holder: "v2-layer")
        #expect(given.credential(host: "reg.example", repository: "app") == nil, "released by its own layers, they go")
    }

    @Test("a previous run's holders are provisional: kept to the TTL, longer only when a layer of this run takes hold")
    func provisionalHolders() async throws {
        try await withTemporaryDirectory("given-provisional") { dir in
            let clock = TestClock()
            let file = dir + "/run/credentials.json"
            let first = GivenCredentials(file: file, ttl: .seconds(600), now: clock.now)
            try first.add(json: Array(#"{"reg.example/kept:1":{"username":"u","password":"p"},"reg.example/stale:1":{"username":"u","password":"p"}}"#.utf8))
            first.hold(host: "reg.example", repository: "kept", by: "layer-k")
            first.hold(host: "reg.example", repository: "stale", by: "layer-s")
            // A restart; layer-s was removed while the store was down (its rmdir never comes).
            let second = GivenCredentials(file: file, ttl: .seconds(600), now: clock.now)
            second.hold(host: "reg.example", repository: "kept", by: "layer-k")
            clock.advance(601)
            #expect(second.scopes == ["reg.example/kept"])
            let saved = try JSONSerialization.jsonObject(with: try #require(FileManager.default.contents(atPath: file))) as? [String: Any]
            let repositories = (saved?["entries"] as? [[String: Any]])?.compactMap { $0["repository"] as? String }
            #expect(repositories == ["kept"], "the file says the same")
        }
    }

    @Test("replaced credentials are reported, so authorizations made with the old ones are forgotten")
    func replaced() async throws {
        let given = GivenCredentials(file: nil, ttl: .seconds(600))
        let changed = Mutex<[String]>([])
        given.onChange { r, repo in changed.withLock { $0.append(r + "/" + repo) } }
        try given.add(json: Array(#"{"reg.example/app:1":{"username":"u","password":"old"}}"#.utf8))
        try given.add(json: Array(#"{"reg.example/app:1":{"username":"u","password":"old"}}"#.utf8))
        #expect(changed.withLock { $0 }.isEmpty, "the same credentials again change nothing")
        try given.add(json: Array(#"{"reg.example/app:2":{"username":"u","password":"new"}}"#.utf8))
        #expect(changed.withLock { $0 } == ["reg.example/app"])
        // Go's decoder ignores the case of field names; so does this one.
        try given.add(json: Array(#"{"reg.example/tok:1":{"identitytoken":"t"}}"#.utf8))
        #expect(given.credential(host: "reg.example", repository: "tok") == .identityToken("t"))
    }

    @Test("concurrent pulls, holds and releases: the file always ends equal to what the store uses")
    func concurrentChanges() async throws {
        try await withTemporaryDirectory("given-concurrent") { dir in
            let file = dir + "/run/credentials.json"
            let given = GivenCredentials(file: file, ttl: .seconds(3600))
            await withTaskGroup(of: Void.self) { group in
                for i in 0..<64 {
                    group.addTask {
                        _ = try? given.add(json: Array("{\"reg.example/r\(i % 16):\(i)\":{\"username\":\"u\(i)\",\"password\":\"p\"}}".utf8))
                        given.hold(host: "reg.example", repository: "r\(i % 16)", by: "layer-\(i)")
                        if i % 3 == 0 { given.release(holder: "layer-\(i)") }
                    }
                }
            }
            let reread = GivenCredentials(file: file, ttl: .seconds(3600))
            #expect(reread.scopes == given.scopes)
            for r in 0..<16 {
                #expect(reread.credential(host: "reg.example", repository: "r\(r)") == given.credential(host: "reg.example", repository: "r\(r)"))
            }
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir + "/run")
            #expect(leftovers == ["credentials.json"], "temporary files left: \(leftovers)")
        }
    }
}
