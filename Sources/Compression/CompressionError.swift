// SPDX-License-Identifier: Apache-2.0

/// The one error type of the Compression module.
///
/// Equality looks only at ``code``, so tests can match on it.
public struct CompressionError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What went wrong, as a stable, extensible code.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case corruptData, outputLimitExceeded, truncatedInput, libraryFailure
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }
        /// The compressed bytes are not a valid stream.
        public static let corruptData = Code(.corruptData)
        /// Decompression would produce more bytes than the caller allowed.
        public static let outputLimitExceeded = Code(.outputLimitExceeded)
        /// The compressed stream ended before its end marker.
        public static let truncatedInput = Code(.truncatedInput)
        /// The C library failed (out of memory, bad parameter).
        public static let libraryFailure = Code(.libraryFailure)
        public var description: String { "\(base)" }
    }

    /// The error code.
    public var code: Code
    /// A human-readable message naming what failed.
    public var message: String
    /// Where the error was made.
    public var location: String

    init(_ code: Code, _ message: String, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.location = "\(file):\(line)"
    }

    public var description: String { message }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
}
