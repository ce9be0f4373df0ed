// SPDX-License-Identifier: Apache-2.0
public import EStargz
public import FUSE

/// A layer's tree as the container sees it, computed from its TOC once and pure afterwards: node ids,
/// attributes, directory listings, xattrs, and the overlayfs view of whiteouts.
///
/// Whiteouts are shown in overlayfs form (`.wh.NAME` as a 0/0 character device `NAME`; `.wh..wh..opq` as
/// `trusted.overlay.opaque=y` on its directory) and the landmark files are hidden, as upstream does.
/// Node ids: 1 is the root; every other node is its TOC id + 2.
public struct LayerTree: Sendable {
    /// The TOC the tree is read from.
    public let toc: TOC
    /// Nodes that are `.wh.NAME` whiteouts (shown as `NAME`), and directories holding an opaque marker.
    let whiteouts: Set<UInt32>
    let opaqueDirectories: Set<UInt32>
    /// The opaque markers and the landmark files.
    let hidden: Set<UInt32>
    /// The bytes of every regular file (for `statfs`).
    public let totalSize: Int64

    static let opaqueMarker = Array(".wh..wh..opq".utf8)
    static let whiteoutPrefix = Array(".wh.".utf8)
    static let opaqueXattr = "trusted.overlay.opaque"

    /// Indexes `toc`'s whiteouts, opaque directories and hidden names (one pass over its directories).
    public init(_ toc: TOC) {
        self.toc = toc
        var wh = Set<UInt32>(), opq = Set<UInt32>(), hid = Set<UInt32>()
        var total: Int64 = 0
        for raw in 0..<UInt32(toc.nodeCount) {
            let id = EntryID(rawValue: raw)
            let a = toc.attributes(id)
            guard a.type == .dir else {
                if a.type == .reg { total += a.size }
                continue
            }
            for (name, node) in toc.childNodes(of: id) {
                if name == Self.opaqueMarker {
                    opq.insert(raw)
                    hid.insert(node.rawValue)
                } else if name.starts(with: Self.whiteoutPrefix) && name.count > 4 {
                    wh.insert(node.rawValue)
                } else if id == toc.root,
                    name == Array(ReservedName.prefetchLandmark.utf8) || name == Array(ReservedName.noPrefetchLandmark.utf8)
                {
                    hid.insert(node.rawValue)
                }
            }
        }
        whiteouts = wh
        opaqueDirectories = opq
        hidden = hid
        totalSize = total
    }

    // MARK: Node ids

    /// The TOC entry of node id `node`.
    @inline(__always) public func entry(_ node: UInt64) throws(LazyLayerError) -> EntryID {
        if node == 1 { return toc.root }
        guard node >= 2, node - 2 < UInt64(toc.nodeCount) else { throw LazyLayerError(.notFound, "no node \(node)") }
        return EntryID(rawValue: UInt32(node - 2))
    }

    /// The node id of TOC entry `id`.
    @inline(__always) public func node(_ id: EntryID) -> UInt64 { id == toc.root ? 1 : UInt64(id.rawValue) + 2 }

    static func typeBits(_ t: EntryType) -> UInt32 {
        switch t {
        case .dir: 0o040000
        case .reg, .hardlink, .chunk: 0o100000
        case .symlink: 0o120000
        case .char: 0o020000
        case .block: 0o060000
        case .fifo: 0o010000
        }
    }

    /// The attributes of TOC entry `id`, as the container sees them.
    public func attributes(_ id: EntryID) -> FileAttributes {
        let a = toc.attributes(id)
        if whiteouts.contains(id.rawValue) {
            return FileAttributes(inode: node(id), mode: 0o020000, linkCount: 1, uid: a.uid, gid: a.gid, modTime: a.modTime)
        }
        return FileAttributes(
            inode: node(id), mode: Self.typeBits(a.type) | a.permissions, linkCount: UInt32(max(1, a.linkCount)),
            uid: a.uid, gid: a.gid, size: UInt64(max(0, a.size)), modTime: a.modTime, device: (a.devMajor, a.devMinor))
    }

    // MARK: Operations

