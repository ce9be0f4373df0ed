// SPDX-License-Identifier: Apache-2.0

/// The `type` of a TOC entry.
public enum EntryType: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case dir, reg, symlink, hardlink, char, block, fifo, chunk

    /// The JSON spelling.
    public var description: String {
        switch self {
        case .dir: "dir"
        case .reg: "reg"
        case .symlink: "symlink"
        case .hardlink: "hardlink"
        case .char: "char"
        case .block: "block"
        case .fifo: "fifo"
        case .chunk: "chunk"
        }
    }

    /// Parses the JSON spelling.
    public init?(_ s: String) {
        guard let t = EntryType.allCases.first(where: { $0.description == s }) else { return nil }
        self = t
    }
}

/// One entry of a TOC (`stargz.index.json`), with every field of the format.
///
/// Zero values mean "absent", as in the JSON (which omits them).
public struct TOCEntry: Sendable, Equatable, CustomStringConvertible {
    /// The tar path as stored (`bin/`, `./etc/passwd`).
    public var name: String
    /// The entry type.
    public var type: EntryType
    /// Size of a regular file's whole content.
    public var size: Int64 = 0
    /// Modification time in whole seconds since the Unix epoch (UTC); nil when absent.
    public var modTime: Int64? = nil
    /// Target of a symlink or hardlink.
    public var linkName: String = ""
    /// The tar header mode (permission bits plus possibly S_IFMT bits).
    public var mode: Int64 = 0
    /// Owner id.
    public var uid: Int64 = 0
    /// Group id.
    public var gid: Int64 = 0
    /// Owner name as written (empty means "as the previous entry with this uid").
    public var userName: String = ""
    /// Group name as written.
    public var groupName: String = ""
    /// Blob offset of the compressed member holding this payload.
    public var offset: Int64 = 0
    /// Uncompressed offset of this payload inside the member at ``offset``.
    public var innerOffset: Int64 = 0
    /// Device major number.
    public var devMajor: Int64 = 0
    /// Device minor number.
    public var devMinor: Int64 = 0
    /// Extended attributes, raw bytes.
    public var xattrs: [String: [UInt8]] = [:]
    /// `sha256:` digest of the whole file.
    public var digest: String = ""
    /// Offset of this chunk in the file.
    public var chunkOffset: Int64 = 0
    /// Length of this chunk; 0 means "to the end of the file".
    public var chunkSize: Int64 = 0
    /// `sha256:` digest of this chunk's bytes.
    public var chunkDigest: String = ""

    /// Creates an entry.
    public init(name: String, type: EntryType) {
        self.name = name
        self.type = type
    }

    public var description: String { "\(type) \(name)" }
}

/// Names the format reserves.
public enum ReservedName {
    /// The TOC's tar entry name.
    public static let toc = "stargz.index.json"
    /// Marks the end of the prioritized files.
    public static let prefetchLandmark = ".prefetch.landmark"
    /// Says "do not prefetch this layer".
    public static let noPrefetchLandmark = ".no.prefetch.landmark"
    /// The one byte a landmark holds.
    public static let landmarkContent: UInt8 = 0x0f
}

/// RFC 3339 helpers for `modtime` (UTC, whole seconds).
public enum RFC3339 {
    /// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
    public static func format(_ seconds: Int64) -> String {
        let days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let secs = seconds - days * 86400
        let (y, m, d) = civil(fromDays: days)
        func p(_ v: Int64, _ w: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, w - s.count)) + s
        }
        return "\(p(y, 4))-\(p(m, 2))-\(p(d, 2))T\(p(secs / 3600, 2)):\(p(secs / 60 % 60, 2)):\(p(secs % 60, 2))Z"
    }

    /// Parses an RFC 3339 timestamp into whole seconds since the epoch; nil when malformed.
    public static func parse(_ b: [UInt8]) -> Int64? {
        func num(_ from: Int, _ n: Int) -> Int64? {
            guard from + n <= b.count else { return nil }
            var v: Int64 = 0
            for i in from..<(from + n) {
                guard b[i] >= 48, b[i] <= 57 else { return nil }
                v = v * 10 + Int64(b[i] - 48)
            }
            return v
        }
        guard b.count >= 20, let y = num(0, 4), b[4] == 45, let mo = num(5, 2), b[7] == 45, let d = num(8, 2),
            b[10] == 84 || b[10] == 116, let h = num(11, 2), b[13] == 58, let mi = num(14, 2), b[16] == 58,
            let s = num(17, 2), (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, s < 61
        else { return nil }
        var i = 19
        if i < b.count, b[i] == 46 {
            i += 1
            let start = i
            while i < b.count, b[i] >= 48, b[i] <= 57 { i += 1 }
            guard i > start else { return nil }
        }
        guard i < b.count else { return nil }
        var tz: Int64 = 0
        if b[i] == 90 || b[i] == 122 {
            i += 1
        } else if b[i] == 43 || b[i] == 45 {
            guard let th = num(i + 1, 2), i + 3 < b.count, b[i + 3] == 58, let tm = num(i + 4, 2) else { return nil }
            tz = (th * 3600 + tm * 60) * (b[i] == 43 ? 1 : -1)
            i += 6
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        return days(fromCivil: y, mo, d) * 86400 + h * 3600 + mi * 60 + s - tz
    }

    // Howard Hinnant's days_from_civil / civil_from_days.
    static func days(fromCivil y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }

    static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? y + 1 : y, m, d)
    }
}
