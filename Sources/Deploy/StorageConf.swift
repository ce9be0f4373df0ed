// SPDX-License-Identifier: Apache-2.0
public import TOML

/// Adds the store to a containers-storage.conf(5): `additionallayerstores` under `[storage.options]`.
///
/// The input is parsed first, so a malformed file is refused with its line and nothing is produced. The edit
/// is made in the text, so comments and layout survive; the result is parsed again and must equal the input's
/// table with only `additionallayerstores` changed. If a text edit cannot achieve that (unusual layouts such as
/// the key set through an inline table), the whole table is written out again instead, without comments.
public enum StorageConf {
    /// The outcome of ``merge(_:entry:source:)``.
    public struct Result: Sendable, Equatable {
        /// The new storage.conf.
        public var text: String
        /// False when the input already listed the entry (then `text` is the input, byte for byte).
        public var changed: Bool
        /// False when comments and layout could not be kept (see ``StorageConf``).
        public var keptFormatting: Bool
    }

    /// A minimal storage.conf for hosts that have none (the defaults CRI-O and Podman use as root).
    public static let minimal = """
        [storage]
        driver = "overlay"
        runroot = "/run/containers/storage"
        graphroot = "/var/lib/containers/storage"

        """

    /// Adds `entry` (`MOUNTPOINT:ref`) to `storage.options.additionallayerstores` in `text`.
    ///
    /// Entries for other stores are kept in order. An entry for the same mount point (with or without `:ref`)
    /// is replaced in place; otherwise the entry is appended. Adding an entry that is already there changes
    /// nothing.
    /// - Parameters:
    ///   - text: the storage.conf.
    ///   - entry: the store entry, `MOUNTPOINT:ref`.
    ///   - source: names the input in errors.
    /// #### Errors
    /// ``DeployError/Code/malformedInput`` with ``DeployError/line`` when `text` is not TOML, or when
    /// `storage`, `storage.options` or `additionallayerstores` have the wrong type.
    public static func merge(_ text: String, entry: String, source: String = "storage.conf") throws(DeployError) -> Result {
        let original: TOMLTable
        do { original = try TOML.parse(text) } catch {
            throw .malformed("\(source): line \(error.line), column \(error.column): \(error.message)", line: error.line)
        }
        let current = try stores(in: original, source: source, text: text)
        let wanted = updated(current ?? [], entry: entry)
        if let current, current == wanted { return Result(text: text, changed: false, keptFormatting: true) }

        var expected = original
        var storage = original["storage"]?.table ?? TOMLTable()
        var options = storage["options"]?.table ?? TOMLTable()
        options["additionallayerstores"] = .array(wanted.map { .string($0) })
        storage["options"] = .table(options)
        expected["storage"] = .table(storage)

        if let edited = textEdit(text, stores: wanted, exists: current != nil),
            let reparsed = try? TOML.parse(edited), reparsed.sameTable(as: expected)
        {
            return Result(text: edited, changed: true, keptFormatting: true)
        }
        let rewritten = TOMLWriter.write(expected)
        guard let reparsed = try? TOML.parse(rewritten), reparsed.sameTable(as: expected) else {
            throw .malformed("\(source): cannot be written back as TOML with the store added")
        }
        return Result(text: rewritten, changed: true, keptFormatting: false)
    }

    /// The `additionallayerstores` list of a parsed storage.conf: nil when absent.
    ///
    /// #### Errors
    /// ``DeployError/Code/malformedInput`` when a table or the list has the wrong type.
    public static func stores(in root: TOMLTable, source: String = "storage.conf", text: String? = nil) throws(DeployError) -> [String]? {
        func bad(_ what: String, _ key: String) -> DeployError {
            .malformed("\(source): \(what)", line: text.flatMap { lineOf(key, in: $0) })
        }
        guard let s = root["storage"] else { return nil }
        guard let storage = s.table else { throw bad("storage must be a table, not a \(s.typeName)", "storage") }
        guard let o = storage["options"] else { return nil }
        guard let options = o.table else { throw bad("storage.options must be a table, not a \(o.typeName)", "options") }
        guard let a = options["additionallayerstores"] else { return nil }
        guard let list = a.array else {
            throw bad("additionallayerstores must be an array of strings, not a \(a.typeName)", "additionallayerstores")
        }
        var out: [String] = []
        for v in list {
            guard let str = v.string else {
                throw bad("additionallayerstores must hold strings, not a \(v.typeName)", "additionallayerstores")
            }
            out.append(str)
        }
        return out
    }

