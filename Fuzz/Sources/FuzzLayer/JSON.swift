// SPDX-License-Identifier: Apache-2.0
// A small, lossless JSON tree for the mutator: numbers keep their spelling (so 2^63, -0, 1e308 survive a round
// trip), strings are raw bytes (so invalid UTF-8 and NULs survive), objects keep key order and duplicate keys.

/// A JSON value. `member(k)` is a payload offset that names the k-th gzip member of the blob; the encoder
/// writes the member's offset in the blob it lays out, so entries can be moved and members resized.
indirect enum J: Equatable {
    case null
    case bool(Bool)
    case num([UInt8])
    case str([UInt8])
    case arr([J])
    case obj([(key: [UInt8], value: J)])
    case member(Int)

    static func == (a: J, b: J) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case (.bool(let x), .bool(let y)): return x == y
        case (.num(let x), .num(let y)), (.str(let x), .str(let y)): return x == y
        case (.arr(let x), .arr(let y)): return x == y
        case (.obj(let x), .obj(let y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case (.member(let x), .member(let y)): return x == y
        default: return false
        }
    }

    static func int(_ v: Int64) -> J { .num(Array(String(v).utf8)) }
    static func string(_ s: String) -> J { .str(Array(s.utf8)) }

    var int64: Int64? {
        if case .num(let b) = self { return Int64(String(decoding: b, as: UTF8.self)) }
        return nil
    }

    var bytes: [UInt8]? {
        if case .str(let b) = self { return b }
        return nil
    }

    /// The value of the first `key` in an object.
    subscript(key: String) -> J? {
        get {
            guard case .obj(let kv) = self else { return nil }
            let k = Array(key.utf8)
            return kv.first { $0.key == k }?.value
        }
        set {
            guard case .obj(var kv) = self else { return }
            let k = Array(key.utf8)
            if let i = kv.firstIndex(where: { $0.key == k }) {
                if let v = newValue { kv[i].value = v } else { kv.remove(at: i) }
            } else if let v = newValue {
                kv.append((k, v))
            }
            self = .obj(kv)
        }
    }
}

/// Parses JSON (with a depth bound); nil when malformed.
struct JSONParser {
    let b: [UInt8]
    var i = 0
    static let maxDepth = 200

    static func parse(_ bytes: [UInt8]) -> J? {
        var p = JSONParser(b: bytes)
        guard let v = p.value(0) else { return nil }
        p.ws()
        return p.i == p.b.count ? v : nil
    }

    mutating func ws() {
        while i < b.count, b[i] == 0x20 || b[i] == 0x0a || b[i] == 0x0d || b[i] == 0x09 { i += 1 }
    }

    mutating func lit(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard i + u.count <= b.count, Array(b[i..<(i + u.count)]) == u else { return false }
        i += u.count
        return true
    }

