// SPDX-License-Identifier: Apache-2.0
public import ArgumentParser
import CBuildInfo
import EStargz
import Foundation
import OCI
import Registry

/// `stargz`: the eStargz toolbox.
@available(macOS 10.15, macCatalyst 13, iOS 13, tvOS 13, watchOS 6, *)
public struct StargzCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "stargz",
        abstract: "Build, inspect, verify and extract eStargz layers (lazy pulling for CRI-O and Podman).",
        version: StargzVersion.current,
        subcommands: [
            ConvertCommand.self, InspectCommand.self, VerifyCommand.self, TOCDigestCommand.self,
            ExtractCommand.self, ImageCommand.self, MountCommand.self, DemoCommand.self, DeployCommand.self, DoctorCommand.self,
        ])

    public init() {}
}

/// The version of both executables, as the build recorded it (Package.swift; scripts/release.sh sets it).
public enum StargzVersion {
    /// The version, e.g. `0.1.0` or `0.1.0-dev`.
    public static let number = String(cString: stargz_build_version())
    /// The commit the build was made from (12 hex digits, `-dirty` for a tree with changes), or `unknown`.
    public static let commit = String(cString: stargz_build_commit())
    /// What `--version` prints: `0.1.0 (commit 0123456789ab)`.
    public static let current = "\(number) (commit \(commit))"
}

/// Runs `body`, turning library errors into a one-line message on stderr and exit status 1.
func reportingErrors<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch { throw reported(error) }
}

/// ``reportingErrors(_:)`` for an async body.
func reportingErrorsAsync<T>(_ body: () async throws -> T) async throws -> T {
    do { return try await body() } catch { throw reported(error) }
}

/// The error a command throws for `error`: usage errors, exit codes and cancellation pass through; anything
/// else is printed as one line on stderr and becomes exit status 1.
func reported(_ error: any Error) -> any Error {
    switch error {
    case is ExitCode, is ValidationError, is CancellationError: return error
    case let e as EStargzError: Terminal.error(e.description)
    case let e as RegistryError: Terminal.error(e.description)
    default: Terminal.error("\(error)")
    }
    return ExitCode.failure
}

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert a tar (plain, gzip or zstd) into an eStargz (or zstd:chunked) layer blob.")

    @Argument(help: "The input tar, or - for standard input.")
    var input: String

    @Argument(help: "The output blob, or - for standard output.")
    var output: String

    @OptionGroup var layer: LayerOptions

    @Option(help: "Parallel compression workers (default: all cores); the output does not depend on it.")
    var workers: Int?

    @Flag(help: "Print the result as JSON.")
    var json = false

    func validate() throws {
        if let w = workers, w < 1 { throw ValidationError("--workers must be at least 1") }
    }

    func run() throws {
        try reportingErrors {
            let options = try layer.writerOptions(workers: workers)
            let bar = output != "-" && Terminal.isTTY(1) ? ProgressBar(label: "converting") : nil
            let start = ContinuousClock.now
            let result = try EStargzWriter.build(input: input, output: output, options: options) { done, total in
                bar?.update(done, total)
            }
            bar?.finish()
            let elapsed = ContinuousClock.now - start
            for m in result.missingPrioritizedFiles { Terminal.warn("prioritized file not in the tar: \(m)") }
            if output == "-" { return }
            if json {
                Terminal.printJSON(BuildSummary(result))
            } else {
                print("wrote \(output): \(result.compression == .gzip ? "eStargz" : "zstd:chunked"), \(result.compressedSize) bytes, \(result.entryCount) TOC entries in \(elapsed.formatted)")
                print("blob digest:       \(result.blobDigest)")
                print("TOC digest:        \(result.tocDigest)")
                print("DiffID:            \(result.diffID)")
                print("uncompressed size: \(result.uncompressedSize)")
                print("annotations:")
                for (k, v) in result.annotations.sorted(by: { $0.key < $1.key }) { print("  \(k): \(v)") }
            }
        }
    }
}

struct BuildSummary: Encodable {
    var mediaType: String
    var digest: String
    var size: Int64
    var tocDigest: String
    var diffID: String
    var uncompressedSize: Int64
    var entries: Int
    var annotations: [String: String]
    var missingPrioritizedFiles: [String]

