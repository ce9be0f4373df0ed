// SPDX-License-Identifier: Apache-2.0
import Compression
import EStargz
import Foundation
import OCI

/// Hostile layers made from honest ones, as an image author who wants to hurt a node would make them: the
/// payload is left alone and the TOC is rewritten (its digest annotation then names the new TOC: the author
/// signs what they wrote).
public enum HostileLayer {
    /// The gzip eStargz `blob` with its TOC entries passed through `mutate` (JSON objects as
    /// `JSONSerialization` reads them; put `NSNumber(value: Int64.max)` for big numbers), as a layer whose
    /// annotations name the new TOC.
    public static func rewritingTOC(_ blob: [UInt8], _ mutate: (inout [[String: Any]]) -> Void) throws -> TestImage.Layer {
        let reader = try EStargzReader(blob: MemoryBlob(blob), options: ReaderOptions(verifyChunks: false))
        guard reader.format == .estargz else { throw SupportError("rewritingTOC takes gzip eStargz, not \(reader.format)") }
        guard var top = try JSONSerialization.jsonObject(with: Data(reader.tocJSON)) as? [String: Any],
            var entries = top["entries"] as? [[String: Any]]
        else { throw SupportError("the TOC is not an object with entries") }
        mutate(&entries)
        top["entries"] = entries
        let json = Array(try JSONSerialization.data(withJSONObject: top, options: [.sortedKeys]))
        var h = TarHeader(typeflag: UInt8(ascii: "0"), name: ReservedName.toc)
        h.mode = 0o644
        let tar = TarWriter.entry(h, json) + TarWriter.end
        let tocOffset = reader.footer.tocOffset
        let out = Array(blob[0..<Int(tocOffset)]) + GzipMemberCompressor(level: 6).compress(tar)
            + Footer.estargz(tocOffset: tocOffset)
        return try TestImage.Layer.gzip(out, toc: json)
    }

    /// Sets `field` of the entry named `name` (as the TOC spells it, e.g. `etc/motd`) to `value`.
    public static func setting(_ field: String, of name: String, to value: Any, in blob: [UInt8]) throws -> TestImage.Layer {
        var found = false
        let out = try rewritingTOC(blob) { entries in
            for i in entries.indices where (entries[i]["name"] as? String) == name && entries[i]["type"] as? String != "chunk" {
                entries[i][field] = value
                found = true
            }
        }
        guard found else { throw SupportError("no TOC entry \(name)") }
        return out
    }
}
