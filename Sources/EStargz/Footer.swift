// SPDX-License-Identifier: Apache-2.0

/// The layer formats a footer can announce.
public enum LayerFormat: String, Sendable, Equatable {
    /// eStargz: gzip members, 51-byte footer.
    case estargz
    /// Legacy stargz (CRFS): gzip members, 47-byte footer, no chunk digests.
    case legacyStargz = "stargz"
    /// zstd:chunked as written by stargz-snapshotter: zstd frames, 40-byte footer payload.
    case zstdChunked = "zstd:chunked"

    /// True for the gzip-based formats.
    public var isGzip: Bool { self != .zstdChunked }
}

/// A parsed blob footer: where the TOC is.
///
/// Byte layouts (see the format spec §2):
/// - eStargz, 51 bytes: a gzip header with FLG=FEXTRA, XLEN=26, subfield `SG` of length 22 holding
///   `%016x` of the TOC offset and `STARGZ`, then an empty stored block and a zero CRC/ISIZE trailer.
///   10 (header) + 2 (XLEN) + 26 (extra) + 5 (stored block) + 8 (trailer) = 51.
/// - legacy stargz, 47 bytes: the same without the 4-byte subfield header (XLEN=22).
/// - zstd:chunked, the last 40 bytes: LE64 TOC offset, compressed length, uncompressed length, type 1,
///   and the magic `GnUlInUx`; they are the payload of a 48-byte skippable frame.
public struct Footer: Sendable, Equatable {
    /// The footer's format.
    public var format: LayerFormat
    /// Blob offset of the TOC (the TOC gzip member, or the compressed zstd TOC bytes).
    public var tocOffset: Int64
    /// Length of the compressed TOC in the blob.
    public var tocCompressedSize: Int64
    /// Length of the TOC JSON (zstd:chunked only; 0 when unknown).
    public var tocUncompressedSize: Int64
    /// The footer's own size in bytes.
    public var size: Int

    /// eStargz footer size.
    public static let estargzSize = 51
    /// Legacy stargz footer size.
    public static let legacySize = 47
    /// zstd:chunked footer payload size (what the reader looks at).
    public static let zstdChunkedSize = 40
    /// zstd:chunked footer as written, including the skippable-frame header.
    public static let zstdChunkedFrameSize = 48
    /// External-TOC eStargz footer size.
    public static let externalTOCSize = 46
    /// The zstd:chunked magic, `GnUlInUx`.
    public static let zstdChunkedMagic: [UInt8] = Array("GnUlInUx".utf8)
    /// The zstd skippable frame magic 0x184D2A50, little-endian.
    public static let skippableFrameMagic: [UInt8] = [0x50, 0x2a, 0x4d, 0x18]

    /// Encodes an eStargz footer pointing at `tocOffset`.
    public static func estargz(tocOffset: Int64) -> [UInt8] {
        var b: [UInt8] = [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 26, 0, 0x53, 0x47, 22, 0]
        b += hex16(tocOffset)
        b += Array("STARGZ".utf8)
        b += [0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]
        return b
    }

    /// Encodes a zstd:chunked footer skippable frame (48 bytes).
    public static func zstdChunked(tocOffset: Int64, compressedSize: Int64, uncompressedSize: Int64) -> [UInt8] {
        var b = skippableFrameMagic + le32(40)
        b += le64(UInt64(tocOffset)) + le64(UInt64(compressedSize)) + le64(UInt64(uncompressedSize)) + le64(1)
        b += zstdChunkedMagic
        return b
    }

    /// Parses the footer at the end of a blob of `blobSize` bytes from its `tail` (the last bytes of the blob,
    /// at least 51 when the blob is that large).
    ///
    /// Tries eStargz, legacy stargz, zstd:chunked and external TOC, in that order, as the reference reader does.
    public static func parse(tail: [UInt8], blobSize: Int64) throws(EStargzError) -> Footer {
        var reasons: [String] = []
        func suffix(_ n: Int) -> ArraySlice<UInt8>? { tail.count >= n ? tail[(tail.count - n)...] : nil }
        if let f = suffix(estargzSize) {
            switch parseGzipFooter(f, legacy: false) {
            case .success(let off): return try checked(.estargz, off, size: estargzSize, blobSize: blobSize)
            case .failure(let r): reasons.append("estargz: \(r)")
            }
        } else {
            reasons.append("estargz: blob of \(blobSize) bytes is shorter than the 51-byte footer")
        }
        if let f = suffix(legacySize) {
            switch parseGzipFooter(f, legacy: true) {
            case .success(let off): return try checked(.legacyStargz, off, size: legacySize, blobSize: blobSize)
            case .failure(let r): reasons.append("legacy: \(r)")
            }
        }
        if let f = suffix(zstdChunkedSize) {
            let a = Array(f)
            if Array(a[32..<40]) == zstdChunkedMagic {
                let off = Int64(bitPattern: readLE64(a, 0))
                let clen = Int64(bitPattern: readLE64(a, 8))
                let ulen = Int64(bitPattern: readLE64(a, 16))
                let typ = readLE64(a, 24)
                guard typ == 1 else {
                    throw EStargzError(.invalidFooter, "zstd:chunked footer has manifest type \(typ), want 1")
                }
                let payloadEnd = blobSize - Int64(zstdChunkedFrameSize)
                guard off >= 8, clen >= 0, ulen >= 0, off <= payloadEnd, clen <= payloadEnd - off else {
                    throw EStargzError(
                        .offsetOutOfRange,
                        "zstd:chunked footer: TOC at \(off) (\(clen) bytes) is outside the \(blobSize)-byte blob")
                }
                return Footer(
                    format: .zstdChunked, tocOffset: off, tocCompressedSize: clen, tocUncompressedSize: ulen,
                    size: zstdChunkedFrameSize)
            }
            reasons.append("zstd:chunked: invalid magic number")
        }
        if let f = suffix(externalTOCSize), isExternalTOCFooter(Array(f)) {
            throw EStargzError(
                .unsupportedFormat, "the blob is eStargz with an external TOC (STARGZEXTERNALTOC), not supported")
        }
        throw EStargzError(.invalidFooter, "no eStargz footer found: " + reasons.joined(separator: "; "))
    }

