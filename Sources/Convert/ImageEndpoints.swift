// SPDX-License-Identifier: Apache-2.0
import Foundation
public import OCI
public import Registry

/// Where an image is read from: a registry, or an OCI image layout directory.
public protocol ImageSource: Sendable {
    /// How the image is named to users (`registry/repo:tag`, `oci:DIR:TAG`).
    var name: String { get }
    /// The manifest or index the name points at (`nil`), or the one a descriptor points at; digests checked.
    func manifest(_ descriptor: Descriptor?) async throws -> FetchedManifest
    /// A whole small blob (a config), digest and size checked.
    func blob(_ descriptor: Descriptor) async throws -> [UInt8]
    /// Copies a blob to a file, digest and size checked.
    func download(_ descriptor: Descriptor, to path: String) async throws
}

/// Where an image is written to: a registry, or an OCI image layout directory.
public protocol ImageDestination: Sendable {
    /// How the image is named to users.
    var name: String { get }
    /// Stores a blob from a file unless it is there already (`source` may allow a cheap cross-repository mount).
    func pushBlob(path: String, descriptor: Descriptor, from source: (any ImageSource)?) async throws
    /// Stores a small blob from memory.
    func pushBlob(bytes: [UInt8], descriptor: Descriptor) async throws
    /// Stores a manifest or index, under the destination's name when `tagged`, else by digest only.
    func pushManifest(bytes: [UInt8], mediaType: String, tagged: Bool) async throws -> Digest
}

/// An image in a registry, through a ``RegistryClient``.
public struct RegistryImage: ImageSource, ImageDestination {
    /// The client.
    public let client: RegistryClient
    /// The image reference.
    public let reference: Reference

    /// Names an image in a registry.
    public init(client: RegistryClient, reference: Reference) {
        self.client = client
        self.reference = reference
    }

    public var name: String { reference.description }

    public func manifest(_ descriptor: Descriptor?) async throws -> FetchedManifest {
        try await client.fetchManifest(reference, reference: descriptor?.digest.description)
    }

    public func blob(_ descriptor: Descriptor) async throws -> [UInt8] { try await client.fetchBlob(reference, descriptor) }

    public func download(_ descriptor: Descriptor, to path: String) async throws {
        try await client.downloadBlob(reference, descriptor, to: path)
    }

    public func pushBlob(path: String, descriptor: Descriptor, from source: (any ImageSource)?) async throws {
        try await client.pushBlob(reference, path: path, descriptor: descriptor, mountFrom: (source as? RegistryImage)?.reference)
    }

    public func pushBlob(bytes: [UInt8], descriptor: Descriptor) async throws {
        try await client.pushBlob(reference, bytes: bytes, descriptor: descriptor)
    }

    public func pushManifest(bytes: [UInt8], mediaType: String, tagged: Bool) async throws -> Digest {
        let target = tagged
            ? reference
            : Reference(registry: reference.registry, repository: reference.repository, digest: Digest.sha256(of: bytes))
        return try await client.pushManifest(target, bytes: bytes, mediaType: mediaType)
    }
}

/// An image in an OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`), named by its
/// `org.opencontainers.image.ref.name` annotation, as `skopeo` and `podman` write it.
///
/// Blobs are written to a temporary file and renamed into place; `index.json` likewise. Every blob read is
/// checked against its digest and size.
public struct OCILayoutImage: ImageSource, ImageDestination {
    /// The layout directory.
    public let directory: String
    /// The tag (`org.opencontainers.image.ref.name`); nil reads the only image of the layout.
    public let tag: String?

    static let refName = "org.opencontainers.image.ref.name"

    /// Names an image in a layout directory.
    public init(directory: String, tag: String?) {
        self.directory = directory
        self.tag = tag
    }

    /// Parses `oci:DIR[:TAG]` (a colon after the last `/` starts the tag).
    public init?(parsing s: String) {
        guard s.hasPrefix("oci:") else { return nil }
        let rest = String(s.dropFirst(4))
        guard !rest.isEmpty else { return nil }
        let lastSlash = rest.lastIndex(of: "/") ?? rest.startIndex
        if let colon = rest[lastSlash...].lastIndex(of: ":") {
            let dir = String(rest[..<colon]), tag = String(rest[rest.index(after: colon)...])
            guard !dir.isEmpty else { return nil }
            self.init(directory: dir, tag: tag.isEmpty ? nil : tag)
        } else {
            self.init(directory: rest, tag: nil)
        }
    }

    public var name: String { "oci:\(directory)" + (tag.map { ":\($0)" } ?? "") }

    /// Where a blob lives in the layout.
    public func blobPath(_ d: Digest) -> String { "\(directory)/blobs/\(d.algorithm)/\(d.encoded)" }

    func error(_ message: String, cause: (any Error)? = nil) -> RegistryError {
        RegistryError(.notFound, "\(name): \(message)", cause: cause)
    }

