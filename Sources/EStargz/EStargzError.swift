// SPDX-License-Identifier: Apache-2.0

/// The one error type of the EStargz module.
///
/// Messages name what failed: the entry path, the blob offset, the digest. Equality looks only at ``code``.
public struct EStargzError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What went wrong, as a stable, extensible code.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case invalidFooter, invalidTOC, tocTooLarge, tocDigestMismatch, chunkDigestMismatch, diffIDMismatch
            case invalidEntry, unsafePath, duplicateEntry, offsetOutOfRange, truncatedBlob, unsupportedFormat
            case corruptData, invalidTar, io, notFound, contentMismatch, invalidArgument
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }
        /// The blob's footer is missing or malformed (not eStargz, legacy stargz or zstd:chunked).
        public static let invalidFooter = Code(.invalidFooter)
        /// The TOC is not a valid `stargz.index.json`.
        public static let invalidTOC = Code(.invalidTOC)
        /// The TOC is larger than the configured limit.
        public static let tocTooLarge = Code(.tocTooLarge)
        /// The TOC digest differs from the expected one.
        public static let tocDigestMismatch = Code(.tocDigestMismatch)
        /// A chunk's bytes do not match its `chunkDigest`.
        public static let chunkDigestMismatch = Code(.chunkDigestMismatch)
        /// The uncompressed stream does not match the expected DiffID.
        public static let diffIDMismatch = Code(.diffIDMismatch)
        /// A TOC entry is inconsistent (bad chunk layout, bad type, missing hardlink target).
        public static let invalidEntry = Code(.invalidEntry)
        /// A name is absolute, contains `..`, or an extraction would leave its target directory.
        public static let unsafePath = Code(.unsafePath)
        /// Two TOC entries have the same name.
        public static let duplicateEntry = Code(.duplicateEntry)
        /// An offset points outside the blob or its payload region.
        public static let offsetOutOfRange = Code(.offsetOutOfRange)
        /// The blob is shorter than its structures say.
        public static let truncatedBlob = Code(.truncatedBlob)
        /// A valid but unsupported variant (for example an external TOC).
        public static let unsupportedFormat = Code(.unsupportedFormat)
        /// Compressed data does not decompress.
        public static let corruptData = Code(.corruptData)
        /// The tar stream is malformed or has an unsupported entry.
        public static let invalidTar = Code(.invalidTar)
        /// A read or write failed.
        public static let io = Code(.io)
        /// No entry has the given path.
        public static let notFound = Code(.notFound)
        /// Blob content differs from the reference tar.
        public static let contentMismatch = Code(.contentMismatch)
        /// A caller-supplied option is out of range.
        public static let invalidArgument = Code(.invalidArgument)
        public var description: String { "\(base)" }
    }

    /// The error code.
    public var code: Code
    /// What failed, naming the path, offset or digest involved.
    public var message: String
    /// The underlying error, if any.
    public var cause: (any Error)?
    /// Source location where the error was made.
    public var location: String

    /// Creates an error.
    public init(_ code: Code, _ message: String, cause: (any Error)? = nil, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.cause = cause
        self.location = "\(file):\(line)"
    }

    public var description: String {
        if let cause { return "\(message): \(cause)" }
        return message
    }

    /// The message with its cause tree and location.
    public func detailedDescription() -> String {
        var s = "\(code): \(message) [\(location)]"
        if let c = cause as? EStargzError {
            s += "\n  caused by " + c.detailedDescription()
        } else if let c = cause {
            s += "\n  caused by \(c)"
        }
        return s
    }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
}
