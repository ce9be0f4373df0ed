// SPDX-License-Identifier: Apache-2.0
// A TOML 1.0 reader for configuration files (registries.conf, the stargz-store config.toml).
// It reads the whole language except that dates and times stay strings.

/// A TOML value.
public enum TOMLValue: Sendable, Equatable {
    case string(String)
    case integer(Int64)
    case float(Double)
    case boolean(Bool)
    /// Offset date-times, local dates and times, as written.
    case datetime(String)
    case array([TOMLValue])
    case table(TOMLTable)

    /// The string, if this is one.
    public var string: String? { if case .string(let s) = self { s } else { nil } }
    /// The integer, if this is one.
    public var integer: Int64? { if case .integer(let i) = self { i } else { nil } }
    /// The number (integer or float), if this is one.
    public var double: Double? {
        switch self {
        case .integer(let i): Double(i)
        case .float(let d): d
        default: nil
        }
    }
    /// The boolean, if this is one.
    public var boolean: Bool? { if case .boolean(let b) = self { b } else { nil } }
    /// The array, if this is one.
    public var array: [TOMLValue]? { if case .array(let a) = self { a } else { nil } }
    /// The table, if this is one.
    public var table: TOMLTable? { if case .table(let t) = self { t } else { nil } }

    /// A name for the value's type, for error messages.
    public var typeName: String {
        switch self {
        case .string: "string"
        case .integer: "integer"
        case .float: "float"
        case .boolean: "boolean"
        case .datetime: "datetime"
        case .array: "array"
        case .table: "table"
        }
    }
}

/// A TOML table: keys in the order they were written.
public struct TOMLTable: Sendable, Equatable {
    /// Keys in order.
    public private(set) var keys: [String] = []
    private var values: [String: TOMLValue] = [:]

    /// An empty table.
    public init() {}

    /// The value of a key.
    public subscript(key: String) -> TOMLValue? {
        get { values[key] }
        set {
            if values[key] == nil, newValue != nil { keys.append(key) }
            if newValue == nil { keys.removeAll { $0 == key } }
            values[key] = newValue
        }
    }

    /// Key–value pairs in order.
    public var entries: [(key: String, value: TOMLValue)] { keys.map { ($0, values[$0]!) } }
}

/// A TOML syntax error, with its line and column.
public struct TOMLError: Error, CustomStringConvertible, Sendable, Equatable {
    /// 1-based line.
    public var line: Int
    /// 1-based column.
    public var column: Int
    /// What is wrong.
    public var message: String

    public var description: String { "line \(line), column \(column): \(message)" }
}

/// Parses TOML text.
public enum TOML {
    /// Parses a document into its root table.
    public static func parse(_ text: String) throws(TOMLError) -> TOMLTable {
        var p = Parser(Array(text.utf8))
        return try p.document()
    }
}

private struct Parser {
    let b: [UInt8]
    var i = 0
    var root = TOMLTable()
    /// The path of the current `[table]` or `[[array]]` header.
    var current: [String] = []
    /// Tables defined by a header or by dotted keys, which may not be defined again with a header.
    var defined: Set<[String]> = []
    /// Tables created implicitly by a longer header, which may still be defined.
    var implicit: Set<[String]> = []
    /// Inline tables and static arrays, which may not be extended.
    var frozen: Set<[String]> = []
    /// Paths that are arrays of tables.
    var tableArrays: Set<[String]> = []

    init(_ b: [UInt8]) { self.b = b }

    func error(_ message: String) -> TOMLError {
        var line = 1, col = 1
        for c in b[0..<min(i, b.count)] {
            if c == 10 {
                line += 1
                col = 1
            } else {
                col += 1
            }
        }
        return TOMLError(line: line, column: col, message: message)
    }

    var atEnd: Bool { i >= b.count }
    var peek: UInt8? { i < b.count ? b[i] : nil }

    mutating func skipSpaces() {
        while let c = peek, c == 0x20 || c == 0x09 { i += 1 }
    }

    mutating func skipComment() throws(TOMLError) {
        guard peek == UInt8(ascii: "#") else { return }
        while let c = peek, c != 10 {
            if c < 0x20 && c != 0x09 && c != 13 { throw error("control character in a comment") }
            i += 1
        }
    }

