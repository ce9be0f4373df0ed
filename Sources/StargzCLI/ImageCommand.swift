// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Convert
import EStargz
import Foundation
import OCI
import Registry

struct ImageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image", abstract: "Work with images in registries.",
        subcommands: [ImageConvertCommand.self, ImageInspectCommand.self])
}

/// Options shared by the commands that talk to registries.
struct RegistryOptions: ParsableArguments {
    @Option(name: .customLong("insecure-registry"), help: "A registry (host[:port]) reached over plain HTTP. Repeatable.")
    var insecureRegistries: [String] = []

    @Option(help: "A credentials file (auth.json or docker config.json) searched before the standard ones.")
    var authfile: String?

    func client() -> RegistryClient {
        var hosts: [String: HostConfiguration] = [:]
        for h in insecureRegistries { hosts[h] = HostConfiguration(insecure: true) }
        var files = CredentialStore.defaultFiles()
        if let a = authfile { files.insert(a, at: 0) }
        return RegistryClient(configuration: RegistryConfiguration(hosts: hosts), credentials: CredentialStore(files: files))
    }
}

func parseReference(_ s: String) throws -> Reference {
    do { return try Reference(s) } catch { throw ValidationError("\(error)") }
}

/// Runs an async body with a registry client, reporting errors like the other commands.
func withRegistryClient<T>(_ options: RegistryOptions, _ body: (RegistryClient) async throws -> T) async throws -> T {
    let client = options.client()
    do {
        let r = try await body(client)
        try? await client.shutdown()
        return r
    } catch {
        try? await client.shutdown()
        throw reported(error)
    }
}

struct ImageConvertCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert an image to eStargz, registry to registry (layers, diff_ids, annotations, manifest, index).")

    @Argument(help: "The source image reference.")
    var source: String

    @Argument(help: "The destination image reference.")
    var destination: String

    @Option(help: "The platform to convert (os/arch[/variant]); default: this machine's.")
    var platform: String?

    @Flag(help: "Convert every platform of an index and push a new index.")
    var allPlatforms = false

    @OptionGroup var layer: LayerOptions

    @OptionGroup var registry: RegistryOptions

    func validate() throws {
        if platform != nil && allPlatforms { throw ValidationError("--platform and --all-platforms exclude each other") }
        if let p = platform, Platform(parsing: p) == nil { throw ValidationError("--platform \"\(p)\" is not os/arch[/variant]") }
    }

    func run() async throws {
        let src = try parseReference(source)
        let dst = try parseReference(destination)
        let writer = try layer.writerOptions()
        let options = ImageConvertOptions(
            writer: writer, platform: platform.flatMap(Platform.init(parsing:)) ?? .current, allPlatforms: allPlatforms)
        let tty = Terminal.isTTY(1)
        try await withRegistryClient(registry) { client in
            let report = try await ImageConverter(client: client).convert(from: src, to: dst, options: options) { event in
                guard tty else { return }
                switch event {
                case .layerStarted(let i, let d, let size): print("layer \(i): converting \(d) (\(size >> 10) KiB)")
                case .layerDone(let i, let d, let size): print("layer \(i): done → \(d) (\(size >> 10) KiB)")
                case .manifestPushed(let d, let to): print("pushed \(to) (\(d))")
                }
            }
            if report.alreadyConverted && src == dst {
                print("\(src) is already eStargz; nothing to do")
                return
            }
            for l in report.layers { print(l) }
            print("\(dst): \(report.pushed.mediaType) \(report.pushed.digest)")
        }
    }
}

struct ImageInspectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect", abstract: "Show an image's manifest and layers, and whether each layer is eStargz.")

    @Argument(help: "The image reference.")
    var reference: String

    @Option(help: "The platform (os/arch[/variant]); default: this machine's.")
    var platform: String?

    @OptionGroup var registry: RegistryOptions

    func run() async throws {
        let ref = try parseReference(reference)
        let platform = platform.flatMap(Platform.init(parsing:)) ?? .current
        try await withRegistryClient(registry) { client in
            let image = try await client.resolve(ref, platform: platform)
            print("reference: \(ref)")
            if let index = image.index {
                print("index:     \(index.descriptor.digest) (\(index.descriptor.mediaType))")
                for m in try index.index().manifests {
                    print("  \(m.platform?.description ?? "-") \(m.digest)")
                }
            }
            print("manifest:  \(image.manifest.descriptor.digest) (\(image.manifest.descriptor.mediaType)) for \(platform.description)")
            print("config:    \(image.decoded.config.digest)")
            for (i, l) in image.decoded.layers.enumerated() {
                var kind = "not eStargz"
                if l.size >= 51, let tail = try? await client.readRange(ref, l.digest, offset: l.size - 51, length: 51),
                    let f = try? Footer.parse(tail: tail, blobSize: l.size)
                {
                    kind = f.format.rawValue
                }
                let toc = l.annotations?[AnnotationKey.tocDigest].map { " toc.digest=\($0)" } ?? ""
                print("layer \(i): \(l.digest) \(l.size) bytes \(l.mediaType) [\(kind)]\(toc)")
            }
        }
    }
}
