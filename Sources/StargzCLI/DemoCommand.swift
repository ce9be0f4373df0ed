// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import EStargz
import Foundation
import OCI

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Convert a built-in sample layer to eStargz and zstd:chunked, inspect, verify and extract it.")

    @Option(help: "Where to write the demo files (default: a new temporary directory).")
    var workDir: String?

    func run() throws {
        try reportingErrors {
            let dir = workDir ?? FileManager.default.temporaryDirectory
                .appendingPathComponent("stargz-demo-\(getpid())").path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let tarPath = "\(dir)/sample.tar"
            let tar = SampleLayer.tar()
            try Data(tar).write(to: URL(fileURLWithPath: tarPath))
            print("sample layer: \(tarPath) (\(tar.count) bytes)")
            for compression in [WriterOptions.Compression.gzip, .zstd] {
                let out = "\(dir)/sample.\(compression == .gzip ? "esgz" : "zstdchunked")"
                let opts = WriterOptions(
                    chunkSize: 1 << 20, prioritizedFiles: SampleLayer.prioritizedFiles, compression: compression)
                let start = ContinuousClock.now
                let r = try EStargzWriter.build(input: tarPath, output: out, options: opts)
                print("\nconverted to \(compression == .gzip ? "eStargz" : "zstd:chunked"): \(out)")
                print("  \(r.compressedSize) bytes, \(r.entryCount) TOC entries, in \((ContinuousClock.now - start).formatted)")
                print("  blob digest \(r.blobDigest)")
                for (k, v) in r.annotations.sorted(by: { $0.key < $1.key }) { print("  annotation \(k)=\(v)") }
                let reader = try EStargzReader(
                    blob: try FileBlob(path: out), options: ReaderOptions(expectedTOCDigest: r.tocDigest))
                let s = InspectSummary(reader)
                print("  inspect: \(s.format), \(s.entries) entries (\(s.regularFiles) files, \(s.chunks) chunks), prefetch \(s.prefetch)")
                let v = try reader.verify(expectedDiffID: r.diffID, originalTar: try FileStream(path: tarPath))
                print("  verify: OK, \(v.chunksVerified) chunk digests, DiffID \(v.diffID), \(v.filesCompared) files equal the tar")
                if let id = reader.lookup("etc/os-release") {
                    let text = String(decoding: try reader.read(id, at: 0, length: 64), as: UTF8.self)
                    print("  random access read of etc/os-release: \(text.split(separator: "\n").first ?? "")")
                }
                if compression == .gzip {
                    let x = try reader.extract(to: "\(dir)/rootfs")
                    print("  extract: \(x.entries) entries into \(dir)/rootfs")
                }
            }
            print("\ndemo OK")
        }
    }
}
