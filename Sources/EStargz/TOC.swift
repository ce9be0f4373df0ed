// SPDX-License-Identifier: Apache-2.0
public import OCI

/// Identifies an entry or a node of a ``TOC``. Hardlinked names share the node of their target.
public struct EntryID: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The index into the TOC's records.
    public let rawValue: UInt32
    init(_ v: UInt32) { rawValue = v }
    init(_ v: Int) { rawValue = UInt32(v) }
    /// An id from its raw value (for maps that store ids, such as inode numbers); valid below `TOC.nodeCount`.
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    var index: Int { Int(rawValue) }
    public static func < (a: EntryID, b: EntryID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "#\(rawValue)" }
}

/// A range inside the TOC's byte arena.
struct ArenaRef: Sendable, Equatable {
    var start: UInt32
    var count: UInt32
    static let empty = ArenaRef(start: 0, count: 0)
}

/// 32 raw bytes of a sha256 digest, stored inline.
struct DigestSlot: Sendable, Equatable {
    var a: UInt64 = 0, b_: UInt64 = 0, c: UInt64 = 0, d: UInt64 = 0

    init() {}

    /// Parses `sha256:<64 lowercase hex>`; nil for anything else.
    init?(_ s: [UInt8]) {
        guard s.count == 71 else { return nil }
        let parsed: (UInt64, UInt64, UInt64, UInt64)? = s.withUnsafeBufferPointer { b in
            // "sha256:"
            guard b[0] == 0x73, b[1] == 0x68, b[2] == 0x61, b[3] == 0x32, b[4] == 0x35, b[5] == 0x36, b[6] == 0x3a
            else { return nil }
            var w: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
            for i in 0..<64 {
                let c = b[7 + i]
                let v: UInt64
                switch c {
                case 48...57: v = UInt64(c &- 48)
                case 97...102: v = UInt64(c &- 87)
                default: return nil
                }
                switch i >> 4 {
                case 0: w.0 = w.0 << 4 | v
                case 1: w.1 = w.1 << 4 | v
                case 2: w.2 = w.2 << 4 | v
                default: w.3 = w.3 << 4 | v
                }
            }
            return w
        }
        guard let w = parsed else { return nil }
        (a, b_, c, d) = w
    }

    init(digestBytes: some Collection<UInt8>) {
        var words: [UInt64] = [0, 0, 0, 0]
        for (i, byte) in digestBytes.enumerated() where i < 32 { words[i / 8] = words[i / 8] << 8 | UInt64(byte) }
        (a, b_, c, d) = (words[0], words[1], words[2], words[3])
    }

    var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(32)
        for w in [a, b_, c, d] { for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: w >> UInt64(s))) } }
        return out
    }

    var string: String { "sha256:" + Hex.encode(bytes) }
}

/// The compact in-memory form of one TOC entry (about 180 bytes, names live in the arena).
struct EntryRecord: Sendable {
    var size: Int64 = 0
    var modTime: Int64 = 0
    var offset: Int64 = 0
    var innerOffset: Int64 = 0
    var chunkOffset: Int64 = 0
    var chunkSize: Int64 = 0
    var nextOffset: Int64 = 0
    var name = ArenaRef.empty
    var linkName = ArenaRef.empty
    var digest = DigestSlot()
    var chunkDigest = DigestSlot()
    var mode: UInt32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
    var devMajor: UInt32 = 0
    var devMinor: UInt32 = 0
    var userName: UInt32 = 0
    var groupName: UInt32 = 0
    var effectiveUserName: UInt32 = 0
    var effectiveGroupName: UInt32 = 0
    var xattrs: Int32 = -1
    var type: EntryType = .reg
    var flags: Flags = []

