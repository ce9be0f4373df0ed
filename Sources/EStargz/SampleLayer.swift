// SPDX-License-Identifier: Apache-2.0

/// A deterministic sample layer: the demo's embedded default input.
public enum SampleLayer {
    /// The tar bytes of a small layer with every entry type, a multi-chunk file and whiteouts.
    public static func tar(seed: UInt64 = 1) -> [UInt8] {
        var out: [UInt8] = []
        var rng = seed
        func random(_ n: Int) -> [UInt8] {
            (0..<n).map { _ in
                rng = rng &* 6364136223846793005 &+ 1442695040888963407
                return UInt8(truncatingIfNeeded: rng >> 33)
            }
        }
        func add(_ type: Character, _ name: String, mode: Int64, content: [UInt8] = [], link: String = "",
                 xattrs: [String: [UInt8]] = [:], dev: (Int64, Int64) = (0, 0)) {
            var h = TarHeader(typeflag: type.asciiValue!, name: name)
            h.mode = mode
            h.modTime = 1_700_000_000
            h.userName = "root"
            h.groupName = "root"
            h.linkName = link
            h.xattrs = xattrs
            (h.devMajor, h.devMinor) = dev
            out += TarWriter.entry(h, content)
        }
        let text = Array(String(repeating: "eStargz lets a node start a container before its image is downloaded.\n", count: 40_000).utf8)
        add("5", "etc/", mode: 0o755)
        add("0", "etc/os-release", mode: 0o644, content: Array("NAME=\"stargz-swift demo\"\nID=demo\n".utf8))
        add("0", "etc/.wh.motd", mode: 0o644)
        add("5", "usr/", mode: 0o755)
        add("5", "usr/bin/", mode: 0o755)
        add("0", "usr/bin/app", mode: 0o755, content: random(300_000), xattrs: ["user.demo": Array("yes".utf8)])
        add("2", "usr/bin/app-link", mode: 0o777, link: "app")
        add("1", "usr/bin/app-hardlink", mode: 0o755, link: "usr/bin/app")
        add("5", "usr/share/", mode: 0o755)
        add("0", "usr/share/big.txt", mode: 0o644, content: text)
        add("5", "var/", mode: 0o755)
        add("0", "var/.wh..wh..opq", mode: 0o644)
        add("6", "var/fifo", mode: 0o644)
        add("3", "var/null", mode: 0o666, dev: (1, 3))
        out += TarWriter.end
        return out
    }

    /// Paths the demo prioritizes.
    public static let prioritizedFiles = ["usr/bin/app", "etc/os-release"]
}

