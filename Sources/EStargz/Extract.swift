// SPDX-License-Identifier: Apache-2.0
#if canImport(Glibc)
@preconcurrency import Glibc
#endif
internal import CLinuxSys

/// What an extraction did.
public struct ExtractReport: Sendable, Equatable {
    /// Entries written.
    public var entries: Int
    /// Bytes of regular-file content written.
    public var bytes: Int64
    /// Entries skipped with the reason (device nodes when not permitted, …).
    public var skipped: [String]
}

extension EStargzReader {
    /// Extracts the layer into directory `directory` (created if missing).
    ///
    /// Every path is opened component by component with `O_NOFOLLOW` below a descriptor of `directory`,
    /// so no entry (and no symlink already in `directory` or made by the layer) can cause a write outside it.
    /// Whiteouts (`.wh.*`) are written as the empty files the layer holds; landmarks are left out.
    /// Ownership is applied when running as root.
    public func extract(to directory: String) throws -> ExtractReport {
        mkdir(directory, 0o755)
        let rootFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard rootFD >= 0 else {
            throw EStargzError(.io, "cannot open \(directory): \(String(cString: strerror(errno)))")
        }
        defer { close(rootFD) }
        var report = ExtractReport(entries: 0, bytes: 0, skipped: [])
        let isRoot = geteuid() == 0
        var dirModes: [(String, EntryID)] = []
        var hardlinks: [(path: String, target: EntryID)] = []
        var items: [(String, EntryID, EntryID)] = []
        toc.walk { path, node, nameEntry in items.append((path, node, nameEntry)) }
        for (path, node, nameEntry) in items where !path.isEmpty {
            if toc.parent(of: nameEntry) == toc.root
                && (path == ReservedName.prefetchLandmark || path == ReservedName.noPrefetchLandmark)
            {
                continue
            }
            let rec = toc.records[node.index]
            if toc.records[nameEntry.index].type == .hardlink {
                hardlinks.append((path, node))
                continue
            }
            let (parentFD, name) = try openParent(rootFD, path, directory)
            defer { close(parentFD) }
            switch rec.type {
            case .dir:
                if mkdirat(parentFD, name, 0o700) != 0 && errno != EEXIST {
                    throw ioError("mkdir", path, directory)
                }
                let fd = openat(parentFD, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard fd >= 0 else { throw ioError("open directory", path, directory) }
                try applyAttributes(fd: fd, node: node, path: path, isRoot: isRoot, setMode: false, report: &report)
                close(fd)
                dirModes.append((path, node))
            case .reg:
                unlinkat(parentFD, name, 0)
                let fd = openat(parentFD, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                guard fd >= 0 else { throw ioError("create", path, directory) }
                do {
                    for c in chunks(of: node) {
                        let data = try chunkData(c)
                        try data.withUnsafeBytes { try writeAll(fd, $0, path: "\(directory)/\(path)") }
                        report.bytes += Int64(data.count)
                    }
                    try applyAttributes(fd: fd, node: node, path: path, isRoot: isRoot, setMode: true, report: &report)
                } catch {
                    close(fd)
                    throw error
                }
                close(fd)
            case .symlink:
                unlinkat(parentFD, name, 0)
                guard symlinkat(toc.string(rec.linkName), parentFD, name) == 0 else {
                    throw ioError("symlink", path, directory)
                }
                if isRoot { fchownat(parentFD, name, rec.uid, rec.gid, AT_SYMLINK_NOFOLLOW) }
                try setTimes(parentFD, name, node)
            case .char, .block, .fifo:
                unlinkat(parentFD, name, 0)
                let kind: mode_t = rec.type == .char ? S_IFCHR : rec.type == .block ? S_IFBLK : S_IFIFO
                let dev = makedev(rec.devMajor, rec.devMinor)
                if mknodat(parentFD, name, kind | mode_t(rec.mode & 0o7777), dev) != 0 {
                    if errno == EPERM {
                        report.skipped.append("\(path): creating a device node is not permitted")
                        continue
                    }
                    throw ioError("mknod", path, directory)
                }
                if isRoot { fchownat(parentFD, name, rec.uid, rec.gid, AT_SYMLINK_NOFOLLOW) }
                fchmodat(parentFD, name, mode_t(rec.mode & 0o7777), 0)
                try setTimes(parentFD, name, node)
            case .hardlink, .chunk:
                continue
            }
            report.entries += 1
        }
        for (path, target) in hardlinks {
            let targetPath = toc.path(target)
            let (tParent, tName) = try openParent(rootFD, targetPath, directory)
            defer { close(tParent) }
            let (parentFD, name) = try openParent(rootFD, path, directory)
            defer { close(parentFD) }
            unlinkat(parentFD, name, 0)
            guard linkat(tParent, tName, parentFD, name, 0) == 0 else { throw ioError("link", path, directory) }
            report.entries += 1
        }
        // Directory modes last (deepest first), so a read-only directory does not block its children.
        for (path, node) in dirModes.reversed() {
            let (parentFD, name) = try openParent(rootFD, path, directory)
            defer { close(parentFD) }
            let fd = openat(parentFD, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { throw ioError("open directory", path, directory) }
            fchmod(fd, mode_t(toc.records[node.index].mode & 0o7777))
            try setTimes(parentFD, name, node)
            close(fd)
        }
        return report
    }

    private func ioError(_ op: String, _ path: String, _ dir: String) -> EStargzError {
        let e = errno
        if e == ELOOP || e == ENOTDIR {
            return EStargzError(
                .unsafePath, "\(op) \"\(path)\" in \(dir): a path component is a symlink or not a directory; refusing to follow it")
        }
        return EStargzError(.io, "\(op) \"\(path)\" in \(dir) failed: \(String(cString: strerror(e)))")
    }

    /// Opens the parent directory of `path` below `rootFD`, never following symlinks.
    private func openParent(_ rootFD: Int32, _ path: String, _ dir: String) throws -> (Int32, String) {
        let parts = path.split(separator: "/").map(String.init)
        guard let last = parts.last, !parts.contains(".."), !parts.contains(".") else {
            throw EStargzError(.unsafePath, "refusing to extract \"\(path)\"")
        }
        var fd = dup(rootFD)
        for comp in parts.dropLast() {
            let next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            close(fd)
            guard next >= 0 else { throw ioError("open", path, dir) }
            fd = next
        }
        return (fd, last)
    }

    private func applyAttributes(
        fd: Int32, node: EntryID, path: String, isRoot: Bool, setMode: Bool, report: inout ExtractReport
    ) throws {
        let rec = toc.records[node.index]
        if isRoot { fchown(fd, rec.uid, rec.gid) }
        if setMode { fchmod(fd, mode_t(rec.mode & 0o7777)) }
        if rec.xattrs >= 0 {
            for (k, v) in toc.xattrTable[Int(rec.xattrs)] {
                let rc = v.withUnsafeBytes { fsetxattr(fd, k, $0.baseAddress, v.count, 0) }
                if rc != 0 {
                    report.skipped.append("\(path): xattr \(k): \(String(cString: strerror(errno)))")
                }
            }
        }
        if rec.flags.contains(.hasModTime) {
            var ts = [timespec(tv_sec: Int(rec.modTime), tv_nsec: 0), timespec(tv_sec: Int(rec.modTime), tv_nsec: 0)]
            futimens(fd, &ts)
        }
    }

    private func setTimes(_ parentFD: Int32, _ name: String, _ node: EntryID) throws {
        let rec = toc.records[node.index]
        guard rec.flags.contains(.hasModTime) else { return }
        var ts = [timespec(tv_sec: Int(rec.modTime), tv_nsec: 0), timespec(tv_sec: Int(rec.modTime), tv_nsec: 0)]
        utimensat(parentFD, name, &ts, AT_SYMLINK_NOFOLLOW)
    }
}

private func makedev(_ major: UInt32, _ minor: UInt32) -> dev_t {
    let ma = dev_t(major), mi = dev_t(minor)
    return ((ma & 0xfffff000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffffff00) << 12) | (mi & 0xff)
}