    /// The node `name` names in directory `parent`.
    public func lookup(parent: UInt64, name: UnsafeRawBufferPointer) throws(LazyLayerError) -> FileAttributes {
        let dir = try entry(parent)
        if name.starts(with: Self.whiteoutPrefix) { throw LazyLayerError(.notFound) }  // raw whiteout names are hidden
        if let id = toc.child(of: dir, named: name), !hidden.contains(id.rawValue) {
            return attributes(id)
        }
        let wh = Self.whiteoutPrefix + Array(name)
        if let id = wh.withUnsafeBytes({ toc.child(of: dir, named: $0) }), whiteouts.contains(id.rawValue) {
            return attributes(id)
        }
        throw LazyLayerError(.notFound)
    }

    public func attributes(node: UInt64) throws(LazyLayerError) -> FileAttributes { attributes(try entry(node)) }

    public func readlink(node: UInt64) throws(LazyLayerError) -> [UInt8] {
        let id = try entry(node)
        guard toc.attributes(id).type == .symlink else { throw LazyLayerError(.invalidOperation, "node \(node) is not a symlink") }
        return toc.linkTarget(id)
    }

    public func entries(directory: UInt64) throws(LazyLayerError) -> [DirectoryEntry] {
        let id = try entry(directory)
        guard toc.attributes(id).type == .dir, !whiteouts.contains(id.rawValue) else { throw LazyLayerError(.notDirectory) }
        var out: [DirectoryEntry] = []
        for (name, child) in toc.childNodes(of: id) where !hidden.contains(child.rawValue) {
            if whiteouts.contains(child.rawValue) {
                out.append(DirectoryEntry(name: Array(name.dropFirst(4)), inode: node(child), type: 0o020000))
            } else {
                out.append(DirectoryEntry(name: name, inode: node(child), type: Self.typeBits(toc.attributes(child).type)))
            }
        }
        return out
    }

    /// Whether a TOC's xattr is shown. overlayfs reads `trusted.overlay.*` of its lower layers as its own
    /// metadata: `redirect`, `metacopy`, `origin` and the like from an image would make a file of this layer
    /// stand for another of the stack (with `metacopy=on`, as RHCOS's storage.conf has it). Only `opaque`, which
    /// a whiteout could express anyway, is kept; the others are the image author's to write, not overlay's.
    /// `security.selinux` is not shown either: a label is the node's policy to give (CRI-O mounts the container's
    /// overlay with `context=`), and one from the build host must never take effect on a copy-up or a mount without
    /// it. `security.capability` (file capabilities, which a normal pull keeps) is shown.
    static func shown(_ name: String) -> Bool {
        (!name.hasPrefix("trusted.overlay.") || name == opaqueXattr) && name != "security.selinux"
    }

    public func xattr(node: UInt64, name: String) throws(LazyLayerError) -> [UInt8] {
        let id = try entry(node)
        if name == Self.opaqueXattr, opaqueDirectories.contains(id.rawValue) { return [UInt8(ascii: "y")] }
        guard Self.shown(name), let v = toc.xattrs(id)[name] else { throw LazyLayerError(.noAttribute) }
        return v
    }

    public func xattrNames(node: UInt64) throws(LazyLayerError) -> [String] {
        let id = try entry(node)
        var names = toc.xattrs(id).keys.filter(Self.shown).sorted()
        if opaqueDirectories.contains(id.rawValue) && !names.contains(Self.opaqueXattr) { names.append(Self.opaqueXattr) }
        return names
    }

    /// Checks that `node` opens for reading.
    public func open(node: UInt64) throws(LazyLayerError) {
        let id = try entry(node)
        // A whiteout is shown as a 0/0 character device whatever its TOC entry is (a `.wh.` directory too): it
        // opens as a device with no driver would, the kernel never asks us for it.
        if whiteouts.contains(id.rawValue) { throw LazyLayerError(.noDevice) }
        if toc.attributes(id).type == .dir { throw LazyLayerError(.isDirectory) }
    }

    /// The regular file `node` reads from (a hardlink's target) and its size.
    public func regularFile(_ node: UInt64) throws(LazyLayerError) -> (entry: EntryID, size: Int64) {
        let id = try entry(node)
        let a = toc.attributes(id)
        guard a.type == .reg, !whiteouts.contains(id.rawValue) else {
            throw LazyLayerError(a.type == .dir && !whiteouts.contains(id.rawValue) ? .isDirectory : .invalidOperation)
        }
        return (toc.resolvedNode(id), a.size)
    }

    public func statistics() -> FileSystemStatistics {
        FileSystemStatistics(blocks: UInt64((totalSize + 4095) / 4096), files: UInt64(toc.nodeCount))
    }
}
