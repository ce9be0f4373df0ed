// SPDX-License-Identifier: Apache-2.0
public import Foundation

/// Paths of the repository, its reference fixtures and its oracle.
public enum Paths {
    /// The repository root.
    public static let repoRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    /// Tests/Fixtures/estargz (blobs the reference implementation wrote), or $STARGZ_FIXTURES.
    public static let fixtures: URL = {
        if let e = ProcessInfo.processInfo.environment["STARGZ_FIXTURES"] { return URL(fileURLWithPath: e) }
        return repoRoot.appendingPathComponent("Tests/Fixtures/estargz")
    }()
}

/// The reference oracle, `refgen` (Go estargz v0.12.0 from Debian), built once per test run.
public enum Refgen {
    /// Path of the binary: $REFGEN, or built with scripts/testing/refgen/build.sh into .build/refgen/.
    public static let path: Result<String, RefgenError> = {
        if let p = ProcessInfo.processInfo.environment["REFGEN"], FileManager.default.isExecutableFile(atPath: p) {
            return .success(p)
        }
        let out = Paths.repoRoot.appendingPathComponent(".build/refgen/refgen").path
        if FileManager.default.isExecutableFile(atPath: out) { return .success(out) }
        let script = Paths.repoRoot.appendingPathComponent("scripts/testing/refgen/build.sh")
        try? FileManager.default.createDirectory(
            atPath: (out as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let r = run("/bin/bash", [script.path, out])
        guard r.status == 0, FileManager.default.isExecutableFile(atPath: out) else {
            return .failure(RefgenError(message: "building refgen failed: \(r.output)"))
        }
        return .success(out)
    }()

    public struct RefgenError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// Runs `refgen verify BLOB TAR`; returns (exit status, output).
    public static func verify(blob: String, tar: String) throws -> (status: Int32, output: String) {
        let bin = try path.get()
        return run(bin, ["verify", blob, tar])
    }

    /// Runs `refgen build IN OUT args…`.
    public static func build(_ input: String, _ output: String, _ args: [String]) throws -> (status: Int32, output: String) {
        let bin = try path.get()
        return run(bin, ["build", input, output] + args)
    }

    public static func run(_ exe: String, _ args: [String]) -> (status: Int32, output: String) {
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
