// SPDX-License-Identifier: Apache-2.0
import Dispatch
public import EStargz
import Foundation
public import OCI
public import Registry

/// Options of a registry-to-registry image conversion.
public struct ImageConvertOptions: Sendable {
    /// How layers are written.
    public var writer: WriterOptions
    /// The platform to convert (default: this machine's), unless ``allPlatforms``.
    public var platform: Platform
    /// Convert every platform of an index and push a new index.
    public var allPlatforms: Bool
    /// Layers converted at once.
    public var parallelLayers: Int
    /// Where layers are staged (default `$TMPDIR` or `/var/tmp`).
    public var temporaryDirectory: String?

    /// Creates options.
    public init(
        writer: WriterOptions = WriterOptions(), platform: Platform = .current, allPlatforms: Bool = false,
        parallelLayers: Int = 2, temporaryDirectory: String? = nil
    ) {
        self.writer = writer
        self.platform = platform
        self.allPlatforms = allPlatforms
        self.parallelLayers = max(1, parallelLayers)
        self.temporaryDirectory = temporaryDirectory
    }
}

/// What a conversion did.
public struct ImageConvertReport: Sendable {
    /// The pushed manifest (or index) digest and media type.
    public var pushed: Descriptor
    /// One line per layer: source digest → converted digest, or why it was kept.
    public var layers: [String]
    /// True when the source already was eStargz and nothing was converted.
    public var alreadyConverted: Bool
}

/// Events for a progress display.
public enum ConvertEvent: Sendable {
    /// A layer moved to a new phase (index in the manifest, source digest, source size).
    case layer(Int, Digest, Int64, LayerPhase)
    /// A manifest or index was stored.
    case manifestPushed(Digest, String)
}

/// What is happening to one layer.
public enum LayerPhase: Sendable, Equatable {
    /// Waiting for a free worker.
    case waiting
    /// Downloading the source blob.
    case downloading
    /// Writing the eStargz blob.
    case converting
    /// Uploading the result (new digest, new size).
    case uploading(Digest, Int64)
    /// Done (new digest, new size).
    case done(Digest, Int64)
    /// Already eStargz; copied as it is.
    case copied
}

/// Converts images: each layer to eStargz (or zstd:chunked), the config's `diff_ids` rewritten, layer
/// annotations set, and the manifest (and index) stored as OCI. Source and destination are registries or
/// OCI image layout directories.
public struct ImageConverter: Sendable {
    /// The registry client for registry ends.
    public let client: RegistryClient

    /// Creates a converter.
    public init(client: RegistryClient) { self.client = client }

    /// Converts `source` into `destination` in registries.
    public func convert(
        from source: Reference, to destination: Reference, options: ImageConvertOptions = ImageConvertOptions(),
        events: (@Sendable (ConvertEvent) -> Void)? = nil
    ) async throws -> ImageConvertReport {
        try await convert(
            from: RegistryImage(client: client, reference: source), to: RegistryImage(client: client, reference: destination),
            options: options, events: events)
    }

