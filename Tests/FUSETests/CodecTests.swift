// SPDX-License-Identifier: Apache-2.0
import CLinuxFUSE
@testable import FUSE
import Foundation
import Testing
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

@Suite("FUSE codec: requests recorded from Linux 6.18")
struct RecordedRequestTests {
    static let names = [
        "init", "lookup", "getattr", "open", "read", "readdirplus", "readdir", "opendir", "releasedir", "release",
        "getxattr", "listxattr", "statfs", "readlink", "access", "flush", "forget", "batch_forget", "interrupt",
        "create", "rmdir",
    ]

    @Test("every header field decodes as the kernel wrote it", arguments: names)
    func header(_ name: String) throws {
        let bytes = try recorded(name)
        let want = try #require(try expectedFields()["\(name).hex"]?["header"] as? [String: Any])
        try withDecoded(bytes) { r in
            #expect(Int(r.header.length) == want["len"] as? Int && Int(r.header.length) == bytes.count)
            #expect(Int(r.header.opcode) == want["opcode"] as? Int)
            #expect(Int(r.header.unique) == want["unique"] as? Int)
            #expect(Int(r.header.node) == want["nodeid"] as? Int)
            #expect(Int(r.header.uid) == want["uid"] as? Int && Int(r.header.gid) == want["gid"] as? Int)
            #expect(Int(r.header.pid) == want["pid"] as? Int)
        }
    }

    @Test("each operation's arguments decode as the kernel wrote them")
    func operations() throws {
        let all = try expectedFields()
        func body(_ n: String) -> [String: Any] { (all["\(n).hex"]?["body"] as? [String: Any]) ?? [:] }
        func number(_ n: String, _ f: String) -> UInt64? { (body(n)[f] as? NSNumber)?.uint64Value }
        func text(_ b: UnsafeRawBufferPointer) -> String { String(decoding: b, as: UTF8.self) }

        try withDecoded(try recorded("init")) { r in
            guard case .initialize(let i) = r.operation else { Issue.record("\(r.operation)"); return }
            #expect(i.major == 7 && UInt64(i.minor) == number("init", "minor"))
            #expect(UInt64(i.maxReadahead) == number("init", "max_readahead"))
            // FUSE_INIT_EXT is set, so flags2 is the high half.
            let flags = number("init", "flags")!, flags2 = number("init", "flags2")!
            #expect(i.flags == flags | flags2 << 32)
        }
        try withDecoded(try recorded("lookup")) { r in
            guard case .lookup(let name) = r.operation else { Issue.record("\(r.operation)"); return }
            #expect(text(name) == body("lookup")["name"] as? String)
        }
        try withDecoded(try recorded("read")) { r in
            guard case .read(let fh, let offset, let size) = r.operation else { Issue.record("\(r.operation)"); return }
            #expect(fh == number("read", "fh") && offset == number("read", "offset") && UInt64(size) == number("read", "size"))
        }
        try withDecoded(try recorded("readdirplus")) { r in
            guard case .readdir(let fh, let offset, let size, let plus) = r.operation else { Issue.record("\(r.operation)"); return }
            #expect(plus && fh == number("readdirplus", "fh") && offset == 0 && UInt64(size) == number("readdirplus", "size"))
        }
        try withDecoded(try recorded("readdir")) { r in
            guard case .readdir(_, let offset, _, let plus) = r.operation else { Issue.record("\(r.operation)"); return }
            #expect(!plus && offset == number("readdir", "offset"))
        }
        try withDecoded(try recorded("open")) { r in
            guard case .open(let flags) = r.operation else { Issue.record("\(r.operation)"); return }
            #expect(UInt64(flags) == number("open", "flags"))
        }
        try withDecoded(try recorded("releasedir")) { r in
            guard case .releasedir(let fh) = r.operation else { Issue.record("\(r.operation)"); return }
            #expect(fh == number("releasedir", "fh"))
        }
        try withDecoded(try recorded("getxattr")) { r in
            guard case .getxattr(let name, let size) = r.operation else { Issue.record("\(r.operation)"); return }
            #expect(text(name) == body("getxattr")["name"] as? String && UInt64(size) == number("getxattr", "size"))
        }
        try withDecoded(try recorded("listxattr")) { r in
            guard case .listxattr(let size) = r.operation else { Issue.record("\(r.operation)"); return }
            #expect(UInt64(size) == number("listxattr", "size"))
        }
        try withDecoded(try recorded("access")) { r in
            guard case .access(let mask) = r.operation else { Issue.record("\(r.operation)"); return }
            #expect(UInt64(mask) == number("access", "mask"))
        }
        try withDecoded(try recorded("interrupt")) { r in
            guard case .interrupt(let target) = r.operation else { Issue.record("\(r.operation)"); return }
            #expect(target == number("interrupt", "unique"))
        }
        try withDecoded(try recorded("create")) { r in
            guard case .create(let name, let flags, let mode) = r.operation else { Issue.record("\(r.operation)"); return }
            #expect(text(name) == "x" && UInt64(flags) == number("create", "flags") && UInt64(mode) == number("create", "mode"))
        }
        try withDecoded(try recorded("rmdir")) { r in
            guard case .rmdir(let name) = r.operation else { Issue.record("\(r.operation)"); return }
            #expect(text(name) == "d")
        }
        for (n, op) in [("release", Opcode.release), ("flush", .flush)] {
            try withDecoded(try recorded(n)) { r in
                guard case .acknowledge(let o) = r.operation else { Issue.record("\(n): \(r.operation)"); return }
                #expect(o == op)
            }
        }
        for n in ["forget", "batch_forget"] {
            try withDecoded(try recorded(n)) { r in
                guard case .forget = r.operation else { Issue.record("\(n): \(r.operation)"); return }
            }
        }
        for (n, want) in [("getattr", "getattr"), ("statfs", "statfs"), ("readlink", "readlink"), ("opendir", "opendir")] {
            try withDecoded(try recorded(n)) { r in #expect("\(r.operation)" == want, "\(n)") }
        }
    }

    @Test("a request cut short anywhere is refused, never read past its end")
    func truncated() throws {
        for name in Self.names {
            let bytes = try recorded(name)
            for cut in [0, 1, 39, 40, bytes.count - 1] where cut < bytes.count {
                let short = Array(bytes[0..<cut])
                #expect(throws: DecodeFailure.self, "\(name) cut at \(cut)") {
                    try short.withUnsafeBytes { _ = try RequestDecoder.decode($0, minor: 38) }
                }
            }
        }
    }
}

