// SPDX-License-Identifier: Apache-2.0
internal import OCI

extension TOC {
    /// Parses, validates and indexes TOC JSON.
    ///
    /// - Parameters:
    ///   - json: the exact bytes of `stargz.index.json` (the TOC digest is computed over them).
    ///   - payloadEnd: the blob offset where the layer payload ends (the TOC's position); every payload
    ///     `offset` must be below it.
    ///   - blobSize: the blob size, used for `nextOffset` of the last payloads.
    ///   - limits: protection against hostile TOCs.
    ///   - maxRatio: the most one compressed byte can inflate to (``CompressionRatio``): no chunk may claim
    ///     more bytes than its compressed span can hold.
    /// - Throws: `EStargzError` with `.invalidTOC`, `.invalidEntry`, `.unsafePath`, `.duplicateEntry` or
    ///   `.offsetOutOfRange`, naming the entry.
    public static func parse(
        json: UnsafeRawBufferPointer, payloadEnd: Int64, blobSize: Int64, limits: TOCLimits = TOCLimits(),
        maxRatio: Int64 = CompressionRatio.zstd
    ) throws(EStargzError) -> TOC {
        let most = min(limits.maxTOCSize, Int64(UInt32.max))  // names are kept at 32-bit offsets
        guard Int64(json.count) <= most else {
            throw EStargzError(.tocTooLarge, "TOC JSON of \(json.count) bytes exceeds the limit of \(most)")
        }
        var toc = TOC(digest: Digest.sha256(of: json))
        var parser = TOCParser(json: json, limits: limits)
        try parser.parseTop(into: &toc)
        // Implicit directories copy their names into the arena: a few deep names could make it grow with the
        // square of their depth, so it is bounded by the JSON that asked for it (and by its 32-bit offsets).
        let arenaLimit = Int(min(Int64(json.count) * 8 + (1 << 20), Int64(UInt32.max)))
        try toc.buildIndex(
            payloadEnd: payloadEnd, blobSize: blobSize, limits: limits, maxRatio: maxRatio, arenaLimit: arenaLimit)
        toc.shrinkToFit()
        return toc
    }

    /// Parses TOC JSON held in an array.
    public static func parse(
        json: [UInt8], payloadEnd: Int64, blobSize: Int64, limits: TOCLimits = TOCLimits(),
        maxRatio: Int64 = CompressionRatio.zstd
    ) throws(EStargzError) -> TOC {
        do {
            return try json.withUnsafeBytes { b in
                try parse(json: b, payloadEnd: payloadEnd, blobSize: blobSize, limits: limits, maxRatio: maxRatio)
            }
        } catch let e as EStargzError {
            throw e
        } catch {
            throw EStargzError(.invalidTOC, "TOC parse failed", cause: error)
        }
    }
}

private struct TOCParser: ~Copyable {
    var s: JSONScanner
    let limits: TOCLimits
    var key: [UInt8] = []
    var scratch: [UInt8] = []
    var internTable: [String: UInt32] = ["": 0]
    var lastNonChunk: Int = -1
    var nameBuf: [UInt8] = []
    var lastRawName: [UInt8] = []
    var linkBuf: [UInt8] = []
    var cleanBuf: [UInt8] = []

    init(json: UnsafeRawBufferPointer, limits: TOCLimits) {
        s = JSONScanner(json)
        self.limits = limits
        key.reserveCapacity(16)
        scratch.reserveCapacity(256)
    }