    /// Converts `source` into `destination`.
    public func convert(
        from source: any ImageSource, to destination: any ImageDestination, options: ImageConvertOptions = ImageConvertOptions(),
        events: (@Sendable (ConvertEvent) -> Void)? = nil
    ) async throws -> ImageConvertReport {
        let top = try await source.manifest(nil)
        let cache = LayerCache()
        let inPlace = source.name == destination.name
        if MediaType.isIndex(top.descriptor.mediaType) && options.allPlatforms {
            let index = try top.index()
            var newManifests: [Descriptor] = []
            var lines: [String] = []
            var already = true
            for d in index.manifests {
                guard MediaType.isManifest(d.mediaType) else {
                    newManifests.append(d)
                    continue
                }
                let m = try await source.manifest(d)
                let r = try await convertManifest(
                    m, source: source, destination: destination, tagged: false, inPlace: inPlace, options: options,
                    cache: cache, events: events)
                var nd = r.pushed
                nd.platform = d.platform
                nd.annotations = d.annotations
                newManifests.append(nd)
                lines += r.layers.map { "\(d.platform?.description ?? "?"): \($0)" }
                already = already && r.alreadyConverted
            }
            if already && inPlace {
                return ImageConvertReport(pushed: top.descriptor, layers: lines, alreadyConverted: true)
            }
            var newIndex = index
            newIndex.mediaType = MediaType.ociIndex
            newIndex.manifests = newManifests
            let bytes = try Self.encode(newIndex)
            let digest = try await destination.pushManifest(bytes: bytes, mediaType: MediaType.ociIndex, tagged: true)
            events?(.manifestPushed(digest, destination.name))
            return ImageConvertReport(
                pushed: Descriptor(mediaType: MediaType.ociIndex, digest: digest, size: Int64(bytes.count)), layers: lines,
                alreadyConverted: already)
        }
        var manifest = top
        if MediaType.isIndex(top.descriptor.mediaType) {
            let index = try top.index()
            guard let d = index.manifest(for: options.platform) else {
                throw RegistryError(.platformNotFound, "\(source.name) has no image for \(options.platform.description)")
            }
            manifest = try await source.manifest(d)
        }
        return try await convertManifest(
            manifest, source: source, destination: destination, tagged: true, inPlace: inPlace, options: options,
            cache: cache, events: events)
    }

