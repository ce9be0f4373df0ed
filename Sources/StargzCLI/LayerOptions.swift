// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import EStargz
import Foundation

/// How layers are written: the options `convert` and `image convert` share.
struct LayerOptions: ParsableArguments {
    @Option(help: "The largest chunk of a file in one compressed member, in bytes.")
    var chunkSize: Int = WriterOptions.defaultChunkSize

    @Option(help: "The compression level (gzip 0-9, default 9; zstd 1-22, default 3).")
    var compressionLevel: Int?

    @Option(help: "A file listing paths to put first, one per line; a .prefetch.landmark follows them.")
    var prioritizedFiles: String?

    @Flag(help: "Write zstd:chunked instead of gzip eStargz.")
    var zstdChunked = false

    func validate() throws {
        guard chunkSize > 0 else { throw ValidationError("--chunk-size must be positive") }
        if let l = compressionLevel {
            if zstdChunked {
                guard (1...22).contains(l) else { throw ValidationError("--compression-level for zstd must be 1-22") }
            } else {
                guard (0...9).contains(l) else { throw ValidationError("--compression-level for gzip must be 0-9") }
            }
        }
    }

    /// The writer options these flags describe; reads the prioritized files list (blank lines and `#`
    /// comments skipped).
    func writerOptions(workers: Int? = nil) throws -> WriterOptions {
        var prio: [String] = []
        if let p = prioritizedFiles {
            guard let text = try? String(contentsOfFile: p, encoding: .utf8) else {
                throw ValidationError("cannot read the prioritized files list \(p)")
            }
            prio = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty && !$0.hasPrefix("#") }
        }
        return WriterOptions(
            chunkSize: chunkSize, compressionLevel: compressionLevel, prioritizedFiles: prio,
            compression: zstdChunked ? .zstd : .gzip, workers: workers)
    }
}
