// SPDX-License-Identifier: Apache-2.0
#if canImport(Glibc)
@preconcurrency import Glibc
#endif
internal import Compression
internal import Dispatch
internal import Synchronization
public import OCI

/// Options for building an eStargz (or zstd:chunked) blob from a tar.
public struct WriterOptions: Sendable, Equatable {
    /// The compression of the output.
    public enum Compression: String, Sendable, Equatable {
        /// gzip members (eStargz).
        case gzip
        /// zstd frames (zstd:chunked, stargz-snapshotter flavour).
        case zstd
    }

    /// The default chunk size, 4 MiB.
    public static let defaultChunkSize = 4 << 20

    /// The largest chunk of a file in one member (default 4 MiB; 0 or less means the default).
    public var chunkSize: Int
    /// Compression level: gzip 0...9 (default 9, as the reference converter), zstd 1...22 (default 3).
    public var compressionLevel: Int
    /// Paths moved to the front of the layer, followed by `.prefetch.landmark`.
    public var prioritizedFiles: [String]
    /// The output compression.
    public var compression: Compression
    /// Parallel compression workers (default: all cores). The output does not depend on it.
    public var workers: Int
    /// Where to keep a decompressed copy of a compressed input tar (default `$TMPDIR` or `/var/tmp`).
    public var temporaryDirectory: String?
    /// Whether to add the landmark file (`.prefetch.landmark` or `.no.prefetch.landmark`). Off gives the
    /// layout of upstream's low-level `Writer.AppendTar`, without reordering either.
    public var addLandmark = true

    /// Creates options.
    public init(
        chunkSize: Int = WriterOptions.defaultChunkSize, compressionLevel: Int? = nil, prioritizedFiles: [String] = [],
        compression: Compression = .gzip, workers: Int? = nil, temporaryDirectory: String? = nil
    ) {
        self.chunkSize = chunkSize <= 0 ? WriterOptions.defaultChunkSize : chunkSize
        self.compressionLevel = compressionLevel ?? (compression == .gzip ? 9 : 3)
        self.prioritizedFiles = prioritizedFiles
        self.compression = compression
        self.workers = max(1, workers ?? System.coreCount)
        self.temporaryDirectory = temporaryDirectory
    }
}

/// What a build produced: the digests and sizes a converter writes into the manifest and config.
public struct BuildResult: Sendable, Equatable {
    /// sha256 of the TOC JSON (`containerd.io/snapshot/stargz/toc.digest`).
    public var tocDigest: Digest
    /// sha256 of the uncompressed stream (the config's `rootfs.diff_ids` entry).
    public var diffID: Digest
    /// Length of the uncompressed stream (`io.containers.estargz.uncompressed-size`).
    public var uncompressedSize: Int64
    /// sha256 of the blob (the layer descriptor's digest).
    public var blobDigest: Digest
    /// Length of the blob.
    public var compressedSize: Int64
    /// Number of TOC entries (chunks included).
    public var entryCount: Int
    /// The output format.
    public var compression: WriterOptions.Compression
    /// zstd:chunked only: sha256 of the compressed TOC frame and its position `offset:clen:ulen:1`.
    public var zstdManifestChecksum: Digest?
    /// zstd:chunked only: the TOC position annotation value.
    public var zstdManifestPosition: String?
    /// Prioritized paths that were not in the tar.
    public var missingPrioritizedFiles: [String]

    /// The layer descriptor annotations a converter sets.
    public var annotations: [String: String] {
        var a = [
            AnnotationKey.tocDigest: tocDigest.description,
            AnnotationKey.uncompressedSize: String(uncompressedSize),
        ]
        if let c = zstdManifestChecksum { a[AnnotationKey.zstdChunkedManifestChecksum] = c.description }
        if let p = zstdManifestPosition { a[AnnotationKey.zstdChunkedManifestPosition] = p }
        return a
    }

    /// The layer media type.
    public var mediaType: String { compression == .gzip ? MediaType.ociLayerGzip : MediaType.ociLayerZstd }
}

/// Machine facts.
public enum System {
    /// The number of online CPUs.
    public static var coreCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
}

