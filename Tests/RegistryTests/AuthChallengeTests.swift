// SPDX-License-Identifier: Apache-2.0
import Testing

@testable import Registry

/// `WWW-Authenticate` comes from the registry: parsed in one pass, whatever its length or escapes.
@Suite("WWW-Authenticate parsing")
struct AuthChallengeTests {
    @Test("quoted values with escapes, a trailing backslash, and unquoted values")
    func escapes() {
        let c = AuthChallenge(#"Bearer realm="https://auth.example/token",service="reg \"one\"",scope=repository:a:pull"#)
        #expect(c.scheme == "bearer")
        #expect(c.parameters["realm"] == "https://auth.example/token")
        #expect(c.parameters["service"] == #"reg "one""#)
        #expect(c.parameters["scope"] == "repository:a:pull")
        #expect(AuthChallenge(#"Bearer realm="a\"#).parameters["realm"] == #"a\"#)
    }

    @Test("a megabyte of escapes parses (one pass, not one count of the rest per character)")
    func long() {
        let value = String(repeating: #"\x"#, count: 1 << 19)
        #expect(AuthChallenge("Bearer realm=\"\(value)\"").parameters["realm"]?.count == 1 << 19)
    }
}
