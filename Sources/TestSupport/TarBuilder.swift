// SPDX-License-Identifier: Apache-2.0
import EStargz

/// Builds small tars for tests.
public struct TarBuilder {
    private var out: [UInt8] = []

    /// An empty tar.
    public init() {}

    private func header(_ type: Character, _ name: String, mode: Int64, owner: Int64 = 0) -> TarHeader {
        var h = TarHeader(typeflag: type.asciiValue!, name: name)
        h.mode = mode
        h.modTime = 1_700_000_000
        h.uid = owner
        h.gid = owner
        h.userName = owner == 0 ? "root" : "user\(owner)"
        h.groupName = h.userName
        return h
    }

    /// Adds a directory.
    public func dir(_ name: String, mode: Int64 = 0o755, owner: Int64 = 0) -> TarBuilder {
        var b = self
        b.out += TarWriter.header(header("5", name, mode: mode, owner: owner))
        return b
    }

    /// Adds a regular file, owned by uid and gid `owner`.
    public func file(_ name: String, _ content: [UInt8], mode: Int64 = 0o644, owner: Int64 = 0) -> TarBuilder {
        var b = self
        b.out += TarWriter.entry(header("0", name, mode: mode, owner: owner), content)
        return b
    }

    /// Adds a symlink.
    public func symlink(_ name: String, _ target: String) -> TarBuilder {
        var b = self
        var h = header("2", name, mode: 0o777)
        h.linkName = target
        b.out += TarWriter.header(h)
        return b
    }

    /// The tar, with its end-of-archive marker.
    public func bytes() -> [UInt8] { out + TarWriter.end }
}