    struct Flags: OptionSet, Sendable {
        let rawValue: UInt16
        static let hasModTime = Flags(rawValue: 1 << 0)
        static let hasDigest = Flags(rawValue: 1 << 1)
        static let hasChunkDigest = Flags(rawValue: 1 << 2)
        static let oddDigest = Flags(rawValue: 1 << 3)
        static let oddChunkDigest = Flags(rawValue: 1 << 4)
        static let rawDotSlash = Flags(rawValue: 1 << 5)
        static let rawTrailingSlash = Flags(rawValue: 1 << 6)
        static let rawNameInTable = Flags(rawValue: 1 << 7)
        static let chunkSizeDefaulted = Flags(rawValue: 1 << 8)
        static let implicit = Flags(rawValue: 1 << 9)
    }
}

/// Limits that protect the reader from hostile TOCs.
///
/// A TOC is written by the image's author, who may be the attacker: its digest only proves it is the TOC they
/// signed. So every number in it is bounded, by these limits, by the blob (offsets, and the most a compressed
/// span can inflate to) and by what the kernel can serve (``KernelLimits``), before it sizes an allocation, a
/// loop or a recursion. A TOC outside them is refused with an ``EStargzError`` naming the entry and the field.
public struct TOCLimits: Sendable, Equatable {
    /// The largest TOC JSON accepted, in bytes (default 512 MiB).
    public var maxTOCSize: Int64
    /// The most entries accepted (default 10 million).
    public var maxEntries: Int
    /// The largest uncompressed chunk accepted (default 64 MiB; upstream writes 4 MiB chunks). A read
    /// decompresses a whole chunk, so this bounds what one read allocates.
    public var maxChunkSize: Int64
    /// The most bytes all regular files may hold together: the layer's uncompressed size when it is known
    /// (the `io.containers.estargz.uncompressed-size` annotation is the size of the tar, which holds them);
    /// nil: bounded only by the blob.
    public var maxUncompressedSize: Int64?

    /// Creates limits.
    public init(
        maxTOCSize: Int64 = 512 << 20, maxEntries: Int = 10_000_000, maxChunkSize: Int64 = 64 << 20,
        maxUncompressedSize: Int64? = nil
    ) {
        self.maxTOCSize = maxTOCSize
        self.maxEntries = maxEntries
        self.maxChunkSize = maxChunkSize
        self.maxUncompressedSize = maxUncompressedSize
    }
}

/// What Linux can serve, and so the most a TOC field may say (larger values are refused, not clipped).
public enum KernelLimits {
    /// The longest path element (`NAME_MAX`).
    public static let nameMax = 255
    /// The longest path and the longest symlink target (`PATH_MAX`).
    public static let pathMax = 4096
    /// The longest extended attribute name (`XATTR_NAME_MAX`).
    public static let xattrNameMax = 255
    /// The largest extended attribute value (`XATTR_SIZE_MAX`).
    public static let xattrSizeMax = 65536
    /// The longest list of extended attribute names, NUL-terminated (`XATTR_LIST_MAX`).
    public static let xattrListMax = 65536
    /// The largest device major number (12 bits in the kernel's `dev_t`).
    public static let devMajorMax: Int64 = (1 << 12) - 1
    /// The largest device minor number (20 bits).
    public static let devMinorMax: Int64 = (1 << 20) - 1
    /// The largest owner or group id (4294967295 is "no id").
    public static let idMax: Int64 = Int64(UInt32.max) - 1
    /// The largest mode: file type bits and permissions (`S_IFMT | 07777`).
    public static let modeMax: Int64 = 0o177777
}

/// The most a compressed span can inflate to, per byte: deflate's limit is 1032:1; zstd's is an RLE block
/// (3 bytes of header and 1 of content for 128 KiB), 32768:1.
public enum CompressionRatio {
    /// gzip (deflate).
    public static let gzip: Int64 = 1032
    /// zstd.
    public static let zstd: Int64 = 32768
}

/// A parsed, validated and indexed table of contents.
///
/// Built from the TOC JSON by ``TOC/parse(json:payloadEnd:blobSize:limits:)``. It holds the entries in a
/// compact form (no per-entry heap objects) and answers path lookups, directory listings, chunk maps and
/// link counts. Names are normalized as the reference reader does: `clean("/" + name)` without the leading
/// slash; missing parent directories are made implicitly.
public struct TOC: Sendable {
    /// The `version` field.
    public internal(set) var version: Int64 = 0
    /// The sha256 of the exact TOC JSON bytes.
    public internal(set) var digest: Digest
    /// The number of entries the JSON holds (implicit directories not counted).
    public internal(set) var entryCount: Int = 0

