// SPDX-License-Identifier: Apache-2.0
import Foundation
import NIOCore
import OCI
import Testing

@testable import Registry

/// Blob files, read and written on NIO's blocking-I/O pool: the bytes, and errors that name the path.
@Suite("Blob files")
struct BlobFileTests {
    static func pattern(_ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 11) } }

    @Test("written at offsets, read back at offsets, sized")
    func roundTrip() async throws {
        try await withTempDir { dir in
            let path = dir + "/blob"
            let bytes = Self.pattern(3 << 20)
            let f = try await BlobFile.create(path)
            try await f.write(ByteBuffer(bytes: bytes[0..<1000]), at: 0)
            try await f.write(ByteBuffer(bytes: bytes[1000...]), at: 1000)
            try await f.write(ByteBuffer(), at: 99)
            try await f.closeFile()
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(bytes))
            #expect(try await BlobFile.size(of: path) == Int64(bytes.count))
            let mid = try await BlobFile.read(path, at: 12_345, count: 2 << 20)
            #expect(Array(mid.readableBytesView) == Array(bytes[12_345..<(12_345 + (2 << 20))]))
            let tail = try await BlobFile.read(path, at: Int64(bytes.count - 10), count: 100)
            #expect(Array(tail.readableBytesView) == Array(bytes.suffix(10)))
            #expect(try await BlobFile.read(path, at: Int64(bytes.count) + 5, count: 100).readableBytes == 0)
            // Creating it again empties it.
            try await BlobFile.create(path).closeFile()
            #expect(try await BlobFile.size(of: path) == 0)
        }
    }

    @Test("a path that cannot be used is a RegistryError naming it, with the system's reason")
    func errorsNameThePath() async throws {
        try await withTempDir { dir in
            let missing = dir + "/no/such/dir/blob"
            for op in ["create", "size", "read"] {
                do {
                    switch op {
                    case "create": _ = try await BlobFile.create(missing)
                    case "size": _ = try await BlobFile.size(of: missing)
                    default: _ = try await BlobFile.read(missing, at: 0, count: 1)
                    }
                    Issue.record("\(op) of a missing path succeeded")
                } catch let e as RegistryError {
                    #expect(e.code == .invalidConfiguration)
                    #expect(e.message.contains(missing), "\(op): \(e)")
                    #expect(e.cause is IOError, "\(op): \(e)")
                }
            }
        }
    }

    @Test("a file range as a request body: 1 MiB pieces, the exact bytes, again on a second pass")
    func fileChunks() async throws {
        try await withTempDir { dir in
            let path = dir + "/blob"
            let bytes = Self.pattern((5 << 19) + 17)
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let chunks = FileChunks(path: path, offset: 100, length: Int64(bytes.count - 200))
            for _ in 0..<2 {
                var got: [UInt8] = []
                var sizes: [Int] = []
                for try await piece in chunks {
                    sizes.append(piece.readableBytes)
                    got.append(contentsOf: piece.readableBytesView)
                }
                #expect(got == Array(bytes[100..<(bytes.count - 100)]))
                #expect(sizes.dropLast().allSatisfy { $0 == 1 << 20 })
            }
            // A file shorter than the range ends the body early (the HTTP client then refuses the short body).
            var short = 0
            for try await piece in FileChunks(path: path, offset: Int64(bytes.count - 5), length: 100) {
                short += piece.readableBytes
            }
            #expect(short == 5)
            // A missing file fails the body with the path named.
            await #expect(throws: RegistryError.self) {
                for try await _ in FileChunks(path: dir + "/gone", offset: 0, length: 1) {}
            }
        }
    }

    @Test("downloadBlob to a path that cannot be written fails before any request, naming the path")
    func downloadToMissingDirectory() async throws {
        let c = RegistryClient(configuration: RegistryConfiguration(maxRetries: 0))
        let path = "/nonexistent-\(UUID().uuidString)/blob"
        let d = Descriptor(mediaType: MediaType.ociLayerGzip, digest: Digest.sha256(of: [1]), size: 1)
        do {
            try await c.downloadBlob(try Reference("127.0.0.1:9/none/img:v1"), d, to: path)
            Issue.record("downloaded into a missing directory")
        } catch let e as RegistryError {
            #expect(e.code == .invalidConfiguration)
            #expect(e.message.contains(path))
        }
        try await c.shutdown()
    }
}