@Suite("FUSE codec: older protocol minors, built from the ABI header")
struct OlderMinorTests {
    @Test("CREATE before minor 12 carries an 8-byte fuse_open_in before the name; from 12 the 16-byte fuse_create_in")
    func createLayout() throws {
        let old = request(.create, le(UInt32(0o100), UInt32(0o100644)) + Array("use".utf8) + [0])
        try withDecoded(old, minor: 11) { r in
            guard case .create(let name, let flags, let mode) = r.operation else { Issue.record("\(r.operation)"); return }
            #expect(String(decoding: name, as: UTF8.self) == "use" && flags == 0o100 && mode == 0o100644)
        }
        let new = request(.create, le(UInt32(0o100), UInt32(0o100644), UInt32(0o22), UInt32(0)) + Array("use".utf8) + [0])
        try withDecoded(new, minor: 38) { r in
            guard case .create(let name, _, _) = r.operation else { Issue.record("\(r.operation)"); return }
            #expect(String(decoding: name, as: UTF8.self) == "use")
        }
    }

    @Test("READ before minor 9 is 24 bytes (no lock owner, no flags) and decodes")
    func shortRead() throws {
        let r24 = request(.read, node: 5, le(UInt64(9), UInt64(4096)) + le(UInt32(512), UInt32(0)))
        try withDecoded(r24, minor: 8) { r in
            guard case .read(let fh, let offset, let size) = r.operation else { Issue.record("\(r.operation)"); return }
            #expect(fh == 9 && offset == 4096 && size == 512 && r.header.node == 5)
        }
        let r16 = request(.read, le(UInt64(9), UInt64(4096)))
        #expect(throws: DecodeFailure.self) { try withDecoded(r16, minor: 8) { _ in } }
    }