/// Builds eStargz and zstd:chunked blobs from tar streams.
///
/// Layout (format spec §1.2): a new member starts at byte 0, at every non-empty regular file's payload,
/// at every further chunk, at the TOC and at the footer. Tar headers travel in the member of the previous
/// payload. Members are compressed in parallel; the output does not depend on the number of workers.
public enum EStargzWriter {
    /// Progress: bytes of input tar processed, of the total.
    public typealias Progress = (_ done: Int64, _ total: Int64) -> Void

    /// Converts the tar (plain, gzip or zstd compressed) at `input` into a blob at `output`.
    public static func build(
        input: String, output: String, options: WriterOptions = WriterOptions(), progress: Progress? = nil
    ) throws -> BuildResult {
        let tar = try PlainTar.open(input, temporaryDirectory: options.temporaryDirectory)
        defer { tar.cleanUp() }
        let out = try OutputFile(path: output)
        do {
            var builder = Builder(tar: tar, out: out, options: options, progress: progress)
            let r = try builder.run()
            try out.finish()
            return r
        } catch {
            out.abort()
            throw error
        }
    }
}

/// The input tar as a plain (uncompressed) file that can be read at any offset.
final class PlainTar {
    let blob: FileBlob
    let path: String
    let temporary: Bool

    private init(path: String, temporary: Bool) throws {
        self.path = path
        self.temporary = temporary
        self.blob = try FileBlob(path: path)
    }

    func cleanUp() { if temporary { unlink(path) } }

    /// Opens `input`; a gzip or zstd compressed tar (or standard input) is first decompressed to a temporary file.
    static func open(_ input: String, temporaryDirectory: String?) throws -> PlainTar {
        if input != "-" {
            let f = try FileBlob(path: input)
            let magic = try f.read(at: 0, length: Int(min(4, f.size)))
            let gzip = magic.starts(with: [0x1f, 0x8b, 0x08])
            let zstd = magic.starts(with: [0x28, 0xb5, 0x2f, 0xfd])
            if !gzip && !zstd { return try PlainTar(path: input, temporary: false) }
        }
        let dir = temporaryDirectory ?? ProcessEnv.get("TMPDIR") ?? "/var/tmp"
        var template = Array("\(dir)/stargz-input-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw EStargzError(.io, "cannot create a temporary file in \(dir): \(String(cString: strerror(errno)))")
        }
        let tmpPath = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        do {
            let raw = try FileStream(path: input)
            var head = [UInt8](repeating: 0, count: 4)
            let n = try head.withUnsafeMutableBytes { try raw.read(into: $0) }
            head.removeLast(4 - n)
            let rest = PrefixedStream(prefix: head, rest: raw)
            let stream: any ByteStream
            if head.starts(with: [0x1f, 0x8b, 0x08]) {
                stream = try GzipDecodingStream(rest)
            } else if head.starts(with: [0x28, 0xb5, 0x2f, 0xfd]) {
                stream = ZstdDecodingStream(rest)
            } else {
                stream = rest
            }
            let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
            defer { buf.deallocate() }
            while true {
                let n = try stream.read(into: buf)
                if n == 0 { break }
                try writeAll(fd, UnsafeRawBufferPointer(rebasing: buf[0..<n]), path: tmpPath)
            }
            close(fd)
            return try PlainTar(path: tmpPath, temporary: true)
        } catch {
            close(fd)
            unlink(tmpPath)
            if let e = error as? EStargzError { throw e }
            throw EStargzError(.corruptData, "cannot decompress the input \(input)", cause: error)
        }
    }
}

/// Replays a few bytes before the rest of a stream.
final class PrefixedStream: ByteStream {
    private var prefix: [UInt8]
    private let rest: any ByteStream
    init(prefix: [UInt8], rest: any ByteStream) {
        self.prefix = prefix
        self.rest = rest
    }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if !prefix.isEmpty {
            let n = min(prefix.count, buffer.count)
            prefix.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: n) }
            prefix.removeFirst(n)
            return n
        }
        return try rest.read(into: buffer)
    }
}

enum ProcessEnv {
    static func get(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }
}