    var records: [EntryRecord] = []
    var arena: [UInt8] = []
    var strings: [String] = [""]
    var xattrTable: [[String: [UInt8]]] = []
    var rawNames: [UInt32: String] = [:]
    var oddDigests: [UInt32: String] = [:]
    // Tree, indexed by node (record) id.
    var parent: [UInt32] = []
    var nlink: [UInt32] = []
    var childStart: [UInt32] = []
    var childCount: [UInt32] = []
    /// Children, grouped by parent: (node, record whose name gives the child's name).
    var children: [(node: UInt32, nameRecord: UInt32)] = []
    var hashTable: [UInt32] = []
    /// The root directory's node.
    public internal(set) var root = EntryID(0)

    init(digest: Digest) { self.digest = digest }

    // MARK: Reading entries

    /// Every entry as the JSON has it, in TOC order.
    public var entries: [TOCEntry] { (0..<entryCount).map { self.entry(EntryID($0)) } }

    /// The entry with `id`, every field as written in the JSON.
    public func entry(_ id: EntryID) -> TOCEntry {
        let r = records[id.index]
        var e = TOCEntry(name: rawName(id), type: r.type)
        e.size = r.size
        e.modTime = r.flags.contains(.hasModTime) ? r.modTime : nil
        e.linkName = string(r.linkName)
        e.mode = Int64(r.mode)
        e.uid = Int64(r.uid)
        e.gid = Int64(r.gid)
        e.userName = strings[Int(r.userName)]
        e.groupName = strings[Int(r.groupName)]
        e.offset = r.offset
        e.innerOffset = r.innerOffset
        e.devMajor = Int64(r.devMajor)
        e.devMinor = Int64(r.devMinor)
        e.xattrs = r.xattrs >= 0 ? xattrTable[Int(r.xattrs)] : [:]
        e.digest = digestString(id, chunk: false) ?? ""
        e.chunkOffset = r.chunkOffset
        e.chunkSize = r.flags.contains(.chunkSizeDefaulted) ? 0 : r.chunkSize
        e.chunkDigest = digestString(id, chunk: true) ?? ""
        return e
    }

    func string(_ ref: ArenaRef) -> String {
        if ref.count == 0 { return "" }
        return arena.withUnsafeBytes {
            String(decoding: $0[Int(ref.start)..<Int(ref.start + ref.count)], as: UTF8.self)
        }
    }

    func rawName(_ id: EntryID) -> String {
        let r = records[id.index]
        if r.flags.contains(.rawNameInTable) { return rawNames[id.rawValue] ?? "" }
        var s = string(r.name)
        if r.flags.contains(.rawDotSlash) { s = "./" + s }
        if r.flags.contains(.rawTrailingSlash) { s += "/" }
        return s
    }

    func digestString(_ id: EntryID, chunk: Bool) -> String? {
        let r = records[id.index]
        if chunk {
            if r.flags.contains(.hasChunkDigest) { return r.chunkDigest.string }
            if r.flags.contains(.oddChunkDigest) { return oddDigests[id.rawValue << 1 | 1] }
        } else {
            if r.flags.contains(.hasDigest) { return r.digest.string }
            if r.flags.contains(.oddDigest) { return oddDigests[id.rawValue << 1] }
        }
        return nil
    }

    /// The normalized path of a node (`""` for the root).
    public func path(_ id: EntryID) -> String { string(records[id.index].name) }

    // MARK: Lookup

    /// Looks up a path (any spelling: `/a/b`, `./a/b/`, `a/b`) and returns its node. Hardlinks resolve to the
    /// node of their target.
    public func lookup(_ path: String) -> EntryID? {
        guard let clean = PathName.clean(Array(path.utf8)) else { return nil }
        guard let id = find(clean) else { return nil }
        return resolvedNode(EntryID(id))
    }

