// SPDX-License-Identifier: Apache-2.0
import Foundation
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// The whole text of a /proc file, read until end of file (its size says 0, and a reader that trusts a size or
/// reads once gets the first part only: with podman's mounts about, the mount table is long).
public func procFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { break }
        out += buf[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

/// The mount points in /proc/self/mountinfo (octal escapes left as they are).
func mountPoints() -> [Substring] {
    (procFile("/proc/self/mountinfo") ?? "").split(separator: "\n").compactMap { line in
        let f = line.split(separator: " ")
        return f.count > 4 ? f[4] : nil
    }
}

/// Whether something is mounted at `path` (from /proc/self/mountinfo).
public func isMounted(_ path: String) -> Bool {
    let real = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? path
    return mountPoints().contains { $0 == real || $0 == path }
}

/// The type and options of the mount at `path` as /proc/self/mounts lists them; nil when nothing is mounted there.
public func mountEntry(_ path: String) -> (type: String, options: String)? {
    for line in (procFile("/proc/self/mounts") ?? "").split(separator: "\n") {
        let f = line.split(separator: " ")
        if f.count > 3 && f[1] == Substring(path) { return (String(f[2]), String(f[3])) }
    }
    return nil
}

/// Lazily unmounts whatever is mounted at `path`, stacked mounts included (a test's last resort, so that no mount
/// outlives it). It does not ask the mount table first: a store killed with SIGKILL leaves a mount whose root
/// answers ENOTCONN, and a table read that misses it must not leave it behind. As root, `umount2(MNT_DETACH)` until
/// nothing is left (EINVAL); otherwise `umount -l`.
public func forceUnmount(_ path: String) {
    for _ in 0..<16 {
        if umount2(path, Int32(MNT_DETACH)) == 0 { continue }
        if errno == EPERM { _ = try? run("/bin/umount", ["-l", path]) }
        return
    }
}

/// A fresh temporary directory, removed (after a forced unmount of anything below it) by `body`'s end.
public func withTemporaryDirectory<T>(_ prefix: String = "stargz-test", _ body: (String) async throws -> T) async throws -> T {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer {
        // Deepest first; a lazy unmount of a parent detaches what is under it too.
        for m in mountPoints().filter({ $0.hasPrefix(dir) }).sorted(by: { $0.count > $1.count }) { forceUnmount(String(m)) }
        try? FileManager.default.removeItem(atPath: dir)
    }
    return try await body(dir)
}