    mutating func parseTop(into toc: inout TOC) throws(EStargzError) {
        try s.expect(UInt8(ascii: "{"))
        if try !s.consume(UInt8(ascii: "}")) {
            repeat {
                try s.readKey(into: &key)
                if key == Keys.version {
                    toc.version = try s.consumeNull() ? 0 : s.readInt64()
                } else if key == Keys.entries {
                    if try s.consumeNull() { continue }
                    try s.expect(UInt8(ascii: "["))
                    if try !s.consume(UInt8(ascii: "]")) {
                        repeat {
                            guard toc.records.count < limits.maxEntries else {
                                throw EStargzError(.tocTooLarge, "TOC has more than \(limits.maxEntries) entries")
                            }
                            try parseEntry(into: &toc)
                        } while try s.consume(UInt8(ascii: ","))
                        try s.expect(UInt8(ascii: "]"))
                    }
                } else {
                    try s.skipValue(depth: 1)
                }
            } while try s.consume(UInt8(ascii: ","))
            try s.expect(UInt8(ascii: "}"))
        }
        s.skipWhitespace()
        guard s.pos == s.bytes.count else { throw s.fail("trailing data after the TOC object") }
        toc.entryCount = toc.records.count
    }

    private mutating func readStringScratch() throws(EStargzError) -> Bool {
        scratch.removeAll(keepingCapacity: true)
        if try s.consumeNull() { return false }
        try s.readString(into: &scratch)
        return true
    }

    private mutating func intern(_ bytes: [UInt8], _ toc: inout TOC) -> UInt32 {
        if bytes.isEmpty { return 0 }
        let str = String(decoding: bytes, as: UTF8.self)
        if let v = internTable[str] { return v }
        let v = UInt32(toc.strings.count)
        toc.strings.append(str)
        internTable[str] = v
        return v
    }

    private func uint32(_ v: Int64, _ field: String, _ name: String, max: Int64) throws(EStargzError) -> UInt32 {
        guard v >= 0, v <= max else {
            throw EStargzError(.invalidEntry, "TOC entry \"\(name)\": \(field) \(v) is out of range [0, \(max)]")
        }
        return UInt32(v)
    }

    private mutating func readDigest(
        into r: inout EntryRecord, chunk: Bool, id: UInt32, toc: inout TOC
    ) throws(EStargzError) {
        let has: EntryRecord.Flags = chunk ? .hasChunkDigest : .hasDigest
        let odd: EntryRecord.Flags = chunk ? .oddChunkDigest : .oddDigest
        let key = chunk ? id << 1 | 1 : id << 1
        if r.flags.contains(odd) { toc.oddDigests[key] = nil }
        r.flags.remove([has, odd])
        guard try readStringScratch(), !scratch.isEmpty else { return }
        if let d = DigestSlot(scratch) {
            if chunk { r.chunkDigest = d } else { r.digest = d }
            r.flags.insert(has)
        } else {
            r.flags.insert(odd)
            toc.oddDigests[key] = String(decoding: scratch, as: UTF8.self)
        }
    }

    private mutating func readInt() throws(EStargzError) -> Int64 {
        try s.consumeNull() ? 0 : s.readInt64()
    }

