// SPDX-License-Identifier: Apache-2.0
import Foundation
import Synchronization

/// What a command printed and how it ended.
public struct CommandResult: Sendable, Equatable {
    /// The exit status (0 is success).
    public var status: Int32
    /// Standard output and standard error, interleaved.
    public var output: String

    /// A result.
    public init(status: Int32, output: String = "") {
        self.status = status
        self.output = output
    }
}

/// Runs the commands deploy and doctor need (`systemctl …`). Injected, so tests and `--prefix` runs record
/// them instead.
public protocol CommandRunner: Sendable {
    /// Runs `argv` (the first element is looked up in `PATH`) and waits for it.
    func run(_ argv: [String]) -> CommandResult
    /// Whether commands really run (false for a recorder).
    var isLive: Bool { get }
}

/// Runs commands as child processes.
public struct ProcessRunner: CommandRunner {
    /// A runner.
    public init() {}

    public var isLive: Bool { true }

    public func run(_ argv: [String]) -> CommandResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = argv
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        do { try p.run() } catch { return CommandResult(status: 127, output: "\(argv[0]): \(error)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return CommandResult(status: p.terminationStatus, output: String(decoding: data, as: UTF8.self))
    }
}

/// Records commands instead of running them, answering from a table (default: success, no output).
public final class RecordingRunner: CommandRunner {
    // Sendable: all mutable state is behind the Mutex.
    private let state = Mutex<(commands: [[String]], answers: [[String]: CommandResult])>(([], [:]))

    /// A recorder; `answers` maps whole command lines to their results.
    public init(answers: [[String]: CommandResult] = [:]) { state.withLock { $0.answers = answers } }

    public var isLive: Bool { false }

    public func run(_ argv: [String]) -> CommandResult {
        state.withLock {
            $0.commands.append(argv)
            return $0.answers[argv] ?? CommandResult(status: 0)
        }
    }

    /// The commands asked for, in order.
    public var commands: [[String]] { state.withLock { $0.commands } }
}
