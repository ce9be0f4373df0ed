// SPDX-License-Identifier: Apache-2.0
import AsyncHTTPClient
import Foundation
public import NIOCore
import NIOHTTP1
public import OCI

/// A manifest or index as fetched: its descriptor and exact bytes.
public struct FetchedManifest: Sendable {
    /// Media type, digest and size of the bytes.
    public var descriptor: Descriptor
    /// The exact bytes (their sha256 is the descriptor's digest).
    public var bytes: [UInt8]

    /// Pairs checked bytes with their descriptor.
    public init(descriptor: Descriptor, bytes: [UInt8]) {
        self.descriptor = descriptor
        self.bytes = bytes
    }

    /// The bytes decoded as an image manifest.
    public func manifest() throws -> Manifest {
        do { return try JSONDecoder().decode(Manifest.self, from: Data(bytes)) } catch {
            throw RegistryError(.badResponse, "manifest \(descriptor.digest) is not a valid image manifest", cause: error)
        }
    }

    /// The bytes decoded as an index.
    public func index() throws -> Index {
        do { return try JSONDecoder().decode(Index.self, from: Data(bytes)) } catch {
            throw RegistryError(.badResponse, "index \(descriptor.digest) is not a valid image index", cause: error)
        }
    }
}

/// An image resolved to one platform.
public struct ResolvedImage: Sendable {
    /// The reference as asked.
    public var reference: Reference
    /// The index the tag pointed at, if it pointed at one.
    public var index: FetchedManifest?
    /// The platform's manifest.
    public var manifest: FetchedManifest
    /// The decoded manifest.
    public var decoded: Manifest
    /// The image config bytes.
    public var config: [UInt8]
    /// Where it was found: the reference itself, or a mirror's or location's reference for it (registries.conf).
    /// Its layers are read from there.
    public var source: Reference
}

extension RegistryClient {
    static let manifestAccept = [
        MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest, MediaType.dockerManifestList,
    ].joined(separator: ", ")

    /// Fetches a manifest or index by tag or digest and checks its digest.
    ///
    /// The sources of ``RegistryConfiguration/pullSources(_:)`` are tried in order (mirrors first).
    public func fetchManifest(_ ref: Reference, reference: String? = nil) async throws -> FetchedManifest {
        try await fetchManifestAndSource(ref, reference: reference).manifest
    }

    /// A manifest, and the source that had it. The sources are those of `ref` as given (a tag or a digest decides
    /// which mirrors serve it), also when `reference` names a platform's manifest by digest.
    func fetchManifestAndSource(_ ref: Reference, reference: String? = nil) async throws -> (manifest: FetchedManifest, source: Reference) {
        let what = reference ?? ref.manifestReference
        let sources = try configuration.pullSources(ref)
        var lastError: (any Error)? = nil
        for (i, source) in sources.enumerated() {
            do {
                let m = try await fetchManifest(host: source.registry, repository: source.repository, reference: what, display: ref)
                return (m, source)
            } catch let e as RegistryError where i < sources.count - 1 {
                logger.debug("mirror failed", metadata: ["mirror": "\(source.name)", "error": "\(e)"])
                lastError = e
            }
        }
        throw lastError ?? RegistryError(.notFound, "\(ref): not found")
    }

