// SPDX-License-Identifier: Apache-2.0

/// Media types of OCI and Docker schema 2 objects.
public enum MediaType {
    /// OCI image manifest.
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    /// OCI image index.
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    /// OCI image config.
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    /// OCI gzip layer.
    public static let ociLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    /// OCI zstd layer.
    public static let ociLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
    /// OCI uncompressed layer.
    public static let ociLayer = "application/vnd.oci.image.layer.v1.tar"
    /// Docker schema 2 manifest.
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    /// Docker manifest list.
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    /// Docker image config.
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    /// Docker gzip layer.
    public static let dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
}

/// Annotation keys that eStargz and zstd:chunked layers carry in their descriptors.
public enum AnnotationKey {
    /// `sha256:` digest of the TOC JSON (eStargz and stargz-flavoured zstd:chunked).
    public static let tocDigest = "containerd.io/snapshot/stargz/toc.digest"
    /// Decimal length of the uncompressed layer stream.
    public static let uncompressedSize = "io.containers.estargz.uncompressed-size"
    /// Digest of the eStargz blob (external-TOC images).
    public static let layerDigest = "containerd.io/snapshot/stargz/layer.digest"
    /// `sha256:` of the compressed zstd:chunked TOC frame (containers/storage ≤ 1.43 key).
    public static let zstdChunkedManifestChecksum = "io.containers.zstd-chunked.manifest-checksum"
    /// `offset:compressedLength:uncompressedLength:1` of the zstd:chunked TOC (containers/storage ≤ 1.43 key).
    public static let zstdChunkedManifestPosition = "io.containers.zstd-chunked.manifest-position"
}
