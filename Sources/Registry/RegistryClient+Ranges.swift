// SPDX-License-Identifier: Apache-2.0
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
public import OCI

extension RegistryClient {
    /// Reads several byte ranges of a blob in one request (`Range: bytes=a-b,c-d`), parsing a
    /// `multipart/byteranges` reply.
    ///
    /// A registry that answers 400/416 to a multi-range request, or that serves the ranges in some other
    /// shape it cannot be trusted with, is asked again one range at a time, and the blob is remembered as
    /// single-range only. A 200 (ranges ignored) is sliced. Each result has exactly the length asked for.
    public func readRanges(_ ref: Reference, _ digest: Digest, _ ranges: [Range<Int64>]) async throws -> [[UInt8]] {
        let wanted = ranges.filter { !$0.isEmpty }
        guard wanted.count > 1 else {
            return try await ranges.asyncMap { r in
                r.isEmpty ? [] : try await readRange(ref, digest, offset: r.lowerBound, length: Int(r.count))
            }
        }
        if await singleRangeBlobs.contains("\(ref.registry)/\(digest)") {
            return try await ranges.asyncMap { r in
                r.isEmpty ? [] : try await readRange(ref, digest, offset: r.lowerBound, length: Int(r.count))
            }
        }
        let spec = wanted.map { "\($0.lowerBound)-\($0.upperBound - 1)" }.joined(separator: ",")
        var call = Call(
            method: .GET, host: ref.registry, repository: ref.repository, actions: "pull",
            path: "/v2/\(ref.repository)/blobs/\(digest)", headers: [("Range", "bytes=\(spec)")],
            timeout: configuration.fetchTimeout)
        call.redirectKey = "\(ref.registry)/\(ref.repository)@\(digest)"
        let total = wanted.reduce(0) { $0 + Int($1.count) }
        // A reply that breaks off or does not fit is asked for again, as a single range's is.
        let reply = try await withRetries("retrying a multi-range read", ["layer.digest": "\(digest)", "ranges": "\(wanted.count)"]) {
            (_: Int) async throws -> RetryPolicy.Outcome<MultiRangeReply> in
            let response = try await send(call)  // its errors are final: send retried what was worth it
            do {
                return .success(try await multiRangeReply(response, digest, wanted, total: total))
            } catch {
                return try bodyOutcome(after: error) {
                    RegistryError(.transport, "\(wanted.count) ranges of blob \(digest) failed", cause: $0)
                }
            }
        }
        let parts: [(start: Int64, bytes: [UInt8])]
        switch reply {
        case .parts(let p):
            parts = p
        case .singleRangesOnly:
            await markSingleRange("\(ref.registry)/\(digest)")
            logger.debug("multi-range refused; switching the blob to single ranges", metadata: ["layer.digest": "\(digest)"])
            return try await ranges.asyncMap { r in
                r.isEmpty ? [] : try await readRange(ref, digest, offset: r.lowerBound, length: Int(r.count))
            }
        }
        var out: [[UInt8]] = []
        for r in ranges {
            if r.isEmpty {
                out.append([])
                continue
            }
            guard let p = parts.first(where: { $0.start <= r.lowerBound && $0.start + Int64($0.bytes.count) >= r.upperBound }) else {
                throw RegistryError(.badResponse, "the reply for blob \(digest) does not cover range [\(r.lowerBound), \(r.upperBound))")
            }
            let from = Int(r.lowerBound - p.start)
            out.append(Array(p.bytes[from..<(from + Int(r.count))]))
        }
        return out
    }

    /// What a reply to a multi-range request holds.
    enum MultiRangeReply: Sendable {
        /// Byte runs of the blob, each from its start (the parts of a `multipart/byteranges` body, one range of a
        /// 206, or the head of the blob from a 200).
        case parts([(start: Int64, bytes: [UInt8])])
        /// The registry refuses several ranges in one request (400, 416, 501).
        case singleRangesOnly
    }