    /// Spaces, comments and newlines.
    mutating func skipBlank() throws(TOMLError) {
        while true {
            skipSpaces()
            try skipComment()
            if peek == 10 {
                i += 1
            } else if peek == 13, i + 1 < b.count, b[i + 1] == 10 {
                i += 2
            } else {
                return
            }
        }
    }

    mutating func endOfLine() throws(TOMLError) {
        skipSpaces()
        try skipComment()
        if atEnd { return }
        if peek == 10 {
            i += 1
            return
        }
        if peek == 13, i + 1 < b.count, b[i + 1] == 10 {
            i += 2
            return
        }
        throw error("expected the end of the line")
    }

    mutating func document() throws(TOMLError) -> TOMLTable {
        if b.starts(with: [0xEF, 0xBB, 0xBF]) { i = 3 }
        while true {
            try skipBlank()
            guard let c = peek else { break }
            if c == UInt8(ascii: "[") {
                try header()
            } else {
                let start = i
                let key = try dottedKey()
                skipSpaces()
                guard peek == UInt8(ascii: "=") else { throw error("expected = after a key") }
                i += 1
                skipSpaces()
                let v = try value(path: current + key)
                try assign(current, key, v, at: start)
            }
            try endOfLine()
        }
        return root
    }

    mutating func header() throws(TOMLError) {
        i += 1
        let isArray = peek == UInt8(ascii: "[")
        if isArray { i += 1 }
        skipSpaces()
        let path = try dottedKey()
        skipSpaces()
        guard peek == UInt8(ascii: "]") else { throw error("expected ] to close a table header") }
        i += 1
        if isArray {
            guard peek == UInt8(ascii: "]") else { throw error("expected ]] to close an array-of-tables header") }
            i += 1
        }
        if isArray {
            try appendTable(path)
        } else {
            if defined.contains(path) && !implicit.contains(path) || tableArrays.contains(path) {
                throw error("table [\(path.joined(separator: "."))] is defined twice")
            }
            try ensureTable(path, implicitOnly: false)
            defined.insert(path)
            implicit.remove(path)
        }
        current = path
    }

    // MARK: Tree edits

    /// Walks `path` from the root, creating tables; the last element of a table array stands for the array.
    /// `body` gets the table and a maker of errors at the current position.
    mutating func modify<T>(
        _ path: [String], _ body: (inout TOMLTable, (String) -> TOMLError) throws(TOMLError) -> T
    ) throws(TOMLError) -> T {
        let pos = error("")
        let make = { (m: String) in TOMLError(line: pos.line, column: pos.column, message: m) }
        let arrays = tableArrays
        var r = root
        root = TOMLTable()
        defer { root = r }
        func walk(_ t: inout TOMLTable, _ rest: ArraySlice<String>, _ done: [String]) throws(TOMLError) -> T {
            guard let k = rest.first else { return try body(&t, make) }
            let here = done + [k]
            switch t[k] {
            case nil:
                var child = TOMLTable()
                let r = try walk(&child, rest.dropFirst(), here)
                t[k] = .table(child)
                return r
            case .table(var child):
                let r = try walk(&child, rest.dropFirst(), here)
                t[k] = .table(child)
                return r
            case .array(var arr) where arrays.contains(here):
                guard case .table(var last)? = arr.last else { throw make("\(here.joined(separator: ".")) is not a table") }
                let r = try walk(&last, rest.dropFirst(), here)
                arr[arr.count - 1] = .table(last)
                t[k] = .array(arr)
                return r
            default:
                throw make("key \(here.joined(separator: ".")) is already a value, not a table")
            }
        }
        return try walk(&r, path[...], [])
    }

    mutating func ensureTable(_ path: [String], implicitOnly: Bool) throws(TOMLError) {
        for n in 1...max(1, path.count) where n <= path.count {
            let prefix = Array(path.prefix(n))
            if frozen.contains(prefix) { throw error("\(prefix.joined(separator: ".")) is an inline table or array and cannot be extended") }
            if n < path.count, !defined.contains(prefix), !tableArrays.contains(prefix) { implicit.insert(prefix) }
        }
        try modify(path) { (_: inout TOMLTable, _) throws(TOMLError) in }
    }

