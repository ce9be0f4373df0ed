// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing

@testable import EStargz
@_exported import TestSupport

enum Fixtures {
    /// The reference fixtures (TestSupport's one path to them).
    static let dir: URL = Paths.fixtures

    static func url(_ name: String) -> URL { dir.appendingPathComponent(name) }
    static func bytes(_ name: String) throws -> [UInt8] { Array(try Data(contentsOf: url(name))) }

    struct Sidecar: Decodable {
        var tocDigest: String
        var diffID: String
        var compressedSize: Int64
    }

    static func sidecar(_ name: String) throws -> Sidecar {
        try JSONDecoder().decode(Sidecar.self, from: Data(contentsOf: url(name + ".json")))
    }

    /// The fixture blobs with the tar each was made from.
    static let blobs: [(blob: String, tar: String)] = [
        ("kitchen-sink.esgz", "kitchen-sink.tar"),
        ("kitchen-sink.chunk64k.esgz", "kitchen-sink.tar"),
        ("app.prio.esgz", "app.tar"),
        ("app.zstdchunked", "app.tar"),
        ("empty.esgz", "empty.tar"),
    ]
}

/// A scratch directory removed at the end of the scope.
func withTemporaryDirectory<T>(_ body: (URL) throws -> T) throws -> T {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("estargz-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    return try body(dir)
}