    /// Reads the reply to a multi-range request. A body that breaks off or does not parse throws (the caller
    /// asks again); a status that is the registry's verdict throws its ``RegistryError``.
    private func multiRangeReply(
        _ response: HTTPClientResponse, _ digest: Digest, _ wanted: [Range<Int64>], total: Int
    ) async throws -> MultiRangeReply {
        let status = Int(response.status.code)
        switch status {
        case 206:
            let body = Array(buffer: try await response.body.collect(upTo: total + 64 * 1024 + wanted.count * 512))
            let type = response.headers.first(name: "Content-Type") ?? ""
            if type.lowercased().hasPrefix("multipart/byteranges") {
                guard let boundary = MultipartByteRanges.boundary(type) else {
                    throw RegistryError(.badResponse, "multipart reply for blob \(digest) has no boundary")
                }
                return .parts(try MultipartByteRanges.parse(body, boundary: boundary, what: "blob \(digest)"))
            }
            guard let cr = response.headers.first(name: "Content-Range"), let start = MultipartByteRanges.start(cr) else {
                throw RegistryError(.badResponse, "206 for blob \(digest) without Content-Range")
            }
            return .parts([(start, body)])
        case 200:
            // Ranges ignored: the whole blob, read as far as the last range.
            let maxEnd = wanted.map(\.upperBound).max() ?? 0
            var all: [UInt8] = []
            for try await buffer in response.body {
                all.append(contentsOf: buffer.readableBytesView)
                if Int64(all.count) >= maxEnd { break }
            }
            guard Int64(all.count) >= maxEnd else {
                throw RegistryError(.badResponse, "blob \(digest) ended after \(all.count) bytes, before \(maxEnd)")
            }
            return .parts([(start: Int64(0), bytes: all)])
        case 400, 416, 501:
            _ = try? await response.body.collect(upTo: 1 << 16)
            return .singleRangesOnly
        default:
            _ = try await expect(response, [206], what: "ranges of blob \(digest)")
            throw RegistryError(.badResponse, "unexpected status \(status)", status: status)
        }
    }

    func markSingleRange(_ key: String) async { await singleRangeBlobs.insert(key) }
}

/// Blobs whose registry refused multi-range requests.
actor KeySet {
    private var keys: Set<String> = []
    func contains(_ k: String) -> Bool { keys.contains(k) }
    func insert(_ k: String) { keys.insert(k) }
}

/// A `multipart/byteranges` body parser (RFC 7233 §4.1).
enum MultipartByteRanges {
    static func boundary(_ contentType: String) -> String? {
        for param in contentType.split(separator: ";").dropFirst() {
            let kv = param.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if kv.count == 2, kv[0].lowercased() == "boundary" {
                return kv[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            }
        }
        return nil
    }

    /// The first byte of a `Content-Range: bytes a-b/total` value.
    static func start(_ contentRange: String) -> Int64? {
        let v = contentRange.trimmingCharacters(in: .whitespaces)
        guard v.lowercased().hasPrefix("bytes ") else { return nil }
        let spec = v.dropFirst(6)
        guard let dash = spec.firstIndex(of: "-") else { return nil }
        return Int64(spec[..<dash].trimmingCharacters(in: .whitespaces))
    }

    static func parse(_ body: [UInt8], boundary: String, what: String) throws -> [(start: Int64, bytes: [UInt8])] {
        let delimiter = Array("--\(boundary)".utf8)
        var parts: [(Int64, [UInt8])] = []
        var i = find(delimiter, in: body, from: 0)
        guard var pos = i else { throw RegistryError(.badResponse, "multipart reply for \(what) has no boundary line") }
        while true {
            pos += delimiter.count
            if pos + 1 < body.count && body[pos] == 0x2d && body[pos + 1] == 0x2d { break }  // closing "--"
            // Headers until an empty line.
            guard let headerEnd = find([13, 10, 13, 10], in: body, from: pos) else {
                throw RegistryError(.badResponse, "multipart reply for \(what) has a part without a header end")
            }
            let headers = String(decoding: body[pos..<headerEnd], as: UTF8.self)
            var start: Int64? = nil
            for line in headers.components(separatedBy: "\r\n") {
                let kv = line.split(separator: ":", maxSplits: 1)
                if kv.count == 2, kv[0].trimmingCharacters(in: .whitespaces).lowercased() == "content-range" {
                    start = Self.start(String(kv[1]))
                }
            }
            guard let s = start else { throw RegistryError(.badResponse, "multipart part for \(what) has no Content-Range") }
            let dataStart = headerEnd + 4
            i = find([13, 10] + delimiter, in: body, from: dataStart)
            guard let dataEnd = i else {
                throw RegistryError(.badResponse, "multipart reply for \(what) is truncated")
            }
            parts.append((s, Array(body[dataStart..<dataEnd])))
            pos = dataEnd + 2
        }
        return parts
    }

    static func find(_ needle: [UInt8], in hay: [UInt8], from: Int) -> Int? {
        guard needle.count > 0, hay.count >= needle.count else { return nil }
        var i = from
        let first = needle[0]
        while i <= hay.count - needle.count {
            if hay[i] == first && hay[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }
}

extension Array {
    func asyncMap<T>(_ f: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        out.reserveCapacity(count)
        for e in self { out.append(try await f(e)) }
        return out
    }
}
