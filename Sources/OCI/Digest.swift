// SPDX-License-Identifier: Apache-2.0
internal import Crypto

/// A content digest in OCI form, `algorithm:hex` (for example `sha256:e3b0…`).
///
/// Only `sha256` and `sha512` are accepted, as the OCI image spec registers them.
public struct Digest: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    /// The algorithm name, `sha256` or `sha512`.
    public let algorithm: String
    /// The lowercase hex encoding.
    public let encoded: String

    /// Parses `algorithm:hex`; returns nil when the string is not a valid digest.
    public init?(_ string: some StringProtocol) {
        guard let colon = string.firstIndex(of: ":") else { return nil }
        let alg = String(string[..<colon])
        let hex = String(string[string.index(after: colon)...])
        let want: Int
        switch alg {
        case "sha256": want = 64
        case "sha512": want = 128
        default: return nil
        }
        guard hex.utf8.count == want, hex.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) })
        else { return nil }
        algorithm = alg
        encoded = hex
    }

    /// A sha256 digest from its 32 raw bytes.
    public init(sha256 bytes: some Sequence<UInt8>) {
        algorithm = "sha256"
        encoded = Hex.encode(bytes)
    }

    /// The sha256 digest of `data`.
    public static func sha256(of bytes: [UInt8]) -> Digest {
        bytes.withUnsafeBytes { Digest(sha256: SHA256.hash(data: $0)) }
    }

    /// The sha256 digest of the bytes in `buffer`.
    public static func sha256(of buffer: UnsafeRawBufferPointer) -> Digest {
        Digest(sha256: SHA256.hash(data: buffer))
    }

    /// The raw digest bytes.
    public var bytes: [UInt8] { Hex.decode(encoded) ?? [] }

    public var description: String { "\(algorithm):\(encoded)" }

    public static func < (lhs: Digest, rhs: Digest) -> Bool { lhs.description < rhs.description }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        guard let d = Digest(s) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "invalid digest \"\(s)\"")
        }
        self = d
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// A running sha256, for data that arrives in pieces.
public struct SHA256Hasher: Sendable {
    private var inner = SHA256()
    /// Creates an empty hasher.
    public init() {}
    /// Adds bytes.
    public mutating func update(_ buffer: UnsafeRawBufferPointer) { inner.update(bufferPointer: buffer) }
    /// Adds bytes.
    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { inner.update(bufferPointer: $0) } }
    /// The digest of everything added.
    public func finalize() -> Digest { Digest(sha256: inner.finalize()) }
}

/// Hex helpers.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    /// Lowercase hex of `bytes`.
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xf)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes lowercase or uppercase hex; nil when malformed.
    public static func decode(_ s: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count / 2)
        var hi: UInt8? = nil
        for c in s.utf8 {
            let v: UInt8
            switch c {
            case 48...57: v = c - 48
            case 97...102: v = c - 87
            case 65...70: v = c - 55
            default: return nil
            }
            if let h = hi {
                out.append(h << 4 | v)
                hi = nil
            } else {
                hi = v
            }
        }
        return hi == nil ? out : nil
    }
}