    init(_ r: BuildResult) {
        mediaType = r.mediaType
        digest = r.blobDigest.description
        size = r.compressedSize
        tocDigest = r.tocDigest.description
        diffID = r.diffID.description
        uncompressedSize = r.uncompressedSize
        entries = r.entryCount
        annotations = r.annotations
        missingPrioritizedFiles = r.missingPrioritizedFiles
    }
}

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect", abstract: "Show a layer's format, TOC, entries, chunks and landmarks.")

    @Argument(help: "The eStargz, stargz or zstd:chunked blob.")
    var blob: String

    @Flag(help: "Print JSON: the summary and every TOC entry as the TOC has it.")
    var json = false

    @Flag(help: "List chunks under each file.")
    var chunks = false

    func run() throws {
        try reportingErrors {
            let reader = try EStargzReader(blob: try FileBlob(path: blob), options: ReaderOptions(verifyChunks: false))
            let toc = reader.toc
            let summary = InspectSummary(reader)
            if json {
                Terminal.printJSON(InspectJSON(summary: summary, entries: toc.entries.map(EntryJSON.init)))
                return
            }
            print("format:            \(summary.format)")
            print("blob size:         \(summary.blobSize)")
            print("TOC offset:        \(summary.tocOffset)")
            print("TOC digest:        \(summary.tocDigest)")
            print("TOC entries:       \(summary.entries) (\(summary.regularFiles) files, \(summary.chunks) chunks)")
            print("payload size:      \(summary.fileBytes) bytes of file content")
            print("prefetch:          \(summary.prefetch)")
            print("")
            for e in toc.entries {
                if e.type == .chunk {
                    if chunks {
                        print("    chunk @\(e.chunkOffset) size \(e.chunkSize) offset \(e.offset) \(e.chunkDigest)")
                    }
                    continue
                }
                let mode = String(e.mode & 0o7777, radix: 8)
                var line = "\(e.type.description.padding(toLength: 8, withPad: " ", startingAt: 0)) \(mode.leftPad(4)) \(e.uid):\(e.gid) \(String(e.size).leftPad(10)) \(e.name)"
                if !e.linkName.isEmpty { line += " -> \(e.linkName)" }
                if e.type == .char || e.type == .block { line += " (\(e.devMajor),\(e.devMinor))" }
                print(line)
                if chunks && e.type == .reg && e.size > 0 {
                    print("    chunk @\(e.chunkOffset) size \(e.chunkSize == 0 ? e.size : e.chunkSize) offset \(e.offset) \(e.chunkDigest)")
                }
            }
        }
    }
}

struct InspectSummary: Encodable {
    var format: String
    var blobSize: Int64
    var tocOffset: Int64
    var tocDigest: String
    var entries: Int
    var regularFiles: Int
    var chunks: Int
    var fileBytes: Int64
    var prefetch: String

    init(_ r: EStargzReader) {
        format = r.format.rawValue
        blobSize = r.blob.size
        tocOffset = r.footer.tocOffset
        tocDigest = r.tocDigest.description
        let all = r.toc.entries
        entries = all.count
        regularFiles = all.filter { $0.type == .reg }.count
        chunks = all.filter { $0.type == .chunk }.count
        fileBytes = all.filter { $0.type == .reg }.reduce(0) { $0 + $1.size }
        switch r.prefetch {
        case .none: prefetch = "none (.no.prefetch.landmark)"
        case .range(let end): prefetch = "bytes [0, \(end)) (.prefetch.landmark)"
        case .unspecified: prefetch = "unspecified (no landmark)"
        }
    }
}

struct InspectJSON: Encodable {
    var summary: InspectSummary
    var entries: [EntryJSON]
}

struct EntryJSON: Encodable {
    var name: String
    var type: String
    var size: Int64?
    var modtime: String?
    var linkName: String?
    var mode: Int64?
    var uid: Int64?
    var gid: Int64?
    var userName: String?
    var groupName: String?
    var offset: Int64?
    var innerOffset: Int64?
    var devMajor: Int64?
    var devMinor: Int64?
    var xattrs: [String: String]?
    var digest: String?
    var chunkOffset: Int64?
    var chunkSize: Int64?
    var chunkDigest: String?

