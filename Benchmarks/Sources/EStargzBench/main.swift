// SPDX-License-Identifier: Apache-2.0
// Micro-benchmarks of the eStargz read path. Prints numbers and ratios, never asserts.
//   EStargzBench inflate BLOB      chunk decompression throughput, libdeflate vs zlib (MB/s of output per core)
//   EStargzBench toc N             TOC parse time and bytes held per entry for an N-entry TOC
import Compression
import EStargz
import Foundation
import OCI

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func rssBytes() -> Int {
    guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let parts = s.split(separator: " ")
    return (Int(parts[1]) ?? 0) * 4096
}

func inflateBench(_ path: String) throws {
    let blob = try FileBlob(path: path)
    let reader = try EStargzReader(blob: blob, options: ReaderOptions(verifyChunks: false))
    // Collect every chunk with its compressed bytes in memory, so only decompression is timed.
    var work: [(Chunk, [UInt8])] = []
    var outBytes = 0
    for e in reader.toc.entries where e.type == .reg && e.size > 0 {
        guard let id = reader.lookup(e.name) else { continue }
        for c in reader.chunks(of: id) {
            work.append((c, try blob.read(at: c.compressedOffset, length: Int(c.compressedSize))))
            outBytes += Int(c.size)
        }
    }
    print("chunks: \(work.count), \(outBytes >> 20) MiB of output, \(work.reduce(0) { $0 + $1.1.count } >> 20) MiB compressed")
    let dec = GzipDecompressor()
    var best = (Double.infinity, Double.infinity)
    for _ in 0..<3 {
        var t = now()
        for (c, bytes) in work {
            var out = [UInt8](repeating: 0, count: Int(c.size))
            let isize = bytes.withUnsafeBytes { GzipDecompressor.trailerSize($0) } ?? 0
            if isize == Int(c.size) {
                _ = try bytes.withUnsafeBytes { b in try out.withUnsafeMutableBytes { try dec.decompressMember(b, into: $0) } }
            } else {
                var full = [UInt8](repeating: 0, count: isize)
                _ = try bytes.withUnsafeBytes { b in try full.withUnsafeMutableBytes { try dec.decompressMember(b, into: $0) } }
            }
        }
        best.0 = min(best.0, now() - t)
        t = now()
        for (c, bytes) in work {
            var out = [UInt8](repeating: 0, count: Int(c.size))
            try bytes.withUnsafeBytes { b in try out.withUnsafeMutableBytes { try GzipDecompressor.inflate(b, skip: 0, into: $0) } }
        }
        best.1 = min(best.1, now() - t)
    }
    let mb = Double(outBytes) / 1e6
    print(String(format: "libdeflate: %.0f MB/s per core", mb / best.0))
    print(String(format: "zlib:       %.0f MB/s per core", mb / best.1))
    print(String(format: "ratio libdeflate/zlib: %.2fx", best.1 / best.0))
    // The full read path (fetch from the page cache + decompress + sha256 verify), one core.
    let verifying = try EStargzReader(blob: blob)
    let t = now()
    for (c, bytes) in work { _ = try verifying.decompress(c, compressed: bytes) }
    print(String(format: "reader path with verification (libdeflate + sha256): %.0f MB/s per core", mb / (now() - t)))
}

func tocBench(_ n: Int) throws {
    // A TOC shaped like a real /usr: deep paths, 1 dir per 12 files, every file with digests.
    var entries: [TOCEntry] = []
    var offset: Int64 = 100
    var dirs = 0
    for i in 0..<n {
        if i % 12 == 0 {
            var d = TOCEntry(name: "usr/share/locale/pkg\(dirs / 40)/LC_MESSAGES/sub\(dirs)/", type: .dir)
            d.mode = 0o755
            d.modTime = 1_700_000_000
            entries.append(d)
            dirs += 1
            continue
        }
        var e = TOCEntry(name: "usr/share/locale/pkg\((dirs - 1) / 40)/LC_MESSAGES/sub\(dirs - 1)/file-\(i).mo", type: .reg)
        e.size = 4000 + Int64(i % 100)
        e.mode = 0o644
        e.modTime = 1_700_000_000
        e.offset = offset
        offset += 1500
        let d = Digest.sha256(of: Array(String(i).utf8)).description
        e.digest = d
        e.chunkDigest = d
        entries.append(e)
    }
    let json = TOCEncoder.encode(entries)
    print("TOC: \(n) entries, \(json.count) bytes of JSON (\(json.count / n) per entry)")
    var best = Double.infinity
    var toc: TOC? = nil
    for _ in 0..<5 {
        toc = nil
        let t = now()
        toc = try TOC.parse(json: json, payloadEnd: offset + 10, blobSize: offset + 100)
        best = min(best, now() - t)
    }
    print(String(format: "parse + index: %.1f ms (%.0f ns per entry, %.0f MB/s of JSON)", best * 1000,
                 best * 1e9 / Double(n), Double(json.count) / 1e6 / best))
    let held = toc!.memoryFootprint
    print("held by the TOC: \(held) bytes = \(held / toc!.entryCount) bytes per entry (goal < 300)")
    toc = nil
    // RSS cross-check: parse into a fresh TOC and measure resident growth.
    let before = rssBytes()
    var keep: [TOC] = []
    for _ in 0..<4 { keep.append(try TOC.parse(json: json, payloadEnd: offset + 10, blobSize: offset + 100)) }
    let after = rssBytes()
    print("RSS growth for 4 parsed copies: \((after - before) / 4 / n) bytes per entry (includes malloc overhead)")
    _ = keep.count
}

let args = CommandLine.arguments
switch args.count > 1 ? args[1] : "" {
case "inflate": try inflateBench(args[2])
case "toc": try tocBench(Int(args.count > 2 ? args[2] : "50000")!)
default: print("usage: EStargzBench inflate BLOB | toc N")
}
