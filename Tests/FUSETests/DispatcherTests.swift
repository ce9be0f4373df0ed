// SPDX-License-Identifier: Apache-2.0
import CLinuxFUSE
@testable import FUSE
import Foundation
import Logging
import Testing
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// Dispatches `bytes` and gives the outcome's reply bytes (nil when it comes later or never).
private func reply(_ d: Dispatcher, _ bytes: [UInt8], minor: UInt32 = 38) throws -> [UInt8]? {
    try withDecoded(bytes, minor: minor) { r -> [UInt8]? in
        switch d.handle(r) {
        case .reply(let rep), .destroy(let rep): return d.encoder.bytes(rep, unique: r.header.unique)
        default: return nil
        }
    }
}

private func errno(of reply: [UInt8]?) -> Int32? { reply.map { -field($0, at: 4, as: Int32.self) } }

private func dispatcher(_ fs: any FileSystem = TinyTree(), negative: Bool = true) throws -> Dispatcher {
    let d = Dispatcher(fs, options: FUSESession.Options(cacheNegativeLookups: negative), logger: Logger(label: "test"))
    _ = try reply(d, try recorded("init"))
    return d
}

private func name(_ s: String) -> [UInt8] { Array(s.utf8) + [0] }

@Suite("FUSE dispatcher (no kernel)")
struct DispatcherTests {
    @Test("INIT takes the offered flags we want, at the lower minor; the recorded kernel's INIT gets minor 38")
    func negotiate() throws {
        let d = Dispatcher(TinyTree(), options: FUSESession.Options(), logger: Logger(label: "test"))
        let r = try #require(try reply(d, try recorded("init")))
        #expect(r.count == 16 + 64 && field(r, at: 16, as: UInt32.self) == 7 && field(r, at: 20, as: UInt32.self) == 38)
        let flags = UInt64(field(r, at: 28, as: UInt32.self)) | UInt64(field(r, at: 48, as: UInt32.self)) << 32
        #expect(flags == Dispatcher.wantedFlags, "every flag we want is offered by 6.18, nothing else is taken")
        #expect(field(r, at: 24, as: UInt32.self) == 131072)  // max_readahead echoed
        #expect(field(r, at: 44, as: UInt16.self) == 256)  // max_pages for 1 MiB reads
        #expect(d.minor == 38)
        // An older kernel that offers less gets less.
        let old = Dispatcher(TinyTree(), options: FUSESession.Options(), logger: Logger(label: "test"))
        let o = try #require(try reply(old, request(.initialize, le(UInt32(7), UInt32(31), UInt32(0), UInt32(FUSE_ASYNC_READ | FUSE_POSIX_LOCKS)))))
        #expect(field(o, at: 20, as: UInt32.self) == 31 && field(o, at: 28, as: UInt32.self) == UInt32(FUSE_ASYNC_READ))
    }

    @Test("the recorded LOOKUP, GETATTR, OPEN, READ, STATFS, xattr requests are answered from the tree")
    func recordedOperations() throws {
        let d = try dispatcher()
        // The recorded lookup asks for "hello.txt" in the root: not in TinyTree, a negative entry.
        let miss = try #require(try reply(d, try recorded("lookup")))
        #expect(miss.count == 144 && field(miss, at: 16, as: UInt64.self) == 0 && field(miss, at: 32, as: UInt64.self) == 3600)
        let attr = try #require(try reply(d, try recorded("getattr")))  // node 1
        #expect(attr.count == 16 + 104 && field(attr, at: 16 + 16 + 60, as: UInt32.self) == 0o040755)
        let statfs = try #require(try reply(d, try recorded("statfs")))
        #expect(statfs.count == 96 && field(statfs, at: 16, as: UInt64.self) == 3)
        // The recorded getxattr asks with size 128 for user.test: ENODATA here.
        #expect(errno(of: try reply(d, try recorded("getxattr"))) == ENODATA)
        let list = try #require(try reply(d, try recorded("listxattr")))
        #expect(Array(list[16...]) == name("user.k"))
        #expect(errno(of: try reply(d, try recorded("readlink"))) == EINVAL)
        // OPEN and READ of node 2 (the recorder's hello.txt; TinyTree's file).
        let open = try #require(try reply(d, try recorded("open")))
        #expect(open.count == 32 && field(open, at: 24, as: UInt32.self) == UInt32(FOPEN_KEEP_CACHE))
        let read = try #require(try reply(d, try recorded("read")))
        #expect(Array(read[16...]) == Array("0123456789".utf8), "4096 asked, the 10 bytes of the file answered")
        #expect(errno(of: try reply(d, try recorded("release"))) == 0)
        #expect(errno(of: try reply(d, try recorded("flush"))) == 0)
    }