    /// The node that `id` names: its hardlink target, or itself.
    public func resolvedNode(_ id: EntryID) -> EntryID {
        var cur = id
        var hops = 0
        while records[cur.index].type == .hardlink, hops < 64 {
            guard let clean = PathName.clean(Array(string(records[cur.index].linkName).utf8)),
                let t = find(clean)
            else { return cur }
            cur = EntryID(t)
            hops += 1
        }
        return cur
    }

    func find(_ clean: [UInt8]) -> UInt32? {
        clean.withUnsafeBytes { find(bytes: $0) }
    }

    /// Looks up a normalized name given as raw bytes.
    func find(bytes key: UnsafeRawBufferPointer) -> UInt32? {
        guard !hashTable.isEmpty else { return nil }
        let mask = hashTable.count - 1
        var slot = Int(truncatingIfNeeded: TOC.hash(key)) & mask
        return arena.withUnsafeBytes { a -> UInt32? in
            while true {
                let v = hashTable[slot]
                if v == UInt32.max { return nil }
                let ref = records[Int(v)].name
                if Int(ref.count) == key.count
                    && (key.count == 0 || memcmpEqual(a.baseAddress! + Int(ref.start), key.baseAddress!, key.count))
                {
                    return v
                }
                slot = (slot + 1) & mask
            }
        }
    }

    /// Looks up a normalized name stored in the arena at `start..<start+count`.
    func find(arenaStart start: Int, count: Int) -> UInt32? {
        arena.withUnsafeBytes { a in find(bytes: UnsafeRawBufferPointer(rebasing: a[start..<(start + count)])) }
    }

