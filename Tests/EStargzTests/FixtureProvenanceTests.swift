// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing
import TestSupport

/// The committed reference fixtures are what the project's own oracle makes: refgen (Go estargz v0.12.0, built from
/// Debian's sources by scripts/testing/refgen/build.sh) rebuilds every blob of Tests/Fixtures/estargz/recipes.txt
/// from its tar, byte for byte, with the same TOC digest, DiffID and size. scripts/testing/refgen/fixtures.sh
/// writes them.
@Suite("Reference fixtures: provenance")
struct FixtureProvenanceTests {
    struct Recipe: CustomStringConvertible, Sendable {
        var output: String
        var input: String
        var options: [String]
        var description: String { output }
    }

    static let recipes: [Recipe] = {
        guard let text = try? String(contentsOf: Fixtures.url("recipes.txt"), encoding: .utf8) else { return [] }
        return text.split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.isEmpty }.map { line in
            let f = line.split(separator: " ").map(String.init)
            return Recipe(output: f[0], input: f[1], options: Array(f.dropFirst(2)))
        }
    }()

    @Test("recipes.txt names every reference blob")
    func everyBlob() {
        #expect(Set(Self.recipes.map(\.output)) == Set(Fixtures.blobs.map(\.blob)))
    }

    @Test("refgen rebuilds the blob byte for byte", arguments: recipes)
    func rebuilds(_ recipe: Recipe) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("provenance-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent(recipe.output).path
        let r = try Refgen.build(Fixtures.url(recipe.input).path, out, recipe.options)
        try #require(r.status == 0, "\(r.output)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == Data(contentsOf: Fixtures.url(recipe.output)))
        let made = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + ".json"))) as? NSDictionary
        let committed = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url(recipe.output + ".json"))) as? NSDictionary
        #expect(made != nil && made == committed)
    }
}