    private mutating func parseEntry(into toc: inout TOC) throws(EStargzError) {
        var r = EntryRecord()
        var type: EntryType? = nil
        var typeName = ""
        var mode: Int64 = 0, uid: Int64 = 0, gid: Int64 = 0, major: Int64 = 0, minor: Int64 = 0
        var xattrs: [String: [UInt8]]? = nil
        let id = UInt32(toc.records.count)
        nameBuf.removeAll(keepingCapacity: true)
        linkBuf.removeAll(keepingCapacity: true)
        let entryStart = s.pos
        try s.expect(UInt8(ascii: "{"))
        if try !s.consume(UInt8(ascii: "}")) {
            repeat {
                try s.readKey(into: &key)
                switch key.count {
                case 3 where key == Keys.uid: uid = try readInt()
                case 3 where key == Keys.gid: gid = try readInt()
                case 4 where key == Keys.name:
                    nameBuf.removeAll(keepingCapacity: true)
                    if try !s.consumeNull() { try s.readString(into: &nameBuf) }
                case 4 where key == Keys.type:
                    if try readStringScratch() {
                        type = EntryType(bytes: scratch)
                        typeName = type == nil ? String(decoding: scratch, as: UTF8.self) : ""
                    } else {
                        type = nil
                    }
                case 4 where key == Keys.size: r.size = try readInt()
                case 4 where key == Keys.mode: mode = try readInt()
                case 6 where key == Keys.offset: r.offset = try readInt()
                case 6 where key == Keys.digest: try readDigest(into: &r, chunk: false, id: id, toc: &toc)
                case 6 where key == Keys.xattrs: xattrs = try parseXattrs()
                case 7 where key == Keys.modtime:
                    if try readStringScratch(), !scratch.isEmpty, let t = RFC3339.parse(scratch) {
                        r.modTime = t
                        r.flags.insert(.hasModTime)
                    } else {
                        r.flags.remove(.hasModTime)
                    }
                case 8 where key == Keys.linkname:
                    linkBuf.removeAll(keepingCapacity: true)
                    if try !s.consumeNull() { try s.readString(into: &linkBuf) }
                case 8 where key == Keys.username:
                    r.userName = try readStringScratch() ? intern(scratch, &toc) : 0
                case 8 where key == Keys.devmajor: major = try readInt()
                case 8 where key == Keys.devminor: minor = try readInt()
                case 9 where key == Keys.groupname:
                    r.groupName = try readStringScratch() ? intern(scratch, &toc) : 0
                case 9 where key == Keys.chunksize: r.chunkSize = try readInt()
                case 11 where key == Keys.inneroffset: r.innerOffset = try readInt()
                case 11 where key == Keys.chunkoffset: r.chunkOffset = try readInt()
                case 11 where key == Keys.chunkdigest: try readDigest(into: &r, chunk: true, id: id, toc: &toc)
                default: try s.skipValue(depth: 3)
                }
            } while try s.consume(UInt8(ascii: ","))
            try s.expect(UInt8(ascii: "}"))
        }
        func nameForErrors() -> String { String(decoding: nameBuf, as: UTF8.self) }
        guard let type else {
            throw EStargzError(
                .invalidEntry,
                "TOC entry \"\(nameForErrors())\" at JSON byte \(entryStart) has unknown type \"\(typeName)\"")
        }
        r.type = type
        r.mode = try uint32(mode, "mode", nameForErrors(), max: KernelLimits.modeMax)
        r.uid = try uint32(uid, "uid", nameForErrors(), max: KernelLimits.idMax)
        r.gid = try uint32(gid, "gid", nameForErrors(), max: KernelLimits.idMax)
        r.devMajor = try uint32(major, "devMajor", nameForErrors(), max: KernelLimits.devMajorMax)
        r.devMinor = try uint32(minor, "devMinor", nameForErrors(), max: KernelLimits.devMinorMax)
        for (field, v) in [("size", r.size), ("offset", r.offset), ("innerOffset", r.innerOffset),
                           ("chunkOffset", r.chunkOffset), ("chunkSize", r.chunkSize)] where v < 0 {
            throw EStargzError(.invalidEntry, "TOC entry \"\(nameForErrors())\": \(field) \(v) is negative")
        }
        if linkBuf.count > KernelLimits.pathMax {
            throw EStargzError(
                .invalidEntry,
                "TOC entry \"\(nameForErrors())\": linkName of \(linkBuf.count) bytes is longer than PATH_MAX (\(KernelLimits.pathMax))")
        }
        if let x = xattrs, !x.isEmpty {
            r.xattrs = Int32(toc.xattrTable.count)
            toc.xattrTable.append(x)
        }
        if !linkBuf.isEmpty { r.linkName = append(linkBuf, to: &toc) }
        // Names.
        if type == .chunk {
            guard lastNonChunk >= 0, toc.records[lastNonChunk].type == .reg else {
                throw EStargzError(
                    .invalidEntry,
                    "TOC chunk entry \"\(nameForErrors())\" (entry \(id)) does not follow a regular file entry")
            }
            r.name = toc.records[lastNonChunk].name
            if nameBuf != lastRawName {
                r.flags.insert(.rawNameInTable)
                toc.rawNames[id] = nameForErrors()
            }
        } else {
            if let why = PathName.unsafeReason(nameBuf) {
                throw EStargzError(.unsafePath, "TOC entry name \"\(nameForErrors())\" \(why)")
            }
            guard PathName.clean(nameBuf, into: &cleanBuf) else {
                throw EStargzError(.unsafePath, "TOC entry name \"\(nameForErrors())\" is invalid")
            }
            if let why = PathName.overLimitReason(cleanBuf) {
                throw EStargzError(.invalidEntry, "TOC entry \"\(nameForErrors().prefix(200))\": name \(why)")
            }
            if cleanBuf == Keys.tocName {
                throw EStargzError(.invalidEntry, "TOC lists the reserved name \(ReservedName.toc)")
            }
            r.name = append(cleanBuf, to: &toc)
            // Record how the raw name differs from the clean one: a "./" prefix and/or a trailing "/".
            let dot = nameBuf.count >= 2 && nameBuf[0] == 0x2e && nameBuf[1] == 0x2f
            let base = dot ? 2 : 0
            let slash = nameBuf.count > base + cleanBuf.count && nameBuf.last == 0x2f
            let same = nameBuf.count == base + cleanBuf.count + (slash ? 1 : 0)
                && nameBuf.withUnsafeBytes { n in
                    cleanBuf.withUnsafeBytes { c in
                        c.count == 0 || memcmpEqual(n.baseAddress! + base, c.baseAddress!, c.count)
                    }
                }
            if same {
                if dot { r.flags.insert(.rawDotSlash) }
                if slash { r.flags.insert(.rawTrailingSlash) }
            } else {
                r.flags.insert(.rawNameInTable)
                toc.rawNames[id] = nameForErrors()
            }
            lastNonChunk = Int(id)
            swap(&lastRawName, &nameBuf)
        }
        toc.records.append(r)
    }