    mutating func appendTable(_ path: [String]) throws(TOMLError) {
        let parent = Array(path.dropLast()), last = path.last!
        if frozen.contains(path) { throw error("\(path.joined(separator: ".")) is a static array") }
        if defined.contains(path) && !tableArrays.contains(path) {
            throw error("\(path.joined(separator: ".")) is a table, not an array of tables")
        }
        try ensureTable(parent, implicitOnly: true)
        let isArray = tableArrays.contains(path)
        try modify(parent) { (t: inout TOMLTable, make) throws(TOMLError) in
            switch t[last] {
            case nil: t[last] = .array([.table(TOMLTable())])
            case .array(var a) where isArray:
                a.append(.table(TOMLTable()))
                t[last] = .array(a)
            default: throw make("\(path.joined(separator: ".")) is already defined")
            }
        }
        tableArrays.insert(path)
        // Sub-tables of the previous element may be defined again for the new one.
        defined = defined.filter { !($0.count > path.count && Array($0.prefix(path.count)) == path) }
        implicit = implicit.filter { !($0.count > path.count && Array($0.prefix(path.count)) == path) }
        defined.insert(path)
    }

    mutating func assign(_ table: [String], _ key: [String], _ v: TOMLValue, at start: Int) throws(TOMLError) {
        // Dotted keys define the intermediate tables.
        for n in 1..<key.count {
            let p = table + key.prefix(n)
            if frozen.contains(p) { throw error("\(p.joined(separator: ".")) is an inline table and cannot be extended") }
            if defined.contains(p) && !implicit.contains(p) && !dottedDefined.contains(p) {
                throw error("table \(p.joined(separator: ".")) is already defined")
            }
            defined.insert(p)
            dottedDefined.insert(p)
        }
        let last = key.last!
        let full = table + key
        try modify(table + key.dropLast()) { (t: inout TOMLTable, make) throws(TOMLError) in
            if t[last] != nil { throw make("key \(full.joined(separator: ".")) is defined twice") }
            t[last] = v
        }
        if case .table = v { frozen.insert(full) }
        if case .array = v { frozen.insert(full) }
    }

    var dottedDefined: Set<[String]> = []

    // MARK: Keys

    mutating func dottedKey() throws(TOMLError) -> [String] {
        var parts = [try simpleKey()]
        while true {
            skipSpaces()
            guard peek == UInt8(ascii: ".") else { return parts }
            i += 1
            skipSpaces()
            parts.append(try simpleKey())
        }
    }

    mutating func simpleKey() throws(TOMLError) -> String {
        guard let c = peek else { throw error("expected a key") }
        if c == UInt8(ascii: "\"") { return try basicString() }
        if c == UInt8(ascii: "'") { return try literalString() }
        let start = i
        while let c = peek, Self.isBareKey(c) { i += 1 }
        guard i > start else { throw error("expected a key") }
        return String(decoding: b[start..<i], as: UTF8.self)
    }

