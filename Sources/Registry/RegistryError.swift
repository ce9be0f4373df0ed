// SPDX-License-Identifier: Apache-2.0

/// The one error type of the Registry module. Messages name the host, repository, digest or reference,
/// the HTTP status and the registry's error code (`BLOB_UNKNOWN`, `UNAUTHORIZED`, `TOOMANYREQUESTS`, …).
public struct RegistryError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What went wrong, as a stable, extensible code.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case notFound, unauthorized, denied, tooManyRequests, serverError, badResponse, digestMismatch
            case unsupportedMediaType, invalidReference, transport, platformNotFound, invalidConfiguration
            case rangeNotSatisfiable, blocked
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }
        /// The manifest, tag or blob does not exist (404, `MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`).
        public static let notFound = Code(.notFound)
        /// Authentication failed or no credentials were found (401).
        public static let unauthorized = Code(.unauthorized)
        /// The credentials are not allowed this action (403).
        public static let denied = Code(.denied)
        /// Rate limited (429) after all retries.
        public static let tooManyRequests = Code(.tooManyRequests)
        /// 5xx after all retries.
        public static let serverError = Code(.serverError)
        /// A reply that breaks the protocol (wrong length, bad JSON, unexpected status).
        public static let badResponse = Code(.badResponse)
        /// Content whose digest is not the one asked for.
        public static let digestMismatch = Code(.digestMismatch)
        /// A media type we do not handle.
        public static let unsupportedMediaType = Code(.unsupportedMediaType)
        /// A reference that does not parse.
        public static let invalidReference = Code(.invalidReference)
        /// Connection failures, timeouts, resets after all retries.
        public static let transport = Code(.transport)
        /// The index has no manifest for the wanted platform.
        public static let platformNotFound = Code(.platformNotFound)
        /// A bad credentials file or host setting.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// The registry cannot serve the range asked for.
        public static let rangeNotSatisfiable = Code(.rangeNotSatisfiable)
        /// registries.conf blocks the source and no mirror serves the reference.
        public static let blocked = Code(.blocked)
        public var description: String { "\(base)" }
    }

    /// The error code.
    public var code: Code
    /// What failed.
    public var message: String
    /// The HTTP status, when there was a reply.
    public var status: Int?
    /// The underlying error.
    public var cause: (any Error)?
    /// Where the error was made.
    public var location: String

    /// Creates an error.
    public init(
        _ code: Code, _ message: String, status: Int? = nil, cause: (any Error)? = nil, file: String = #fileID,
        line: Int = #line
    ) {
        self.code = code
        self.message = message
        self.status = status
        self.cause = cause
        self.location = "\(file):\(line)"
    }

    public var description: String {
        if let cause { return "\(message): \(cause)" }
        return message
    }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
}