    func readIndex() throws -> Index {
        let path = directory + "/index.json"
        guard let data = FileManager.default.contents(atPath: path) else { throw error("no index.json in \(directory)") }
        do { return try JSONDecoder().decode(Index.self, from: data) } catch {
            throw RegistryError(.badResponse, "\(path) is not a valid image index", cause: error)
        }
    }

    public func manifest(_ descriptor: Descriptor?) async throws -> FetchedManifest {
        let d: Descriptor
        if let descriptor {
            d = descriptor
        } else {
            let index = try readIndex()
            if let tag {
                guard let m = index.manifests.first(where: { $0.annotations?[Self.refName] == tag }) else {
                    let have = index.manifests.compactMap { $0.annotations?[Self.refName] }.joined(separator: ", ")
                    throw error("no image tagged \"\(tag)\" (tags: \(have.isEmpty ? "none" : have))")
                }
                d = m
            } else {
                guard index.manifests.count == 1 else {
                    throw error("holds \(index.manifests.count) images; name one as oci:DIR:TAG")
                }
                d = index.manifests[0]
            }
        }
        let bytes = try await blob(d, limit: 8 << 20)
        return FetchedManifest(descriptor: Descriptor(mediaType: d.mediaType, digest: d.digest, size: d.size), bytes: bytes)
    }

    public func blob(_ descriptor: Descriptor) async throws -> [UInt8] { try await blob(descriptor, limit: 256 << 20) }

    func blob(_ d: Descriptor, limit: Int64) async throws -> [UInt8] {
        guard d.size <= limit else { throw RegistryError(.badResponse, "\(name): blob \(d.digest) is over \(limit) bytes") }
        guard let data = FileManager.default.contents(atPath: blobPath(d.digest)) else { throw error("blob \(d.digest) is missing") }
        let bytes = [UInt8](data)
        guard Int64(bytes.count) == d.size, Digest.sha256(of: bytes) == d.digest else {
            throw RegistryError(.digestMismatch, "\(name): blob \(d.digest) has other content (\(bytes.count) bytes)")
        }
        return bytes
    }

    public func download(_ d: Descriptor, to path: String) async throws {
        let from = blobPath(d.digest)
        try await runBlocking { () throws in
            guard let input = FileHandle(forReadingAtPath: from) else { throw error("blob \(d.digest) is missing") }
            defer { try? input.close() }
            _ = FileManager.default.createFile(atPath: path, contents: nil)
            guard let output = FileHandle(forWritingAtPath: path) else {
                throw RegistryError(.invalidConfiguration, "cannot write \(path)")
            }
            defer { try? output.close() }
            var hasher = SHA256Hasher()
            var total: Int64 = 0
            while let chunk = try input.read(upToCount: 1 << 20), !chunk.isEmpty {
                chunk.withUnsafeBytes { hasher.update($0) }
                total += Int64(chunk.count)
                try output.write(contentsOf: chunk)
            }
            guard total == d.size, hasher.finalize() == d.digest else {
                throw RegistryError(.digestMismatch, "\(name): blob \(d.digest) has other content (\(total) bytes)")
            }
        }
    }

    func prepare() throws {
        try FileManager.default.createDirectory(atPath: directory + "/blobs/sha256", withIntermediateDirectories: true)
        let layout = directory + "/oci-layout"
        if !FileManager.default.fileExists(atPath: layout) {
            try Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8).write(to: URL(fileURLWithPath: layout), options: .atomic)
        }
    }

    public func pushBlob(path: String, descriptor: Descriptor, from source: (any ImageSource)?) async throws {
        try prepare()
        let target = blobPath(descriptor.digest)
        if FileManager.default.fileExists(atPath: target) { return }
        let tmp = "\(directory)/blobs/.tmp-\(UUID().uuidString)"
        do {
            try FileManager.default.copyItem(atPath: path, toPath: tmp)
            guard rename(tmp, target) == 0 else { throw RegistryError(.invalidConfiguration, "cannot write \(target)") }
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw error
        }
    }

    public func pushBlob(bytes: [UInt8], descriptor: Descriptor) async throws {
        try prepare()
        try Data(bytes).write(to: URL(fileURLWithPath: blobPath(descriptor.digest)), options: .atomic)
    }

    public func pushManifest(bytes: [UInt8], mediaType: String, tagged: Bool) async throws -> Digest {
        let digest = Digest.sha256(of: bytes)
        try await pushBlob(bytes: bytes, descriptor: Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count)))
        guard tagged else { return digest }
        var index = (try? readIndex()) ?? Index(manifests: [])
        index.schemaVersion = 2
        index.mediaType = MediaType.ociIndex
        var d = Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count))
        if let tag {
            index.manifests.removeAll { $0.annotations?[Self.refName] == tag }
            d.annotations = [Self.refName: tag]
        }
        index.manifests.append(d)
        try Data(try ImageConverter.encode(index)).write(to: URL(fileURLWithPath: directory + "/index.json"), options: .atomic)
        return digest
    }
}