    mutating func value(_ depth: Int) -> J? {
        guard depth < Self.maxDepth else { return nil }
        ws()
        guard i < b.count else { return nil }
        switch b[i] {
        case UInt8(ascii: "{"):
            i += 1
            var kv: [(key: [UInt8], value: J)] = []
            ws()
            if i < b.count, b[i] == UInt8(ascii: "}") {
                i += 1
                return .obj(kv)
            }
            while true {
                ws()
                guard let k = string(), ({ ws(); return i < b.count && b[i] == UInt8(ascii: ":") })() else { return nil }
                i += 1
                guard let v = value(depth + 1) else { return nil }
                kv.append((k, v))
                ws()
                guard i < b.count else { return nil }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "}") { i += 1; return .obj(kv) }
                return nil
            }
        case UInt8(ascii: "["):
            i += 1
            var a: [J] = []
            ws()
            if i < b.count, b[i] == UInt8(ascii: "]") {
                i += 1
                return .arr(a)
            }
            while true {
                guard let v = value(depth + 1) else { return nil }
                a.append(v)
                ws()
                guard i < b.count else { return nil }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "]") { i += 1; return .arr(a) }
                return nil
            }
        case UInt8(ascii: "\""):
            return string().map { .str($0) }
        case UInt8(ascii: "t"): return lit("true") ? .bool(true) : nil
        case UInt8(ascii: "f"): return lit("false") ? .bool(false) : nil
        case UInt8(ascii: "n"): return lit("null") ? .null : nil
        default:
            let s = i
            while i < b.count, b[i] == UInt8(ascii: "-") || b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: ".")
                || b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") || (b[i] >= 48 && b[i] <= 57)
            {
                i += 1
            }
            return i > s ? .num(Array(b[s..<i])) : nil
        }
    }

    mutating func hex4() -> UInt32? {
        guard i + 4 <= b.count else { return nil }
        var v: UInt32 = 0
        for k in 0..<4 {
            let c = b[i + k]
            let d: UInt32
            switch c {
            case 48...57: d = UInt32(c - 48)
            case 97...102: d = UInt32(c - 87)
            case 65...70: d = UInt32(c - 55)
            default: return nil
            }
            v = v << 4 | d
        }
        i += 4
        return v
    }

    mutating func string() -> [UInt8]? {
        guard i < b.count, b[i] == UInt8(ascii: "\"") else { return nil }
        i += 1
        var out: [UInt8] = []
        while i < b.count {
            let c = b[i]
            i += 1
            if c == UInt8(ascii: "\"") { return out }
            if c != UInt8(ascii: "\\") {
                out.append(c)
                continue
            }
            guard i < b.count else { return nil }
            let e = b[i]
            i += 1
            switch e {
            case UInt8(ascii: "n"): out.append(0x0a)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0d)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0c)
            case UInt8(ascii: "u"):
                guard var v = hex4() else { return nil }
                if v >= 0xd800 && v < 0xdc00, i + 6 <= b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") {
                    let save = i
                    i += 2
                    if let lo = hex4(), lo >= 0xdc00 && lo < 0xe000 {
                        v = 0x10000 + ((v - 0xd800) << 10) + (lo - 0xdc00)
                    } else {
                        i = save
                    }
                }
                out += Array(String(Unicode.Scalar(v).map(Character.init) ?? "\u{FFFD}").utf8)
            default: out.append(e)
            }
        }
        return nil
    }
}

/// Writes JSON; `member(k)` becomes `offsets(k)`.
struct JSONWriter {
    var out: [UInt8] = []
    let offsets: (Int) -> Int64

    mutating func write(_ v: J, indent: Int = 0) {
        switch v {
        case .null: out += Array("null".utf8)
        case .bool(let x): out += Array((x ? "true" : "false").utf8)
        case .num(let n): out += n.isEmpty ? [0x30] : n
        case .str(let s): quote(s)
        case .member(let k): out += Array(String(offsets(k)).utf8)
        case .arr(let a):
            out.append(UInt8(ascii: "["))
            for (n, x) in a.enumerated() {
                if n > 0 { out.append(UInt8(ascii: ",")) }
                if indent < 2 { out.append(0x0a) }
                write(x, indent: indent + 1)
            }
            out.append(UInt8(ascii: "]"))
        case .obj(let kv):
            out.append(UInt8(ascii: "{"))
            for (n, x) in kv.enumerated() {
                if n > 0 { out.append(UInt8(ascii: ",")) }
                quote(x.key)
                out.append(UInt8(ascii: ":"))
                write(x.value, indent: indent + 1)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    mutating func quote(_ s: [UInt8]) {
        out.append(0x22)
        for c in s {
            switch c {
            case 0x22: out += [0x5c, 0x22]
            case 0x5c: out += [0x5c, 0x5c]
            case 0x0a: out += [0x5c, 0x6e]
            case 0..<0x20:
                let h = Array("0123456789abcdef".utf8)
                out += [0x5c, 0x75, 0x30, 0x30, h[Int(c >> 4)], h[Int(c & 15)]]
            default: out.append(c)
            }
        }
        out.append(0x22)
    }
}