    private func append(_ bytes: [UInt8], to toc: inout TOC) -> ArenaRef {
        let ref = ArenaRef(start: UInt32(toc.arena.count), count: UInt32(bytes.count))
        toc.arena.append(contentsOf: bytes)
        return ref
    }

    private mutating func parseXattrs() throws(EStargzError) -> [String: [UInt8]]? {
        if try s.consumeNull() { return nil }
        var out: [String: [UInt8]] = [:]
        var listSize = 0  // what listxattr would return: every name and its NUL
        func entryName() -> String { String(decoding: nameBuf, as: UTF8.self) }
        try s.expect(UInt8(ascii: "{"))
        if try s.consume(UInt8(ascii: "}")) { return out }
        var k: [UInt8] = []
        repeat {
            k.removeAll(keepingCapacity: true)
            try s.readString(into: &k)
            try s.expect(UInt8(ascii: ":"))
            guard !k.isEmpty, k.count <= KernelLimits.xattrNameMax else {
                throw EStargzError(
                    .invalidEntry,
                    "TOC entry \"\(entryName())\": xattr name of \(k.count) bytes is outside [1, \(KernelLimits.xattrNameMax)]")
            }
            listSize += k.count + 1
            guard listSize <= KernelLimits.xattrListMax else {
                throw EStargzError(
                    .invalidEntry,
                    "TOC entry \"\(entryName())\": xattr names take more than \(KernelLimits.xattrListMax) bytes")
            }
            if try s.consumeNull() {
                out[String(decoding: k, as: UTF8.self)] = []
                continue
            }
            scratch.removeAll(keepingCapacity: true)
            try s.readString(into: &scratch)
            guard scratch.count <= (KernelLimits.xattrSizeMax + 2) / 3 * 4, let v = Base64.decode(scratch),
                v.count <= KernelLimits.xattrSizeMax
            else {
                throw EStargzError(
                    .invalidEntry,
                    "TOC entry \"\(entryName())\": xattr \"\(String(decoding: k, as: UTF8.self))\" value is not base64 of at most \(KernelLimits.xattrSizeMax) bytes")
            }
            out[String(decoding: k, as: UTF8.self)] = v
        } while try s.consume(UInt8(ascii: ","))
        try s.expect(UInt8(ascii: "}"))
        return out
    }
}