func writeAll(_ fd: Int32, _ buf: UnsafeRawBufferPointer, path: String) throws {
    var done = 0
    while done < buf.count {
        let n = write(fd, buf.baseAddress! + done, buf.count - done)
        if n < 0 {
            if errno == EINTR { continue }
            throw EStargzError(.io, "write to \(path) failed: \(String(cString: strerror(errno)))")
        }
        done += n
    }
}

/// The output, written to `path.tmp-XXXX` and renamed into place on success.
final class OutputFile {
    let path: String
    let tmpPath: String
    let fd: Int32
    private(set) var written: Int64 = 0
    var hasher = SHA256Hasher()

    init(path: String) throws {
        self.path = path
        if path == "-" {
            tmpPath = "-"
            fd = dup(1)
            return
        }
        var template = Array("\(path).tmp-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw EStargzError(.io, "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        self.fd = fd
        tmpPath = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        fchmod(fd, 0o644)
    }

    func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { b in
            hasher.update(b)
            try writeAll(fd, b, path: path)
        }
        written += Int64(bytes.count)
    }

    func finish() throws {
        if tmpPath == "-" {
            close(fd)
            return
        }
        guard fsync(fd) == 0 || errno == EINVAL else {
            throw EStargzError(.io, "fsync of \(path) failed: \(String(cString: strerror(errno)))")
        }
        close(fd)
        guard rename(tmpPath, path) == 0 else {
            let e = errno
            unlink(tmpPath)
            throw EStargzError(.io, "cannot rename \(tmpPath) to \(path): \(String(cString: strerror(e)))")
        }
    }

    func abort() {
        close(fd)
        if tmpPath != "-" { unlink(tmpPath) }
    }
}

/// One input entry kept for reordering: its header and where its payload is in the plain tar.
struct InputEntry {
    var header: TarHeader
    var cleanName: String
    var payloadOffset: Int64
    var removed = false
}

/// A member's uncompressed bytes, the TOC entries whose offset is this member's start, and its output.
final class Member: @unchecked Sendable {
    // Sendable: each member is mutated by exactly one worker between the batch hand-off points, which are
    // separated by DispatchQueue.concurrentPerform's join.
    var raw: [UInt8] = []
    var compressed: [UInt8] = []
    var tocIndices: [Int] = []
}

struct Builder {
    let tar: PlainTar
    let out: OutputFile
    let options: WriterOptions
    let progress: EStargzWriter.Progress?

    var toc: [TOCEntry] = []
    var diffHasher = SHA256Hasher()
    var uncompressedSize: Int64 = 0
    var batch: [Member] = []
    var batchBytes = 0
    var current = Member()
    var lastUser: [Int64: String] = [:]
    var lastGroup: [Int64: String] = [:]
    var inputDone: Int64 = 0
    let batchLimit = 64 << 20

    init(tar: PlainTar, out: OutputFile, options: WriterOptions, progress: EStargzWriter.Progress?) {
        self.tar = tar
        self.out = out
        self.options = options
        self.progress = progress
    }

    // MARK: Reading and ordering the input

