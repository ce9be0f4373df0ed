// SPDX-License-Identifier: Apache-2.0
import Foundation

/// RFC 2397 `data:` URLs, the way Ignition carries file contents inline.
public enum DataURL {
    /// `data:text/plain;charset=utf-8;base64,…` for `bytes` (the form the Machine Config Operator writes).
    public static func encode(_ bytes: [UInt8]) -> String {
        "data:text/plain;charset=utf-8;base64," + Data(bytes).base64EncodedString()
    }

    /// The bytes of a `data:` URL, base64 or percent-encoded; nil if it is not one.
    ///
    /// Accepts `data:[<mediatype>][;base64],<data>` as RFC 2397 defines it: the media type and its parameters
    /// are skipped, `;base64` must be the last parameter, and without it the data is percent-decoded.
    public static func decode(_ url: String) -> [UInt8]? {
        guard url.hasPrefix("data:"), let comma = url.firstIndex(of: ",") else { return nil }
        let header = url[url.index(url.startIndex, offsetBy: 5)..<comma]
        let payload = url[url.index(after: comma)...]
        if header.hasSuffix(";base64") {
            guard let d = Data(base64Encoded: String(payload)) else { return nil }
            return [UInt8](d)
        }
        var out: [UInt8] = []
        var bytes = Array(payload.utf8)[...]
        while let c = bytes.popFirst() {
            if c == UInt8(ascii: "%") {
                guard bytes.count >= 2, let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) else {
                    return nil
                }
                out.append(v)
                bytes = bytes.dropFirst(2)
            } else {
                out.append(c)
            }
        }
        return out
    }
}
