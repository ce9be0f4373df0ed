// SPDX-License-Identifier: Apache-2.0
import Foundation
import OCI
import TestSupport
import Testing

@testable import EStargz

@Suite("Reference fixtures")
struct FixtureTests {
    @Test("reads and verifies every reference blob", arguments: Fixtures.blobs)
    func readsAndVerifies(_ item: (blob: String, tar: String)) throws {
        let side = try Fixtures.sidecar(item.blob)
        let blob = try FileBlob(path: Fixtures.url(item.blob).path)
        #expect(blob.size == side.compressedSize)
        let reader = try EStargzReader(
            blob: blob, options: ReaderOptions(expectedTOCDigest: Digest(side.tocDigest)))
        #expect(reader.tocDigest.description == side.tocDigest)
        let report = try reader.verify(
            expectedDiffID: Digest(side.diffID), originalTar: try FileStream(path: Fixtures.url(item.tar).path))
        #expect(report.diffID.description == side.diffID)
        #expect(report.filesCompared > 0 || item.tar == "empty.tar")
    }

    @Test(
        "TOC entries equal the reference's toc.json, entry by entry",
        arguments: ["kitchen-sink.esgz", "kitchen-sink.chunk64k.esgz", "app.prio.esgz", "empty.esgz"])
    func tocMatchesJSON(_ name: String) throws {
        let reader = try EStargzReader(blob: try FileBlob(path: Fixtures.url(name).path))
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url(name + ".toc.json")))
        let top = try #require(json as? [String: Any])
        let want = (top["entries"] as? [[String: Any]]) ?? []
        let got = reader.toc.entries
        #expect(got.count == want.count)
        #expect(reader.toc.version == 1)
        for (g, w) in zip(got, want) {
            #expect(g.name == w["name"] as? String)
            #expect(g.type.description == w["type"] as? String, "\(g.name)")
            #expect(g.size == (w["size"] as? Int64 ?? 0), "\(g.name)")
            #expect(g.modTime.map(RFC3339.format) == w["modtime"] as? String, "\(g.name)")
            #expect(g.linkName == (w["linkName"] as? String ?? ""), "\(g.name)")
            #expect(g.mode == (w["mode"] as? Int64 ?? 0), "\(g.name)")
            #expect(g.uid == (w["uid"] as? Int64 ?? 0), "\(g.name)")
            #expect(g.gid == (w["gid"] as? Int64 ?? 0), "\(g.name)")
            #expect(g.userName == (w["userName"] as? String ?? ""), "\(g.name)")
            #expect(g.groupName == (w["groupName"] as? String ?? ""), "\(g.name)")
            #expect(g.offset == (w["offset"] as? Int64 ?? 0), "\(g.name)")
            #expect(g.innerOffset == (w["innerOffset"] as? Int64 ?? 0), "\(g.name)")
            #expect(g.devMajor == (w["devMajor"] as? Int64 ?? 0), "\(g.name)")
            #expect(g.devMinor == (w["devMinor"] as? Int64 ?? 0), "\(g.name)")
            #expect(g.digest == (w["digest"] as? String ?? ""), "\(g.name)")
            #expect(g.chunkOffset == (w["chunkOffset"] as? Int64 ?? 0), "\(g.name)")
            #expect(g.chunkSize == (w["chunkSize"] as? Int64 ?? 0), "\(g.name)")
            #expect(g.chunkDigest == (w["chunkDigest"] as? String ?? ""), "\(g.name)")
            let wx = (w["xattrs"] as? [String: String] ?? [:]).mapValues { Base64.decode(Array($0.utf8)) ?? [] }
            #expect(g.xattrs == wx, "\(g.name)")
        }
    }

    @Test("every file's bytes equal the tar's, read through random ranges")
    func randomRangesMatchTar() throws {
        let reader = try EStargzReader(blob: try FileBlob(path: Fixtures.url("kitchen-sink.chunk64k.esgz").path))
        let tr = TarReader(try FileStream(path: Fixtures.url("kitchen-sink.tar").path))
        var rng = SplitMix(seed: 42)
        var checked = 0
        while let h = try tr.next() {
            guard h.entryType == .reg, h.size > 0 else { continue }
            let content = try tr.readPayload()
            let id = try #require(reader.lookup(h.name))
            for _ in 0..<8 {
                let off = Int(rng.next() % UInt64(content.count))
                let len = Int(rng.next() % UInt64(200_000)) + 1
                let got = try reader.read(id, at: Int64(off), length: len)
                #expect(got == Array(content[off..<min(content.count, off + len)]), "\(h.name) [\(off), +\(len))")
            }
            checked += 1
        }
        #expect(checked > 3)
    }

    @Test("landmarks: prioritized layer has a prefetch range, the default has none")
    func landmarks() throws {
        let prio = try EStargzReader(blob: try FileBlob(path: Fixtures.url("app.prio.esgz").path))
        guard case .range(let end) = prio.prefetch else {
            Issue.record("expected a prefetch range, got \(prio.prefetch)")
            return
        }
        let app = try #require(prio.lookup("usr/bin/app"))
        #expect(prio.chunks(of: app).allSatisfy { $0.compressedEnd <= end })
        let plain = try EStargzReader(blob: try FileBlob(path: Fixtures.url("kitchen-sink.esgz").path))
        #expect(plain.prefetch == .none)
    }

    @Test("tree: implicit directories, hardlinks share a node, nlink counts")
    func tree() throws {
        let r = try EStargzReader(blob: try FileBlob(path: Fixtures.url("kitchen-sink.esgz").path))
        let toc = r.toc
        var hardlinks = 0
        for e in toc.entries where e.type == .hardlink {
            let link = try #require(toc.lookup(e.name))
            let target = try #require(toc.lookup(e.linkName))
            #expect(link == target)
            #expect(toc.linkCount(target) >= 2)
            hardlinks += 1
        }
        #expect(hardlinks > 0)
        // Every entry's parent exists and lists it.
        for e in toc.entries where e.type != .chunk {
            let id = try #require(toc.lookup(e.name), "\(e.name)")
            if id == toc.root { continue }
            let clean = String(decoding: PathName.clean(Array(e.name.utf8))!, as: UTF8.self)
            let parentPath = clean.split(separator: "/").dropLast().joined(separator: "/")
            let parent = try #require(toc.lookup(parentPath))
            #expect(toc.children(of: parent).contains { $0.name == clean.split(separator: "/").last.map(String.init) })
        }
        // Directory nlink = 2 + subdirectories (explicit or implicit, not the root).
        var walked = 0
        toc.walk { path, node, _ in
            walked += 1
            guard toc.records[node.index].type == .dir, node != toc.root else { return }
            let subdirs = toc.children(of: node).filter { toc.records[$0.node.index].type == .dir }.count
            #expect(toc.linkCount(node) == 2 + subdirs, "\(path)")
        }
        #expect(walked > 10)
    }
}