extension TOC {
    /// Drops the spare capacity the parse left in the big arrays (they grow by doubling).
    mutating func shrinkToFit() {
        func shrunk<T>(_ a: [T]) -> [T] {
            guard a.capacity > a.count + a.count / 32 + 8 else { return a }
            var out: [T] = []
            out.reserveCapacity(a.count)
            out.append(contentsOf: a)
            return out
        }
        records = shrunk(records)
        arena = shrunk(arena)
        children = shrunk(children)
        parent = shrunk(parent)
        nlink = shrunk(nlink)
        childStart = shrunk(childStart)
        childCount = shrunk(childCount)
    }

    /// Validates chunk layout and offsets, computes nextOffset, fills owner names, and builds the
    /// name index and the directory tree.
    mutating func buildIndex(
        payloadEnd: Int64, blobSize: Int64, limits: TOCLimits, maxRatio: Int64, arenaLimit: Int
    ) throws(EStargzError) {
        let n = records.count
        // Chunks: defaults and layout.
        var i = 0
        while i < n {
            guard records[i].type == .reg else {
                i += 1
                continue
            }
            var j = i + 1
            while j < n, records[j].type == .chunk { j += 1 }
            let size = records[i].size
            let name = path(EntryID(i))
            if records[i].chunkSize == 0 && size != 0 {
                records[i].chunkSize = size
                records[i].flags.insert(.chunkSizeDefaulted)
            }
            if size == 0 && j > i + 1 {
                throw EStargzError(.invalidEntry, "TOC entry \"\(name)\": an empty file has chunk entries")
            }
            var expected: Int64 = 0
            for k in i..<j {
                if k > i && records[k].chunkSize == 0 {
                    records[k].chunkSize = size - records[k].chunkOffset
                    records[k].flags.insert(.chunkSizeDefaulted)
                }
                let c = records[k]
                if size == 0 { break }
                guard c.chunkOffset == expected, c.chunkSize > 0, c.chunkSize <= size - c.chunkOffset else {
                    throw EStargzError(
                        .invalidEntry,
                        "TOC entry \"\(name)\": chunk at file offset \(c.chunkOffset) (size \(c.chunkSize)) does not continue at \(expected) within the file size \(size)")
                }
                guard c.chunkSize <= limits.maxChunkSize else {
                    throw EStargzError(
                        .invalidEntry,
                        "TOC entry \"\(name)\": chunkSize \(c.chunkSize) at file offset \(c.chunkOffset) is over the limit of \(limits.maxChunkSize) bytes")
                }
                expected = c.chunkOffset + c.chunkSize
                guard c.offset > 0, c.offset < payloadEnd else {
                    throw EStargzError(
                        .offsetOutOfRange,
                        "TOC entry \"\(name)\": chunk at file offset \(c.chunkOffset) has blob offset \(c.offset) outside the payload [1, \(payloadEnd))")
                }
            }
            if size > 0 && expected != size && j - i > 1 {
                throw EStargzError(
                    .invalidEntry, "TOC entry \"\(name)\": chunks cover \(expected) of \(size) bytes")
            }
            if size > 0 && j - i == 1 && records[i].chunkSize != size {
                // A single chunk shorter than the file: the rest is missing.
                throw EStargzError(
                    .invalidEntry, "TOC entry \"\(name)\": chunks cover \(records[i].chunkSize) of \(size) bytes")
            }
            i = j
        }
        // nextOffset, walking backwards.
        var last = blobSize
        for k in stride(from: n - 1, through: 0, by: -1) where records[k].type == .reg || records[k].type == .chunk {
            records[k].nextOffset = last
            if records[k].offset != 0 && records[k].innerOffset == 0 {
                guard records[k].offset < last else {
                    throw EStargzError(
                        .offsetOutOfRange,
                        "TOC entry \"\(path(EntryID(k)))\": payload offset \(records[k].offset) is not before the next payload at \(last); offsets must increase in TOC order")
                }
                last = records[k].offset
            }
        }
        // What each chunk claims against what its compressed span can inflate to, and the whole against the
        // layer's size. Sizes are at most maxChunkSize × entries here, so the sums below cannot overflow.
        var total: Int64 = 0
        for k in 0..<n where records[k].type == .reg || records[k].type == .chunk {
            let c = records[k]
            if c.type == .reg { total += c.size }
            guard c.chunkSize > 0 else { continue }
            let end = c.innerOffset == 0 ? min(c.nextOffset, payloadEnd) : c.nextOffset
            let span = end - c.offset
            let (most, unbounded) = span.multipliedReportingOverflow(by: maxRatio)
            let (claim, overflow) = c.innerOffset.addingReportingOverflow(c.chunkSize)
            guard span > 0, !overflow, unbounded || claim <= most + 4096 else {
                throw EStargzError(
                    .invalidEntry,
                    "TOC entry \"\(path(EntryID(k)))\": chunkSize \(c.chunkSize) (innerOffset \(c.innerOffset)) at file offset \(c.chunkOffset) is more than the \(span) compressed bytes at blob offset \(c.offset) can inflate to")
            }
        }
        if let most = limits.maxUncompressedSize, total > most {
            throw EStargzError(
                .invalidEntry, "TOC regular files hold \(total) bytes, more than the layer's uncompressed size \(most)")
        }
        // Owner names.
        var users: [UInt32: UInt32] = [:]
        var groups: [UInt32: UInt32] = [:]
        for k in 0..<n where records[k].type != .chunk {
            if records[k].userName != 0 {
                users[records[k].uid] = records[k].userName
                records[k].effectiveUserName = records[k].userName
            } else {
                records[k].effectiveUserName = users[records[k].uid] ?? 0
            }
            if records[k].groupName != 0 {
                groups[records[k].gid] = records[k].groupName
                records[k].effectiveGroupName = records[k].groupName
            } else {
                records[k].effectiveGroupName = groups[records[k].gid] ?? 0
            }
        }
        try buildTree(arenaLimit: arenaLimit)
    }

