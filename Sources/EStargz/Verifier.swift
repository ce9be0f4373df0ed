// SPDX-License-Identifier: Apache-2.0
public import OCI

/// A sequential stream over a ``RandomAccessBlob`` range, read in windows.
public final class BlobStream: ByteStream {
    private let blob: any RandomAccessBlob
    private var pos: Int64
    private let end: Int64
    private var window: [UInt8] = []
    private var windowPos = 0
    /// The window size for each read of the blob.
    public let windowSize: Int

    /// Streams `blob[start..<end]`.
    public init(_ blob: any RandomAccessBlob, from start: Int64 = 0, to end: Int64? = nil, windowSize: Int = 4 << 20) {
        self.blob = blob
        self.pos = start
        self.end = end ?? blob.size
        self.windowSize = windowSize
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if windowPos == window.count {
            let n = Int(min(Int64(windowSize), end - pos))
            if n <= 0 { return 0 }
            window = try blob.read(at: pos, length: n)
            pos += Int64(n)
            windowPos = 0
        }
        let n = min(buffer.count, window.count - windowPos)
        window.withUnsafeBytes { w in
            buffer.baseAddress!.copyMemory(from: w.baseAddress! + windowPos, byteCount: n)
        }
        windowPos += n
        return n
    }
}

/// What a full verification found.
public struct VerificationReport: Sendable, Equatable {
    /// The layer format.
    public var format: LayerFormat
    /// sha256 of the TOC JSON.
    public var tocDigest: Digest
    /// sha256 of the whole uncompressed stream.
    public var diffID: Digest
    /// Length of the uncompressed stream.
    public var uncompressedSize: Int64
    /// Chunks whose digest was checked.
    public var chunksVerified: Int
    /// Regular files compared with a reference tar (0 without one).
    public var filesCompared: Int
}

extension EStargzReader {
    /// Computes the DiffID (sha256 of the uncompressed stream) and the uncompressed size.
    ///
    /// For gzip this covers every member, the TOC entry included; for zstd:chunked the skippable frames
    /// (TOC, footer) are not part of it.
    public func computeDiffID() throws -> (diffID: Digest, uncompressedSize: Int64) {
        let raw = BlobStream(blob)
        let stream: any ByteStream = format.isGzip ? try GzipDecodingStream(raw) : ZstdDecodingStream(raw)
        var hasher = SHA256Hasher()
        var total: Int64 = 0
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buf.deallocate() }
        do {
            while true {
                let n = try stream.read(into: buf)
                if n == 0 { break }
                hasher.update(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
                total += Int64(n)
            }
        } catch let e as EStargzError {
            throw e
        } catch {
            throw EStargzError(.corruptData, "the blob does not decompress as a whole (after \(total) bytes)", cause: error)
        }
        return (hasher.finalize(), total)
    }

    /// Checks every chunk of every regular file against its digest.
    ///
    /// - Parameter progress: called with (chunks done, chunks total).
    /// - Returns: the number of chunks checked.
    public func verifyAllChunks(progress: ((Int, Int) -> Void)? = nil) throws -> Int {
        var all: [Chunk] = []
        for k in 0..<toc.entryCount where toc.records[k].type == .reg {
            all += chunks(of: EntryID(k))
        }
        var done = 0
        for c in all {
            let data = try chunkData(c)
            try verify(c, data)
            done += 1
            progress?(done, all.count)
        }
        return done
    }

    /// Verifies the TOC digest (against `expectedTOCDigest`), every chunk digest, and the DiffID
    /// (against `expectedDiffID`), and optionally compares every entry with the original tar.
    public func verify(
        expectedTOCDigest: Digest? = nil, expectedDiffID: Digest? = nil, originalTar: (any ByteStream)? = nil,
        progress: ((Int, Int) -> Void)? = nil
    ) throws -> VerificationReport {
        if let want = expectedTOCDigest, want != tocDigest {
            throw EStargzError(.tocDigestMismatch, "invalid TOC JSON \"\(tocDigest)\"; want \"\(want)\"")
        }
        let n = try verifyAllChunks(progress: progress)
        let (diffID, size) = try computeDiffID()
        if let want = expectedDiffID, want != diffID {
            throw EStargzError(.diffIDMismatch, "DiffID is \(diffID); want \(want)")
        }
        var files = 0
        if let tar = originalTar { files = try compare(withTar: tar) }
        return VerificationReport(
            format: format, tocDigest: tocDigest, diffID: diffID, uncompressedSize: size, chunksVerified: n,
            filesCompared: files)
    }

