// SPDX-License-Identifier: Apache-2.0
import Compression
import EStargz
import Foundation
public import OCI
public import Registry

/// Builds plain (gzip tar) images from tars and pushes them with our client.
public enum TestImage {
    /// Pushes an image whose layers are `tars` (each gzip-compressed), as `mediaType` (OCI or Docker schema 2).
    /// Returns the manifest digest.
    @discardableResult
    public static func push(
        _ client: RegistryClient, _ ref: Reference, layers tars: [[UInt8]], platform: Platform = .current,
        docker: Bool = false, cmd: [String]? = nil
    ) async throws -> Digest {
        var layers: [Descriptor] = []
        var diffIDs: [String] = []
        for tar in tars {
            let gz = GzipMemberCompressor(level: 6).compress(tar)
            let d = Descriptor(
                mediaType: docker ? MediaType.dockerLayerGzip : MediaType.ociLayerGzip, digest: Digest.sha256(of: gz),
                size: Int64(gz.count))
            try await client.pushBlob(ref, bytes: gz, descriptor: d)
            layers.append(d)
            diffIDs.append(Digest.sha256(of: tar).description)
        }
        var config: [String: Any] = [
            "architecture": platform.architecture, "os": platform.os,
            "rootfs": ["type": "layers", "diff_ids": diffIDs],
            "config": ["Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]],
        ]
        if let cmd { config["config"] = ["Cmd": cmd, "Env": ["PATH=/bin"]] }
        let configBytes = Array(try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]))
        let cd = Descriptor(
            mediaType: docker ? MediaType.dockerConfig : MediaType.ociConfig, digest: Digest.sha256(of: configBytes),
            size: Int64(configBytes.count))
        try await client.pushBlob(ref, bytes: configBytes, descriptor: cd)
        let manifest = Manifest(
            mediaType: docker ? MediaType.dockerManifest : MediaType.ociManifest, config: cd, layers: layers)
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return try await client.pushManifest(
            ref, bytes: Array(try e.encode(manifest)), mediaType: manifest.mediaType ?? MediaType.ociManifest)
    }

    /// Pushes an image whose layers are eStargz (or zstd:chunked) blobs as they are, with their
    /// `toc.digest` and `uncompressed-size` annotations and DiffIDs read from the blobs. Returns the layer
    /// descriptors.
    @discardableResult
    public static func pushEStargz(_ client: RegistryClient, _ ref: Reference, blobs: [[UInt8]]) async throws -> [Descriptor] {
        var layers: [Layer] = []
        for blob in blobs {
            let reader = try EStargzReader(blob: MemoryBlob(blob))
            let (diffID, size) = try reader.computeDiffID()
            layers.append(
                Layer(
                    blob: blob, diffID: diffID, zstd: reader.format == .zstdChunked,
                    annotations: [AnnotationKey.tocDigest: reader.tocDigest.description, AnnotationKey.uncompressedSize: String(size)]))
        }
        return try await push(client, ref, layers: layers)
    }

    /// A layer as pushed: its blob, DiffID and descriptor annotations, taken as given (hostile layers included).
    public struct Layer {
        public var blob: [UInt8]
        public var diffID: Digest
        public var zstd: Bool
        public var annotations: [String: String]

        public init(blob: [UInt8], diffID: Digest, zstd: Bool = false, annotations: [String: String]) {
            self.blob = blob
            self.diffID = diffID
            self.zstd = zstd
            self.annotations = annotations
        }

        /// A gzip layer whose TOC (JSON bytes `toc`) is what the annotation names, and whose DiffID is the sha256
        /// of all its members inflated, as an image author would publish it, whatever the TOC says.
        public static func gzip(_ blob: [UInt8], toc: [UInt8]) throws -> Layer {
            var hasher = SHA256Hasher()
            var size = 0
            try blob.withUnsafeBytes { b in
                _ = try GzipDecompressor.inflateAll(b, multiMember: true, limit: 1 << 30) { piece in
                    hasher.update(piece)
                    size += piece.count
                }
            }
            return Layer(
                blob: blob, diffID: hasher.finalize(),
                annotations: [AnnotationKey.tocDigest: Digest.sha256(of: toc).description, AnnotationKey.uncompressedSize: String(size)])
        }
    }

    /// Pushes an image of `layers` as they are. Returns the layer descriptors.
    @discardableResult
    public static func push(_ client: RegistryClient, _ ref: Reference, layers: [Layer]) async throws -> [Descriptor] {
        var descriptors: [Descriptor] = []
        for l in layers {
            let d = Descriptor(
                mediaType: l.zstd ? MediaType.ociLayerZstd : MediaType.ociLayerGzip,
                digest: Digest.sha256(of: l.blob), size: Int64(l.blob.count), annotations: l.annotations)
            try await client.pushBlob(ref, bytes: l.blob, descriptor: d)
            descriptors.append(d)
        }
        let config: [String: Any] = [
            "architecture": Platform.current.architecture, "os": Platform.current.os,
            "rootfs": ["type": "layers", "diff_ids": layers.map(\.diffID.description)],
        ]
        let configBytes = Array(try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]))
        let cd = Descriptor(mediaType: MediaType.ociConfig, digest: Digest.sha256(of: configBytes), size: Int64(configBytes.count))
        try await client.pushBlob(ref, bytes: configBytes, descriptor: cd)
        let manifest = Manifest(mediaType: MediaType.ociManifest, config: cd, layers: descriptors)
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        try await client.pushManifest(ref, bytes: Array(try e.encode(manifest)), mediaType: MediaType.ociManifest)
        return descriptors
    }

    /// A tar with the given regular files (path → content), directories made for their parents.
    public static func tar(_ files: [(String, [UInt8])]) -> [UInt8] {
        var out: [UInt8] = []
        for (name, content) in files {
            var h = TarHeader(typeflag: UInt8(ascii: "0"), name: name)
            h.mode = 0o644
            h.modTime = 1_700_000_000
            out += TarWriter.entry(h, content)
        }
        return out + TarWriter.end
    }
}