    private mutating func insertHash(_ id: UInt32) -> UInt32? {
        let mask = hashTable.count - 1
        let ref = records[Int(id)].name
        let found: (slot: Int, existing: UInt32?) = arena.withUnsafeBytes { a in
            let key = UnsafeRawBufferPointer(rebasing: a[Int(ref.start)..<Int(ref.start + ref.count)])
            var slot = Int(truncatingIfNeeded: TOC.hash(key)) & mask
            while true {
                let v = hashTable[slot]
                if v == UInt32.max { return (slot, nil) }
                let o = records[Int(v)].name
                if o.count == ref.count
                    && (o.count == 0 || memcmpEqual(a.baseAddress! + Int(o.start), key.baseAddress!, key.count))
                {
                    return (slot, v)
                }
                slot = (slot + 1) & mask
            }
        }
        if let e = found.existing { return e }
        hashTable[found.slot] = id
        return nil
    }

    private mutating func growHashIfNeeded(extra: Int) {
        let needed = (records.count + extra) * 2
        guard hashTable.count < needed else { return }
        var cap = 16
        while cap < needed { cap <<= 1 }
        hashTable = [UInt32](repeating: UInt32.max, count: cap)
        for k in 0..<records.count where records[k].type != .chunk { _ = insertHash(UInt32(k)) }
    }