    static func encode(_ v: some Encodable) throws -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try e.encode(v))
    }

    private func convertManifest(
        _ fetched: FetchedManifest, source: any ImageSource, destination: any ImageDestination, tagged: Bool,
        inPlace: Bool, options: ImageConvertOptions, cache: LayerCache, events: (@Sendable (ConvertEvent) -> Void)?
    ) async throws -> ImageConvertReport {
        let manifest = try fetched.manifest()
        let already = !manifest.layers.isEmpty
            && manifest.layers.allSatisfy { $0.annotations?[AnnotationKey.tocDigest] != nil }
        if already && inPlace {
            return ImageConvertReport(
                pushed: fetched.descriptor, layers: manifest.layers.map { "\($0.digest): already eStargz" },
                alreadyConverted: true)
        }
        for (i, l) in manifest.layers.enumerated() { events?(.layer(i, l.digest, l.size, .waiting)) }
        let configBytes = try await source.blob(manifest.config)
        guard var config = try JSONSerialization.jsonObject(with: Data(configBytes)) as? [String: Any] else {
            throw RegistryError(.badResponse, "config \(manifest.config.digest) of \(source.name) is not a JSON object")
        }
        var rootfs = config["rootfs"] as? [String: Any] ?? ["type": "layers"]
        var diffIDs = rootfs["diff_ids"] as? [String] ?? []
        guard diffIDs.count == manifest.layers.count else {
            throw RegistryError(
                .badResponse, "config of \(source.name) lists \(diffIDs.count) diff_ids for \(manifest.layers.count) layers")
        }
        // Convert the layers, a few at a time.
        var results = [ConvertedLayer?](repeating: nil, count: manifest.layers.count)
        try await withThrowingTaskGroup(of: (Int, ConvertedLayer).self) { group in
            var next = 0
            func launch() {
                let i = next
                let layer = manifest.layers[i]
                next += 1
                group.addTask {
                    (i, try await self.convertLayer(
                        layer, index: i, source: source, destination: destination, options: options, cache: cache,
                        events: events))
                }
            }
            while next < min(options.parallelLayers, manifest.layers.count) { launch() }
            for try await (i, r) in group {
                results[i] = r
                if next < manifest.layers.count { launch() }
            }
        }
        var layers: [Descriptor] = []
        var lines: [String] = []
        for (i, r) in results.enumerated() {
            let r = r!
            layers.append(r.descriptor)
            if let diff = r.diffID { diffIDs[i] = diff.description }
            lines.append(r.note)
        }
        rootfs["diff_ids"] = diffIDs
        config["rootfs"] = rootfs
        let newConfig = Array(try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .withoutEscapingSlashes]))
        let configDesc = Descriptor(
            mediaType: MediaType.ociConfig, digest: Digest.sha256(of: newConfig), size: Int64(newConfig.count))
        try await destination.pushBlob(bytes: newConfig, descriptor: configDesc)
        var newManifest = Manifest(config: configDesc, layers: layers, annotations: manifest.annotations)
        newManifest.mediaType = MediaType.ociManifest
        let bytes = try Self.encode(newManifest)
        let digest = try await destination.pushManifest(bytes: bytes, mediaType: MediaType.ociManifest, tagged: tagged)
        events?(.manifestPushed(digest, tagged ? destination.name : digest.description))
        return ImageConvertReport(
            pushed: Descriptor(mediaType: MediaType.ociManifest, digest: digest, size: Int64(bytes.count)), layers: lines,
            alreadyConverted: already)
    }

    struct ConvertedLayer: Sendable {
        var descriptor: Descriptor
        var diffID: Digest?
        var note: String
    }

    private func convertLayer(
        _ layer: Descriptor, index: Int, source: any ImageSource, destination: any ImageDestination,
        options: ImageConvertOptions, cache: LayerCache, events: (@Sendable (ConvertEvent) -> Void)?
    ) async throws -> ConvertedLayer {
        let r = try await cache.once(layer.digest) {
            try await self.convertLayerOnce(
                layer, index: index, source: source, destination: destination, options: options, events: events)
        }
        return r
    }

    private func convertLayerOnce(
        _ layer: Descriptor, index: Int, source: any ImageSource, destination: any ImageDestination,
        options: ImageConvertOptions, events: (@Sendable (ConvertEvent) -> Void)?
    ) async throws -> ConvertedLayer {
        let phase = { (p: LayerPhase) in events?(.layer(index, layer.digest, layer.size, p)) }
        let dir = try tempDir(options)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        if layer.annotations?[AnnotationKey.tocDigest] != nil {
            // Already eStargz: copy it as it is.
            phase(.downloading)
            try await source.download(layer, to: dir + "/layer")
            phase(.uploading(layer.digest, layer.size))
            try await destination.pushBlob(path: dir + "/layer", descriptor: layer, from: source)
            phase(.copied)
            return ConvertedLayer(descriptor: layer, diffID: nil, note: "\(layer.digest): already eStargz, copied")
        }
        guard MediaType.isLayer(layer.mediaType) else {
            throw RegistryError(.unsupportedMediaType, "layer \(layer.digest) of \(source.name) has media type \"\(layer.mediaType)\"")
        }
        let input = dir + "/in", output = dir + "/out"
        phase(.downloading)
        try await source.download(layer, to: input)
        phase(.converting)
        var w = options.writer
        w.temporaryDirectory = dir
        let writer = w
        let built = try await runBlocking { () throws in try EStargzWriter.build(input: input, output: output, options: writer) }
        var annotations = layer.annotations ?? [:]
        for (k, v) in built.annotations { annotations[k] = v }
        let desc = Descriptor(mediaType: built.mediaType, digest: built.blobDigest, size: built.compressedSize, annotations: annotations)
        phase(.uploading(built.blobDigest, built.compressedSize))
        try await destination.pushBlob(path: output, descriptor: desc, from: nil)
        phase(.done(built.blobDigest, built.compressedSize))
        return ConvertedLayer(
            descriptor: desc, diffID: built.diffID,
            note: "\(layer.digest) (\(layer.size) bytes) → \(built.blobDigest) (\(built.compressedSize) bytes, TOC \(built.tocDigest))")
    }

    private func tempDir(_ options: ImageConvertOptions) throws -> String {
        let base = options.temporaryDirectory ?? ProcessInfo.processInfo.environment["TMPDIR"] ?? "/var/tmp"
        let dir = "\(base)/stargz-convert-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }
}

/// Layers converted in this run, by source digest: images share layers across platforms, and a layer
/// shared by two manifests is converted once even when both ask for it at the same time.
actor LayerCache {
    private var tasks: [Digest: Task<ImageConverter.ConvertedLayer, any Error>] = [:]

    func once(
        _ d: Digest, _ work: @escaping @Sendable () async throws -> ImageConverter.ConvertedLayer
    ) async throws -> ImageConverter.ConvertedLayer {
        let t = tasks[d] ?? Task { try await work() }
        tasks[d] = t
        return try await withTaskCancellationHandler { try await t.value } onCancel: { t.cancel() }
    }
}
