// SPDX-License-Identifier: Apache-2.0

/// The one error of the Deploy module: what went wrong, where in the input (for files we parse), and why.
///
/// Equality looks only at ``code``, so tests can match on it.
public struct DeployError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The kind of failure. New codes may be added without breaking callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case malformedInput = "malformed input"
            case invalidArgument = "invalid argument"
            case io = "I/O error"
            case commandFailed = "command failed"
            case notInstalled = "not installed"
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A file we read (storage.conf, config.toml) does not parse, or has the wrong shape.
        public static let malformedInput = Code(.malformedInput)
        /// A path, URL, digest or name given to us cannot be used.
        public static let invalidArgument = Code(.invalidArgument)
        /// Reading or writing a file failed.
        public static let io = Code(.io)
        /// `systemctl` (or another command) failed.
        public static let commandFailed = Code(.commandFailed)
        /// `uninstall` found no record of an installation.
        public static let notInstalled = Code(.notInstalled)

        public var description: String { base.rawValue }
    }

    /// The kind of failure.
    public var code: Code
    /// What went wrong, naming the file, line, path or command.
    public var message: String
    /// The 1-based line of the input at fault, for ``Code/malformedInput``.
    public var line: Int?
    /// The underlying error, if any.
    public var cause: (any Error)?
    /// Where the error was made (`#fileID:#line`).
    public var location: String

    /// Creates an error (the CLI's deploy steps make ``Code/io`` ones for downloads).
    public init(_ code: Code, _ message: String, line: Int? = nil, cause: (any Error)? = nil, file: String = #fileID, sourceLine: Int = #line) {
        self.code = code
        self.message = message
        self.line = line
        self.cause = cause
        self.location = "\(file):\(sourceLine)"
    }

    public var description: String { message }

    /// The message followed by the chain of causes, one per line.
    public func detailedDescription() -> String {
        var out = "\(code): \(message) (at \(location))"
        var next = cause
        while let c = next {
            out += "\n  caused by: \(c)"
            next = (c as? DeployError)?.cause
        }
        return out
    }

    public static func == (a: DeployError, b: DeployError) -> Bool { a.code == b.code }

    static func malformed(_ message: String, line: Int? = nil, file: String = #fileID, sourceLine: Int = #line) -> DeployError {
        DeployError(.malformedInput, message, line: line, file: file, sourceLine: sourceLine)
    }

    static func invalid(_ message: String, file: String = #fileID, sourceLine: Int = #line) -> DeployError {
        DeployError(.invalidArgument, message, file: file, sourceLine: sourceLine)
    }
}
