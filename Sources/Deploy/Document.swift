// SPDX-License-Identifier: Apache-2.0
import TOML

/// A JSON-shaped document with ordered keys, written as YAML or as JSON.
///
/// Manifests are built once as a `Document` and then emitted in the format asked for, so the MachineConfig,
/// the Butane config and the Ignition JSON cannot drift apart.
public indirect enum Document: Sendable, Equatable {
    /// Text (written plain, double-quoted or as a literal block in YAML).
    case string(String)
    /// A whole number, written in decimal.
    case integer(Int)
    /// `true` or `false`.
    case boolean(Bool)
    /// A sequence.
    case list([Document])
    /// A mapping whose keys keep the order given.
    case map([(String, Document)])

    public static func == (a: Document, b: Document) -> Bool {
        switch (a, b) {
        case (.string(let x), .string(let y)): x == y
        case (.integer(let x), .integer(let y)): x == y
        case (.boolean(let x), .boolean(let y)): x == y
        case (.list(let x), .list(let y)): x == y
        case (.map(let x), .map(let y)): x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: false
        }
    }

    /// The value at `key`, if this is a map holding it.
    public subscript(key: String) -> Document? {
        guard case .map(let entries) = self else { return nil }
        return entries.first { $0.0 == key }?.1
    }

    // MARK: YAML

    /// The document as YAML 1.2 (also valid YAML 1.1): block style, two-space indents, list items not indented
    /// under their key's parent (Kubernetes style), literal blocks for multi-line text.
    ///
    /// Strings are written plain only when no YAML 1.1 or 1.2 reader could take them for anything else
    /// (numbers, booleans, `null`, `yes`/`no`, dates); everything else is double-quoted with escapes, or a
    /// literal block when it is printable multi-line text.
    public func yaml() -> String {
        var out = ""
        switch self {
        case .map(let entries) where !entries.isEmpty: Self.yamlMap(entries, indent: 0, into: &out)
        case .list(let items) where !items.isEmpty: Self.yamlList(items, indent: 0, into: &out)
        default:
            out = Self.yamlInline(self) + "\n"
        }
        return out
    }

    private static func yamlMap(_ entries: [(String, Document)], indent: Int, into out: inout String, firstInline: Bool = false) {
        let pad = String(repeating: " ", count: indent)
        for (n, (k, v)) in entries.enumerated() {
            if !(firstInline && n == 0) { out += pad }
            out += yamlScalar(k) + ":"
            yamlValue(v, indent: indent, into: &out)
        }
    }

    private static func yamlList(_ items: [Document], indent: Int, into out: inout String) {
        let pad = String(repeating: " ", count: indent)
        for item in items {
            out += pad + "-"
            switch item {
            case .map(let entries) where !entries.isEmpty:
                out += " "
                yamlMap(entries, indent: indent + 2, into: &out, firstInline: true)
            case .list(let inner) where !inner.isEmpty:
                out += "\n"
                yamlList(inner, indent: indent + 2, into: &out)
            case .string(let s) where blockStyle(s) != nil:
                out += " " + blockStyle(s)! + "\n" + blockBody(s, indent: indent + 2)
            default:
                out += " " + yamlInline(item) + "\n"
            }
        }
    }

    /// Writes what follows `key:` for a map entry at `indent`.
    private static func yamlValue(_ v: Document, indent: Int, into out: inout String) {
        switch v {
        case .map(let entries) where !entries.isEmpty:
            out += "\n"
            yamlMap(entries, indent: indent + 2, into: &out)
        case .list(let items) where !items.isEmpty:
            out += "\n"
            yamlList(items, indent: indent, into: &out)
        case .string(let s) where blockStyle(s) != nil:
            out += " " + blockStyle(s)! + "\n" + blockBody(s, indent: indent + 2)
        default:
            out += " " + yamlInline(v) + "\n"
        }
    }

    private static func yamlInline(_ v: Document) -> String {
        switch v {
        case .string(let s): yamlScalar(s)
        case .integer(let i): String(i)
        case .boolean(let b): b ? "true" : "false"
        case .list(let items): "[" + items.map(yamlInline).joined(separator: ", ") + "]"
        case .map(let entries): "{" + entries.map { yamlScalar($0.0) + ": " + yamlInline($0.1) }.joined(separator: ", ") + "}"
        }
    }

    /// The block scalar header (`|`, `|-` or `|+`) when `s` can be written as a literal block, else nil.
    ///
    /// A literal block keeps every character, so it is used only for multi-line text whose lines are all
    /// printable, carry no trailing blanks, and whose first line does not start with a blank (which would need
    /// an indentation indicator).
    static func blockStyle(_ s: String) -> String? {
        guard s.contains("\n"), !s.hasPrefix(" "), !s.hasPrefix("\t"), !s.hasPrefix("\n") else { return nil }
        for line in s.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasSuffix(" ") || line.hasSuffix("\t") { return nil }
            for u in line.unicodeScalars where !isPrintable(u) && u != "\t" { return nil }
        }
        if !s.hasSuffix("\n") { return "|-" }
        if s.hasSuffix("\n\n") { return "|+" }
        return "|"
    }

    private static func blockBody(_ s: String, indent: Int) -> String {
        let pad = String(repeating: " ", count: indent)
        var lines = s.split(separator: "\n", omittingEmptySubsequences: false)
        if s.hasSuffix("\n") { lines.removeLast() }
        return lines.map { $0.isEmpty ? "\n" : pad + $0 + "\n" }.joined()
    }

    /// Characters YAML allows unescaped (its `c-printable`), minus the ones YAML 1.1 reads as line breaks.
    static func isPrintable(_ u: Unicode.Scalar) -> Bool {
        switch u.value {
        case 0x20...0x7E: true
        case 0x85, 0x2028, 0x2029, 0xFEFF: false
        case 0xA0...0xD7FF, 0xE000...0xFFFD, 0x10000...0x10FFFF: true
        default: false
        }
    }

    /// `s` plain when that is unambiguous in YAML 1.1 and 1.2, else double-quoted.
    static func yamlScalar(_ s: String) -> String { isSafePlain(s) ? s : doubleQuoted(s) }

    static func isSafePlain(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, let last = s.unicodeScalars.last else { return false }
        // Must start with a letter or a slash: never a number, a sign, an indicator or a quote.
        guard (first >= "a" && first <= "z") || (first >= "A" && first <= "Z") || first == "/" else { return false }
        guard last != ":" else { return false }
        for u in s.unicodeScalars {
            let ok =
                (u >= "a" && u <= "z") || (u >= "A" && u <= "Z") || (u >= "0" && u <= "9")
                || "/._-:;,=+@".unicodeScalars.contains(u)
            if !ok { return false }
        }
        let reserved: Set<String> = [
            "y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf", ".nan", ".inf",
        ]
        return !reserved.contains(s.lowercased())
    }

    /// A YAML double-quoted scalar; its escapes are also valid JSON escapes except `\x`, which is not used.
    static func doubleQuoted(_ s: String) -> String { quoted(s, escaping: { !isPrintable($0) }) }

    // MARK: JSON

    /// The document as JSON, indented by two spaces, keys in document order, ending in a newline.
    public func json() -> String {
        var out = ""
        Self.jsonValue(self, indent: 0, into: &out)
        return out + "\n"
    }

    private static func jsonValue(_ v: Document, indent: Int, into out: inout String) {
        let pad = String(repeating: " ", count: indent + 2)
        switch v {
        case .string(let s): out += jsonString(s)
        case .integer(let i): out += String(i)
        case .boolean(let b): out += b ? "true" : "false"
        case .list(let items):
            if items.isEmpty {
                out += "[]"
                return
            }
            out += "[\n"
            for (n, item) in items.enumerated() {
                out += pad
                jsonValue(item, indent: indent + 2, into: &out)
                out += n == items.count - 1 ? "\n" : ",\n"
            }
            out += String(repeating: " ", count: indent) + "]"
        case .map(let entries):
            if entries.isEmpty {
                out += "{}"
                return
            }
            out += "{\n"
            for (n, (k, item)) in entries.enumerated() {
                out += pad + jsonString(k) + ": "
                jsonValue(item, indent: indent + 2, into: &out)
                out += n == entries.count - 1 ? "\n" : ",\n"
            }
            out += String(repeating: " ", count: indent) + "}"
        }
    }

    static func jsonString(_ s: String) -> String {
        jsonQuoted(s)
    }
}
