// SPDX-License-Identifier: Apache-2.0
import Compression
import Foundation
import OCI
import Testing

@testable import EStargz

/// Builds eStargz blobs by hand, with whatever TOC a test wants.
enum Craft {
    static var gz: GzipMemberCompressor { GzipMemberCompressor(level: 6) }

    /// A blob: `payloads` as gzip members at the start, then a TOC member holding `tocJSON` (or a raw
    /// `tocTar`), then the footer. Returns the blob and the offset of each payload member.
    static func blob(payloads: [[UInt8]], tocJSON: [UInt8]? = nil, tocTar: [UInt8]? = nil) -> (blob: [UInt8], offsets: [Int64]) {
        var out = gz.compress(Array(repeating: 0, count: 512))  // a header-ish first member
        var offsets: [Int64] = []
        for p in payloads {
            offsets.append(Int64(out.count))
            out += gz.compress(p)
        }
        let tocOffset = Int64(out.count)
        var tar: [UInt8]
        if let tocTar {
            tar = tocTar
        } else {
            let json = tocJSON ?? []
            tar = TarWriter.entry(TarHeader(typeflag: UInt8(ascii: "0"), name: ReservedName.toc), json) + TarWriter.end
        }
        out += gz.compress(tar)
        out += Footer.estargz(tocOffset: tocOffset)
        return (out, offsets)
    }

    /// A TOC JSON with the given entries (each a JSON object text).
    static func toc(_ entries: [String]) -> [UInt8] {
        Array("{\"version\":1,\"entries\":[\(entries.joined(separator: ","))]}".utf8)
    }

    static func reg(_ name: String, _ content: [UInt8], offset: Int64, digest: String? = nil) -> String {
        let d = digest ?? Digest.sha256(of: content).description
        return "{\"name\":\"\(name)\",\"type\":\"reg\",\"size\":\(content.count),\"offset\":\(offset),\"digest\":\"\(d)\",\"chunkDigest\":\"\(d)\"}"
    }
}

@Suite("Hostile and broken input")
struct HostileInputTests {
    func open(_ bytes: [UInt8], _ options: ReaderOptions = ReaderOptions()) throws -> EStargzReader {
        try EStargzReader(blob: MemoryBlob(bytes), options: options)
    }

