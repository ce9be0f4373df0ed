// SPDX-License-Identifier: Apache-2.0
import Compression
import Foundation
import OCI
import Testing

@testable import EStargz

/// Every number of a TOC at its extremes: refused with an error that names the entry and the field, before it
/// sizes an allocation, a loop or a recursion. (The image's author writes the TOC, and signs it: its digest
/// proves nothing against them.)
@Suite("TOC fields at their extremes")
struct TOCBoundsTests {
    static let content = Array("hello, bounded world\n".utf8)

    /// A one-file blob whose file entry is `entry` (JSON object text with `OFFSET` for the payload offset).
    static func blob(_ entries: [String]) -> [UInt8] {
        let (_, offsets) = Craft.blob(payloads: [content], tocJSON: Craft.toc([]))
        let json = Craft.toc(entries.map { $0.replacingOccurrences(of: "OFFSET", with: "\(offsets[0])") })
        return Craft.blob(payloads: [content], tocJSON: json).blob
    }

    static let digest = Digest.sha256(of: content).description

    static func file(_ extra: String, size: Int64? = nil, name: String = "a") -> String {
        "{\"name\":\"\(name)\",\"type\":\"reg\",\"size\":\(size ?? Int64(content.count)),\"offset\":OFFSET,\"digest\":\"\(digest)\"\(extra)}"
    }

    /// Opens `bytes`; the error must be an EStargzError whose message contains every one of `words`.
    func refused(_ bytes: [UInt8], _ words: [String], limits: TOCLimits = TOCLimits(), sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let r = try EStargzReader(blob: MemoryBlob(bytes), options: ReaderOptions(limits: limits))
            // Opened: then no read may trap either, and it must be refused at the latest there.
            Issue.record("opened a hostile TOC (\(r.toc.entryCount) entries); want an error with \(words)", sourceLocation: sourceLocation)
        } catch let e as EStargzError {
            let text = e.description
            for w in words {
                #expect(text.contains(w), "error \"\(text)\" does not name \(w)", sourceLocation: sourceLocation)
            }
            #expect(!text.contains("\n"), "a one-line error, got \(text)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("not an EStargzError: \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test("the control: the same file with sane numbers opens and reads")
    func control() throws {
        let r = try EStargzReader(blob: MemoryBlob(Self.blob([Self.file("")])))
        #expect(try r.readFile("a") == Self.content)
    }

    @Test("size and chunkSize: absurd, Int64.max, over the chunk limit, over what the compressed span can inflate to")
    func sizes() {
        for size in [Int64(1) << 62, Int64.max, Int64(1) << 40, (Int64(64) << 20) + 1] {
            refused(Self.blob([Self.file("", size: size)]), ["\"a\"", "chunkSize"])
        }
        // Under the chunk limit, but the 40-odd compressed bytes cannot hold 60 MiB (deflate: 1032 to 1).
        refused(Self.blob([Self.file("", size: 60 << 20)]), ["\"a\"", "chunkSize", "can inflate to"])
        refused(Self.blob([Self.file(",\"chunkSize\":\(Int64.max)")]), ["\"a\"", "chunk"])
        refused(Self.blob([Self.file(",\"chunkSize\":-1")]), ["\"a\"", "chunkSize", "negative"])
        refused(Self.blob([Self.file("", size: -1)]), ["\"a\"", "size", "negative"])
        // A lower chunk limit is honoured.
        refused(Self.blob([Self.file("")]), ["\"a\"", "chunkSize", "limit of 8"], limits: TOCLimits(maxChunkSize: 8))
        // The layer's uncompressed size bounds all files together.
        refused(Self.blob([Self.file("")]), ["uncompressed size 4"], limits: TOCLimits(maxUncompressedSize: 4))
    }

    @Test("offsets: innerOffset, chunkOffset and offset at their extremes")
    func offsets() {
        refused(Self.blob([Self.file(",\"innerOffset\":\(Int64.max)")]), ["\"a\"", "innerOffset"])
        refused(Self.blob([Self.file(",\"innerOffset\":\(Int64(1) << 40)")]), ["\"a\"", "can inflate to"])
        refused(Self.blob([Self.file(",\"chunkOffset\":\(Int64.max)")]), ["\"a\"", "file offset \(Int64.max)"])
        refused(Self.blob([Self.file(",\"chunkOffset\":-1")]), ["\"a\"", "chunkOffset", "negative"])
        refused(Self.blob([Self.file("").replacingOccurrences(of: "OFFSET", with: "\(Int64.max)")]), ["\"a\"", "blob offset"])
        refused(Self.blob([Self.file("").replacingOccurrences(of: "OFFSET", with: "-1")]), ["\"a\"", "offset", "negative"])
        // A chunk entry after an empty file.
        refused(
            Self.blob(["{\"name\":\"e\",\"type\":\"reg\",\"size\":0}", "{\"name\":\"e\",\"type\":\"chunk\",\"offset\":OFFSET,\"chunkSize\":5}"]),
            ["\"e\"", "empty file"])
    }

    @Test("mode, uid, gid and device numbers beyond what the kernel holds")
    func numbers() {
        let dir = { (extra: String) in "{\"name\":\"d\",\"type\":\"dir\"\(extra)}" }
        for (field, value) in [("mode", "\(Int64(1) << 40)"), ("mode", "\(0o200000)"), ("uid", "4294967295"), ("uid", "\(Int64.max)"),
                               ("gid", "4294967295"), ("gid", "-1")] {
            refused(Self.blob([dir(",\"\(field)\":\(value)")]), ["\"d\"", field])
        }
        let dev = { (extra: String) in "{\"name\":\"c\",\"type\":\"char\"\(extra)}" }
        refused(Self.blob([dev(",\"devMajor\":4096")]), ["\"c\"", "devMajor"])
        refused(Self.blob([dev(",\"devMinor\":\(1 << 20)")]), ["\"c\"", "devMinor"])
        refused(Self.blob([dev(",\"devMajor\":\(Int64.max)")]), ["\"c\"", "devMajor"])
        // The largest values the kernel holds are accepted.
        #expect(throws: Never.self) {
            _ = try EStargzReader(blob: MemoryBlob(Self.blob([dev(",\"devMajor\":4095,\"devMinor\":1048575,\"uid\":4294967294,\"mode\":\(0o177777)")])))
        }
    }