    func readEntries() throws -> (entries: [InputEntry], missing: [String]) {
        let reader = TarReader(try FileStream(path: tar.path))
        var entries: [InputEntry] = []
        var index: [String: Int] = [:]
        while let h = try reader.next() {
            let raw = Array(h.name.utf8)
            if let why = PathName.unsafeReason(raw) {
                throw EStargzError(.unsafePath, "input tar entry \"\(h.name)\" \(why)")
            }
            guard h.entryType != nil else {
                throw EStargzError(
                    .invalidTar,
                    "unsupported input tar entry \"\(h.name)\" of type '\(Character(Unicode.Scalar(h.typeflag)))'")
            }
            if h.entryType == .hardlink, let why = PathName.unsafeReason(Array(h.linkName.utf8)) {
                throw EStargzError(.unsafePath, "input tar hardlink \"\(h.name)\" target \"\(h.linkName)\" \(why)")
            }
            let clean = String(decoding: PathName.clean(raw) ?? [], as: UTF8.self)
            if clean == ReservedName.toc || clean == ReservedName.prefetchLandmark
                || clean == ReservedName.noPrefetchLandmark
            {
                continue
            }
            if let old = index[clean] { entries[old].removed = true }
            index[clean] = entries.count
            entries.append(InputEntry(header: h, cleanName: clean, payloadOffset: reader.payloadOffset))
        }
        // Prioritized files first, then the landmark, then the rest in order.
        var order: [Int] = []
        var moved = Set<Int>()
        var missing: [String] = []
        func move(_ name: String, depth: Int) -> Bool {
            guard depth < 256 else { return false }
            let clean = String(decoding: PathName.clean(Array(name.utf8)) ?? [], as: UTF8.self)
            if clean.isEmpty {
                if let i = index[""], !moved.contains(i), !entries[i].removed {
                    order.append(i)
                    moved.insert(i)
                }
                return true
            }
            guard let i = index[clean] else { return false }
            let parent = clean.split(separator: "/").dropLast().joined(separator: "/")
            _ = move(parent, depth: depth + 1)  // missing parents are implicit: not an error
            if entries[i].header.entryType == .hardlink && !moved.contains(i) {
                _ = move(entries[i].header.linkName, depth: depth + 1)
            }
            if !moved.contains(i) {
                order.append(i)
                moved.insert(i)
            }
            return true
        }
        guard options.addLandmark else { return (entries.filter { !$0.removed }, []) }
        for p in options.prioritizedFiles where !move(p, depth: 0) { missing.append(p) }
        var landmark = TarHeader(
            typeflag: UInt8(ascii: "0"),
            name: options.prioritizedFiles.isEmpty ? ReservedName.noPrefetchLandmark : ReservedName.prefetchLandmark)
        landmark.size = 1
        var result = order.map { entries[$0] }
        result.append(InputEntry(header: landmark, cleanName: landmark.name, payloadOffset: -1))
        for (i, e) in entries.enumerated() where !e.removed && !moved.contains(i) { result.append(e) }
        return (result, missing)
    }

    // MARK: Building

    mutating func run() throws -> BuildResult {
        let (entries, missing) = try readEntries()
        let total = tar.blob.size
        let chunkSize = Int64(options.chunkSize)
        var payload = [UInt8]()
        for e in entries {
            var h = e.header
            let type = h.entryType!
            var entry = TOCEntry(name: h.name, type: type)
            entry.mode = h.mode
            entry.uid = h.uid
            entry.gid = h.gid
            if !h.userName.isEmpty && lastUser[h.uid] != h.userName {
                entry.userName = h.userName
                lastUser[h.uid] = h.userName
            }
            if !h.groupName.isEmpty && lastGroup[h.gid] != h.groupName {
                entry.groupName = h.groupName
                lastGroup[h.gid] = h.groupName
            }
            entry.modTime = h.modTime == 0 ? nil : h.modTime
            entry.xattrs = h.xattrs
            switch type {
            case .hardlink, .symlink: entry.linkName = h.linkName
            case .reg: entry.size = h.size
            case .char, .block:
                entry.devMajor = h.devMajor
                entry.devMinor = h.devMinor
            default: break
            }
            if type != .reg { h.size = 0 }
            append(TarWriter.header(h))
            guard type == .reg else {
                toc.append(entry)
                continue
            }
            var fileHasher = SHA256Hasher()
            var written: Int64 = 0
            let regIndex = toc.count
            while written < h.size {
                try closeMember()
                var size = chunkSize
                let remain = h.size - written
                if remain < size {
                    size = remain
                } else {
                    entry.chunkSize = size
                }
                entry.chunkOffset = written
                if e.payloadOffset < 0 {
                    payload = [ReservedName.landmarkContent]
                } else {
                    payload = try tar.blob.read(at: e.payloadOffset + written, length: Int(size))
                }
                if size == h.size {
                    // A single chunk: its digest is the file's digest; hash once.
                    entry.chunkDigest = Digest.sha256(of: payload).description
                } else {
                    fileHasher.update(payload)
                    entry.chunkDigest = Digest.sha256(of: payload).description
                }
                current.tocIndices.append(toc.count)
                append(payload)
                toc.append(entry)
                written += size
                entry = TOCEntry(name: h.name, type: .chunk)
            }
            if h.size == 0 { toc.append(entry) }
            if h.size > 0 && toc.count - regIndex == 1 {
                toc[regIndex].digest = toc[regIndex].chunkDigest
            } else {
                toc[regIndex].digest = fileHasher.finalize().description
            }
            let pad = Int((512 - h.size % 512) % 512)
            if pad > 0 { append([UInt8](repeating: 0, count: pad)) }
            if e.payloadOffset >= 0 {
                inputDone = e.payloadOffset + h.size
                progress?(inputDone, total)
            }
        }
        try closeMember()
        try flushBatch()
        return try finishTOC(missing: missing)
    }

