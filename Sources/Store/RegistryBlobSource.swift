// SPDX-License-Identifier: Apache-2.0
public import LazyLayer
public import OCI
public import Registry

/// A layer blob in a registry, read with range requests (several ranges in one request when the registry
/// allows; single ranges otherwise).
public struct RegistryBlobSource: BlobSource {
    /// The client.
    public let client: RegistryClient
    /// The image the blob belongs to (its repository is where it is read from).
    public let reference: Reference
    /// The blob's digest.
    public let digest: Digest
    public let size: Int64

    /// Names a blob of `size` bytes.
    public init(client: RegistryClient, reference: Reference, digest: Digest, size: Int64) {
        self.client = client
        self.reference = reference
        self.digest = digest
        self.size = size
    }

    public var name: String { "\(reference.name)@\(digest)" }

    public func read(_ ranges: [Range<Int64>]) async throws -> [[UInt8]] {
        try await client.readRanges(reference, digest, ranges)
    }
}