    @Test("names: longer than PATH_MAX, an element longer than NAME_MAX, 10^5 deep, and deep implicit directories")
    func names() {
        refused(Self.blob(["{\"name\":\"\(String(repeating: "a", count: 256))\",\"type\":\"dir\"}"]), ["NAME_MAX"])
        refused(Self.blob(["{\"name\":\"\(String(repeating: "ab/", count: 2000))\",\"type\":\"dir\"}"]), ["PATH_MAX"])
        refused(Self.blob(["{\"name\":\"\(String(repeating: "a/", count: 100_000))\",\"type\":\"dir\"}"]), ["PATH_MAX"])
        // Names under PATH_MAX whose implicit parents would copy megabytes each: bounded by the JSON's size.
        let deep = (0..<200).map { i in "{\"name\":\"\(i)/\(String(repeating: "a/", count: 2000))x\",\"type\":\"dir\"}" }
        refused(Self.blob(deep), ["implicit parent directories"])
        refused(Self.blob(["{\"name\":\"l\",\"type\":\"symlink\",\"linkName\":\"\(String(repeating: "x", count: 4097))\"}"]), ["\"l\"", "linkName", "PATH_MAX"])
        // A hardlink chain longer than the hop limit is a loop.
        // Hardlinks to hardlinks: up to 64 hops resolve, a longer chain is refused as a loop would be.
        let chain = { (n: Int) in [Self.file("", name: "h0")] + (1...n).map { "{\"name\":\"h\($0)\",\"type\":\"hardlink\",\"linkName\":\"h\($0 - 1)\"}" } }
        #expect(throws: Never.self) { _ = try EStargzReader(blob: MemoryBlob(Self.blob(chain(60)))) }
        refused(Self.blob(chain(100)), ["\"h65\"", "hardlink"])
        let loop = (0..<100).map { "{\"name\":\"h\($0)\",\"type\":\"hardlink\",\"linkName\":\"h\(($0 + 1) % 100)\"}" }
        refused(Self.blob(loop), ["hardlink"])
    }

    @Test("xattrs: a long name, a value over 64 KiB, and names over the list limit")
    func xattrs() {
        let dir = { (x: String) in "{\"name\":\"d\",\"type\":\"dir\",\"xattrs\":{\(x)}}" }
        refused(Self.blob([dir("\"user.\(String(repeating: "n", count: 251))\":\"eQ==\"")]), ["\"d\"", "xattr name"])
        refused(Self.blob([dir("\"\":\"eQ==\"")]), ["\"d\"", "xattr name"])
        let big = Data(repeating: 0x41, count: 65537).base64EncodedString()
        refused(Self.blob([dir("\"user.big\":\"\(big)\"")]), ["\"d\"", "user.big"])
        let many = (0..<700).map { "\"user.\(String(repeating: "k", count: 90))\($0)\":\"eQ==\"" }.joined(separator: ",")
        refused(Self.blob([dir(many)]), ["\"d\"", "xattr names take more than 65536"])
    }

    @Test("wrong JSON types in every numeric field are refused, not coerced")
    func wrongTypes() {
        for field in ["size", "offset", "innerOffset", "chunkOffset", "chunkSize", "mode", "uid", "gid", "devMajor", "devMinor"] {
            for value in ["\"12\"", "{}", "[1]", "true", "1.5", "1e3"] {
                #expect(throws: EStargzError.self, "\(field): \(value)") {
                    _ = try EStargzReader(blob: MemoryBlob(Self.blob([Self.file(",\"\(field)\":\(value)")])))
                }
            }
        }
    }

    @Test("reads near Int64.max and of absurd lengths allocate only what the file holds")
    func reads() throws {
        let r = try EStargzReader(blob: MemoryBlob(Self.blob([Self.file("")])))
        let id = try #require(r.lookup("a"))
        #expect(try r.read(id, at: Int64.max - 10, length: 1 << 20) == [])
        #expect(try r.read(id, at: 3, length: Int.max) == Array(Self.content[3...]))
    }
}
