// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing

/// Tests/DeployTests/Golden. Set STARGZ_RECORD_GOLDEN=1 to rewrite the files from the current output, then
/// review the diff.
let goldenDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden")

func expectGolden(_ name: String, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let url = goldenDirectory.appendingPathComponent(name)
    if ProcessInfo.processInfo.environment["STARGZ_RECORD_GOLDEN"] == "1" {
        try text.write(to: url, atomically: true, encoding: .utf8)
        return
    }
    let expected = try String(contentsOf: url, encoding: .utf8)
    #expect(text == expected, "differs from Golden/\(name) (STARGZ_RECORD_GOLDEN=1 rewrites it)", sourceLocation: sourceLocation)
}

/// The unit's download step as the shell sees it: continuation lines joined, systemd's `$$` and `%%` undone.
func downloadScript(of unit: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
    let joined = unit.replacingOccurrences(of: "\\\n", with: " ")
    let line = try #require(
        joined.split(separator: "\n").first { $0.hasPrefix("ExecStartPre=/bin/sh -ec '") }, sourceLocation: sourceLocation)
    var s = String(line.dropFirst("ExecStartPre=/bin/sh -ec '".count))
    #expect(s.hasSuffix("'"), sourceLocation: sourceLocation)
    s.removeLast()
    #expect(!s.contains("'"), sourceLocation: sourceLocation)
    return s.replacingOccurrences(of: "$$", with: "$").replacingOccurrences(of: "%%", with: "%")
}

/// A fresh directory, removed by `cleanup()`.
struct TempDir {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("deploy-tests-\(UUID().uuidString)")
    var path: String { url.path }

    init() throws { try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) }

    func cleanup() { try? FileManager.default.removeItem(at: url) }

    /// Writes `text` at `relative` (directories made), with `mode`.
    @discardableResult
    func write(_ relative: String, _ text: String, mode: Int = 0o644) throws -> String {
        try write(relative, Data(text.utf8), mode: mode)
    }

    @discardableResult
    func write(_ relative: String, _ data: Data, mode: Int = 0o644) throws -> String {
        let p = path + relative
        try FileManager.default.createDirectory(
            atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try data.write(to: URL(fileURLWithPath: p))
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: p)
        return p
    }

    func read(_ relative: String) -> Data? { FileManager.default.contents(atPath: path + relative) }

    func mode(_ relative: String) throws -> Int {
        try (FileManager.default.attributesOfItem(atPath: path + relative)[.posixPermissions] as? NSNumber)?.intValue ?? -1
    }

    func exists(_ relative: String) -> Bool { FileManager.default.fileExists(atPath: path + relative) }
}

/// Runs a command, feeding `input`; returns status, stdout and stderr.
@discardableResult
func shell(_ argv: [String], input: String? = nil, environment: [String: String]? = nil) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = argv
    if let environment { p.environment = environment }
    let out = Pipe(), err = Pipe(), inp = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = inp
    try p.run()
    if let input { inp.fileHandleForWriting.write(Data(input.utf8)) }
    try inp.fileHandleForWriting.close()
    // Drain stderr concurrently so a full pipe cannot block the child.
    let errData = Thread.detachedRead(err.fileHandleForReading)
    let o = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: errData(), as: UTF8.self))
}

extension Thread {
    /// Reads `handle` to its end on a thread of its own; the returned function waits for the data.
    static func detachedRead(_ handle: FileHandle) -> () -> Data {
        final class Box: @unchecked Sendable {  // Sendable: written once before the semaphore is signalled
            var data = Data()
        }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        let t = Thread {
            box.data = handle.readDataToEndOfFile()
            done.signal()
        }
        t.name = "test-stderr-reader"
        t.start()
        return {
            done.wait()
            return box.data
        }
    }
}

/// YAML text as PyYAML reads it (safe_load), converted through JSON into Foundation values.
func parseYAML(_ yaml: String) throws -> Any {
    let r = try shell(
        ["python3", "-c", "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin.read()), sys.stdout)"], input: yaml)
    guard r.status == 0 else { throw YAMLFailure(message: r.err) }
    return try JSONSerialization.jsonObject(with: Data(r.out.utf8), options: [.fragmentsAllowed])
}

struct YAMLFailure: Error, CustomStringConvertible {
    var message: String
    var description: String { "PyYAML: \(message)" }
}

/// The `stargz` executable this build made (`swift build --build-tests` builds it with the tests): beside the test
/// bundle, so that a build with its own `--scratch-path` runs its own, else the checkout's `.build/debug/stargz`.
let stargzExecutable: String = {
    let besideTests = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("stargz").path
    if FileManager.default.isExecutableFile(atPath: besideTests) { return besideTests }
    return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent(".build/debug/stargz").path
}()

/// Runs `stargz ARGS…` as a child process (in-process runs would print into the stdout other suites capture).
func stargz(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
    try shell([stargzExecutable] + args)
}
