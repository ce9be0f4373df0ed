// SPDX-License-Identifier: Apache-2.0

/// What a filesystem needs of a node to answer `stat`, without building a whole ``TOCEntry``.
public struct NodeAttributes: Sendable, Equatable {
    /// The entry type (never `.hardlink`: nodes are resolved).
    public var type: EntryType
    /// Permission bits (and setuid/setgid/sticky), without the file-type bits.
    public var permissions: UInt32
    /// Owner id.
    public var uid: UInt32
    /// Group id.
    public var gid: UInt32
    /// Size of a regular file; the target length for a symlink; 0 otherwise.
    public var size: Int64
    /// Modification time in seconds since the epoch (0 when the TOC has none).
    public var modTime: Int64
    /// Device major number (char and block devices).
    public var devMajor: UInt32
    /// Device minor number.
    public var devMinor: UInt32
    /// Number of names the node has.
    public var linkCount: Int
}

extension TOC {
    /// The number of nodes (entries, including implicit directories); valid ids are `0..<nodeCount`.
    public var nodeCount: Int { records.count }

    /// The attributes of a node (a hardlink name resolves to its target first).
    public func attributes(_ id: EntryID) -> NodeAttributes {
        let node = records[id.index].type == .hardlink ? resolvedNode(id) : id
        let r = records[node.index]
        let size: Int64 = r.type == .reg ? r.size : r.type == .symlink ? Int64(r.linkName.count) : 0
        return NodeAttributes(
            type: r.type, permissions: r.mode & 0o7777, uid: r.uid, gid: r.gid, size: size,
            modTime: r.flags.contains(.hasModTime) ? r.modTime : 0, devMajor: r.devMajor, devMinor: r.devMinor,
            linkCount: Int(nlink[node.index]))
    }

    /// The target of a symlink, as raw bytes.
    public func linkTarget(_ id: EntryID) -> [UInt8] {
        let ref = records[id.index].linkName
        return arena.withUnsafeBytes { Array($0[Int(ref.start)..<Int(ref.start + ref.count)]) }
    }

    /// The extended attributes of a node.
    public func xattrs(_ id: EntryID) -> [String: [UInt8]] {
        let r = records[id.index]
        return r.xattrs >= 0 ? xattrTable[Int(r.xattrs)] : [:]
    }

    /// The node that `name` (one path element, raw bytes) names inside directory `parent`, hardlinks
    /// resolved; nil when there is none. `.`, `..`, empty names and names with `/` find nothing.
    public func child(of parent: EntryID, named name: UnsafeRawBufferPointer) -> EntryID? {
        guard name.count > 0, !name.contains(0x2f), !(name.count == 1 && name[0] == 0x2e),
            !(name.count == 2 && name[0] == 0x2e && name[1] == 0x2e), records[parent.index].type == .dir
        else { return nil }
        let p = records[parent.index].name
        var key = [UInt8]()
        key.reserveCapacity(Int(p.count) + 1 + name.count)
        arena.withUnsafeBytes { key.append(contentsOf: $0[Int(p.start)..<Int(p.start + p.count)]) }
        if p.count > 0 { key.append(0x2f) }
        key.append(contentsOf: name)
        guard let id = key.withUnsafeBytes({ find(bytes: $0) }) else { return nil }
        return resolvedNode(EntryID(id))
    }

    /// The children of a directory as (raw name, node) pairs, in TOC order.
    public func childNodes(of id: EntryID) -> [(name: [UInt8], node: EntryID)] {
        let s = Int(childStart[id.index])
        let n = Int(childCount[id.index])
        return arena.withUnsafeBytes { a in
            (s..<(s + n)).map { i in
                let c = children[i]
                let ref = records[Int(c.nameRecord)].name
                let bytes = a[Int(ref.start)..<Int(ref.start + ref.count)]
                let start = (bytes.lastIndex(of: 0x2f).map { $0 + 1 }) ?? Int(ref.start)
                return (Array(a[start..<Int(ref.start + ref.count)]), EntryID(c.node))
            }
        }
    }
}