    private mutating func makeImplicitDir(_ clean: [UInt8]) -> UInt32 {
        var r = EntryRecord()
        r.type = .dir
        r.mode = 0o755
        r.flags = [.implicit]
        r.name = ArenaRef(start: UInt32(arena.count), count: UInt32(clean.count))
        arena.append(contentsOf: clean)
        let id = UInt32(records.count)
        records.append(r)
        growHashIfNeeded(extra: 1)
        _ = insertHash(id)
        return id
    }

    private mutating func buildTree(arenaLimit: Int) throws(EStargzError) {
        let n = entryCount
        growHashIfNeeded(extra: 8)
        // 1. Name index; duplicates are refused.
        for k in 0..<n where records[k].type != .chunk {
            if let other = insertHash(UInt32(k)), other != UInt32(k) {
                throw EStargzError(
                    .duplicateEntry,
                    "TOC entries \(other) and \(k) have the same name \"\(path(EntryID(k)).isEmpty ? "/" : path(EntryID(k)))\"")
            }
        }
        // 2. Root.
        if let r = find([]) {
            root = EntryID(r)
            guard records[Int(r)].type == .dir else {
                throw EStargzError(.invalidEntry, "TOC root entry is a \(records[Int(r)].type), not a directory")
            }
        } else {
            root = EntryID(makeImplicitDir([]))
        }
        // 3. Parents (making implicit directories) and link counts.
        var edges: [(parent: UInt32, node: UInt32, nameRecord: UInt32)] = []
        edges.reserveCapacity(n)
        var parentOf = [UInt32](repeating: root.rawValue, count: records.count)
        var links = [UInt32](repeating: 0, count: records.count)
        // Reference counts: an explicit root (`./`) has 1 + subdirectories, a synthesized one 2 + subdirectories
        // (1 for an empty TOC).
        links[root.index] = records[root.index].flags.contains(.implicit) ? (n == 0 ? 1 : 2) : 1
        func ensureArrays(_ t: inout TOC) {
            while parentOf.count < t.records.count {
                parentOf.append(t.root.rawValue)
                links.append(0)
            }
        }
        var pending: [UInt32] = []
        pending.reserveCapacity(n)
        for k in 0..<UInt32(n) where records[Int(k)].type != .chunk && k != root.rawValue { pending.append(k) }
        var idx = 0
        while idx < pending.count {
            let k = pending[idx]
            idx += 1
            let ref = records[Int(k)].name
            var parentLength = 0
            arena.withUnsafeBytes { a in
                var i = Int(ref.count) - 1
                while i >= 0 && a[Int(ref.start) + i] != 0x2f { i -= 1 }
                parentLength = max(i, 0)
            }
            var p: UInt32
            if let found = find(arenaStart: Int(ref.start), count: parentLength) {
                p = found
                if records[Int(p)].type != .dir {
                    throw EStargzError(
                        .invalidEntry,
                        "TOC entry \"\(path(EntryID(k)))\": its parent \"\(path(EntryID(p)))\" is a \(records[Int(p)].type), not a directory")
                }
            } else {
                guard arena.count + parentLength <= arenaLimit else {
                    throw EStargzError(
                        .tocTooLarge,
                        "TOC entry \"\(path(EntryID(k)).prefix(200))\": its implicit parent directories take more than \(arenaLimit) bytes of names")
                }
                p = makeImplicitDir(Array(arena[Int(ref.start)..<(Int(ref.start) + parentLength)]))
                ensureArrays(&self)
                links[Int(p)] = 1  // "." here; its name adds the second link when it is attached
                pending.append(p)
            }
            parentOf[Int(k)] = p
            var node = k
            if records[Int(k)].type == .hardlink {
                node = try resolveHardlink(k)
            }
            links[Int(k)] += records[Int(k)].type == .dir && !records[Int(k)].flags.contains(.implicit) ? 1 : 0
            links[Int(node)] += 1
            if records[Int(node)].type == .dir { links[Int(p)] += 1 }
            edges.append((p, node, k))
        }
        ensureArrays(&self)
        // Directories: explicit ones count "." (+1 above) and their name; implicit ones 1 + name.
        parent = parentOf
        parent[root.index] = root.rawValue
        // 4. Children, grouped by parent (stable: TOC order within a directory).
        var counts = [UInt32](repeating: 0, count: records.count)
        for e in edges { counts[Int(e.parent)] += 1 }
        childStart = [UInt32](repeating: 0, count: records.count)
        var acc: UInt32 = 0
        for k in 0..<records.count {
            childStart[k] = acc
            acc += counts[k]
        }
        childCount = [UInt32](repeating: 0, count: records.count)
        children = Array(repeating: (0, 0), count: edges.count)
        for e in edges {
            let slot = Int(childStart[Int(e.parent)] + childCount[Int(e.parent)])
            children[slot] = (e.node, e.nameRecord)
            childCount[Int(e.parent)] += 1
        }
        nlink = links
    }

