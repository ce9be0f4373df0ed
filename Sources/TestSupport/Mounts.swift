// SPDX-License-Identifier: Apache-2.0
import Foundation

/// Whether something is mounted at `path` (from /proc/self/mountinfo).
///
/// The kernel hands the mount table out in pieces, and a read while other mounts come and go (podman's, other
/// tests') can miss a line: a path not found is looked for in a few more reads before the answer is no.
public func isMounted(_ path: String) -> Bool {
    let real = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? path
    for _ in 0..<50 {
        guard let info = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return false }
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
        let table = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
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
        if let info = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) {
            for line in info.split(separator: "\n") {
                let f = line.split(separator: " ")
                if f.count > 4, f[4].hasPrefix(dir) { _ = try? run("/bin/umount", ["-l", String(f[4])]) }
            }
        }
        try? FileManager.default.removeItem(atPath: dir)
    }
    return try await body(dir)
}
