// SPDX-License-Identifier: Apache-2.0

/// A small, allocation-light JSON scanner over a byte buffer, for the TOC.
///
/// It reads exactly the JSON grammar (RFC 8259); it never traps on malformed input, it throws.
struct JSONScanner: ~Copyable {
    let bytes: UnsafeRawBufferPointer
    var pos = 0
    static let maxDepth = 64

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    func fail(_ what: String) -> EStargzError {
        EStargzError(.invalidTOC, "invalid TOC JSON at byte \(pos): \(what)")
    }

    mutating func skipWhitespace() {
        while pos < bytes.count {
            switch bytes[pos] {
            case 0x20, 0x09, 0x0a, 0x0d: pos += 1
            default: return
            }
        }
    }

    mutating func peek() throws(EStargzError) -> UInt8 {
        skipWhitespace()
        guard pos < bytes.count else { throw fail("unexpected end of input") }
        return bytes[pos]
    }

    mutating func expect(_ c: UInt8) throws(EStargzError) {
        guard try peek() == c else {
            throw fail("expected '\(Character(Unicode.Scalar(c)))', found '\(Character(Unicode.Scalar(bytes[pos])))'")
        }
        pos += 1
    }

    /// Consumes `c` if it is next.
    mutating func consume(_ c: UInt8) throws(EStargzError) -> Bool {
        if try peek() == c {
            pos += 1
            return true
        }
        return false
    }

    mutating func literal(_ word: StaticString) throws(EStargzError) {
        let n = word.utf8CodeUnitCount
        guard pos + n <= bytes.count else { throw fail("unexpected end of input") }
        for i in 0..<n where bytes[pos + i] != word.utf8Start[i] { throw fail("invalid literal") }
        pos += n
    }

    /// Reads `null`, returning true, or returns false without consuming anything.
    mutating func consumeNull() throws(EStargzError) -> Bool {
        if try peek() == UInt8(ascii: "n") {
            try literal("null")
            return true
        }
        return false
    }