    func expectCode(_ code: EStargzError.Code, _ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            try body()
            Issue.record("expected \(code), got success", sourceLocation: sourceLocation)
        } catch let e as EStargzError {
            #expect(e.code == code, "got \(e.code): \(e)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("expected EStargzError \(code), got \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test("a valid crafted blob opens (the control case)")
    func control() throws {
        let content = Array("hello\n".utf8)
        let (_, offsets) = Craft.blob(payloads: [content], tocJSON: Craft.toc([]))
        let fixed = Craft.toc([Craft.reg("a.txt", content, offset: offsets[0])])
        let r = try open(Craft.blob(payloads: [content], tocJSON: fixed).blob)
        #expect(try r.readFile("a.txt") == content)
    }

    @Test("every truncation of a real blob gives a typed error, never a crash")
    func truncated() throws {
        let blob = try Fixtures.bytes("kitchen-sink.chunk64k.esgz")
        for cut in [0, 1, 10, 47, 50, 51, 52, 1000, blob.count / 2, blob.count - 52, blob.count - 51, blob.count - 1] {
            do {
                _ = try open(Array(blob.prefix(cut)))
                Issue.record("a blob cut at \(cut) opened")
            } catch let e as EStargzError {
                #expect([.invalidFooter, .offsetOutOfRange, .invalidTOC, .truncatedBlob, .corruptData].contains(e.code), "cut \(cut): \(e)")
            }
        }
        // A blob whose tail is intact but whose payload was cut out: the TOC points past the data.
        let zstd = try Fixtures.bytes("app.zstdchunked")
        for cut in [8, 40, 47, zstd.count / 3] {
            #expect(throws: EStargzError.self) { _ = try open(Array(zstd.prefix(cut))) }
        }
    }

    @Test("wrong footer magic, and a gzip file that is not eStargz")
    func wrongMagic() throws {
        var blob = try Fixtures.bytes("kitchen-sink.esgz")
        blob[blob.count - 51 + 32] = UInt8(ascii: "X")  // STARGZ -> XTARGZ
        expectCode(.invalidFooter) { _ = try open(blob) }
        let plain = Craft.gz.compress(Array(repeating: 7, count: 5000))
        expectCode(.invalidFooter) { _ = try open(plain) }
        expectCode(.invalidFooter) { _ = try open([]) }
        var z = try Fixtures.bytes("app.zstdchunked")
        z[z.count - 1] ^= 0xff
        expectCode(.invalidFooter) { _ = try open(z) }
    }

    @Test("a TOC offset past the end of the blob")
    func tocOffsetPastEnd() throws {
        var blob = try Fixtures.bytes("kitchen-sink.esgz")
        let footer = Footer.estargz(tocOffset: Int64(blob.count) + 100)
        blob.replaceSubrange((blob.count - 51)..., with: footer)
        expectCode(.offsetOutOfRange) { _ = try open(blob) }
        let neg = Footer.estargz(tocOffset: -1)  // ffff…: overflows a positive offset
        blob.replaceSubrange((blob.count - 51)..., with: neg)
        #expect(throws: EStargzError.self) { _ = try open(blob) }
    }

    @Test("a TOC that is not JSON, not an object, or has bad values")
    func notJSON() throws {
        for bad in ["not json", "{", "[]", "{\"entries\": [{\"name\": \"a\", \"type\": \"reg\", \"size\": 1.5}]}",
                    "{\"entries\": [{\"name\": \"a\", \"type\": \"weird\"}]}",
                    "{\"entries\": [{\"name\": \"a\", \"type\": \"dir\"}]} trailing",
                    "{\"entries\": [{\"name\": \"a\", \"type\": \"reg\", \"size\": 99999999999999999999}]}",
                    "{\"entries\": [{\"name\": \"a\", \"type\": \"dir\", \"mode\": -1}]}",
                    "{\"entries\": [{\"name\": \"a\", \"type\": \"dir\", \"xattrs\": {\"k\": \"***\"}}]}",
                    String(repeating: "[", count: 10000)] {
            #expect(throws: EStargzError.self, "\(bad.prefix(40))") {
                _ = try open(Craft.blob(payloads: [], tocJSON: Array(bad.utf8)).blob)
            }
        }
        // Deeply nested unknown values are refused without recursion blowing the stack.
        let deep = "{\"x\": " + String(repeating: "[", count: 100_000) + "}"
        expectCode(.invalidTOC) { _ = try open(Craft.blob(payloads: [], tocJSON: Array(deep.utf8)).blob) }
        // A TOC tar entry with another name.
        var h = TarHeader(typeflag: UInt8(ascii: "0"), name: "other.json")
        h.size = 2
        let tar = TarWriter.header(h) + Array("{}".utf8) + [UInt8](repeating: 0, count: 510 + 1024)
        expectCode(.invalidTOC) { _ = try open(Craft.blob(payloads: [], tocTar: tar).blob) }
    }

    @Test("a TOC claiming 10 GB is refused before it is inflated")
    func tocBomb() throws {
        var h = TarHeader(typeflag: UInt8(ascii: "0"), name: ReservedName.toc)
        h.size = 10 << 30
        let tar = TarWriter.header(h) + Array("{}".utf8) + [UInt8](repeating: 0, count: 510)
        expectCode(.tocTooLarge) { _ = try open(Craft.blob(payloads: [], tocTar: tar).blob) }
        // A TOC member that really inflates past the limit.
        let big = Array("{\"entries\":[".utf8) + [UInt8](repeating: 0x20, count: 3 << 20) + Array("]}".utf8)
        expectCode(.tocTooLarge) {
            _ = try open(Craft.blob(payloads: [], tocJSON: big).blob, ReaderOptions(limits: TOCLimits(maxTOCSize: 1 << 20)))
        }
        // zstd:chunked footer claiming a huge TOC.
        var z = try Fixtures.bytes("app.zstdchunked")
        let f = Footer.zstdChunked(tocOffset: 8, compressedSize: 10, uncompressedSize: 10 << 30)
        z.replaceSubrange((z.count - 48)..., with: f)
        expectCode(.tocTooLarge) { _ = try open(z) }
    }

