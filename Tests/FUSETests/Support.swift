// SPDX-License-Identifier: Apache-2.0
import FUSE
import Foundation
import Synchronization
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// Where the recorded requests are (read from the source tree).
let fixtureDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/kernel-6.18").path

/// A recorded request's bytes.
func recorded(_ name: String) throws -> [UInt8] {
    let text = try String(contentsOfFile: "\(fixtureDirectory)/\(name).hex", encoding: .utf8)
    let digits = Array(text.utf8.filter { !$0.isASCIIWhitespace })
    return stride(from: 0, to: digits.count - 1, by: 2).map { UInt8(String(decoding: digits[$0..<($0 + 2)], as: UTF8.self), radix: 16)! }
}

/// The fields the recorder decoded for each request (expected.json).
func expectedFields() throws -> [String: [String: Any]] {
    let data = try Data(contentsOf: URL(fileURLWithPath: "\(fixtureDirectory)/expected.json"))
    let top = try JSONSerialization.jsonObject(with: data) as? [String: Any]
    return (top?["files"] as? [String: [String: Any]]) ?? [:]
}

extension UInt8 {
    var isASCIIWhitespace: Bool { self == 0x20 || self == 0x0A || self == 0x0D || self == 0x09 }
}

/// A request built by hand from the ABI: the header, then `body`.
func request(_ op: Opcode, unique: UInt64 = 7, node: UInt64 = 1, _ body: [UInt8] = []) -> [UInt8] {
    var out: [UInt8] = []
    func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
    put(UInt32(40 + body.count))
    put(op.rawValue)
    put(unique)
    put(node)
    put(UInt32(0)); put(UInt32(0)); put(UInt32(4242))  // uid, gid, pid
    put(UInt16(0)); put(UInt16(0))  // total_extlen, padding
    return out + body
}