    /// Reads a string, appending its UTF-8 bytes to `out`.
    mutating func readString(into out: inout [UInt8]) throws(EStargzError) {
        try expect(UInt8(ascii: "\""))
        while true {
            // Fast path: copy a run of plain bytes.
            let start = pos
            while pos < bytes.count {
                let c = bytes[pos]
                if c == 0x22 || c == 0x5c || c < 0x20 { break }
                pos += 1
            }
            if pos > start { out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start..<pos])) }
            guard pos < bytes.count else { throw fail("unterminated string") }
            let c = bytes[pos]
            if c == 0x22 {
                pos += 1
                return
            }
            if c < 0x20 { throw fail("control character in string") }
            // Escape.
            pos += 1
            guard pos < bytes.count else { throw fail("unterminated escape") }
            let e = bytes[pos]
            pos += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5c)
            case UInt8(ascii: "/"): out.append(0x2f)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0c)
            case UInt8(ascii: "n"): out.append(0x0a)
            case UInt8(ascii: "r"): out.append(0x0d)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try readHex4()
                if (0xD800..<0xDC00).contains(scalar) {
                    // A high surrogate must be followed by \u low surrogate; otherwise U+FFFD as Go does.
                    if pos + 6 <= bytes.count, bytes[pos] == 0x5c, bytes[pos + 1] == UInt8(ascii: "u") {
                        let save = pos
                        pos += 2
                        let low = try readHex4()
                        if (0xDC00..<0xE000).contains(low) {
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            pos = save
                            scalar = 0xFFFD
                        }
                    } else {
                        scalar = 0xFFFD
                    }
                } else if (0xDC00..<0xE000).contains(scalar) {
                    scalar = 0xFFFD
                }
                appendUTF8(scalar, to: &out)
            default:
                throw fail("invalid escape")
            }
        }
    }

    private mutating func readHex4() throws(EStargzError) -> UInt32 {
        guard pos + 4 <= bytes.count else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[pos]
            let d: UInt32
            switch c {
            case 48...57: d = UInt32(c - 48)
            case 97...102: d = UInt32(c - 87)
            case 65...70: d = UInt32(c - 55)
            default: throw fail("invalid \\u escape")
            }
            v = v << 4 | d
            pos += 1
        }
        return v
    }

    private func appendUTF8(_ s: UInt32, to out: inout [UInt8]) {
        switch s {
        case 0..<0x80: out.append(UInt8(s))
        case 0x80..<0x800:
            out.append(UInt8(0xC0 | s >> 6))
            out.append(UInt8(0x80 | s & 0x3F))
        case 0x800..<0x10000:
            out.append(UInt8(0xE0 | s >> 12))
            out.append(UInt8(0x80 | s >> 6 & 0x3F))
            out.append(UInt8(0x80 | s & 0x3F))
        default:
            out.append(UInt8(0xF0 | s >> 18))
            out.append(UInt8(0x80 | s >> 12 & 0x3F))
            out.append(UInt8(0x80 | s >> 6 & 0x3F))
            out.append(UInt8(0x80 | s & 0x3F))
        }
    }

    /// Reads an object key into `key` as lowercase ASCII (Go matches TOC keys case-insensitively).
    mutating func readKey(into key: inout [UInt8]) throws(EStargzError) {
        key.removeAll(keepingCapacity: true)
        try readString(into: &key)
        for i in key.indices where key[i] >= 65 && key[i] <= 90 { key[i] += 32 }
        try expect(UInt8(ascii: ":"))
    }

    /// Reads an integer that fits in Int64. Fractions and exponents are errors, as in Go's int64 decoding.
    mutating func readInt64() throws(EStargzError) -> Int64 {
        _ = try peek()
        var neg = false
        if bytes[pos] == UInt8(ascii: "-") {
            neg = true
            pos += 1
        }
        let start = pos
        var v: Int64 = 0
        while pos < bytes.count, bytes[pos] >= 48, bytes[pos] <= 57 {
            let d = Int64(bytes[pos] - 48)
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = neg ? m.subtractingReportingOverflow(d) : m.addingReportingOverflow(d)
            if o1 || o2 { throw fail("number out of range") }
            v = a
            pos += 1
        }
        if pos == start { throw fail("expected a number") }
        if pos - start > 1 && bytes[start] == 48 { throw fail("number has a leading zero") }
        if pos < bytes.count, bytes[pos] == UInt8(ascii: ".") || bytes[pos] == UInt8(ascii: "e")
            || bytes[pos] == UInt8(ascii: "E")
        {
            throw fail("number is not an integer")
        }
        return v
    }

    /// Skips any JSON value, refusing nesting deeper than ``maxDepth``.
    mutating func skipValue(depth: Int = 0) throws(EStargzError) {
        guard depth < Self.maxDepth else { throw fail("nesting deeper than \(Self.maxDepth)") }
        let c = try peek()
        switch c {
        case UInt8(ascii: "{"):
            pos += 1
            if try consume(UInt8(ascii: "}")) { return }
            var scratch: [UInt8] = []
            repeat {
                scratch.removeAll(keepingCapacity: true)
                try readString(into: &scratch)
                try expect(UInt8(ascii: ":"))
                try skipValue(depth: depth + 1)
            } while try consume(UInt8(ascii: ","))
            try expect(UInt8(ascii: "}"))
        case UInt8(ascii: "["):
            pos += 1
            if try consume(UInt8(ascii: "]")) { return }
            repeat { try skipValue(depth: depth + 1) } while try consume(UInt8(ascii: ","))
            try expect(UInt8(ascii: "]"))
        case UInt8(ascii: "\""):
            var scratch: [UInt8] = []
            try readString(into: &scratch)
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        default:
            // A number: sign, digits, fraction, exponent.
            let start = pos
            if bytes[pos] == UInt8(ascii: "-") { pos += 1 }
            while pos < bytes.count,
                (48...57).contains(bytes[pos]) || bytes[pos] == 0x2e || bytes[pos] == 0x65 || bytes[pos] == 0x45
                    || bytes[pos] == 0x2b || bytes[pos] == 0x2d
            {
                pos += 1
            }
            if pos == start || (pos == start + 1 && bytes[start] == UInt8(ascii: "-")) {
                throw fail("unexpected character")
            }
        }
    }
}
