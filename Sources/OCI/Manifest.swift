// SPDX-License-Identifier: Apache-2.0

/// An image manifest (OCI `application/vnd.oci.image.manifest.v1+json` or Docker schema 2).
public struct Manifest: Codable, Hashable, Sendable {
    /// Always 2.
    public var schemaVersion: Int
    /// The manifest media type (optional in OCI, required by Docker).
    public var mediaType: String?
    /// The artifact type, for OCI artifacts.
    public var artifactType: String?
    /// The image config.
    public var config: Descriptor
    /// The layers, base first.
    public var layers: [Descriptor]
    /// The manifest this one refers to.
    public var subject: Descriptor?
    /// Manifest annotations.
    public var annotations: [String: String]?

    /// Creates a manifest.
    public init(
        schemaVersion: Int = 2, mediaType: String? = MediaType.ociManifest, config: Descriptor,
        layers: [Descriptor], annotations: [String: String]? = nil
    ) {
        self.schemaVersion = schemaVersion
        self.mediaType = mediaType
        self.config = config
        self.layers = layers
        self.annotations = annotations
    }
}

/// An image index (OCI) or manifest list (Docker).
public struct Index: Codable, Hashable, Sendable {
    /// Always 2.
    public var schemaVersion: Int
    /// The index media type.
    public var mediaType: String?
    /// The artifact type.
    public var artifactType: String?
    /// The manifests, each with its platform.
    public var manifests: [Descriptor]
    /// Index annotations.
    public var annotations: [String: String]?

    /// Creates an index.
    public init(
        schemaVersion: Int = 2, mediaType: String? = MediaType.ociIndex, manifests: [Descriptor],
        annotations: [String: String]? = nil
    ) {
        self.schemaVersion = schemaVersion
        self.mediaType = mediaType
        self.manifests = manifests
        self.annotations = annotations
    }
}

extension MediaType {
    /// True for image manifest media types (OCI and Docker schema 2).
    public static func isManifest(_ t: String) -> Bool { t == ociManifest || t == dockerManifest }
    /// True for index media types (OCI index, Docker manifest list).
    public static func isIndex(_ t: String) -> Bool { t == ociIndex || t == dockerManifestList }
    /// True for gzip-compressed layer media types.
    public static func isGzipLayer(_ t: String) -> Bool {
        t == ociLayerGzip || t == dockerLayerGzip || t == "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            || t == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    }
    /// True for any layer media type we can read.
    public static func isLayer(_ t: String) -> Bool {
        isGzipLayer(t) || t == ociLayerZstd || t == ociLayer
            || t == "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            || t == "application/vnd.oci.image.layer.nondistributable.v1.tar"
    }
}

extension Platform {
    /// The platform of this machine (`linux/amd64`, `linux/arm64/v8`, …), in OCI/Go spelling.
    public static var current: Platform {
        #if arch(x86_64)
        return Platform(architecture: "amd64", os: "linux")
        #elseif arch(arm64)
        return Platform(architecture: "arm64", os: "linux", variant: "v8")
        #elseif arch(s390x)
        return Platform(architecture: "s390x", os: "linux")
        #elseif arch(powerpc64le)
        return Platform(architecture: "ppc64le", os: "linux")
        #else
        return Platform(architecture: "unknown", os: "linux")
        #endif
    }

    /// Parses `os/arch[/variant]` (as `--platform` takes it).
    public init?(parsing s: String) {
        let parts = s.split(separator: "/").map(String.init)
        guard (2...3).contains(parts.count), parts.allSatisfy({ !$0.isEmpty }) else { return nil }
        self.init(architecture: Platform.normalizeArch(parts[1]), os: parts[0].lowercased(), variant: parts.count == 3 ? parts[2] : nil)
    }

    /// `os/arch[/variant]`.
    public var description: String { [os, architecture, variant].compactMap { $0 }.joined(separator: "/") }

    static func normalizeArch(_ a: String) -> String {
        switch a.lowercased() {
        case "x86_64", "x86-64": "amd64"
        case "aarch64": "arm64"
        case "i386", "i686": "386"
        default: a.lowercased()
        }
    }

    /// Whether an index entry's platform serves this one (variant `v8` is the arm64 default).
    public func matches(_ other: Platform) -> Bool {
        guard os == other.os, Platform.normalizeArch(architecture) == Platform.normalizeArch(other.architecture) else {
            return false
        }
        let mine = variant ?? (architecture == "arm64" ? "v8" : nil)
        let theirs = other.variant ?? (other.architecture == "arm64" ? "v8" : nil)
        return mine == nil || theirs == nil || mine == theirs
    }
}

extension Index {
    /// The manifest descriptor for `platform`: an exact variant match first, then any compatible one.
    public func manifest(for platform: Platform) -> Descriptor? {
        let candidates = manifests.filter { d in
            guard MediaType.isManifest(d.mediaType), let p = d.platform else { return false }
            return platform.matches(p)
        }
        return candidates.first { $0.platform?.variant == platform.variant } ?? candidates.first
    }
}