    static func isBareKey(_ c: UInt8) -> Bool {
        (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == 0x2D || c == 0x5F
    }

    // MARK: Values

    mutating func value(path: [String]) throws(TOMLError) -> TOMLValue {
        guard let c = peek else { throw error("expected a value") }
        switch c {
        case UInt8(ascii: "\""):
            if b[i...].starts(with: [0x22, 0x22, 0x22]) { return .string(try multilineBasic()) }
            return .string(try basicString())
        case UInt8(ascii: "'"):
            if b[i...].starts(with: [0x27, 0x27, 0x27]) { return .string(try multilineLiteral()) }
            return .string(try literalString())
        case UInt8(ascii: "["): return try array(path: path)
        case UInt8(ascii: "{"): return try inlineTable(path: path)
        case UInt8(ascii: "t"):
            if b[i...].starts(with: Array("true".utf8)) {
                i += 4
                return .boolean(true)
            }
        case UInt8(ascii: "f"):
            if b[i...].starts(with: Array("false".utf8)) {
                i += 5
                return .boolean(false)
            }
        default: break
        }
        return try scalar()
    }

    mutating func array(path: [String]) throws(TOMLError) -> TOMLValue {
        i += 1
        var out: [TOMLValue] = []
        while true {
            try skipBlank()
            if peek == UInt8(ascii: "]") {
                i += 1
                return .array(out)
            }
            out.append(try value(path: path))
            try skipBlank()
            if peek == UInt8(ascii: ",") {
                i += 1
                continue
            }
            guard peek == UInt8(ascii: "]") else { throw error("expected , or ] in an array") }
            i += 1
            return .array(out)
        }
    }

    mutating func inlineTable(path: [String]) throws(TOMLError) -> TOMLValue {
        i += 1
        var t = TOMLTable()
        skipSpaces()
        if peek == UInt8(ascii: "}") {
            i += 1
            return .table(t)
        }
        while true {
            skipSpaces()
            let key = try dottedKey()
            skipSpaces()
            guard peek == UInt8(ascii: "=") else { throw error("expected = in an inline table") }
            i += 1
            skipSpaces()
            let v = try value(path: path + key)
            try Self.set(&t, key[...], v) { (m: String) throws(TOMLError) in throw error(m) }
            skipSpaces()
            if peek == UInt8(ascii: ",") {
                i += 1
                continue
            }
            guard peek == UInt8(ascii: "}") else { throw error("expected , or } in an inline table") }
            i += 1
            return .table(t)
        }
    }

    static func set(
        _ t: inout TOMLTable, _ key: ArraySlice<String>, _ v: TOMLValue, _ fail: (String) throws(TOMLError) -> Never
    ) throws(TOMLError) {
        let k = key.first!
        if key.count == 1 {
            if t[k] != nil { try fail("key \(k) is defined twice in an inline table") }
            t[k] = v
            return
        }
        var child: TOMLTable
        switch t[k] {
        case nil: child = TOMLTable()
        case .table(let c): child = c
        default: try fail("key \(k) is already a value")
        }
        try set(&child, key.dropFirst(), v, fail)
        t[k] = .table(child)
    }

    mutating func scalar() throws(TOMLError) -> TOMLValue {
        let start = i
        while let c = peek, c != 0x2C, c != 0x5D, c != 0x7D, c != 10, c != 13, c != 0x23 {
            // A space ends a value unless it separates a date from a time.
            if c == 0x20 {
                let sofar = b[start..<i]
                let isDate = sofar.count == 10 && sofar[sofar.startIndex + 4] == 0x2D
                if isDate, i + 1 < b.count, b[i + 1] >= 0x30, b[i + 1] <= 0x39 {
                    i += 1
                    continue
                }
                break
            }
            i += 1
        }
        let raw = String(decoding: b[start..<i], as: UTF8.self)
        guard !raw.isEmpty else { throw error("expected a value") }
        if let v = Self.number(raw) { return v }
        if Self.isDateTime(raw) { return .datetime(raw) }
        i = start
        throw error("invalid value \"\(raw)\"")
    }

    static func number(_ raw: String) -> TOMLValue? {
        switch raw {
        case "inf", "+inf": return .float(.infinity)
        case "-inf": return .float(-.infinity)
        case "nan", "+nan", "-nan": return .float(.nan)
        default: break
        }
        for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] where raw.hasPrefix(prefix) {
            let digits = raw.dropFirst(2)
            guard validUnderscores(digits) else { return nil }
            return Int64(String(digits.filter { $0 != "_" }), radix: radix).map(TOMLValue.integer)
        }
        guard validUnderscores(raw[...]) else { return nil }
        let s = String(raw.filter { $0 != "_" })
        let unsigned = s.hasPrefix("+") || s.hasPrefix("-") ? s.dropFirst() : s[...]
        if unsigned.count > 1, unsigned.hasPrefix("0"), unsigned.dropFirst().first?.isNumber == true { return nil }
        if unsigned.allSatisfy({ $0.isASCIIDigitChar }), !unsigned.isEmpty { return Int64(s).map(TOMLValue.integer) }
        guard unsigned.allSatisfy({ $0.isASCIIDigitChar || "eE.+-".contains($0) }),
            unsigned.first?.isASCIIDigitChar == true, unsigned.last?.isASCIIDigitChar == true,
            !unsigned.contains(".e"), !unsigned.contains(".E")
        else { return nil }
        return Double(s).map(TOMLValue.float)
    }

    static func validUnderscores(_ s: Substring) -> Bool {
        !s.hasPrefix("_") && !s.hasSuffix("_") && !s.contains("__")
    }

    static func isDateTime(_ raw: String) -> Bool {
        let digitsOK = raw.allSatisfy { $0.isASCIIDigitChar || "-:TtZz. +".contains($0) }
        guard digitsOK else { return false }
        let u = Array(raw.utf8)
        if u.count >= 10, u[4] == 0x2D, u[7] == 0x2D { return true }  // a date
        if u.count >= 8, u[2] == 0x3A, u[5] == 0x3A { return true }  // a time
        return false
    }