    mutating func append(_ bytes: [UInt8]) {
        current.raw += bytes
    }

    mutating func closeMember() throws {
        guard !current.raw.isEmpty else { return }
        current.raw.withUnsafeBytes { diffHasher.update($0) }
        uncompressedSize += Int64(current.raw.count)
        batchBytes += current.raw.count
        batch.append(current)
        current = Member()
        if batchBytes >= batchLimit { try flushBatch() }
    }

    /// Compresses the pending members on all workers, then writes them in order and fills in TOC offsets.
    mutating func flushBatch() throws {
        guard !batch.isEmpty else { return }
        let members = batch
        let next = Atomic<Int>(0)
        let workers = min(options.workers, members.count)
        let level = options.compressionLevel
        let gzip = options.compression == .gzip
        // Largest first, for a better balance between workers.
        let order = members.indices.sorted { members[$0].raw.count > members[$1].raw.count }
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            let gz = gzip ? GzipMemberCompressor(level: level) : nil
            let zs = gzip ? nil : ZstdFrameCompressor(level: level)
            while true {
                let i = next.add(1, ordering: .relaxed).oldValue
                if i >= order.count { break }
                let m = members[order[i]]
                m.raw.withUnsafeBytes { raw in
                    if let gz { gz.compress(raw, appendingTo: &m.compressed) } else { zs!.compress(raw, appendingTo: &m.compressed) }
                }
                m.raw = []
            }
        }
        for m in members {
            for t in m.tocIndices { toc[t].offset = out.written }
            try out.write(m.compressed)
        }
        batch.removeAll()
        batchBytes = 0
    }

    mutating func finishTOC(missing: [String]) throws -> BuildResult {
        let json = TOCEncoder.encode(toc)
        let tocDigest = Digest.sha256(of: json)
        let tocOffset = out.written
        var manifestChecksum: Digest? = nil
        var manifestPosition: String? = nil
        switch options.compression {
        case .gzip:
            let raw = TarWriter.entry(TarHeader(typeflag: UInt8(ascii: "0"), name: ReservedName.toc), json) + TarWriter.end
            raw.withUnsafeBytes { diffHasher.update($0) }
            uncompressedSize += Int64(raw.count)
            let gz = GzipMemberCompressor(level: options.compressionLevel)
            try out.write(gz.compress(raw))
            try out.write(Footer.estargz(tocOffset: tocOffset))
        case .zstd:
            let frame = ZstdFrameCompressor(level: options.compressionLevel).compress(json)
            try out.write(Footer.skippableFrameMagic + le32(UInt32(frame.count)))
            let payloadOffset = out.written
            try out.write(frame)
            try out.write(
                Footer.zstdChunked(
                    tocOffset: payloadOffset, compressedSize: Int64(frame.count), uncompressedSize: Int64(json.count)))
            manifestChecksum = Digest.sha256(of: frame)
            manifestPosition = "\(payloadOffset):\(frame.count):\(json.count):1"
        }
        progress?(tar.blob.size, tar.blob.size)
        return BuildResult(
            tocDigest: tocDigest, diffID: diffHasher.finalize(), uncompressedSize: uncompressedSize,
            blobDigest: out.hasher.finalize(), compressedSize: out.written, entryCount: toc.count,
            compression: options.compression, zstdManifestChecksum: manifestChecksum,
            zstdManifestPosition: manifestPosition, missingPrioritizedFiles: missing)
    }
}
