// SPDX-License-Identifier: Apache-2.0

/// An OCI content descriptor.
public struct Descriptor: Codable, Hashable, Sendable {
    /// The media type of the referenced content.
    public var mediaType: String
    /// The digest of the referenced content.
    public var digest: Digest
    /// The size in bytes of the referenced content.
    public var size: Int64
    /// Descriptor annotations.
    public var annotations: [String: String]?
    /// Alternate download locations.
    public var urls: [String]?
    /// The platform (index entries only).
    public var platform: Platform?

    /// Creates a descriptor.
    public init(
        mediaType: String, digest: Digest, size: Int64, annotations: [String: String]? = nil,
        urls: [String]? = nil, platform: Platform? = nil
    ) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.annotations = annotations
        self.urls = urls
        self.platform = platform
    }
}

/// An OCI platform.
public struct Platform: Codable, Hashable, Sendable {
    /// CPU architecture (`amd64`, `arm64`, …).
    public var architecture: String
    /// Operating system (`linux`).
    public var os: String
    /// CPU variant (`v8`).
    public var variant: String?
    /// OS version.
    public var osVersion: String?
    /// OS features.
    public var osFeatures: [String]?

    enum CodingKeys: String, CodingKey {
        case architecture, os, variant
        case osVersion = "os.version"
        case osFeatures = "os.features"
    }

    /// Creates a platform.
    public init(architecture: String, os: String, variant: String? = nil) {
        self.architecture = architecture
        self.os = os
        self.variant = variant
    }
}
