// SPDX-License-Identifier: Apache-2.0
public import FUSE
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// The one error type of the LazyLayer module: what a lazy layer refuses or fails at, with the cause (a
/// registry's or the format's error) and where it was made. ``errno`` is the one mapping to a FUSE answer.
/// Equality looks only at ``code``.
public struct LazyLayerError: Error, CustomStringConvertible, Equatable, Sendable, ErrnoConvertible {
    /// What went wrong.
    public enum Code: Sendable, Hashable, CustomStringConvertible {
        /// No such node or name (ENOENT).
        case notFound
        /// A directory operation on a non-directory (ENOTDIR).
        case notDirectory
        /// A file operation on a directory (EISDIR).
        case isDirectory
        /// An operation the node does not take: readlink of a file, read of a symlink (EINVAL).
        case invalidOperation
        /// No such extended attribute (ENODATA).
        case noAttribute
        /// A whiteout opened (it is shown as a device with no driver: ENXIO).
        case noDevice
        /// The blob could not be fetched (EIO).
        case fetchFailed
        /// A chunk failed verification twice (EIO): never wrong bytes.
        case verificationFailed
        /// The TOC's chunks do not cover a read, or a chunk went missing (EIO).
        case inconsistent
        /// The layer is closing or closed (EIO: a read that comes then cannot be served, and retrying it will
        /// not help; EINTR is for a read the kernel interrupted).
        case closed

        public var description: String {
            switch self {
            case .notFound: "not found"
            case .notDirectory: "not a directory"
            case .isDirectory: "is a directory"
            case .invalidOperation: "invalid operation"
            case .noAttribute: "no such attribute"
            case .noDevice: "no device"
            case .fetchFailed: "fetch failed"
            case .verificationFailed: "verification failed"
            case .inconsistent: "inconsistent layer"
            case .closed: "layer closed"
            }
        }
    }

    /// The error code.
    public var code: Code
    /// What failed, naming the node, offset or blob.
    public var message: String
    /// The underlying error, if any.
    public var cause: (any Error)?
    private let file: StaticString
    private let line: UInt

    /// Creates an error (the location is kept as static text, so routine answers cost no allocation).
    public init(_ code: Code, _ message: String = "", cause: (any Error)? = nil, file: StaticString = #fileID, line: UInt = #line) {
        self.code = code
        self.message = message
        self.cause = cause
        self.file = file
        self.line = line
    }

    /// Where the error was made.
    public var location: String { "\(file):\(line)" }

    /// The errno a FUSE reply carries for it.
    public var errno: Int32 {
        switch code {
        case .notFound: ENOENT
        case .notDirectory: ENOTDIR
        case .isDirectory: EISDIR
        case .invalidOperation: EINVAL
        case .noAttribute: ENODATA
        case .noDevice: ENXIO
        case .fetchFailed, .verificationFailed, .inconsistent, .closed: EIO
        }
    }

    public var description: String {
        let text = message.isEmpty ? "\(code)" : message
        if let cause { return "\(text): \(cause)" }
        return text
    }

    /// The message with its cause and location.
    public func detailedDescription() -> String { "\(code): \(description) [\(location)]" }

    public static func == (a: LazyLayerError, b: LazyLayerError) -> Bool { a.code == b.code }
}