    @Test("names: an entry at once, a later answer for a lookup that needs work, ENOENT cached only when asked")
    func lookups() async throws {
        let d = try dispatcher()
        let hit = try #require(try reply(d, request(.lookup, name("file"))))
        #expect(field(hit, at: 16, as: UInt64.self) == 2)
        let later = try withDecoded(request(.lookup, name("slow"))) { r -> (@Sendable () async throws -> Reply)? in
            if case .later(let work) = d.handle(r) { return work }
            return nil
        }
        let work = try #require(later, "a lookup the tree answers later is run later")
        let bytes = d.encoder.bytes(try await work(), unique: 1)
        #expect(field(bytes, at: 16, as: UInt64.self) == 3)
        let plain = try dispatcher(negative: false)
        #expect(errno(of: try reply(plain, request(.lookup, name("nothing")))) == ENOENT)
    }

    @Test("writes are EROFS; create and rmdir reach only a tree that takes them as notifications")
    func writes() throws {
        let d = try dispatcher()
        #expect(errno(of: try reply(d, try recorded("create"))) == EROFS)
        #expect(errno(of: try reply(d, try recorded("rmdir"))) == EROFS)
        for op in [Opcode.mkdir, .unlink, .write, .setattr, .rename, .setxattr] {
            #expect(errno(of: try reply(d, request(op, [UInt8](repeating: 0, count: 80)))) == EROFS, "\(op)")
        }
        #expect(errno(of: try reply(d, request(.open, le(UInt32(O_WRONLY), UInt32(0))))) == EROFS)
        #expect(errno(of: try reply(d, request(.open, le(UInt32(O_RDONLY | O_TRUNC), UInt32(0))))) == EROFS)
        #expect(errno(of: try reply(d, request(.access, le(UInt32(W_OK), UInt32(0))))) == EROFS)
        let tree = NotifiedTree()
        let n = try dispatcher(tree)
        #expect(errno(of: try reply(n, try recorded("create"))) == ENOENT, "the notification's own answer")
        #expect(errno(of: try reply(n, try recorded("rmdir"))) == 0)
        #expect(tree.seen.withLock { $0 } == ["create 1 x", "rmdir 1 d"])
        #expect(errno(of: try reply(n, request(.mkdir, [UInt8](repeating: 0, count: 16)))) == EROFS)
    }

    @Test("directory handles: OPENDIR lists once, READDIR reads the handle, RELEASEDIR frees it; a handle not open here (a predecessor's) lists afresh")
    func directories() throws {
        let d = try dispatcher()
        let open = try #require(try reply(d, request(.opendir, node: 1, le(UInt32(0), UInt32(0)))))
        let fh = field(open, at: 16, as: UInt64.self)
        #expect(field(open, at: 24, as: UInt32.self) == UInt32(FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR) && d.openDirectories == 1)
        let readArgs = le(fh, UInt64(0)) + le(UInt32(4096), UInt32(0)) + le(UInt64(0)) + le(UInt32(0), UInt32(0))
        let list = try #require(try reply(d, request(.readdirplus, node: 1, readArgs)))
        #expect(list.count == 16 + 2 * 160 + 3 * 160, "., .., file, slow, dir with their entries")
        #expect(errno(of: try reply(d, request(.opendir, node: 2, le(UInt32(0), UInt32(0))))) == ENOTDIR)
        #expect(errno(of: try reply(d, request(.releasedir, node: 1, le(fh, UInt64(0), UInt64(0))))) == 0)
        #expect(d.openDirectories == 0)
        // A handle this session never opened, as after a handover: the (unchanging) directory is listed again.
        let again = try #require(try reply(d, request(.readdirplus, node: 1, readArgs)))
        #expect(again == list)
        #expect(d.openDirectories == 0)
        let notADirectory = le(UInt64(99), UInt64(0)) + le(UInt32(4096), UInt32(0)) + le(UInt64(0)) + le(UInt32(0), UInt32(0))
        #expect(errno(of: try reply(d, request(.readdir, node: 2, notADirectory))) == ENOTDIR)
    }

