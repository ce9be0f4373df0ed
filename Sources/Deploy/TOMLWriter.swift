// SPDX-License-Identifier: Apache-2.0
import TOML

/// Writes a ``TOMLTable`` back as TOML text that parses to the same table (comments are not kept: the table
/// has none).
enum TOMLWriter {
    static func write(_ root: TOMLTable) -> String {
        var out = ""
        table(root, path: [], into: &out)
        return out
    }

    private static func table(_ t: TOMLTable, path: [String], into out: inout String) {
        for (k, v) in t.entries where !isTable(v) && !isTableArray(v) {
            out += key(k) + " = " + value(v) + "\n"
        }
        for (k, v) in t.entries {
            if case .table(let sub) = v {
                if !out.isEmpty { out += "\n" }
                out += "[" + (path + [k]).map(key).joined(separator: ".") + "]\n"
                table(sub, path: path + [k], into: &out)
            } else if isTableArray(v), case .array(let items) = v {
                for item in items {
                    guard case .table(let sub) = item else { continue }
                    if !out.isEmpty { out += "\n" }
                    out += "[[" + (path + [k]).map(key).joined(separator: ".") + "]]\n"
                    table(sub, path: path + [k], into: &out)
                }
            }
        }
    }

    private static func isTable(_ v: TOMLValue) -> Bool { if case .table = v { true } else { false } }

    private static func isTableArray(_ v: TOMLValue) -> Bool {
        guard case .array(let items) = v, !items.isEmpty else { return false }
        return items.allSatisfy(isTable)
    }

    static func key(_ k: String) -> String {
        let bare = !k.isEmpty && k.utf8.allSatisfy {
            ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D || $0 == 0x5F
        }
        return bare ? k : string(k)
    }

    static func value(_ v: TOMLValue) -> String {
        switch v {
        case .string(let s): return string(s)
        case .integer(let i): return String(i)
        case .float(let d):
            if d.isNaN { return "nan" }
            if d.isInfinite { return d < 0 ? "-inf" : "inf" }
            let s = String(d)
            return s.contains(".") || s.contains("e") ? s : s + ".0"
        case .boolean(let b): return b ? "true" : "false"
        case .datetime(let s): return s
        case .array(let items): return "[" + items.map(value).joined(separator: ", ") + "]"
        case .table(let t): return "{" + t.entries.map { key($0.key) + " = " + value($0.value) }.joined(separator: ", ") + "}"
        }
    }

    /// A TOML basic string.
    static func string(_ s: String) -> String { quoted(s, escaping: { $0.value < 0x20 || $0.value == 0x7F }) }
}

extension TOMLValue {
    /// Equal as values: tables compare without regard to key order.
    func sameValue(as other: TOMLValue) -> Bool {
        switch (self, other) {
        case (.table(let a), .table(let b)): a.sameTable(as: b)
        case (.array(let a), .array(let b)): a.count == b.count && zip(a, b).allSatisfy { $0.sameValue(as: $1) }
        case (.float(let a), .float(let b)): a == b || (a.isNaN && b.isNaN)
        default: self == other
        }
    }
}

extension TOMLTable {
    /// Equal as tables: the same keys with the same values, in any order.
    func sameTable(as other: TOMLTable) -> Bool {
        guard Set(keys) == Set(other.keys), keys.count == other.keys.count else { return false }
        return keys.allSatisfy { k in self[k]!.sameValue(as: other[k]!) }
    }
}
