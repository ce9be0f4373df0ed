// SPDX-License-Identifier: Apache-2.0
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// The few file operations installs need, as POSIX calls with errors that name the path.
enum FileOps {
    struct SystemCallError: Error, CustomStringConvertible {
        var call: String
        var errno: Int32
        var description: String { "\(call): \(String(cString: strerror(errno)))" }
    }

    static func fail(_ call: String, _ path: String, file: String = #fileID, line: Int = #line) -> DeployError {
        let e = SystemCallError(call: call, errno: errno)
        return DeployError(.io, "\(path): \(e)", cause: e, file: file, sourceLine: line)
    }

    /// The contents and permission bits of a regular file, or nil if nothing is there.
    static func read(_ path: String) throws(DeployError) -> (bytes: [UInt8], mode: Int)? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw fail("open", path)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw fail("fstat", path) }
        guard st.st_mode & S_IFMT == S_IFREG else { throw DeployError(.io, "\(path) is not a regular file") }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw fail("read", path)
            }
            if n == 0 { break }
            out += buf[0..<n]
        }
        return (out, Int(st.st_mode & 0o7777))
    }

    static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    /// Writes `bytes` with `mode` to a new temporary file beside `path` and syncs it; returns its path.
    static func writeTemporary(beside path: String, _ bytes: [UInt8], mode: Int) throws(DeployError) -> String {
        let dir = directory(of: path)
        let name = String(path[path.index(after: path.lastIndex(of: "/")!)...])
        let tmp = "\(dir)/.\(name).stargz-tmp-\(getpid())"
        unlink(tmp)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode_t(mode))
        guard fd >= 0 else { throw fail("open", tmp) }
        var ok = false
        defer {
            close(fd)
            if !ok { unlink(tmp) }
        }
        guard fchmod(fd, mode_t(mode)) == 0 else { throw fail("fchmod", tmp) }
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + off, $0.count - off) }
            if n < 0 {
                if errno == EINTR { continue }
                throw fail("write", tmp)
            }
            off += n
        }
        guard fsync(fd) == 0 else { throw fail("fsync", tmp) }
        ok = true
        return tmp
    }

    /// Replaces `path` with `bytes` atomically: a synced temporary file renamed over it.
    static func replace(_ path: String, with bytes: [UInt8], mode: Int) throws(DeployError) {
        let tmp = try writeTemporary(beside: path, bytes, mode: mode)
        do { try rename(tmp, path) } catch {
            unlink(tmp)
            throw error
        }
    }

    static func rename(_ from: String, _ to: String) throws(DeployError) {
        guard Glibc.rename(from, to) == 0 else { throw fail("rename to \(to)", from) }
        syncDirectory(of: to)
    }

    /// Makes `to` a new name for `from`; fails if `to` exists (so a backup is never overwritten).
    static func link(_ from: String, _ to: String) throws(DeployError) {
        guard Glibc.link(from, to) == 0 else { throw fail("link to \(to)", from) }
    }

    static func remove(_ path: String) throws(DeployError) {
        guard unlink(path) == 0 || errno == ENOENT else { throw fail("unlink", path) }
        syncDirectory(of: path)
    }

    /// `mkdir -p`; returns the directories it made, outermost first.
    static func makeDirectories(_ path: String) throws(DeployError) -> [String] {
        var missing: [String] = []
        var p = path
        while !p.isEmpty, p != "/", !exists(p) {
            missing.append(p)
            p = directory(of: p)
        }
        for d in missing.reversed() {
            guard mkdir(d, 0o755) == 0 || errno == EEXIST else { throw fail("mkdir", d) }
        }
        return missing.reversed()
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func syncDirectory(of path: String) {
        let fd = open(directory(of: path), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }

    static func isExecutable(_ path: String) -> Bool { access(path, X_OK) == 0 }
}

/// Writes whole files the way deploy does: a synced temporary file renamed over the target.
public enum AtomicFile {
    /// Replaces `path` with `bytes` atomically. `mode` nil keeps an existing file's permission bits (else 0644).
    /// #### Errors
    /// ``DeployError/Code/io`` naming the path and the failed call; the target is then unchanged.
    public static func write(_ path: String, _ bytes: [UInt8], mode: Int? = nil) throws(DeployError) {
        var m = mode ?? 0o644
        if mode == nil, let existing = try FileOps.read(path) { m = existing.mode }
        try FileOps.replace(path, with: bytes, mode: m)
    }

    /// The bytes of `path`, or nil if it does not exist.
    /// #### Errors
    /// ``DeployError/Code/io`` when it exists but cannot be read.
    public static func read(_ path: String) throws(DeployError) -> [UInt8]? { try FileOps.read(path)?.bytes }
}
