// SPDX-License-Identifier: Apache-2.0
import Testing

@testable import Compression

/// Deterministic, partly compressible test data.
func sample(_ n: Int, seed: UInt64 = 7) -> [UInt8] {
    var s = seed
    return (0..<n).map { i in
        if i % 3 == 0 { return UInt8(truncatingIfNeeded: i / 97) }
        s = s &* 6364136223846793005 &+ 1442695040888963407
        return UInt8(truncatingIfNeeded: s >> 40) & 0x3f
    }
}

@Suite("gzip")
struct GzipTests {
    @Test("libdeflate members decode with both libdeflate and zlib", arguments: [0, 1, 6, 9, 12])
    func roundTrip(level: Int) throws {
        let c = GzipMemberCompressor(level: level)
        for n in [0, 1, 511, 4096, 1 << 20] {
            let data = sample(n)
            let member = c.compress(data)
            #expect(GzipDecompressor.trailerSize(member.withUnsafeBytes { $0 }) == n || n == 0 && member.count < 18)
            var out = [UInt8](repeating: 0, count: n)
            let used = try member.withUnsafeBytes { m in
                try out.withUnsafeMutableBytes { try GzipDecompressor().decompressMember(m, into: $0) }
            }
            #expect(used == member.count)
            #expect(out == data)
            var viaZlib = [UInt8](repeating: 0, count: n)
            try member.withUnsafeBytes { m in
                try viaZlib.withUnsafeMutableBytes { try GzipDecompressor.inflate(m, skip: 0, into: $0) }
            }
            #expect(viaZlib == data)
        }
    }

    @Test("streaming inflate crosses member boundaries and honors skip")
    func multiMember() throws {
        let c = GzipMemberCompressor(level: 6)
        let a = sample(70_000, seed: 1), b = sample(50_000, seed: 2)
        let stream = c.compress(a) + c.compress(b)
        let all = a + b
        for (skip, count) in [(0, all.count), (69_990, 20), (70_000, 50_000), (12345, 90_000)] {
            var out = [UInt8](repeating: 0, count: count)
            try stream.withUnsafeBytes { s in
                try out.withUnsafeMutableBytes { try GzipDecompressor.inflate(s, skip: skip, into: $0) }
            }
            #expect(out == Array(all[skip..<(skip + count)]))
        }
        var collected: [UInt8] = []
        try stream.withUnsafeBytes { s in
            _ = try GzipDecompressor.inflateAll(s) { collected.append(contentsOf: $0) }
        }
        #expect(collected == all)
        var first: [UInt8] = []
        let used = try stream.withUnsafeBytes { s in
            try GzipDecompressor.inflateAll(s, multiMember: false) { first.append(contentsOf: $0) }
        }
        #expect(first == a)
        #expect(used == c.compress(a).count)
    }

    @Test("corrupt, truncated and oversized input gives CompressionError")
    func failures() throws {
        let member = GzipMemberCompressor(level: 9).compress(sample(100_000))
        var corrupt = member
        corrupt[member.count / 2] ^= 0xff
        var out = [UInt8](repeating: 0, count: 100_000)
        #expect(throws: CompressionError.self) {
            try corrupt.withUnsafeBytes { m in try out.withUnsafeMutableBytes { _ = try GzipDecompressor().decompressMember(m, into: $0) } }
        }
        #expect(throws: CompressionError.self) {
            try Array(member.prefix(500)).withUnsafeBytes { m in
                try out.withUnsafeMutableBytes { try GzipDecompressor.inflate(m, skip: 0, into: $0) }
            }
        }
        var small = [UInt8](repeating: 0, count: 10)
        #expect(throws: CompressionError(.outputLimitExceeded, "")) {
            try member.withUnsafeBytes { m in try small.withUnsafeMutableBytes { _ = try GzipDecompressor().decompressMember(m, into: $0) } }
        }
        #expect(throws: CompressionError(.outputLimitExceeded, "")) {
            try member.withUnsafeBytes { m in _ = try GzipDecompressor.inflateAll(m, limit: 1000) { _ in } }
        }
        #expect(throws: CompressionError.self) {
            try Array(repeating: UInt8(0x42), count: 100).withUnsafeBytes { m in _ = try GzipDecompressor.inflateAll(m) { _ in } }
        }
    }
}

@Suite("zstd")
struct ZstdTests {
    @Test("frames round-trip; skippable frames are ignored; skip works", arguments: [1, 3, 19])
    func roundTrip(level: Int) throws {
        let c = ZstdFrameCompressor(level: level)
        let a = sample(300_000, seed: 3), b = sample(1000, seed: 4)
        let skippable: [UInt8] = [0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]
        let stream = c.compress(a) + skippable + c.compress(b) + skippable
        let d = ZstdDecompressor()
        var all: [UInt8] = []
        try stream.withUnsafeBytes { s in try d.decompressAll(s) { all.append(contentsOf: $0) } }
        #expect(all == a + b)
        var part = [UInt8](repeating: 0, count: 600)
        try stream.withUnsafeBytes { s in try part.withUnsafeMutableBytes { try d.decompress(s, skip: 299_700, into: $0) } }
        #expect(part == Array((a + b)[299_700..<300_300]))
    }

    @Test("corrupt and oversized zstd gives CompressionError")
    func failures() throws {
        let frame = ZstdFrameCompressor(level: 3).compress(sample(50_000))
        #expect(throws: (any Error).self) {
            try Array(frame.prefix(frame.count / 2)).withUnsafeBytes { s in try ZstdDecompressor().decompressAll(s) { _ in } }
        }
        #expect(throws: (any Error).self) {
            try frame.withUnsafeBytes { s in _ = try ZstdDecompressor().decompressFrame(s, limit: 100) }
        }
        var junk = frame
        junk[0] ^= 0xff
        #expect(throws: (any Error).self) {
            try junk.withUnsafeBytes { s in try ZstdDecompressor().decompressAll(s) { _ in } }
        }
    }
}