/// Little-endian bytes of integers, for request bodies.
func le<T: FixedWidthInteger>(_ values: T...) -> [UInt8] {
    var out: [UInt8] = []
    for v in values { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
    return out
}

/// Decodes `bytes` (at `minor`) and hands the request to `body` while its buffer lives.
func withDecoded<R>(_ bytes: [UInt8], minor: UInt32 = 38, _ body: (Request) throws -> R) throws -> R {
    try bytes.withUnsafeBytes { b in try body(try RequestDecoder.decode(b, minor: minor)) }
}

/// Reads a little-endian integer from reply bytes.
func field<T: FixedWidthInteger>(_ bytes: [UInt8], at offset: Int, as: T.Type) -> T {
    bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
}

/// A small tree for the dispatcher: / {file (node 2, 10 bytes), slow (node 3: its reads and lookups come later),
/// dir (node 4)}.
final class TinyTree: FileSystem, Sendable {
    let contents: [UInt8] = Array("0123456789".utf8)
    let pending = Pending()
    func attrs(_ n: UInt64) -> FileAttributes? {
        switch n {
        case 1, 4: FileAttributes(inode: n, mode: 0o040755, linkCount: 2)
        case 2, 3: FileAttributes(inode: n, mode: 0o100644, size: 10)
        default: nil
        }
    }
    func lookup(parent: UInt64, name: UnsafeRawBufferPointer) throws(FUSEError) -> Answer<FileAttributes> {
        guard parent == 1 else { throw .notFound }
        switch String(decoding: name, as: UTF8.self) {
        case "file": return .now(attrs(2)!)
        case "slow": return .later { [self] in attrs(3)! }
        case "dir": return .now(attrs(4)!)
        default: throw .notFound
        }
    }
    func attributes(node: UInt64) throws(FUSEError) -> FileAttributes {
        guard let a = attrs(node) else { throw .notFound }
        return a
    }
    func readlink(node: UInt64) throws(FUSEError) -> [UInt8] { throw FUSEError(EINVAL) }
    func entries(directory: UInt64) throws(FUSEError) -> [DirectoryEntry] {
        guard directory == 1 else { throw FUSEError(ENOTDIR) }
        return [
            DirectoryEntry(name: Array("file".utf8), inode: 2, type: 0o100000),
            DirectoryEntry(name: Array("slow".utf8), inode: 3, type: 0o100000),
            DirectoryEntry(name: Array("dir".utf8), inode: 4, type: 0o040000),
        ]
    }
    func xattr(node: UInt64, name: String) throws(FUSEError) -> [UInt8] {
        guard name == "user.k" else { throw FUSEError(ENODATA) }
        return Array("value".utf8)
    }
    func xattrNames(node: UInt64) throws(FUSEError) -> [String] { ["user.k"] }
    func open(node: UInt64, flags: UInt32) throws(FUSEError) {
        if node == 1 || node == 4 { throw FUSEError(EISDIR) }
    }
    func statistics() -> FileSystemStatistics { FileSystemStatistics(blocks: 3, files: 4) }
    func read(node: UInt64, offset: UInt64, size: Int) throws(FUSEError) -> Answer<[UInt8]> {
        let from = Int(min(offset, 10)), to = min(10, from + size)
        switch node {
        case 2: return .now(Array(contents[from..<to]))
        case 3:
            // Waits until cancelled (a FUSE interrupt), or forever.
            let pending = self.pending
            return .later {
                try await withTaskCancellationHandler {
                    try await withCheckedThrowingContinuation { (c: CheckedContinuation<[UInt8], any Error>) in
                        pending.park(c)
                    }
                } onCancel: {
                    pending.cancelAll()
                }
            }
        default: throw .notFound
        }
    }
}

/// Continuations parked by TinyTree's slow reads.
final class Pending: Sendable {
    private let parked = Mutex<[CheckedContinuation<[UInt8], any Error>]>([])
    private let cancelled = Mutex(false)
    func park(_ c: CheckedContinuation<[UInt8], any Error>) {
        let now = cancelled.withLock { $0 }
        if now { c.resume(throwing: CancellationError()) } else { parked.withLock { $0.append(c) } }
    }
    func cancelAll() {
        cancelled.withLock { $0 = true }
        for c in parked.withLock({ p in defer { p = [] }; return p }) { c.resume(throwing: CancellationError()) }
    }
    var count: Int { parked.withLock { $0.count } }
}

/// TinyTree that takes `create`/`rmdir` as notifications, and records them.
final class NotifiedTree: ChangeNotifications, Sendable {
    let base = TinyTree()
    let seen = Mutex<[String]>([])
    func lookup(parent: UInt64, name: UnsafeRawBufferPointer) throws(FUSEError) -> Answer<FileAttributes> { try base.lookup(parent: parent, name: name) }
    func attributes(node: UInt64) throws(FUSEError) -> FileAttributes { try base.attributes(node: node) }
    func readlink(node: UInt64) throws(FUSEError) -> [UInt8] { try base.readlink(node: node) }
    func entries(directory: UInt64) throws(FUSEError) -> [DirectoryEntry] { try base.entries(directory: directory) }
    func xattr(node: UInt64, name: String) throws(FUSEError) -> [UInt8] { try base.xattr(node: node, name: name) }
    func xattrNames(node: UInt64) throws(FUSEError) -> [String] { try base.xattrNames(node: node) }
    func open(node: UInt64, flags: UInt32) throws(FUSEError) { try base.open(node: node, flags: flags) }
    func statistics() -> FileSystemStatistics { base.statistics() }
    func read(node: UInt64, offset: UInt64, size: Int) throws(FUSEError) -> Answer<[UInt8]> { try base.read(node: node, offset: offset, size: size) }
    func created(parent: UInt64, name: UnsafeRawBufferPointer) -> FUSEError {
        seen.withLock { $0.append("create \(parent) \(String(decoding: name, as: UTF8.self))") }
        return .notFound
    }
    func removedDirectory(parent: UInt64, name: UnsafeRawBufferPointer) -> FUSEError? {
        seen.withLock { $0.append("rmdir \(parent) \(String(decoding: name, as: UTF8.self))") }
        return nil
    }
}