    @Test("xattrs: a size-0 probe gets the size, a short buffer ERANGE, a long one the value")
    func xattrs() throws {
        let d = try dispatcher()
        let probe = try #require(try reply(d, request(.getxattr, node: 2, le(UInt32(0), UInt32(0)) + name("user.k"))))
        #expect(probe.count == 24 && field(probe, at: 16, as: UInt32.self) == 5)
        #expect(errno(of: try reply(d, request(.getxattr, node: 2, le(UInt32(2), UInt32(0)) + name("user.k")))) == ERANGE)
        let value = try #require(try reply(d, request(.getxattr, node: 2, le(UInt32(64), UInt32(0)) + name("user.k"))))
        #expect(Array(value[16...]) == Array("value".utf8))
    }

    @Test("INTERRUPT names its target, FORGET gets no reply, DESTROY ends, an unknown opcode is ENOSYS, a malformed request EIO")
    func control() throws {
        let d = try dispatcher()
        try withDecoded(try recorded("interrupt")) { r in
            guard case .interrupt(let target) = d.handle(r) else { Issue.record("not an interrupt"); return }
            #expect(target == 58)
        }
        for n in ["forget", "batch_forget"] {
            try withDecoded(try recorded(n)) { r in
                guard case .none = d.handle(r) else { Issue.record("\(n) was answered"); return }
            }
        }
        try withDecoded(request(.destroy)) { r in
            guard case .destroy = d.handle(r) else { Issue.record("not the end"); return }
        }
        var unknown = request(.lookup, name("x"))
        unknown[4] = 200
        #expect(errno(of: try reply(d, unknown)) == ENOSYS)
        let bad = request(.lookup, Array("no-nul".utf8))
        bad.withUnsafeBytes { b in
            do {
                _ = try RequestDecoder.decode(b, minor: 38)
                Issue.record("decoded a name without its NUL")
            } catch let error as DecodeFailure {
                let answer = d.handle(error)
                #expect(answer?.unique == 7)
                if case .status(let e)? = answer?.1 { #expect(e == EIO) } else { Issue.record("no EIO") }
            } catch {
                Issue.record("\(error)")
            }
        }
        #expect(d.handle(.truncatedHeader(12)) == nil, "nothing to answer without a header")
    }

    @Test("a pending read answered later is interrupted: its task is cancelled, and the reply is EINTR")
    func interruptPendingRead() async throws {
        let tree = TinyTree()
        let d = try dispatcher(tree)
        let later = try withDecoded(request(.read, node: 3, le(UInt64(0), UInt64(0)) + le(UInt32(10), UInt32(0)))) { r -> (@Sendable () async throws -> Reply)? in
            if case .later(let work) = d.handle(r) { return work }
            return nil
        }
        let work = try #require(later)
        let task = Task { try await work() }
        for _ in 0..<1_000_000 where tree.pending.count == 0 { await Task.yield() }
        #expect(tree.pending.count == 1, "the read waits")
        task.cancel()  // what the session does for the INTERRUPT naming it
        do {
            _ = try await task.value
            Issue.record("an interrupted read answered")
        } catch {
            #expect(FUSEError(replyingTo: error).errno == EINTR)
        }
    }
}
