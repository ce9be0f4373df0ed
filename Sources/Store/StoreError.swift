// SPDX-License-Identifier: Apache-2.0

/// The one error type of the Store module: why a layer is not served, or why the daemon cannot start.
/// The log says which (``Code/description``) and why (the message and its cause). Equality looks only at ``code``.
public struct StoreError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What went wrong.
    public enum Code: Sendable, Hashable, CustomStringConvertible {
        /// The image, or the layer in it, is not there (the client pulls it normally, and fails the same way).
        case notFound
        /// The layer is there but is not served: not eStargz, a TOC that is malformed, over a limit or not the
        /// annotated one, a config that does not match the manifest. The client pulls it normally.
        case refused
        /// The registry could not be asked: unreachable, credentials refused, errors after every retry, or no
        /// answer within the resolve timeout. The client pulls the layer normally (and may fail the same way).
        case resolveFailed
        /// The configuration is wrong (``StoreError/key`` names the key).
        case configuration
        /// The daemon could not set itself up: directories, the mount, the metrics listener.
        case setup
        /// A session handed over by a predecessor could not be taken (a state of another version, damaged, or
        /// fds missing): the successor unmounts and mounts afresh.
        case handover

        public var description: String {
            switch self {
            case .notFound: "not found"
            case .refused: "refused"
            case .resolveFailed: "failed to resolve"
            case .configuration: "bad configuration"
            case .setup: "setup failed"
            case .handover: "handover refused"
            }
        }
    }

    /// The error code.
    public var code: Code
    /// What failed, naming the reference, digest, path or key.
    public var message: String
    /// The configuration key at fault, for ``Code/configuration``.
    public var key: String?
    /// The underlying error (a registry's, the format's), if any.
    public var cause: (any Error)?
    /// Where the error was made.
    public var location: String

    /// Creates an error.
    public init(
        _ code: Code, _ message: String, key: String? = nil, cause: (any Error)? = nil, file: String = #fileID, line: Int = #line
    ) {
        self.code = code
        self.message = message
        self.key = key
        self.cause = cause
        location = "\(file):\(line)"
    }

    public var description: String {
        if let cause { return "\(message): \(cause)" }
        return message
    }

    public static func == (a: StoreError, b: StoreError) -> Bool { a.code == b.code }
}
