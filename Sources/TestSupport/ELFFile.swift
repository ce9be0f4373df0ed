// SPDX-License-Identifier: Apache-2.0

/// What a dynamically linked ELF executable needs from the system: its `DT_NEEDED` libraries, its run paths and the
/// symbol versions it requires (`.gnu.version_r`). Enough to hold a release binary to what RHEL 9 provides; it reads
/// 64-bit little-endian files only (x86_64 and aarch64).
public struct ELFDependencies: Sendable, Equatable {
    /// The `DT_NEEDED` entries, in order.
    public var needed: [String]
    /// `DT_RPATH` and `DT_RUNPATH` values.
    public var runPaths: [String]
    /// The program interpreter (`PT_INTERP`), if any.
    public var interpreter: String?
    /// Every required symbol version: (library, version name), e.g. ("libc.so.6", "GLIBC_2.34").
    public var versions: [(file: String, version: String)]

    /// The dependencies as given (for checks of a policy against made-up files).
    public init(needed: [String], runPaths: [String], interpreter: String?, versions: [(file: String, version: String)]) {
        self.needed = needed
        self.runPaths = runPaths
        self.interpreter = interpreter
        self.versions = versions
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.needed == b.needed && a.runPaths == b.runPaths && a.interpreter == b.interpreter
            && a.versions.map { "\($0.file) \($0.version)" } == b.versions.map { "\($0.file) \($0.version)" }
    }

    /// Reads `bytes`, an ELF file.
    ///
    /// #### Errors
    /// ``ELFError`` when the file is not a 64-bit little-endian ELF file or a table runs past its end.
    public init(_ bytes: [UInt8]) throws(ELFError) {
        let r = Reader(bytes: bytes)
        guard bytes.count >= 64, bytes[0] == 0x7F, bytes[1] == 0x45, bytes[2] == 0x4C, bytes[3] == 0x46 else {
            throw ELFError("not an ELF file")
        }
        guard bytes[4] == 2, bytes[5] == 1 else { throw ELFError("not a 64-bit little-endian ELF file") }
        let phoff = try r.u64(0x20), shoff = try r.u64(0x28)
        let phentsize = try r.u16(0x36), phnum = try r.u16(0x38)
        let shentsize = try r.u16(0x3A), shnum = try r.u16(0x3C)

        var interpreter: String? = nil
        for i in 0..<phnum {
            let p = phoff + i * phentsize
            if try r.u32(p) == 3 {  // PT_INTERP
                interpreter = try r.string(try r.u64(p + 8), limit: try r.u64(p + 32))
            }
        }

        struct Section { var type: Int, offset: Int, size: Int, link: Int, info: Int }
        var sections: [Section] = []
        for i in 0..<shnum {
            let s = shoff + i * shentsize
            sections.append(
                Section(
                    type: try r.u32(s + 4), offset: try r.u64(s + 24), size: try r.u64(s + 32), link: try r.u32(s + 40),
                    info: try r.u32(s + 44)))
        }
        func strtab(_ index: Int) throws(ELFError) -> Section {
            guard sections.indices.contains(index), sections[index].type == 3 else {
                throw ELFError("section link \(index) is not a string table")
            }
            return sections[index]
        }

        var needed: [String] = [], runPaths: [String] = []
        var versions: [(String, String)] = []
        for s in sections {
            switch s.type {
            case 6:  // SHT_DYNAMIC: (d_tag, d_val) pairs up to DT_NULL
                let strings = try strtab(s.link)
                var at = s.offset
                while at + 16 <= s.offset + s.size {
                    let tag = try r.u64(at), value = try r.u64(at + 8)
                    if tag == 0 { break }
                    if tag == 1 { needed.append(try r.string(strings.offset + value, limit: strings.size - value)) }
                    if tag == 15 || tag == 29 { runPaths.append(try r.string(strings.offset + value, limit: strings.size - value)) }
                    at += 16
                }
            case 0x6fff_fffe:  // SHT_GNU_verneed: s.info entries, each with vn_cnt auxiliary entries
                let strings = try strtab(s.link)
                var need = s.offset
                for _ in 0..<min(s.info, 4096) {
                    let count = try r.u16(need + 2), file = try r.u32(need + 4)
                    let fileName = try r.string(strings.offset + file, limit: strings.size - file)
                    var aux = need + (try r.u32(need + 8))
                    for _ in 0..<min(count, 4096) {
                        let name = try r.u32(aux + 8)
                        versions.append((fileName, try r.string(strings.offset + name, limit: strings.size - name)))
                        let next = try r.u32(aux + 12)
                        if next == 0 { break }
                        aux += next
                    }
                    let next = try r.u32(need + 12)
                    if next == 0 { break }
                    need += next
                }
            default: break
            }
        }
        self.needed = needed
        self.runPaths = runPaths
        self.interpreter = interpreter
        self.versions = versions
    }

    /// Bounds-checked little-endian reads.
    private struct Reader {
        let bytes: [UInt8]

        func le(_ at: Int, _ n: Int) throws(ELFError) -> Int {
            guard at >= 0, n <= bytes.count, at <= bytes.count - n else { throw ELFError("read of \(n) bytes at \(at) past the end") }
            var v: UInt64 = 0
            for i in (0..<n).reversed() { v = v << 8 | UInt64(bytes[at + i]) }
            guard v <= UInt64(Int32.max) * 1024 else { throw ELFError("value \(v) at \(at) out of range") }
            return Int(v)
        }
        func u16(_ at: Int) throws(ELFError) -> Int { try le(at, 2) }
        func u32(_ at: Int) throws(ELFError) -> Int { try le(at, 4) }
        func u64(_ at: Int) throws(ELFError) -> Int { try le(at, 8) }

        /// The NUL-terminated string at `at`, reading at most `limit` bytes.
        func string(_ at: Int, limit: Int) throws(ELFError) -> String {
            guard at >= 0, at < bytes.count, limit > 0 else { throw ELFError("string at \(at) out of range") }
            let end = min(bytes.count, at + limit)
            guard let nul = bytes[at..<end].firstIndex(of: 0) else { throw ELFError("string at \(at) not terminated") }
            return String(decoding: bytes[at..<nul], as: UTF8.self)
        }
    }
}

/// A malformed or unsupported ELF file.
public struct ELFError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}

/// A symbol version name such as `GLIBC_2.34` or `GLIBCXX_3.4.29`, split into its prefix and numbers, ordered by the
/// numbers.
public struct SymbolVersion: Comparable, CustomStringConvertible, Sendable {
    public var prefix: String
    public var numbers: [Int]

    /// Parses `PREFIX_N.N...`; nil for names without a numeric part (e.g. a library's own `Base`).
    public init?(_ name: String) {
        guard let underscore = name.lastIndex(of: "_") else { return nil }
        let parts = name[name.index(after: underscore)...].split(separator: ".", omittingEmptySubsequences: false)
        let numbers = parts.compactMap { Int($0) }
        guard !parts.isEmpty, numbers.count == parts.count else { return nil }
        prefix = String(name[..<underscore])
        self.numbers = numbers
    }

    public var description: String { prefix + "_" + numbers.map(String.init).joined(separator: ".") }

    /// Ordered by prefix, then by the numbers (only versions of one prefix compare meaningfully).
    public static func < (a: Self, b: Self) -> Bool {
        if a.prefix != b.prefix { return a.prefix < b.prefix }
        for (x, y) in zip(a.numbers, b.numbers) where x != y { return x < y }
        return a.numbers.count < b.numbers.count
    }
}