    @Test("names with .., absolute names and duplicate names")
    func badNames() throws {
        let c = Array("x".utf8)
        for (name, code) in [("../etc/passwd", EStargzError.Code.unsafePath), ("a/../../b", .unsafePath),
                             ("/etc/passwd", .unsafePath), ("a/\\u0000b", .unsafePath)] {
            let json = Craft.toc(["{\"name\":\"\(name)\",\"type\":\"dir\"}"])
            expectCode(code) { _ = try open(Craft.blob(payloads: [c], tocJSON: json).blob) }
        }
        let dup = Craft.toc(["{\"name\":\"a/\",\"type\":\"dir\"}", "{\"name\":\"./a\",\"type\":\"dir\"}"])
        expectCode(.duplicateEntry) { _ = try open(Craft.blob(payloads: [], tocJSON: dup).blob) }
        // A file under a symlink (the escape an extractor must never follow) is refused by the index.
        let under = Craft.toc(["{\"name\":\"l\",\"type\":\"symlink\",\"linkName\":\"/etc\"}", "{\"name\":\"l/x\",\"type\":\"dir\"}"])
        expectCode(.invalidEntry) { _ = try open(Craft.blob(payloads: [], tocJSON: under).blob) }
        // Hardlinks to nowhere, to a directory, or in a loop.
        for entries in [["{\"name\":\"h\",\"type\":\"hardlink\",\"linkName\":\"missing\"}"],
                        ["{\"name\":\"d\",\"type\":\"dir\"}", "{\"name\":\"h\",\"type\":\"hardlink\",\"linkName\":\"d\"}"],
                        ["{\"name\":\"h1\",\"type\":\"hardlink\",\"linkName\":\"h2\"}", "{\"name\":\"h2\",\"type\":\"hardlink\",\"linkName\":\"h1\"}"]] {
            expectCode(.invalidEntry) { _ = try open(Craft.blob(payloads: [], tocJSON: Craft.toc(entries)).blob) }
        }
    }

    @Test("chunk offsets outside the blob or out of order")
    func badOffsets() throws {
        let c = Array("hello".utf8)
        let (_, offsets) = Craft.blob(payloads: [c], tocJSON: Craft.toc([]))
        for off in [Int64(0), 1 << 40, -5] {
            let json = Craft.toc([Craft.reg("a", c, offset: off)])
            #expect(throws: EStargzError.self, "offset \(off)") { _ = try open(Craft.blob(payloads: [c], tocJSON: json).blob) }
        }
        // Two files whose offsets go backwards.
        let json = Craft.toc([Craft.reg("a", c, offset: offsets[0] + 20), Craft.reg("b", c, offset: offsets[0])])
        expectCode(.offsetOutOfRange) { _ = try open(Craft.blob(payloads: [c, c], tocJSON: json).blob) }
        // Chunks that do not tile the file.
        let gap = Craft.toc([
            "{\"name\":\"f\",\"type\":\"reg\",\"size\":10,\"offset\":\(offsets[0]),\"chunkSize\":4}",
            "{\"name\":\"f\",\"type\":\"chunk\",\"offset\":\(offsets[0] + 1),\"chunkOffset\":5,\"chunkSize\":5}",
        ])
        expectCode(.invalidEntry) { _ = try open(Craft.blob(payloads: [c], tocJSON: gap).blob) }
        let orphan = Craft.toc(["{\"name\":\"d\",\"type\":\"dir\"}", "{\"name\":\"d\",\"type\":\"chunk\",\"offset\":\(offsets[0])}"])
        expectCode(.invalidEntry) { _ = try open(Craft.blob(payloads: [c], tocJSON: orphan).blob) }
    }

    @Test("chunk digests that do not match: an error naming the file and offset, never wrong bytes")
    func digestMismatch() throws {
        let c = Array("the right bytes".utf8)
        let (_, offsets) = Craft.blob(payloads: [c], tocJSON: Craft.toc([]))
        let wrong = Digest.sha256(of: Array("other bytes".utf8)).description
        let json = Craft.toc([Craft.reg("dir/file", c, offset: offsets[0], digest: wrong)])
        let r = try open(Craft.blob(payloads: [c], tocJSON: json).blob)
        do {
            _ = try r.readFile("dir/file")
            Issue.record("read returned bytes that do not match the digest")
        } catch let e as EStargzError {
            #expect(e.code == .chunkDigestMismatch)
            #expect(e.message.contains("dir/file") && e.message.contains("offset"))
        }
        // Flip a byte inside a real blob's payload: verification fails, with a typed error.
        var blob = try Fixtures.bytes("app.prio.esgz")
        let reader = try open(blob)
        let app = try #require(reader.lookup("usr/bin/app"))
        let chunk = reader.chunks(of: app)[0]
        blob[Int(chunk.compressedOffset) + 40] ^= 0x55
        let broken = try open(blob)
        #expect(throws: EStargzError.self) { _ = try broken.read(app, at: 0, length: 10) }
        // A wrong expected TOC digest.
        expectCode(.tocDigestMismatch) {
            _ = try open(try Fixtures.bytes("app.prio.esgz"), ReaderOptions(expectedTOCDigest: Digest.sha256(of: [1])))
        }
        // Missing digest with verification on.
        let nod = Craft.toc(["{\"name\":\"f\",\"type\":\"reg\",\"size\":\(c.count),\"offset\":\(offsets[0])}"])
        let nr = try open(Craft.blob(payloads: [c], tocJSON: nod).blob)
        expectCode(.chunkDigestMismatch) { _ = try nr.readFile("f") }
        let unverified = try open(Craft.blob(payloads: [c], tocJSON: nod).blob, ReaderOptions(verifyChunks: false))
        #expect(try unverified.readFile("f") == c)
    }

