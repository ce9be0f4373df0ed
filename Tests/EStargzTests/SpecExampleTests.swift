// SPDX-License-Identifier: Apache-2.0
import Compression
import Foundation
import OCI
import Testing

@testable import EStargz

/// The format spec's worked example 1 (§11): three entries, level 0, chunk size 4, written with the
/// reference's low-level writer (no landmark). Our tar headers and TOC JSON must be byte-identical to Go's,
/// which the TOC digest and the DiffID given in the spec prove.
@Suite("Spec worked example")
struct SpecExampleTests {
    static func exampleTar() -> [UInt8] {
        let mtime: Int64 = 1_577_934_245  // 2020-01-02T03:04:05Z
        var dir = TarHeader(typeflag: UInt8(ascii: "5"), name: "etc/")
        dir.mode = 0o755
        dir.modTime = mtime
        var file = TarHeader(typeflag: UInt8(ascii: "0"), name: "etc/hello.txt")
        file.mode = 0o644
        file.modTime = mtime
        file.userName = "root"
        file.groupName = "root"
        file.size = 6
        var link = TarHeader(typeflag: UInt8(ascii: "2"), name: "etc/link")
        link.mode = 0o777
        link.modTime = mtime
        link.linkName = "hello.txt"
        return TarWriter.header(dir) + TarWriter.header(file) + Array("hello\n".utf8)
            + [UInt8](repeating: 0, count: 506) + TarWriter.header(link) + [UInt8](repeating: 0, count: 1024)
    }

    @Test("TOC digest, DiffID and member layout equal the spec's")
    func example1() throws {
        try withTemporaryDirectory { dir in
            let input = dir.appendingPathComponent("ex.tar").path
            try Data(Self.exampleTar()).write(to: URL(fileURLWithPath: input))
            let out = dir.appendingPathComponent("ex.esgz").path
            var opts = WriterOptions(chunkSize: 4, compressionLevel: 0)
            opts.addLandmark = false
            let r = try EStargzWriter.build(input: input, output: out, options: opts)
            #expect(r.uncompressedSize == 4608)
            let reader = try EStargzReader(blob: try FileBlob(path: out))
            var entries = reader.toc.entries
            // The offsets depend on the deflate framing (Go ends each stored member with an empty final
            // block, libdeflate does not); with Go's offsets our TOC JSON must hash to the spec's digest.
            entries[1].offset = 1052
            entries[2].offset = 1084
            let json = TOCEncoder.encode(entries)
            #expect(Digest.sha256(of: json).description
                == "sha256:78f02234839caf1a9e806ccd521f5b7d3d056e33bc64158d12dec93b6a16f264")
            // And the uncompressed stream (our tar headers + that TOC entry) must hash to the spec's DiffID.
            let blob = try FileBlob(path: out)
            let members = try blob.read(at: 0, length: Int(reader.footer.tocOffset))
            var stream: [UInt8] = []
            try members.withUnsafeBytes { m in _ = try GzipDecompressor.inflateAll(m) { stream.append(contentsOf: $0) } }
            stream += TarWriter.entry(TarHeader(typeflag: UInt8(ascii: "0"), name: ReservedName.toc), json) + TarWriter.end
            #expect(stream.count == 4608)
            #expect(Digest.sha256(of: stream).description
                == "sha256:1be725630c93354d1a1457e06031d8c6a4680ad646a9eda2096ecc3835db16ce")
            #expect(entries.map(\.type) == [.dir, .reg, .chunk, .symlink])
            #expect(reader.tocJSON.count == 845)
            // Five members: headers, chunk 0, chunk 1 + padding + link header, TOC, footer.
            let hello = try #require(reader.lookup("etc/hello.txt"))
            let chunks = reader.chunks(of: hello)
            #expect(chunks.map(\.size) == [4, 2])
            #expect(chunks[0].compressedEnd == chunks[1].compressedOffset)
            #expect(chunks[1].compressedEnd == reader.footer.tocOffset)
            #expect(try reader.read(hello, at: 3, length: 3) == Array("lo\n".utf8))
            #expect(reader.toc.linkCount(try #require(reader.lookup("etc"))) == 2)
        }
    }
}
