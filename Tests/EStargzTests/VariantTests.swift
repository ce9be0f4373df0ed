// SPDX-License-Identifier: Apache-2.0
import Compression
import Foundation
import OCI
import Testing

@testable import EStargz

@Suite("Format variants")
struct VariantTests {
    @Test("innerOffset: two payloads in one member (min-chunk-size blobs) read correctly")
    func innerOffset() throws {
        let a = Array("hello".utf8), b = Array("world, again!".utf8)
        // One member holding a's bytes, 7 bytes of something else, then b's bytes.
        let member = a + Array("-------".utf8) + b
        let (_, offsets) = Craft.blob(payloads: [member], tocJSON: Craft.toc([]))
        let da = Digest.sha256(of: a).description, db = Digest.sha256(of: b).description
        let json = Craft.toc([
            "{\"name\":\"a\",\"type\":\"reg\",\"size\":5,\"offset\":\(offsets[0]),\"digest\":\"\(da)\",\"chunkDigest\":\"\(da)\"}",
            "{\"name\":\"b\",\"type\":\"reg\",\"size\":\(b.count),\"offset\":\(offsets[0]),\"innerOffset\":12,\"digest\":\"\(db)\",\"chunkDigest\":\"\(db)\"}",
        ])
        let r = try EStargzReader(blob: MemoryBlob(Craft.blob(payloads: [member], tocJSON: json).blob))
        #expect(try r.readFile("a") == a)
        #expect(try r.readFile("b") == b)
        let id = try #require(r.lookup("b"))
        #expect(try r.read(id, at: 7, length: 100) == Array("again!".utf8))
        #expect(r.toc.entry(id).innerOffset == 12)
    }

    @Test("legacy stargz (47-byte footer) is read; without digests, only unverified reads work")
    func legacy() throws {
        let content = Array("legacy content\n".utf8)
        let (_, offsets) = Craft.blob(payloads: [content], tocJSON: Craft.toc([]))
        let json = Craft.toc(["{\"name\":\"f\",\"type\":\"reg\",\"size\":\(content.count),\"offset\":\(offsets[0])}"])
        var blob = Craft.blob(payloads: [content], tocJSON: json).blob
        let tocOffset = String(decoding: blob[(blob.count - 51 + 16)..<(blob.count - 51 + 32)], as: UTF8.self)
        blob.removeLast(51)
        let legacyFooter: [UInt8] = [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 22, 0] + Array(tocOffset.utf8)
            + Array("STARGZ".utf8) + [0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]
        #expect(legacyFooter.count == 47)
        blob += legacyFooter
        let r = try EStargzReader(blob: MemoryBlob(blob), options: ReaderOptions(verifyChunks: false))
        #expect(r.format == .legacyStargz)
        #expect(try r.readFile("f") == content)
        let verifying = try EStargzReader(blob: MemoryBlob(blob))
        #expect(throws: EStargzError.self) { _ = try verifying.readFile("f") }
        let (diffID, _) = try r.computeDiffID()
        #expect(diffID.algorithm == "sha256")
    }

    @Test("the external-TOC footer is recognised and refused clearly")
    func externalTOC() throws {
        var footer: [UInt8] = [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 21, 0, 0x53, 0x47, 17, 0]
        footer += Array("STARGZEXTERNALTOC".utf8) + [0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]
        #expect(footer.count == 46)
        let blob = Craft.gz.compress(Array(repeating: 1, count: 600)) + footer
        do {
            _ = try EStargzReader(blob: MemoryBlob(blob))
            Issue.record("external TOC opened")
        } catch let e as EStargzError {
            #expect(e.code == .unsupportedFormat)
        }
    }

    @Test("an empty layer has a root, the no-prefetch landmark, and nothing else")
    func emptyLayer() throws {
        let r = try EStargzReader(blob: try FileBlob(path: Fixtures.url("empty.esgz").path))
        #expect(r.toc.children(of: r.toc.root).map(\.name) == [ReservedName.noPrefetchLandmark])
        #expect(r.prefetch == .none)
        #expect(r.lookup("") == r.toc.root)
        #expect(r.lookup("/") == r.toc.root)
    }

    @Test("case-insensitive keys and unknown keys in the TOC JSON are accepted, as Go's decoder does")
    func jsonLeniency() throws {
        let c = Array("x".utf8)
        let (_, offsets) = Craft.blob(payloads: [c], tocJSON: Craft.toc([]))
        let d = Digest.sha256(of: c).description
        let json = Craft.toc([
            "{\"NAME\":\"f\",\"Type\":\"reg\",\"SIZE\":1,\"Offset\":\(offsets[0]),\"NumLink\":0,\"future\":{\"a\":[1,2,{\"b\":null}]},\"ChunkDigest\":\"\(d)\"}",
            "{\"name\":\"g\\u00e9\\ud83d\\ude00\",\"type\":\"symlink\",\"linkName\":\"f\",\"modtime\":\"2020-01-02T04:04:05+01:00\"}",
        ])
        let r = try EStargzReader(blob: MemoryBlob(Craft.blob(payloads: [c], tocJSON: json).blob))
        #expect(try r.readFile("f") == c)
        let g = try #require(r.lookup("gé😀"))
        #expect(r.toc.entry(g).modTime == 1_577_934_245)
    }
}
