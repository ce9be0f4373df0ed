// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing

@testable import EStargz

enum Fixtures {
    /// The repository root (two levels above this file's directory).
    static let repoRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// ../shared/fixtures/estargz, or $STARGZ_FIXTURES.
    static let dir: URL = {
        if let e = ProcessInfo.processInfo.environment["STARGZ_FIXTURES"] { return URL(fileURLWithPath: e) }
        return repoRoot.deletingLastPathComponent().appendingPathComponent("shared/fixtures/estargz")
    }()

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

/// The reference oracle, `refgen` (Go estargz v0.12.0 from Debian), built once per test run.
enum Refgen {
    /// Path of the binary: $REFGEN, or built with ../shared/tools/refgen/build.sh into .build/refgen/.
    static let path: Result<String, RefgenError> = {
        if let p = ProcessInfo.processInfo.environment["REFGEN"], FileManager.default.isExecutableFile(atPath: p) {
            return .success(p)
        }
        let out = Fixtures.repoRoot.appendingPathComponent(".build/refgen/refgen").path
        if FileManager.default.isExecutableFile(atPath: out) { return .success(out) }
        let script = Fixtures.repoRoot.deletingLastPathComponent().appendingPathComponent("shared/tools/refgen/build.sh")
        try? FileManager.default.createDirectory(
            atPath: (out as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let r = run("/bin/bash", [script.path, out])
        guard r.status == 0, FileManager.default.isExecutableFile(atPath: out) else {
            return .failure(RefgenError(message: "building refgen failed: \(r.output)"))
        }
        return .success(out)
    }()

    struct RefgenError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    /// Runs `refgen verify BLOB TAR`; returns (exit status, output).
    static func verify(blob: String, tar: String) throws -> (status: Int32, output: String) {
        let bin = try path.get()
        return run(bin, ["verify", blob, tar])
    }

    /// Runs `refgen build IN OUT args…`.
    static func build(_ input: String, _ output: String, _ args: [String]) throws -> (status: Int32, output: String) {
        let bin = try path.get()
        return run(bin, ["build", input, output] + args)
    }

    static func run(_ exe: String, _ args: [String]) -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        do { try p.run() } catch { return (-1, "\(error)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
