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

/// Whether something is mounted at `path` (from /proc/self/mountinfo).
///
/// The kernel hands the mount table out in pieces, and a read while other mounts come and go (podman's, other
/// tests') can miss a line: a path not found is looked for in a few more reads before the answer is no.
public func isMounted(_ path: String) -> Bool {
    let real = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? path
    for _ in 0..<50 {
        guard let info = procFile("/proc/self/mountinfo") else { return false }
        let found = info.split(separator: "\n").contains { line in
            let f = line.split(separator: " ")
            return f.count > 4 && (f[4] == real || f[4] == path)
        }
        if found { return true }
    }
    return false
}

/// The type and options of the mount at `path` as /proc/self/mounts lists them (read again, as ``isMounted(_:)``
/// does, when a read misses it); nil when nothing is mounted there.
public func mountEntry(_ path: String) -> (type: String, options: String)? {
    for _ in 0..<50 {
        let table = procFile("/proc/self/mounts") ?? ""
        for line in table.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count > 3 && f[1] == Substring(path) { return (String(f[2]), String(f[3])) }
        }
    }
    return nil
}

/// Lazily unmounts `path` if it is still mounted (a test's last resort, so that no mount outlives it).
public func forceUnmount(_ path: String) {
    guard isMounted(path) else { return }
    _ = try? run("/bin/umount", ["-l", path])
}

/// A fresh temporary directory, removed (after a forced unmount of anything below it) by `body`'s end.
public func withTemporaryDirectory<T>(_ prefix: String = "stargz-test", _ body: (String) async throws -> T) async throws -> T {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer {
        if let info = procFile("/proc/self/mountinfo") {
            for line in info.split(separator: "\n") {
                let f = line.split(separator: " ")
                if f.count > 4, f[4].hasPrefix(dir) { _ = try? run("/bin/umount", ["-l", String(f[4])]) }
            }
        }
        try? FileManager.default.removeItem(atPath: dir)
    }
    return try await body(dir)
}