    @Test("hostile input tars are refused by the writer")
    func hostileTars() throws {
        try withTemporaryDirectory { dir in
            func tar(_ name: String, type: Character = "0", link: String = "") -> [UInt8] {
                var h = TarHeader(typeflag: type.asciiValue!, name: name)
                h.linkName = link
                return TarWriter.header(h) + [UInt8](repeating: 0, count: 1024)
            }
            for (bytes, code) in [(tar("../evil"), EStargzError.Code.unsafePath), (tar("/abs/path"), .unsafePath),
                                  (tar("h", type: "1", link: "../../etc/shadow"), .unsafePath),
                                  (tar("dev", type: "7"), .invalidTar), (tar("sparse", type: "S"), .invalidTar),
                                  (Array(repeating: 0x41, count: 2048), .invalidTar),
                                  (Array(tar("file").prefix(300)), .invalidTar)] {
                let input = dir.appendingPathComponent("in.tar").path
                try Data(bytes).write(to: URL(fileURLWithPath: input))
                let out = dir.appendingPathComponent("out").path
                expectCode(code) { _ = try EStargzWriter.build(input: input, output: out) }
                #expect(!FileManager.default.fileExists(atPath: out), "a failed build left its output")
            }
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".tmp-") }
            #expect(leftovers.isEmpty)
        }
    }

    @Test("extract never writes outside its directory, even through a symlink planted there")
    func extractEscapes() throws {
        try withTemporaryDirectory { dir in
            let outside = dir.appendingPathComponent("outside")
            try FileManager.default.createDirectory(at: outside, withIntermediateDirectories: true)
            let target = dir.appendingPathComponent("target")
            try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(
                atPath: target.appendingPathComponent("etc").path, withDestinationPath: outside.path)
            let c = Array("pwned".utf8)
            let (_, offsets) = Craft.blob(payloads: [c], tocJSON: Craft.toc([]))
            let json = Craft.toc(["{\"name\":\"etc/\",\"type\":\"dir\",\"mode\":493}", Craft.reg("etc/passwd", c, offset: offsets[0])])
            let r = try open(Craft.blob(payloads: [c], tocJSON: json).blob)
            expectCode(.unsafePath) { _ = try r.extract(to: target.path) }
            #expect(try FileManager.default.contentsOfDirectory(atPath: outside.path).isEmpty)
            // A symlink that points outside is written as a symlink, never followed.
            let json2 = Craft.toc(["{\"name\":\"up\",\"type\":\"symlink\",\"linkName\":\"../../../outside\"}",
                                   Craft.reg("x", c, offset: offsets[0])])
            let t2 = dir.appendingPathComponent("t2").path
            let r2 = try open(Craft.blob(payloads: [c], tocJSON: json2).blob)
            _ = try r2.extract(to: t2)
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: t2 + "/up") == "../../../outside")
            #expect(try FileManager.default.contentsOfDirectory(atPath: outside.path).isEmpty)
        }
    }

    @Test("extract reproduces the tar: contents, modes, links, whiteouts as files")
    func extractMatches() throws {
        try withTemporaryDirectory { dir in
            let r = try EStargzReader(blob: try FileBlob(path: Fixtures.url("kitchen-sink.esgz").path))
            let report = try r.extract(to: dir.path)
            #expect(report.entries > 10)
            let fm = FileManager.default
            #expect(fm.fileExists(atPath: dir.appendingPathComponent("etc/.wh.removed").path))
            #expect(fm.fileExists(atPath: dir.appendingPathComponent("var/.wh..wh..opq").path))
            #expect(!fm.fileExists(atPath: dir.appendingPathComponent(ReservedName.noPrefetchLandmark).path))
            let tr = TarReader(try FileStream(path: Fixtures.url("kitchen-sink.tar").path))
            var files = 0
            while let h = try tr.next() {
                let p = dir.appendingPathComponent(h.name).path
                switch h.entryType {
                case .reg:
                    let want = try tr.readPayload()
                    #expect(Array(try Data(contentsOf: URL(fileURLWithPath: p))) == want, "\(h.name)")
                    let attrs = try fm.attributesOfItem(atPath: p)
                    #expect((attrs[.posixPermissions] as? Int).map { Int64($0) } == h.mode & 0o7777, "\(h.name)")
                    files += 1
                case .symlink:
                    #expect(try fm.destinationOfSymbolicLink(atPath: p) == h.linkName)
                default: break
                }
            }
            #expect(files > 5)
        }
    }
}