    private static func checked(_ format: LayerFormat, _ off: Int64, size: Int, blobSize: Int64)
        throws(EStargzError) -> Footer
    {
        let end = blobSize - Int64(size)
        guard off >= 0, off < end else {
            throw EStargzError(
                .offsetOutOfRange,
                "\(format.rawValue) footer: TOC offset \(off) is outside the payload [0, \(end)) of the \(blobSize)-byte blob")
        }
        return Footer(format: format, tocOffset: off, tocCompressedSize: end - off, tocUncompressedSize: 0, size: size)
    }

    private enum ParseResult { case success(Int64), failure(String) }

    private static func parseGzipFooter(_ f: ArraySlice<UInt8>, legacy: Bool) -> ParseResult {
        let b = Array(f)
        guard b[0] == 0x1f, b[1] == 0x8b else { return .failure("gzip: invalid header") }
        guard b[2] == 8 else { return .failure("gzip: unsupported compression method \(b[2])") }
        guard b[3] & 0x04 != 0 else { return .failure("gzip header has no extra field") }
        let xlen = Int(b[10]) | Int(b[11]) << 8
        let extraStart = 12
        guard extraStart + xlen <= b.count else { return .failure("extra field of \(xlen) bytes is too long") }
        let extra = Array(b[extraStart..<(extraStart + xlen)])
        let field: [UInt8]
        if legacy {
            guard xlen == 22 else { return .failure("legacy footer extra field has length \(xlen), want 22") }
            field = extra
        } else {
            guard xlen >= 4 else { return .failure("extra field has length \(xlen), want at least 4") }
            guard extra[0] == 0x53, extra[1] == 0x47 else { return .failure("extra subfield is not \"SG\"") }
            let len = Int(extra[2]) | Int(extra[3]) << 8
            guard len == 22, xlen >= 26 else { return .failure("SG subfield has length \(len), want 22") }
            field = Array(extra[4..<26])
        }
        guard Array(field[16..<22]) == Array("STARGZ".utf8) else { return .failure("magic is not STARGZ") }
        var v: Int64 = 0
        for c in field[0..<16] {
            let d: Int64
            switch c {
            case 48...57: d = Int64(c - 48)
            case 97...102: d = Int64(c - 87)
            case 65...70: d = Int64(c - 55)
            default: return .failure("TOC offset \"\(String(decoding: field[0..<16], as: UTF8.self))\" is not hex")
            }
            if v > (Int64.max - d) / 16 { return .failure("TOC offset overflows") }
            v = v * 16 + d
        }
        return .success(v)
    }

    private static func isExternalTOCFooter(_ b: [UInt8]) -> Bool {
        guard b.count == externalTOCSize, b[0] == 0x1f, b[1] == 0x8b, b[3] & 0x04 != 0 else { return false }
        return b[10] == 21 && b[11] == 0 && b[12] == 0x53 && b[13] == 0x47
            && Array(b[16..<33]) == Array("STARGZEXTERNALTOC".utf8)
    }
}

func hex16(_ v: Int64) -> [UInt8] {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8](repeating: 0x30, count: 16)
    var x = UInt64(bitPattern: v)
    for i in stride(from: 15, through: 0, by: -1) {
        out[i] = digits[Int(x & 0xf)]
        x >>= 4
    }
    return out
}

func le32(_ v: UInt32) -> [UInt8] { [UInt8(v & 0xff), UInt8(v >> 8 & 0xff), UInt8(v >> 16 & 0xff), UInt8(v >> 24)] }
func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
func readLE64(_ b: [UInt8], _ at: Int) -> UInt64 {
    var v: UInt64 = 0
    for i in 0..<8 { v |= UInt64(b[at + i]) << (8 * i) }
    return v
}