    @Test("INIT from a kernel before minor 6 is 8 bytes; its reply is 8 bytes before minor 5, 24 before 23, 64 after")
    func initSizes() throws {
        let d = Dispatcher(TinyTree(), options: FUSESession.Options(), logger: .init(label: "test"))
        for (minor, size) in [(UInt32(4), 8), (5, 24), (22, 24), (23, 64), (38, 64)] {
            let body = minor < 6 ? le(UInt32(7), minor) : le(UInt32(7), minor, UInt32(65536), UInt32(FUSE_ASYNC_READ))
            let reply = try withDecoded(request(.initialize, body)) { r -> [UInt8] in
                guard case .reply(let rep) = d.handle(r) else { Issue.record("no reply"); return [] }
                return d.encoder.bytes(rep, unique: 7)
            }
            #expect(reply.count == 16 + size, "minor \(minor)")
            #expect(field(reply, at: 0, as: UInt32.self) == UInt32(16 + size))
            #expect(field(reply, at: 16, as: UInt32.self) == 7 && field(reply, at: 20, as: UInt32.self) == minor)
            #expect(d.minor == minor)
        }
    }

    @Test("a newer major is answered with ours alone (8 bytes), for the kernel to retry with it")
    func newerMajor() throws {
        let d = Dispatcher(TinyTree(), options: FUSESession.Options(), logger: .init(label: "test"))
        let reply = try withDecoded(request(.initialize, le(UInt32(8), UInt32(1), UInt32(0), UInt32(0)))) { r -> [UInt8] in
            guard case .reply(let rep) = d.handle(r) else { return [] }
            return d.encoder.bytes(rep, unique: 1)
        }
        #expect(reply.count == 24 && field(reply, at: 16, as: UInt32.self) == 7 && field(reply, at: 20, as: UInt32.self) == 0)
    }

    @Test("entry, attr and statfs replies take the compat sizes of minors before 9 (and 4)")
    func replySizes() {
        let a = FileAttributes(inode: 2, mode: 0o100644, size: 10)
        for (minor, entry, attr, statfs) in [(UInt32(3), 120, 96, 48), (8, 120, 96, 80), (9, 128, 104, 80), (38, 128, 104, 80)] {
            let e = ReplyEncoder(minor: minor, cacheTimeout: 5)
            #expect(e.bytes(.entry(a), unique: 1).count == 16 + entry, "minor \(minor)")
            #expect(e.bytes(.attributes(a), unique: 1).count == 16 + attr, "minor \(minor)")
            #expect(e.bytes(.statistics(FileSystemStatistics(blocks: 1, files: 1)), unique: 1).count == 16 + statfs, "minor \(minor)")
        }
    }
}

@Suite("FUSE codec: replies")
struct ReplyTests {
    let encoder = ReplyEncoder(minor: 38, cacheTimeout: 3600)

    @Test("an error is a bare header: length 16, the negated errno, the request's unique")
    func error() {
        let b = encoder.bytes(.status(ENOENT), unique: 99)
        #expect(b.count == 16 && field(b, at: 0, as: UInt32.self) == 16)
        #expect(field(b, at: 4, as: Int32.self) == -ENOENT && field(b, at: 8, as: UInt64.self) == 99)
    }

    @Test("an entry carries the node, both timeouts and the attributes; a negative entry has node 0 and the timeouts")
    func entry() {
        let a = FileAttributes(inode: 5, mode: 0o100600, linkCount: 2, uid: 1000, gid: 100, size: 1234, modTime: 1_700_000_000)
        let b = encoder.bytes(.entry(a), unique: 3)
        #expect(field(b, at: 16, as: UInt64.self) == 5)  // nodeid
        #expect(field(b, at: 32, as: UInt64.self) == 3600 && field(b, at: 40, as: UInt64.self) == 3600)
        let attr = 16 + 40  // fuse_attr inside fuse_entry_out
        #expect(field(b, at: attr, as: UInt64.self) == 5 && field(b, at: attr + 8, as: UInt64.self) == 1234)
        #expect(field(b, at: attr + 16, as: UInt64.self) == 3)  // 512-byte blocks
        #expect(field(b, at: attr + 32, as: UInt64.self) == 1_700_000_000)  // mtime
        #expect(field(b, at: attr + 60, as: UInt32.self) == 0o100600 && field(b, at: attr + 64, as: UInt32.self) == 2)
        #expect(field(b, at: attr + 68, as: UInt32.self) == 1000 && field(b, at: attr + 72, as: UInt32.self) == 100)
        let n = encoder.bytes(.negativeEntry, unique: 3)
        #expect(n.count == 144 && field(n, at: 16, as: UInt64.self) == 0 && field(n, at: 32, as: UInt64.self) == 3600)
    }

