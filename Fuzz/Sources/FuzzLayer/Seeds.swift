// SPDX-License-Identifier: Apache-2.0
// Seed blobs: tars built here, converted with our own EStargzWriter (through temporary files, once per process).
import EStargz
import Foundation

enum Seeds {
    struct TarBuilder {
        var out: [UInt8] = []
        mutating func add(
            _ type: Character, _ name: String, mode: Int64 = 0o644, content: [UInt8] = [], link: String = "",
            xattrs: [String: [UInt8]] = [:], dev: (Int64, Int64) = (0, 0), uid: Int64 = 0
        ) {
            var h = TarHeader(typeflag: type.asciiValue!, name: name)
            h.mode = mode
            h.uid = uid
            h.gid = uid
            h.modTime = 1_700_000_000
            h.linkName = link
            h.xattrs = xattrs
            (h.devMajor, h.devMinor) = dev
            out += TarWriter.entry(h, content)
        }
        func finish() -> [UInt8] { out + TarWriter.end }
    }

    static func pseudoRandom(_ n: Int, seed: UInt64) -> [UInt8] {
        var r = seed
        return (0..<n).map { _ in
            r = r &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: r >> 33)
        }
    }

    /// The seed tars, each with the chunk size and prioritized files to build it with.
    static func tars() -> [(name: String, tar: [UInt8], chunkSize: Int, prioritized: [String])] {
        var out: [(String, [UInt8], Int, [String])] = []

        // Every entry type, a multi-chunk file, whiteouts, xattrs, links that loop and links that leave the layer.
        var t = TarBuilder()
        t.add("5", "etc/", mode: 0o755)
        t.add("0", "etc/os-release", content: Array("NAME=fuzz\nID=fuzz\n".utf8), xattrs: ["user.a": [1, 2, 3]])
        t.add("0", "etc/.wh.motd")
        t.add("0", "etc/empty")
        t.add("5", "bin/", mode: 0o755)
        t.add("0", "bin/app", mode: 0o755, content: pseudoRandom(20_000, seed: 1),
              xattrs: ["user.x": Array("yes".utf8), "security.capability": [0, 0, 0, 2]])
        t.add("1", "bin/app-hard", mode: 0o755, link: "bin/app")
        t.add("2", "bin/app-sym", mode: 0o777, link: "app")
        t.add("2", "bin/loop-a", mode: 0o777, link: "loop-b")
        t.add("2", "bin/loop-b", mode: 0o777, link: "loop-a")
        t.add("2", "bin/self", mode: 0o777, link: "self")
        t.add("2", "bin/outside", mode: 0o777, link: "../../../../etc/shadow")
        t.add("2", "bin/abs", mode: 0o777, link: "/etc/passwd")
        t.add("5", "var/", mode: 0o755)
        t.add("0", "var/.wh..wh..opq")
        t.add("6", "var/fifo")
        t.add("3", "var/null", mode: 0o666, dev: (1, 3))
        t.add("4", "var/sda", mode: 0o660, dev: (8, 0))
        t.add("0", "var/text", content: Array(String(repeating: "hostile images\n", count: 700).utf8))
        out.append(("kitchen", t.finish(), 4096, ["bin/app", "etc/os-release"]))

        // Deep directories, many small files in one directory (read-around siblings), a hardlink chain.
        t = TarBuilder()
        var path = ""
        for i in 0..<40 {
            path += "d\(i)/"
            t.add("5", path, mode: 0o755)
        }
        t.add("0", path + "leaf", content: Array("deep\n".utf8))
        t.add("5", "many/", mode: 0o755)
        for i in 0..<60 {
            t.add("0", "many/f\(i)", content: pseudoRandom(50 + i * 37, seed: UInt64(i)), uid: Int64(i))
        }
        t.add("1", "many/h1", link: "many/f1")
        t.add("1", "many/h2", link: "many/h1")
        out.append(("deep-many", t.finish(), 4 << 20, []))

        // One bigger file of several chunks, with a landmark-less layout (no prioritized files).
        t = TarBuilder()
        t.add("0", "big", content: pseudoRandom(70_000, seed: 7) + [UInt8](repeating: 0x61, count: 60_000))
        t.add("0", "small", content: [0x0f])
        out.append(("chunks", t.finish(), 16 << 10, []))

        // (SampleLayer.tar() is left out: its 300 KiB blob makes every input derived from it slow.)
        return out
    }

    /// Converts the seed tars to blobs (eStargz, with and without landmarks).
    static func blobs() -> [(name: String, blob: [UInt8])] {
        let dir = (ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp") + "/fuzzlayer-seeds-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var out: [(String, [UInt8])] = []
        for (name, tar, chunk, prio) in tars() {
            let input = "\(dir)/\(name).tar"
            _ = FileManager.default.createFile(atPath: input, contents: Data(tar))
            for landmark in [true, false] {
                var o = WriterOptions(chunkSize: chunk, compressionLevel: 1, prioritizedFiles: landmark ? prio : [], workers: 1)
                o.addLandmark = landmark
                let output = "\(dir)/\(name)-\(landmark).esgz"
                do {
                    _ = try EStargzWriter.build(input: input, output: output, options: o)
                    if let d = FileManager.default.contents(atPath: output) {
                        out.append(("\(name)\(landmark ? "" : "-nolandmark")", [UInt8](d)))
                    }
                } catch {
                    fputs("FuzzLayer: cannot build seed \(name): \(error)\n", stderr)
                }
            }
        }
        return out
    }

    /// Built once per process, for the mutator to fall back on.
    nonisolated(unsafe) static var cache: [[UInt8]] = []
    static func cached() -> [[UInt8]] {
        guard cache.isEmpty else { return cache }
        // The seeds scripts/fuzz.sh wrote (cheaper than building them again in every -fork job).
        if let dir = ProcessInfo.processInfo.environment["FUZZ_LAYER_SEED_DIR"],
            let names = try? FileManager.default.contentsOfDirectory(atPath: dir)
        {
            cache = names.filter { $0.hasPrefix("seed-") }.sorted().compactMap { FileManager.default.contents(atPath: "\(dir)/\($0)") }
                .map { [UInt8]($0) }
        }
        if cache.isEmpty { cache = blobs().map { $0.blob } }
        return cache
    }
}