    private func fetchManifest(host: String, repository: String, reference: String, display: Reference) async throws -> FetchedManifest {
        let call = Call(
            method: .GET, host: host, repository: repository, actions: "pull",
            path: "/v2/\(repository)/manifests/\(reference)", headers: [("Accept", Self.manifestAccept)],
            timeout: configuration.requestTimeout)
        let response = try await send(call)
        let what = "manifest \(reference) of \(host)/\(repository)"
        if response.status.code == 404 {
            let body = Array(buffer: (try? await response.body.collect(upTo: 1 << 16)) ?? ByteBuffer())
            throw RegistryError(.notFound, errorFor(status: 404, body: body, what: "\(display.name):\(reference)").message, status: 404)
        }
        let bytes = try await expect(response, [200], what: what, limit: 8 << 20)
        let digest = Digest.sha256(of: bytes)
        if let want = Digest(reference), want != digest {
            throw RegistryError(.digestMismatch, "\(what): the registry sent content with digest \(digest)")
        }
        if let header = response.headers.first(name: "Docker-Content-Digest"), let d = Digest(header), d.algorithm == "sha256", d != digest {
            throw RegistryError(.digestMismatch, "\(what): body digest \(digest) differs from Docker-Content-Digest \(d)")
        }
        var mediaType = response.headers.first(name: "Content-Type")?.split(separator: ";").first.map {
            $0.trimmingCharacters(in: .whitespaces)
        } ?? ""
        if let obj = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any], let mt = obj["mediaType"] as? String {
            mediaType = mt
        } else if !MediaType.isManifest(mediaType) && !MediaType.isIndex(mediaType) {
            // OCI manifests may omit mediaType; tell them apart by shape.
            if let obj = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] {
                mediaType = obj["manifests"] != nil ? MediaType.ociIndex : MediaType.ociManifest
            }
        }
        guard MediaType.isManifest(mediaType) || MediaType.isIndex(mediaType) else {
            throw RegistryError(.unsupportedMediaType, "\(what) has unsupported media type \"\(mediaType)\"")
        }
        return FetchedManifest(descriptor: Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count)), bytes: bytes)
    }

    /// Resolves a reference to one platform's manifest and config (`Platform.current` by default).
    public func resolve(_ ref: Reference, platform: Platform = .current) async throws -> ResolvedImage {
        let (top, source) = try await fetchManifestAndSource(ref)
        var index: FetchedManifest? = nil
        var manifest = top
        if MediaType.isIndex(top.descriptor.mediaType) {
            index = top
            let idx = try top.index()
            guard let d = idx.manifest(for: platform) else {
                let have = idx.manifests.compactMap { $0.platform?.description }.joined(separator: ", ")
                throw RegistryError(.platformNotFound, "\(ref) has no image for \(platform.description) (it has: \(have))")
            }
            // From where the index came: the platform's manifest and config are that source's too.
            manifest = try await fetchManifest(host: source.registry, repository: source.repository, reference: d.digest.description, display: ref)
        }
        let decoded = try manifest.manifest()
        let config = try await fetchBlob(source, decoded.config, from: [source])
        return ResolvedImage(reference: ref, index: index, manifest: manifest, decoded: decoded, config: config, source: source)
    }

    /// Fetches a whole (small) blob into memory and checks its digest and size.
    public func fetchBlob(_ ref: Reference, _ d: Descriptor, limit: Int = 256 << 20) async throws -> [UInt8] {
        try await fetchBlob(ref, d, limit: limit, from: nil)
    }

    /// `fetchBlob` from `sources` (nil: those of `ref`).
    func fetchBlob(_ ref: Reference, _ d: Descriptor, limit: Int = 256 << 20, from sources: [Reference]?) async throws -> [UInt8] {
        guard d.size <= Int64(limit) else {
            throw RegistryError(.badResponse, "blob \(d.digest) of \(ref.name) is \(d.size) bytes, over the \(limit)-byte limit")
        }
        var out: [UInt8] = []
        out.reserveCapacity(Int(max(0, d.size)))
        try await streamBlob(ref, d.digest, expectedSize: d.size, from: sources) { out.append(contentsOf: $0.readableBytesView) }
        return out
    }

    /// Streams a blob, resuming with a range request after a cut, and checks its size and digest at the end.
    ///
    /// A body cut short or broken off is resumed from the bytes received, under the configured
    /// ``RegistryConfiguration/retryPolicy``; an error thrown by `sink` ends the stream at once and is rethrown.
    public func streamBlob(
        _ ref: Reference, _ digest: Digest, expectedSize: Int64? = nil, _ sink: (ByteBuffer) async throws -> Void
    ) async throws {
        try await streamBlob(ref, digest, expectedSize: expectedSize, from: nil, sink)
    }

    /// `streamBlob` from `sources` in order, the next on a 404 (nil: the sources of `ref` as given, so that a tag's
    /// blobs come from where its manifest may: ``RegistryConfiguration/pullSources(_:)``).
    func streamBlob(
        _ ref: Reference, _ digest: Digest, expectedSize: Int64? = nil, from given: [Reference]?,
        _ sink: (ByteBuffer) async throws -> Void
    ) async throws {
        var hasher = SHA256Hasher()
        var received: Int64 = 0
        var sourceIndex = 0
        let sources = try given ?? configuration.pullSources(ref)
        try await withRetries("resuming blob", ["layer.digest": "\(digest)", "range.offset": "\(received)"]) {
            (_: Int) async throws -> RetryPolicy.Outcome<Void> in
            while true {
                let source = sources[min(sourceIndex, sources.count - 1)]
                var call = Call(
                    method: .GET, host: source.registry, repository: source.repository, actions: "pull",
                    path: "/v2/\(source.repository)/blobs/\(digest)", timeout: configuration.fetchTimeout)
                call.redirectKey = "\(source.name)@\(digest)"
                if received > 0 { call.headers.append(("Range", "bytes=\(received)-")) }
                do {
                    let response = try await send(call)
                    let status = Int(response.status.code)
                    if status == 404 && sourceIndex < sources.count - 1 {
                        sourceIndex += 1
                        continue
                    }
                    guard status == 200 || (status == 206 && received > 0) else {
                        _ = try await expect(response, [200], what: "blob \(digest) of \(source.name)")
                        throw RegistryError(.badResponse, "blob \(digest): unexpected status \(status)", status: status)
                    }
                    var skip: Int64 = status == 200 ? received : 0  // a 200 to a resume restarts from byte 0
                    for try await var buffer in response.body {
                        if skip > 0 {
                            let n = Int(min(Int64(buffer.readableBytes), skip))
                            buffer.moveReaderIndex(forwardBy: n)
                            skip -= Int64(n)
                            if buffer.readableBytes == 0 { continue }
                        }
                        buffer.withUnsafeReadableBytes { hasher.update($0) }
                        received += Int64(buffer.readableBytes)
                        if let e = expectedSize, received > e {
                            throw RegistryError(
                                .badResponse, "blob \(digest) of \(ref.name) is longer than its \(e) bytes")
                        }
                        do { try await sink(buffer) } catch { throw SinkFailure(error: error) }
                    }
                    if let e = expectedSize, received != e {
                        throw RegistryError(
                            .badResponse, "blob \(digest) of \(ref.name) ended after \(received) of \(e) bytes")
                    }
                    let got = hasher.finalize()
                    guard got == digest else {
                        throw RegistryError(
                            .digestMismatch,
                            "blob \(digest) of \(ref.name): the registry sent content with digest \(got)")
                    }
                    return .success(())
                } catch let e as SinkFailure {
                    throw e.error  // the bytes were counted and hashed: a resume would skip them
                } catch let e as RegistryError where Self.isResumable(e) && received >= (expectedSize ?? .max) {
                    throw e  // all the bytes came and they are wrong: a resume has nothing left to ask for
                } catch {
                    return try bodyOutcome(after: error) {
                        RegistryError(
                            .transport, "blob \(digest) of \(ref.name) failed after \(received) bytes", cause: $0)
                    }
                }
            }
        }
    }

    /// Whether a blob or range read that failed with `e` is worth another attempt: a reply that broke off or did
    /// not fit (a short body, a wrong `Content-Range`), not one the registry refused with a 4xx status.
    static func isResumable(_ e: RegistryError) -> Bool {
        e.code == .badResponse && (e.status.map { $0 < 400 } ?? true)
    }

    /// Downloads a blob to a file, checking its digest. The file is written on NIO's blocking-I/O thread pool,
    /// in pieces of about 1 MiB.
    public func downloadBlob(_ ref: Reference, _ d: Descriptor, to path: String) async throws {
        let file = try await BlobFile.create(path)
        var pending = ByteBuffer()
        var written: Int64 = 0
        do {
            try await streamBlob(ref, d.digest, expectedSize: d.size) { buffer in
                var buffer = buffer
                pending.writeBuffer(&buffer)
                guard pending.readableBytes >= 1 << 20 else { return }
                try await file.write(pending, at: written)
                written += Int64(pending.readableBytes)
                pending.clear()
            }
            try await file.write(pending, at: written)
        } catch {
            try? await file.closeFile()
            throw error
        }
        try await file.closeFile()
    }

    /// The size of a blob (HEAD), or nil when the registry does not have it.
    public func blobSize(_ ref: Reference, _ digest: Digest, host: String? = nil) async throws -> Int64? {
        let call = Call(
            method: .HEAD, host: host ?? ref.registry, repository: ref.repository, actions: "pull",
            path: "/v2/\(ref.repository)/blobs/\(digest)", timeout: configuration.requestTimeout)
        let response = try await send(call)
        _ = try? await response.body.collect(upTo: 1 << 16)
        switch response.status.code {
        case 200: return response.headers.first(name: "Content-Length").flatMap(Int64.init)
        case 404: return nil
        default: throw errorFor(status: Int(response.status.code), body: [], what: "HEAD blob \(digest) of \(ref.name)")
        }
    }

    /// Reads `length` bytes of a blob at `offset` with a range request.
    ///
    /// A registry that ignores the range (200 with the whole blob) is handled by skipping to the range.
    /// The result always has exactly `length` bytes, or the call throws.
    public func readRange(_ ref: Reference, _ digest: Digest, offset: Int64, length: Int) async throws -> [UInt8] {
        guard length > 0 else { return [] }
        return try await withRetries("retrying a range read", ["layer.digest": "\(digest)", "range.offset": "\(offset)"]) {
            (_: Int) async throws -> RetryPolicy.Outcome<[UInt8]> in
            var call = Call(
                method: .GET, host: ref.registry, repository: ref.repository, actions: "pull",
                path: "/v2/\(ref.repository)/blobs/\(digest)",
                headers: [("Range", "bytes=\(offset)-\(offset + Int64(length) - 1)")], timeout: configuration.fetchTimeout)
            call.redirectKey = "\(ref.registry)/\(ref.repository)@\(digest)"
            let response = try await send(call)  // its errors are final: send retried what was worth it
            do {
                let status = Int(response.status.code)
                var skip: Int64
                switch status {
                case 206:
                    guard let cr = response.headers.first(name: "Content-Range"), cr.hasPrefix("bytes \(offset)-") else {
                        throw RegistryError(.badResponse, "range of blob \(digest): Content-Range does not start at \(offset)", status: status)
                    }
                    skip = 0
                case 200: skip = offset
                default:
                    _ = try await expect(response, [206], what: "range [\(offset), +\(length)) of blob \(digest) of \(ref.name)")
                    throw RegistryError(.badResponse, "unexpected status \(status)", status: status)
                }
                var out: [UInt8] = []
                out.reserveCapacity(length)
                for try await var buffer in response.body {
                    if skip > 0 {
                        let n = Int(min(Int64(buffer.readableBytes), skip))
                        buffer.moveReaderIndex(forwardBy: n)
                        skip -= Int64(n)
                    }
                    let take = min(buffer.readableBytes, length - out.count)
                    out.append(contentsOf: buffer.readableBytesView.prefix(take))
                    if out.count == length { break }
                }
                guard out.count == length else {
                    throw RegistryError(.badResponse, "range [\(offset), +\(length)) of blob \(digest) ended after \(out.count) bytes")
                }
                return .success(out)
            } catch {
                return try bodyOutcome(after: error) {
                    RegistryError(.transport, "range [\(offset), +\(length)) of blob \(digest) failed", cause: $0)
                }
            }
        }
    }

    // MARK: Push

    /// Uploads a blob from a file unless the repository has it; mounts it from `mountFrom` when possible.
    ///
    /// One `PUT` by default; `PATCH` chunks when the blob is larger than the configured chunk size, or when
    /// the registry refuses the single `PUT` as too large (413).
    public func pushBlob(_ ref: Reference, path: String, descriptor d: Descriptor, mountFrom: Reference? = nil) async throws {
        if try await blobSize(ref, d.digest) != nil { return }
        let size = try await BlobFile.size(of: path)
        guard size == d.size else {
            throw RegistryError(.invalidConfiguration, "\(path) has \(size) bytes, not the \(d.size) of blob \(d.digest)")
        }
        guard let location = try await startUpload(ref, d, mountFrom: mountFrom) else { return }  // mounted
        if let chunk = configuration.uploadChunkSize, size > Int64(chunk) {
            try await uploadChunked(ref, d, path: path, size: size, chunk: Int64(chunk), location: location)
            return
        }
        var put = Call(
            method: .PUT, host: ref.registry, repository: ref.repository, actions: "pull,push",
            path: Self.appendingDigest(location, d.digest), headers: [("Content-Type", "application/octet-stream")],
            timeout: configuration.fetchTimeout)
        put.file = FileChunks(path: path, offset: 0, length: size)
        put.idempotent = false
        let response = try await send(put)
        if response.status.code == 413 {
            _ = try? await response.body.collect(upTo: 1 << 16)
            logger.debug("blob too large for one PUT; uploading in chunks", metadata: ["layer.digest": "\(d.digest)"])
            guard let again = try await startUpload(ref, d, mountFrom: nil) else { return }
            try await uploadChunked(ref, d, path: path, size: size, chunk: 32 << 20, location: again)
            return
        }
        _ = try await expect(response, [201], what: "uploading blob \(d.digest) to \(ref.name)")
    }

    /// Uploads a small blob from memory.
    public func pushBlob(_ ref: Reference, bytes: [UInt8], descriptor d: Descriptor) async throws {
        if try await blobSize(ref, d.digest) != nil { return }
        guard let location = try await startUpload(ref, d, mountFrom: nil) else { return }
        var put = Call(
            method: .PUT, host: ref.registry, repository: ref.repository, actions: "pull,push",
            path: Self.appendingDigest(location, d.digest), headers: [("Content-Type", "application/octet-stream")],
            timeout: configuration.fetchTimeout)
        put.body = bytes
        put.idempotent = false
        _ = try await expect(try await send(put), [201], what: "uploading blob \(d.digest) to \(ref.name)")
    }

    /// Opens an upload session (or mounts the blob from another repository of the registry): the upload
    /// URL, or nil when the blob was mounted.
    private func startUpload(_ ref: Reference, _ d: Descriptor, mountFrom: Reference?) async throws -> String? {
        var start = Call(
            method: .POST, host: ref.registry, repository: ref.repository, actions: "pull,push",
            path: "/v2/\(ref.repository)/blobs/uploads/", timeout: configuration.requestTimeout)
        if let from = mountFrom, from.registry == ref.registry, from.repository != ref.repository {
            start.path += "?mount=\(d.digest)&from=\(from.repository)"
        }
        let r = try await send(start)
        if r.status.code == 201 {
            _ = try? await r.body.collect(upTo: 1 << 16)
            return nil
        }
        _ = try await expect(r, [202], what: "starting an upload of \(d.digest) to \(ref.name)")
        return try uploadLocation(r, ref)
    }

    private func uploadLocation(_ r: HTTPClientResponse, _ ref: Reference) throws -> String {
        guard let location = r.headers.first(name: "Location"), !location.isEmpty else {
            throw RegistryError(.badResponse, "upload to \(ref.name): the registry sent no Location")
        }
        return location.hasPrefix("http://") || location.hasPrefix("https://") ? location : baseURL(ref.registry) + location
    }

    /// `PATCH`es the file in chunks (each to the Location the previous one returned), then closes the
    /// upload with a `PUT ?digest=`.
    private func uploadChunked(
        _ ref: Reference, _ d: Descriptor, path: String, size: Int64, chunk: Int64, location start: String
    ) async throws {
        var location = start
        var offset: Int64 = 0
        while offset < size {
            let n = min(chunk, size - offset)
            var patch = Call(
                method: .PATCH, host: ref.registry, repository: ref.repository, actions: "pull,push", path: location,
                headers: [("Content-Type", "application/octet-stream"), ("Content-Range", "\(offset)-\(offset + n - 1)")],
                timeout: configuration.fetchTimeout)
            patch.file = FileChunks(path: path, offset: offset, length: n)
            patch.idempotent = false
            let r = try await send(patch)
            _ = try await expect(r, [202], what: "uploading bytes \(offset)-\(offset + n - 1) of blob \(d.digest) to \(ref.name)")
            location = try uploadLocation(r, ref)
            offset += n
        }
        let put = Call(
            method: .PUT, host: ref.registry, repository: ref.repository, actions: "pull,push",
            path: Self.appendingDigest(location, d.digest), timeout: configuration.requestTimeout)
        _ = try await expect(try await send(put), [201], what: "closing the upload of blob \(d.digest) to \(ref.name)")
    }

    static func appendingDigest(_ location: String, _ digest: Digest) -> String {
        location + (location.contains("?") ? "&" : "?") + "digest=\(digest)"
    }

    /// Pushes a manifest or index under the reference's tag (or its digest) and returns its digest.
    @discardableResult
    public func pushManifest(_ ref: Reference, bytes: [UInt8], mediaType: String) async throws -> Digest {
        let digest = Digest.sha256(of: bytes)
        var call = Call(
            method: .PUT, host: ref.registry, repository: ref.repository, actions: "pull,push",
            path: "/v2/\(ref.repository)/manifests/\(ref.tag ?? digest.description)",
            headers: [("Content-Type", mediaType)], timeout: configuration.requestTimeout)
        call.body = bytes
        _ = try await expect(try await send(call), [201], what: "pushing manifest \(digest) to \(ref)")
        return digest
    }
}

/// A byte range of a file read in 1 MiB pieces, as an HTTP request body. Each iteration reads the file anew, so a
/// request can be sent again; each piece is read on NIO's blocking-I/O thread pool, opening and closing the file,
/// so a body abandoned halfway leaves nothing open.
struct FileChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let path: String
    let offset: Int64
    let length: Int64

    struct AsyncIterator: AsyncIteratorProtocol {
        let path: String
        var offset: Int64
        var left: Int64
        mutating func next() async throws -> ByteBuffer? {
            guard left > 0 else { return nil }
            let piece = try await BlobFile.read(path, at: offset, count: Int(Swift.min(left, 1 << 20)))
            guard piece.readableBytes > 0 else { return nil }  // the file is shorter than the range
            offset += Int64(piece.readableBytes)
            left -= Int64(piece.readableBytes)
            return piece
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(path: path, offset: offset, left: length) }
}

/// An error thrown by a blob's sink, carried past the retry classification to the caller unchanged.
private struct SinkFailure: Error {
    let error: any Error
}