    /// The mount point an entry names: `PATH` of `PATH` or `PATH:ref`, without a trailing slash.
    public static func mountpoint(ofEntry e: String) -> String {
        var p = e.hasSuffix(":ref") ? String(e.dropLast(4)) : e
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        return p
    }

    static func updated(_ current: [String], entry: String) -> [String] {
        let mount = mountpoint(ofEntry: entry)
        var out: [String] = []
        var placed = false
        for e in current {
            if mountpoint(ofEntry: e) == mount {
                if !placed { out.append(entry) }
                placed = true
            } else {
                out.append(e)
            }
        }
        if !placed { out.append(entry) }
        return out
    }

    /// The 1-based line of the first assignment or header mentioning `key`, for error messages.
    static func lineOf(_ key: String, in text: String) -> Int? {
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let t = line.drop { $0 == " " || $0 == "\t" }
            if t.hasPrefix("#") { continue }
            if t.contains(key) { return n + 1 }
        }
        return nil
    }

    // MARK: The text edit

    /// `text` with the list set to `stores`: the existing value replaced, or a line added under
    /// `[storage.options]`, or a `[storage.options]` table appended. Nil when the layout is not understood.
    static func textEdit(_ text: String, stores: [String], exists: Bool) -> String? {
        var scanner = LineScanner(Array(text.utf8))
        let value = "[" + stores.map(TOMLWriter.string).joined(separator: ", ") + "]"
        let target = ["storage", "options", "additionallayerstores"]
        var optionsHeaderEnd: Int?
        while let item = scanner.next() {
            switch item {
            case .header(let path, let lineEnd):
                if path == ["storage", "options"] { optionsHeaderEnd = lineEnd }
            case .assignment(let path, let valueRange):
                if path == target {
                    var bytes = scanner.bytes
                    bytes.replaceSubrange(valueRange, with: Array(value.utf8))
                    return String(decoding: bytes, as: UTF8.self)
                }
            case .failed:
                return nil
            }
        }
        if exists { return nil }  // set somewhere the scanner does not follow (an inline table)
        var bytes = scanner.bytes
        if let end = optionsHeaderEnd {
            var insert = Array("additionallayerstores = \(value)\n".utf8)
            if end == bytes.count, bytes.last != 10 { insert.insert(10, at: 0) }
            bytes.insert(contentsOf: insert, at: end)
        } else {
            var tail = "[storage.options]\nadditionallayerstores = \(value)\n"
            if !bytes.isEmpty { tail = (bytes.last == 10 ? "\n" : "\n\n") + tail }
            bytes.append(contentsOf: Array(tail.utf8))
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Walks TOML text statement by statement: table headers and key assignments, with the byte range of each
/// assigned value (which may span lines). It trusts that the text already parsed.
struct LineScanner {
    enum Item {
        /// A `[table]` header; `lineEnd` is the offset just after its line's newline.
        case header([String], lineEnd: Int)
        /// `key = value` under the current table; the range covers the value only.
        case assignment([String], Range<Int>)
        case failed
    }

    let bytes: [UInt8]
    var i = 0
    var table: [String] = []

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var peek: UInt8? { i < bytes.count ? bytes[i] : nil }

    mutating func skipBlanksAndComments() {
        while let c = peek {
            if c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D {
                i += 1
            } else if c == UInt8(ascii: "#") {
                while let d = peek, d != 0x0A { i += 1 }
            } else {
                return
            }
        }
    }

    mutating func restOfLine() {
        while let c = peek, c != 0x0A { i += 1 }
        if peek == 0x0A { i += 1 }
    }

    mutating func next() -> Item? {
        skipBlanksAndComments()
        guard let c = peek else { return nil }
        if c == UInt8(ascii: "[") {
            let isArray = i + 1 < bytes.count && bytes[i + 1] == UInt8(ascii: "[")
            i += isArray ? 2 : 1
            guard let path = key() else { return .failed }
            restOfLine()
            table = path
            return .header(isArray ? ["[[array]]"] + path : path, lineEnd: i)
        }
        guard let k = key() else { return .failed }
        while peek == 0x20 || peek == 0x09 { i += 1 }
        guard peek == UInt8(ascii: "=") else { return .failed }
        i += 1
        while peek == 0x20 || peek == 0x09 { i += 1 }
        let start = i
        guard skipValue() else { return .failed }
        let end = i
        restOfLine()
        return .assignment(table + k, start..<end)
    }

    /// A dotted key; leaves `i` after it and any blanks.
    mutating func key() -> [String]? {
        var parts: [String] = []
        while true {
            while peek == 0x20 || peek == 0x09 { i += 1 }
            guard let c = peek else { return nil }
            if c == UInt8(ascii: "\"") || c == UInt8(ascii: "'") {
                // Quoted keys: decode the simple forms; escapes make us give up (the edit then falls back).
                i += 1
                let s = i
                while let d = peek, d != c {
                    if d == UInt8(ascii: "\\") || d == 0x0A { return nil }
                    i += 1
                }
                guard peek == c else { return nil }
                parts.append(String(decoding: bytes[s..<i], as: UTF8.self))
                i += 1
            } else {
                let s = i
                while let d = peek,
                    (d >= 0x41 && d <= 0x5A) || (d >= 0x61 && d <= 0x7A) || (d >= 0x30 && d <= 0x39) || d == 0x2D || d == 0x5F
                {
                    i += 1
                }
                guard i > s else { return nil }
                parts.append(String(decoding: bytes[s..<i], as: UTF8.self))
            }
            while peek == 0x20 || peek == 0x09 { i += 1 }
            if peek == UInt8(ascii: ".") {
                i += 1
                continue
            }
            return parts
        }
    }

    /// Skips one value: strings of every kind, arrays and inline tables (with nested strings and comments).
    mutating func skipValue() -> Bool {
        guard let c = peek else { return false }
        if c == UInt8(ascii: "\"") || c == UInt8(ascii: "'") { return skipString() }
        if c == UInt8(ascii: "[") || c == UInt8(ascii: "{") {
            var depth = 0
            while let d = peek {
                if d == UInt8(ascii: "\"") || d == UInt8(ascii: "'") {
                    guard skipString() else { return false }
                    continue
                }
                if d == UInt8(ascii: "#") {
                    while let e = peek, e != 0x0A { i += 1 }
                    continue
                }
                i += 1
                if d == UInt8(ascii: "[") || d == UInt8(ascii: "{") { depth += 1 }
                if d == UInt8(ascii: "]") || d == UInt8(ascii: "}") {
                    depth -= 1
                    if depth == 0 { return true }
                }
            }
            return false
        }
        // A bare value: up to a comment or the end of the line, trailing blanks excluded.
        while let d = peek, d != 0x0A, d != UInt8(ascii: "#") { i += 1 }
        while i > 0, bytes[i - 1] == 0x20 || bytes[i - 1] == 0x09 || bytes[i - 1] == 0x0D { i -= 1 }
        return true
    }

    mutating func skipString() -> Bool {
        let q = bytes[i]
        let triple = i + 2 < bytes.count && bytes[i + 1] == q && bytes[i + 2] == q
        if triple {
            i += 3
            while i < bytes.count {
                if q == UInt8(ascii: "\"") && bytes[i] == UInt8(ascii: "\\") {
                    i += 2
                    continue
                }
                if bytes[i] == q && i + 2 < bytes.count && bytes[i + 1] == q && bytes[i + 2] == q {
                    i += 3
                    // Up to two more quotes belong to the content.
                    while peek == q { i += 1 }
                    return true
                }
                i += 1
            }
            return false
        }
        i += 1
        while let d = peek, d != q {
            if d == 0x0A { return false }
            if q == UInt8(ascii: "\"") && d == UInt8(ascii: "\\") { i += 1 }
            i += 1
        }
        guard peek == q else { return false }
        i += 1
        return true
    }
}