    @Test("a data reply is the header and the bytes, nothing else")
    func data() {
        let b = encoder.bytes(.data(Array("hello".utf8)), unique: 4)
        #expect(b.count == 21 && field(b, at: 0, as: UInt32.self) == 21 && Array(b[16...]) == Array("hello".utf8))
    }

    @Test("a directory listing resumes at its offset, stops at the size asked, and pads every record to 8 bytes")
    func listing() throws {
        let entries = (0..<5).map { DirectoryEntry(name: Array("name\($0)".utf8), inode: UInt64(10 + $0), type: 0o100000) }
        let all = try encoder.directoryListing(entries, directory: 1, offset: 0, size: 4096, plus: false) { FileAttributes(inode: $0, mode: 0) }
        // ".", "..", then five 5-byte names: 24 + name, rounded up to 8.
        #expect(all.count == 2 * 32 + 5 * 32)
        #expect(field(all, at: 0, as: UInt64.self) == 1 && field(all, at: 8, as: UInt64.self) == 1)  // "." is the directory
        let rest = try encoder.directoryListing(entries, directory: 1, offset: 6, size: 4096, plus: false) { FileAttributes(inode: $0, mode: 0) }
        #expect(rest.count == 32 && field(rest, at: 0, as: UInt64.self) == 14 && field(rest, at: 8, as: UInt64.self) == 7)
        let two = try encoder.directoryListing(entries, directory: 1, offset: 0, size: 70, plus: false) { FileAttributes(inode: $0, mode: 0) }
        #expect(two.count == 64)
        let past = try encoder.directoryListing(entries, directory: 1, offset: .max, size: 4096, plus: false) { FileAttributes(inode: $0, mode: 0) }
        #expect(past.isEmpty)
        let plus = try encoder.directoryListing(entries, directory: 1, offset: 2, size: 4096, plus: true) { FileAttributes(inode: $0, mode: 0o100644, size: 7) }
        #expect(plus.count == 5 * (128 + 32) && field(plus, at: 0, as: UInt64.self) == 10)  // entry_out's nodeid first
    }
}

@Suite("FUSE kernel ABI")
struct ABITests {
    @Test("struct sizes match the kernel's (7.38 header)")
    func sizes() {
        #expect(MemoryLayout<fuse_in_header>.size == 40)
        #expect(MemoryLayout<fuse_out_header>.size == 16)
        #expect(MemoryLayout<fuse_attr>.size == 88)
        #expect(MemoryLayout<fuse_entry_out>.size == 128)
        #expect(MemoryLayout<fuse_attr_out>.size == 104)
        #expect(MemoryLayout<fuse_init_in>.size == 64)
        #expect(MemoryLayout<fuse_init_out>.size == 64)
        #expect(MemoryLayout<fuse_open_in>.size == 8)
        #expect(MemoryLayout<fuse_open_out>.size == 16)
        #expect(MemoryLayout<fuse_create_in>.size == 16)
        #expect(MemoryLayout<fuse_read_in>.size == 40)
        #expect(MemoryLayout<fuse_release_in>.size == 24)
        #expect(MemoryLayout<fuse_getxattr_in>.size == 8)
        #expect(MemoryLayout<fuse_getxattr_out>.size == 8)
        #expect(MemoryLayout<fuse_statfs_out>.size == 80)
        #expect(MemoryLayout<fuse_interrupt_in>.size == 8)
        #expect(CLinuxFUSE_nameOffset() == 24)
        #expect(CLinuxFUSE_nameOffsetPlus() == 152)
        #expect(CLinuxFUSE_direntSize(1) == 32)
    }
}