    init(_ e: TOCEntry) {
        func nz(_ v: Int64) -> Int64? { v == 0 ? nil : v }
        func ne(_ s: String) -> String? { s.isEmpty ? nil : s }
        name = e.name
        type = e.type.description
        size = nz(e.size)
        modtime = e.modTime.map(RFC3339.format)
        linkName = ne(e.linkName)
        mode = nz(e.mode)
        uid = nz(e.uid)
        gid = nz(e.gid)
        userName = ne(e.userName)
        groupName = ne(e.groupName)
        offset = nz(e.offset)
        innerOffset = nz(e.innerOffset)
        devMajor = nz(e.devMajor)
        devMinor = nz(e.devMinor)
        xattrs = e.xattrs.isEmpty ? nil : e.xattrs.mapValues { Base64.encode($0) }
        digest = ne(e.digest)
        chunkOffset = nz(e.chunkOffset)
        chunkSize = nz(e.chunkSize)
        chunkDigest = ne(e.chunkDigest)
    }
}

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Verify a layer: TOC digest, every chunk digest, the DiffID, and optionally the original tar.")

    @Argument(help: "The blob to verify.")
    var blob: String

    @Option(help: "The expected TOC digest (the layer's toc.digest annotation).")
    var tocDigest: String?

    @Option(help: "The expected DiffID (sha256 of the uncompressed layer).")
    var diffID: String?

    @Option(help: "The tar the layer was made from: every entry and every file's bytes are compared.")
    var tar: String?

    @Flag(help: "Print the result as JSON.")
    var json = false

    func run() throws {
        let toc = try tocDigest.map { s -> Digest in
            guard let d = Digest(s) else { throw ValidationError("--toc-digest \"\(s)\" is not a digest") }
            return d
        }
        let diff = try diffID.map { s -> Digest in
            guard let d = Digest(s) else { throw ValidationError("--diff-id \"\(s)\" is not a digest") }
            return d
        }
        try reportingErrors {
            let reader = try EStargzReader(
                blob: try FileBlob(path: blob), options: ReaderOptions(expectedTOCDigest: toc))
            let bar = Terminal.isTTY(2) && !json ? ProgressBar(label: "verifying") : nil
            let report = try reader.verify(
                expectedDiffID: diff, originalTar: try tar.map { try FileStream(path: $0) },
                progress: { done, total in bar?.update(Int64(done), Int64(total)) })
            bar?.finish()
            if json {
                Terminal.printJSON(VerifyJSON(report))
            } else {
                print("OK \(report.format.rawValue) tocDigest=\(report.tocDigest) diffID=\(report.diffID) uncompressedSize=\(report.uncompressedSize) chunks=\(report.chunksVerified)" + (tar == nil ? "" : " files=\(report.filesCompared)"))
            }
        }
    }
}

struct VerifyJSON: Encodable {
    var format: String
    var tocDigest: String
    var diffID: String
    var uncompressedSize: Int64
    var chunksVerified: Int
    var filesCompared: Int
    init(_ r: VerificationReport) {
        format = r.format.rawValue
        tocDigest = r.tocDigest.description
        diffID = r.diffID.description
        uncompressedSize = r.uncompressedSize
        chunksVerified = r.chunksVerified
        filesCompared = r.filesCompared
    }
}

struct TOCDigestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "toc-digest", abstract: "Print the TOC digest of a layer (the toc.digest annotation value).")

    @Argument(help: "The blob.")
    var blob: String

    func run() throws {
        try reportingErrors {
            let reader = try EStargzReader(blob: try FileBlob(path: blob), options: ReaderOptions(verifyChunks: false))
            print(reader.tocDigest)
        }
    }
}

struct ExtractCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "extract",
        abstract: "Extract a layer into a directory (whiteouts kept as files; nothing is written outside DIR).")

    @Argument(help: "The blob.")
    var blob: String

    @Argument(help: "The target directory (created if missing).")
    var directory: String

    func run() throws {
        try reportingErrors {
            let reader = try EStargzReader(blob: try FileBlob(path: blob))
            let r = try reader.extract(to: directory)
            for s in r.skipped { Terminal.warn("skipped \(s)") }
            print("extracted \(r.entries) entries (\(r.bytes) bytes of file content) into \(directory)")
        }
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}

extension Duration {
    var formatted: String {
        let (s, atto) = components
        let ms = Double(s) * 1000 + Double(atto) / 1e15
        return ms < 1000 ? String(format: "%.0f ms", ms) : String(format: "%.2f s", ms / 1000)
    }
}