    // MARK: Strings

    mutating func basicString() throws(TOMLError) -> String {
        i += 1
        var out: [UInt8] = []
        while true {
            guard let c = peek else { throw error("unterminated string") }
            i += 1
            switch c {
            case 0x22: return String(decoding: out, as: UTF8.self)
            case 0x5C: try escape(&out)
            case 10, 13:
                i -= 1
                throw error("newline in a string")
            default:
                if c < 0x20 && c != 0x09 || c == 0x7F { throw error("control character in a string") }
                out.append(c)
            }
        }
    }

    mutating func multilineBasic() throws(TOMLError) -> String {
        i += 3
        if peek == 10 { i += 1 } else if peek == 13, i + 1 < b.count, b[i + 1] == 10 { i += 2 }
        var out: [UInt8] = []
        while true {
            guard let c = peek else { throw error("unterminated multi-line string") }
            if b[i...].starts(with: [0x22, 0x22, 0x22]) {
                i += 3
                // Up to two quotes may end the content.
                var extra = 0
                while peek == 0x22, extra < 2 {
                    out.append(0x22)
                    i += 1
                    extra += 1
                }
                return String(decoding: out, as: UTF8.self)
            }
            i += 1
            if c == 0x5C {
                // A line-ending backslash trims the following whitespace.
                var j = i
                while j < b.count, b[j] == 0x20 || b[j] == 0x09 { j += 1 }
                if j < b.count, b[j] == 10 || b[j] == 13 {
                    i = j
                    while let w = peek, w == 0x20 || w == 0x09 || w == 10 || w == 13 { i += 1 }
                    continue
                }
                try escape(&out)
                continue
            }
            if c < 0x20 && c != 0x09 && c != 10 && c != 13 || c == 0x7F { throw error("control character in a string") }
            out.append(c)
        }
    }

    mutating func literalString() throws(TOMLError) -> String {
        i += 1
        let start = i
        while true {
            guard let c = peek else { throw error("unterminated string") }
            if c == 0x27 {
                let s = String(decoding: b[start..<i], as: UTF8.self)
                i += 1
                return s
            }
            if c == 10 || c == 13 { throw error("newline in a string") }
            if c < 0x20 && c != 0x09 || c == 0x7F { throw error("control character in a string") }
            i += 1
        }
    }

    mutating func multilineLiteral() throws(TOMLError) -> String {
        i += 3
        if peek == 10 { i += 1 } else if peek == 13, i + 1 < b.count, b[i + 1] == 10 { i += 2 }
        let start = i
        while true {
            guard peek != nil else { throw error("unterminated multi-line string") }
            if b[i...].starts(with: [0x27, 0x27, 0x27]) {
                var end = i
                i += 3
                var extra = 0
                while peek == 0x27, extra < 2 {
                    i += 1
                    extra += 1
                }
                end += extra
                return String(decoding: b[start..<end], as: UTF8.self)
            }
            i += 1
        }
    }

    mutating func escape(_ out: inout [UInt8]) throws(TOMLError) {
        guard let e = peek else { throw error("unterminated escape") }
        i += 1
        switch e {
        case UInt8(ascii: "b"): out.append(0x08)
        case UInt8(ascii: "t"): out.append(0x09)
        case UInt8(ascii: "n"): out.append(0x0A)
        case UInt8(ascii: "f"): out.append(0x0C)
        case UInt8(ascii: "r"): out.append(0x0D)
        case UInt8(ascii: "e"): out.append(0x1B)
        case 0x22: out.append(0x22)
        case 0x5C: out.append(0x5C)
        case UInt8(ascii: "u"), UInt8(ascii: "U"):
            let n = e == UInt8(ascii: "u") ? 4 : 8
            guard i + n <= b.count, let v = UInt32(String(decoding: b[i..<(i + n)], as: UTF8.self), radix: 16),
                let scalar = Unicode.Scalar(v)
            else { throw error("invalid unicode escape") }
            i += n
            out.append(contentsOf: Array(String(Character(scalar)).utf8))
        default: throw error("invalid escape \\\(Character(Unicode.Scalar(e)))")
        }
    }
}

extension Character {
    fileprivate var isASCIIDigitChar: Bool { isASCII && isNumber }
}
