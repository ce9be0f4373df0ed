// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import CLinuxSys
import Convert
import EStargz
import Foundation
import OCI
import Registry
import Synchronization

struct ImageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image", abstract: "Work with images in registries.",
        subcommands: [ImageConvertCommand.self, ImageInspectCommand.self])
}

/// `--platform`, shared by the commands that pick one platform of an image index.
struct PlatformOption: ParsableArguments {
    @Option(help: "The platform (os/arch[/variant]); default: this machine's.")
    var platform: String?

    func validate() throws {
        if let p = platform, Platform(parsing: p) == nil { throw ValidationError("--platform \"\(p)\" is not os/arch[/variant]") }
    }

    /// The platform asked for, or this machine's.
    var value: Platform { platform.flatMap(Platform.init(parsing:)) ?? .current }
}

/// Options shared by the commands that talk to registries.
struct RegistryOptions: ParsableArguments {
    @Option(name: .customLong("insecure-registry"), help: "A registry (host[:port]) reached over plain HTTP. Repeatable.")
    var insecureRegistries: [String] = []

    @Option(help: "A credentials file (auth.json or docker config.json) searched before the standard ones.")
    var authfile: String?

    @Option(
        name: .customLong("registries-conf"),
        help: "A containers-registries.conf(5) file for insecure hosts and mirrors (default: $CONTAINERS_REGISTRIES_CONF or /etc/containers/registries.conf and its registries.conf.d).")
    var registriesConf: String?

    func client() throws -> RegistryClient {
        let settings = try RegistriesConf.load(registriesConf.map { [$0] } ?? RegistriesConf.defaultFiles())
        var hosts = settings.hosts
        for h in insecureRegistries { hosts[h, default: HostConfiguration()].insecure = true }
        var files = CredentialStore.defaultFiles()
        if let a = authfile { files.insert(a, at: 0) }
        var configuration = RegistryConfiguration(hosts: hosts)
        configuration.rules = settings.rules
        return RegistryClient(configuration: configuration, credentials: CredentialStore(files: files))
    }
}

func parseReference(_ s: String) throws -> Reference {
    do { return try Reference(s) } catch { throw ValidationError("\(error)") }
}

/// Runs an async body with a registry client, reporting errors like the other commands.
func withRegistryClient<T>(_ options: RegistryOptions, _ body: (RegistryClient) async throws -> T) async throws -> T {
    let client: RegistryClient
    do { client = try options.client() } catch { throw reported(error) }
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

    @Argument(help: "The source image: a reference (docker://REF also works) or an OCI layout oci:DIR[:TAG].")
    var source: String

    @Argument(help: "The destination image: a reference or an OCI layout oci:DIR[:TAG].")
    var destination: String

    @OptionGroup var platform: PlatformOption

    @Flag(help: "Convert every platform of an index and push a new index.")
    var allPlatforms = false

    @OptionGroup var layer: LayerOptions

    @OptionGroup var registry: RegistryOptions

    func validate() throws {
        if platform.platform != nil && allPlatforms { throw ValidationError("--platform and --all-platforms exclude each other") }
    }

    func run() async throws {
        let writer = try layer.writerOptions()
        let options = ImageConvertOptions(
            writer: writer, platform: platform.value, allPlatforms: allPlatforms)
        let board = Terminal.isTTY(2) ? LayerBoard(fd: 2) : nil
        try await withRegistryClient(registry) { client in
            let src = try imageSource(source, client)
            let dst = try imageDestination(destination, client)
            let report = try await ImageConverter(client: client).convert(from: src, to: dst, options: options) { event in
                board?.handle(event)
            }
            board?.finish()
            if report.alreadyConverted && src.name == dst.name {
                print("\(src.name) is already eStargz; nothing to do")
                return
            }
            for l in report.layers { print(l) }
            print("\(dst.name): \(report.pushed.mediaType) \(report.pushed.digest)")
        }
    }
}

/// `oci:DIR[:TAG]` names an OCI image layout; `docker://REF` or a plain reference names a registry image.
func imageSource(_ s: String, _ client: RegistryClient) throws -> any ImageSource {
    if s.hasPrefix("oci:") {
        guard let l = OCILayoutImage(parsing: s) else { throw ValidationError("\"\(s)\" is not oci:DIR[:TAG]") }
        return l
    }
    return RegistryImage(client: client, reference: try parseReference(s.hasPrefix("docker://") ? String(s.dropFirst(9)) : s))
}

func imageDestination(_ s: String, _ client: RegistryClient) throws -> any ImageDestination {
    if let src = try imageSource(s, client) as? any ImageDestination { return src }
    throw ValidationError("\"\(s)\" cannot be written to")
}

/// One line per layer on a terminal, redrawn in place as layers move through their phases.
final class LayerBoard: Sendable {
    private struct State {
        var order: [Digest] = []
        var lines: [Digest: String] = [:]
        var drawn = 0
        var notes: [String] = []
    }
    private let fd: Int32
    private let state = Mutex(State())

    init(fd: Int32) { self.fd = fd }

    func handle(_ event: ConvertEvent) {
        state.withLock { s in
            switch event {
            case .layer(_, let d, let size, let phase):
                if s.lines[d] == nil { s.order.append(d) }
                let head = "\(d.encoded.prefix(12)) \(Self.size(size))"
                let what: String
                switch phase {
                case .waiting: what = "waiting"
                case .downloading: what = "downloading"
                case .converting: what = "converting to eStargz"
                case .uploading(let n, let ns): what = "uploading \(n.encoded.prefix(12)) \(Self.size(ns))"
                case .done(let n, let ns): what = "done → \(n.encoded.prefix(12)) \(Self.size(ns))"
                case .copied: what = "already eStargz, copied"
                }
                if s.lines[d]?.hasSuffix("copied") == true || s.lines[d]?.contains("done →") == true, phase == .waiting { return }
                s.lines[d] = "\(head)  \(what)"
            case .manifestPushed(let d, let to):
                s.notes.append("stored \(to) (\(d.encoded.prefix(12)))")
            }
            draw(&s)
        }
    }

    func finish() { state.withLock { s in draw(&s) } }

    private func draw(_ s: inout State) {
        var out = s.drawn > 0 ? "\u{1B}[\(s.drawn)A" : ""
        let all = s.order.map { s.lines[$0] ?? "" } + s.notes
        let width = max(20, Int(CLinuxSys_terminalColumns(fd)) - 1)
        for l in all { out += "\u{1B}[2K" + String(l.prefix(width)) + "\n" }
        s.drawn = all.count
        FileHandle(fileDescriptor: fd).write(Data(out.utf8))
    }

    static func size(_ n: Int64) -> String {
        n >= 10 << 20 ? "\(n >> 20) MiB" : n >= 10 << 10 ? "\(n >> 10) KiB" : "\(n) B"
    }
}

struct ImageInspectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect", abstract: "Show an image's manifest and layers, and whether each layer is eStargz.")

    @Argument(help: "The image reference.")
    var reference: String

    @OptionGroup var platform: PlatformOption

    @OptionGroup var registry: RegistryOptions

    func run() async throws {
        let ref = try parseReference(reference)
        let platform = platform.value
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
                if l.size >= 51, let tail = try? await client.readRange(image.source, l.digest, offset: l.size - 51, length: 51),
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