    private func resolveHardlink(_ k: UInt32) throws(EStargzError) -> UInt32 {
        var cur = k
        var hops = 0
        while records[Int(cur)].type == .hardlink {
            let target = string(records[Int(cur)].linkName)
            guard PathName.unsafeReason(Array(target.utf8)) == nil, let clean = PathName.clean(Array(target.utf8)),
                let t = find(clean)
            else {
                throw EStargzError(
                    .invalidEntry,
                    "TOC entry \"\(path(EntryID(k)))\" is a hardlink but the linkname \"\(target)\" isn't found")
            }
            cur = t
            hops += 1
            if hops > 64 {
                throw EStargzError(.invalidEntry, "TOC entry \"\(path(EntryID(k)))\": hardlink chain is a loop")
            }
        }
        if records[Int(cur)].type == .dir {
            throw EStargzError(.invalidEntry, "TOC entry \"\(path(EntryID(k)))\" is a hardlink to a directory")
        }
        return cur
    }
}

/// TOC JSON keys, lowercase (Go matches them case-insensitively).
enum Keys {
    static let version = Array("version".utf8)
    static let entries = Array("entries".utf8)
    static let name = Array("name".utf8)
    static let type = Array("type".utf8)
    static let size = Array("size".utf8)
    static let modtime = Array("modtime".utf8)
    static let linkname = Array("linkname".utf8)
    static let mode = Array("mode".utf8)
    static let uid = Array("uid".utf8)
    static let gid = Array("gid".utf8)
    static let username = Array("username".utf8)
    static let groupname = Array("groupname".utf8)
    static let offset = Array("offset".utf8)
    static let inneroffset = Array("inneroffset".utf8)
    static let devmajor = Array("devmajor".utf8)
    static let devminor = Array("devminor".utf8)
    static let xattrs = Array("xattrs".utf8)
    static let digest = Array("digest".utf8)
    static let chunkoffset = Array("chunkoffset".utf8)
    static let chunksize = Array("chunksize".utf8)
    static let chunkdigest = Array("chunkdigest".utf8)
    static let tocName = Array(ReservedName.toc.utf8)
}

extension EntryType {
    /// Parses the JSON spelling from bytes.
    init?(bytes b: [UInt8]) {
        switch b.count {
        case 3 where b == [0x64, 0x69, 0x72]: self = .dir
        case 3 where b == [0x72, 0x65, 0x67]: self = .reg
        case 4 where b == [0x66, 0x69, 0x66, 0x6f]: self = .fifo
        case 4 where b == [0x63, 0x68, 0x61, 0x72]: self = .char
        default:
            guard let t = EntryType(String(decoding: b, as: UTF8.self)) else { return nil }
            self = t
        }
    }
}