    static func hash(_ b: UnsafeRawBufferPointer) -> UInt64 {
        var h: UInt64 = 0xcbf29ce484222325
        var i = 0
        while i + 8 <= b.count {
            h = (h ^ b.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0x100000001b3
            h ^= h >> 32
            i += 8
        }
        while i < b.count {
            h = (h ^ UInt64(b[i])) &* 0x100000001b3
            i += 1
        }
        return h ^ (h >> 29)
    }

    // MARK: Tree

    /// The children of directory `id`: each name and the node it names.
    public func children(of id: EntryID) -> [(name: String, node: EntryID)] {
        let s = Int(childStart[id.index])
        let n = Int(childCount[id.index])
        return (s..<(s + n)).map { i in
            let c = children[i]
            return (baseName(EntryID(c.nameRecord)), EntryID(c.node))
        }
    }

    /// The last path element of an entry's normalized name.
    public func baseName(_ id: EntryID) -> String {
        let ref = records[id.index].name
        return arena.withUnsafeBytes { a in
            let bytes = a[Int(ref.start)..<Int(ref.start + ref.count)]
            if let slash = bytes.lastIndex(of: 0x2f) {
                return String(decoding: a[(slash + 1)..<Int(ref.start + ref.count)], as: UTF8.self)
            }
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    /// The parent directory of a node (the root is its own parent).
    public func parent(of id: EntryID) -> EntryID { EntryID(parent[id.index]) }

    /// The number of names a node has (directories: 2 + subdirectories, as the reference reader counts).
    public func linkCount(_ id: EntryID) -> Int { Int(nlink[id.index]) }

    /// Every node in a depth-first walk from the root, with its path. Hardlinks appear once per name.
    public func walk(_ body: (_ path: String, _ node: EntryID, _ nameEntry: EntryID) throws -> Void) rethrows {
        var stack: [(String, EntryID, EntryID)] = [("", root, root)]
        while let (p, node, nameEntry) = stack.popLast() {
            try body(p, node, nameEntry)
            if records[node.index].type == .dir {
                let s = Int(childStart[node.index])
                let n = Int(childCount[node.index])
                for i in stride(from: s + n - 1, through: s, by: -1) {
                    let c = children[i]
                    let childPath = p.isEmpty ? baseName(EntryID(c.nameRecord)) : p + "/" + baseName(EntryID(c.nameRecord))
                    stack.append((childPath, EntryID(c.node), EntryID(c.nameRecord)))
                }
            }
        }
    }
}

/// Path normalization as the reference reader does it.
public enum PathName {
    /// `clean("/" + name)` without the leading slash; nil for names with a NUL byte.
    public static func clean(_ name: [UInt8]) -> [UInt8]? {
        var out: [UInt8] = []
        return clean(name, into: &out) ? out : nil
    }

    /// Cleans `name` into `out` (reusing its storage); false for names with a NUL byte.
    static func clean(_ name: [UInt8], into out: inout [UInt8]) -> Bool {
        out.removeAll(keepingCapacity: true)
        var i = 0
        let n = name.count
        while i < n {
            while i < n && name[i] == 0x2f { i += 1 }
            if i >= n { break }
            var j = i
            while j < n && name[j] != 0x2f {
                if name[j] == 0 { return false }
                j += 1
            }
            let len = j - i
            if len == 1 && name[i] == 0x2e {
                // "." : skip
            } else if len == 2 && name[i] == 0x2e && name[i + 1] == 0x2e {
                // "..": drop the last element
                if let slash = out.lastIndex(of: 0x2f) { out.removeSubrange(slash...) } else { out.removeAll(keepingCapacity: true) }
            } else {
                if !out.isEmpty { out.append(0x2f) }
                out.append(contentsOf: name[i..<j])
            }
            i = j
        }
        return true
    }

    /// Why a clean name cannot be served (longer than `PATH_MAX`, or an element longer than `NAME_MAX`);
    /// nil when it can. Bounding the whole name also bounds the tree's depth.
    public static func overLimitReason(_ clean: [UInt8]) -> String? {
        if clean.count > KernelLimits.pathMax {
            return "of \(clean.count) bytes is longer than PATH_MAX (\(KernelLimits.pathMax))"
        }
        var run = 0
        for b in clean {
            if b == 0x2f {
                run = 0
            } else {
                run += 1
                if run > KernelLimits.nameMax {
                    return "has an element longer than NAME_MAX (\(KernelLimits.nameMax))"
                }
            }
        }
        return nil
    }

    /// Whether a raw tar/TOC name is safe: not absolute, no `..` element, no NUL byte.
    public static func unsafeReason(_ name: [UInt8]) -> String? {
        if name.first == 0x2f { return "is absolute" }
        if name.contains(0) { return "contains a NUL byte" }
        for comp in name.split(separator: 0x2f, omittingEmptySubsequences: true)
        where comp.count == 2 && comp.first == 0x2e && comp.last == 0x2e {
            return "contains \"..\""
        }
        return nil
    }
}

@inline(__always)
func memcmpEqual(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) -> Bool {
    var i = 0
    while i + 8 <= n {
        if a.loadUnaligned(fromByteOffset: i, as: UInt64.self) != b.loadUnaligned(fromByteOffset: i, as: UInt64.self) {
            return false
        }
        i += 8
    }
    while i < n {
        if a.load(fromByteOffset: i, as: UInt8.self) != b.load(fromByteOffset: i, as: UInt8.self) { return false }
        i += 1
    }
    return true
}

extension TOC {
    /// The bytes this TOC holds in memory: records, names, index and tree (array capacities, not malloc
    /// overhead). Used by the benchmark that reports bytes per entry.
    public var memoryFootprint: Int {
        records.capacity * MemoryLayout<EntryRecord>.stride + arena.capacity
            + hashTable.capacity * 4 + (parent.capacity + nlink.capacity + childStart.capacity + childCount.capacity) * 4
            + children.capacity * MemoryLayout<(node: UInt32, nameRecord: UInt32)>.stride
            + strings.reduce(0) { $0 + 16 + $1.utf8.count } + xattrTable.count * 64 + rawNames.count * 48
            + oddDigests.count * 96
    }
}
