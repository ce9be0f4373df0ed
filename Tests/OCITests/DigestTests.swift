// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing

@testable import OCI

@Suite("Digest")
struct DigestTests {
    @Test("parses valid digests and refuses invalid ones")
    func parse() {
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        #expect(Digest(empty)?.description == empty)
        #expect(Digest.sha256(of: []).description == empty)
        for bad in ["", "sha256:", "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                    "md5:d41d8cd98f00b204e9800998ecf8427e", "sha256:xyz", empty + "00", "sha256e3b0"] {
            #expect(Digest(bad) == nil, "\(bad)")
        }
        #expect(Digest("sha512:" + String(repeating: "a", count: 128)) != nil)
    }

    @Test("hashes incrementally like in one go, and round-trips through JSON")
    func hashing() throws {
        let data = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        var h = SHA256Hasher()
        h.update(Array(data[..<333]))
        h.update(Array(data[333...]))
        #expect(h.finalize() == Digest.sha256(of: data))
        let d = Digest.sha256(of: data)
        #expect(Hex.decode(d.encoded) == d.bytes)
        let json = try JSONEncoder().encode([d])
        #expect(try JSONDecoder().decode([Digest].self, from: json) == [d])
        #expect(throws: (any Error).self) { try JSONDecoder().decode([Digest].self, from: Data("[\"nope\"]".utf8)) }
    }
}