    /// Compares the layer with the tar it was made from: every entry exists with the same type, mode,
    /// owner, link target, device numbers and xattrs, and every regular file has the same bytes.
    ///
    /// - Returns: the number of regular files compared.
    public func compare(withTar stream: any ByteStream) throws -> Int {
        let tr = TarReader(stream)
        struct Expect {
            var header: TarHeader
            var digest: Digest?
        }
        var expected: [String: Expect] = [:]
        var order: [String] = []
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buf.deallocate() }
        while let h = try tr.next() {
            guard let clean = PathName.clean(Array(h.name.utf8)) else { continue }
            let name = String(decoding: clean, as: UTF8.self)
            if name.isEmpty || name == ReservedName.toc { continue }
            var digest: Digest? = nil
            if h.entryType == .reg {
                var hasher = SHA256Hasher()
                while true {
                    let n = try tr.read(into: buf)
                    if n == 0 { break }
                    hasher.update(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
                }
                digest = hasher.finalize()
            }
            if expected[name] == nil { order.append(name) }
            expected[name] = Expect(header: h, digest: digest)
        }
        var files = 0
        for name in order {
            guard let e = expected[name] else { continue }
            let h = e.header
            guard let raw = toc.find(Array(name.utf8)) else {
                throw EStargzError(.contentMismatch, "\"\(name)\" is in the tar but not in the layer")
            }
            let rec = toc.records[Int(raw)]
            let want = h.entryType
            guard rec.type == want else {
                throw EStargzError(
                    .contentMismatch, "\"\(name)\": type is \(rec.type) in the layer, \(want.map { "\($0)" } ?? "?") in the tar")
            }
            if rec.type == .hardlink {
                guard toc.string(rec.linkName) == h.linkName else {
                    throw EStargzError(.contentMismatch, "\"\(name)\": hardlink target differs")
                }
                continue
            }
            guard Int64(rec.mode) & 0o7777 == h.mode & 0o7777 else {
                throw EStargzError(
                    .contentMismatch, "\"\(name)\": mode is \(String(rec.mode & 0o7777, radix: 8)) in the layer, \(String(h.mode & 0o7777, radix: 8)) in the tar")
            }
            guard Int64(rec.uid) == h.uid, Int64(rec.gid) == h.gid else {
                throw EStargzError(.contentMismatch, "\"\(name)\": owner is \(rec.uid):\(rec.gid) in the layer, \(h.uid):\(h.gid) in the tar")
            }
            if rec.type == .symlink && toc.string(rec.linkName) != h.linkName {
                throw EStargzError(.contentMismatch, "\"\(name)\": symlink target differs")
            }
            if (rec.type == .char || rec.type == .block)
                && (Int64(rec.devMajor) != h.devMajor || Int64(rec.devMinor) != h.devMinor)
            {
                throw EStargzError(.contentMismatch, "\"\(name)\": device numbers differ")
            }
            let xattrs = rec.xattrs >= 0 ? toc.xattrTable[Int(rec.xattrs)] : [:]
            guard xattrs == h.xattrs else { throw EStargzError(.contentMismatch, "\"\(name)\": xattrs differ") }
            if rec.type == .reg {
                guard rec.size == h.size else {
                    throw EStargzError(.contentMismatch, "\"\(name)\": size is \(rec.size) in the layer, \(h.size) in the tar")
                }
                var hasher = SHA256Hasher()
                for c in chunks(of: EntryID(raw)) { hasher.update(try chunkData(c)) }
                guard hasher.finalize() == e.digest else {
                    throw EStargzError(.contentMismatch, "\"\(name)\": content differs from the tar")
                }
                files += 1
            }
        }
        return files
    }
}
