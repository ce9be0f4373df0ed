// SPDX-License-Identifier: Apache-2.0
import CLinuxFUSE
import Dispatch
import FUSE
import Foundation
import Logging
import Synchronization
import Testing
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// `/n<K>` for every K (a file of inode 100+K, never cached by the kernel, so every `stat` is a LOOKUP the
/// daemon answers), and `/hang`, which `hangs` decides: waits until cancelled, or answers at once.
private final class NamesTree: FileSystem, Sendable {
    let served = Atomic<Int>(0)
    let hangs: Bool
    /// Signalled when a lookup of `/hang` arrives.
    let hangArrived = DispatchSemaphore(value: 0)
    /// Signalled at every 50th answer.
    let progress = DispatchSemaphore(value: 0)

    init(hangs: Bool) { self.hangs = hangs }

    func attributes(node: UInt64) throws(FUSEError) -> FileAttributes {
        node == 1 ? FileAttributes(inode: 1, mode: 0o040755, linkCount: 2) : FileAttributes(inode: node, mode: 0o100644, size: 1)
    }

    func lookup(parent: UInt64, name: UnsafeRawBufferPointer) throws(FUSEError) -> Answer<FileAttributes> {
        let n = String(decoding: name, as: UTF8.self)
        if n == "hang" {
            if hangs {
                hangArrived.signal()
                return .later { try await Task.sleep(for: .seconds(3600)); throw FUSEError(EIO) }
            }
            return .now(FileAttributes(inode: 99, mode: 0o100644, size: 1))
        }
        guard n.hasPrefix("n"), let k = UInt64(n.dropFirst()) else { throw .notFound }
        if served.add(1, ordering: .relaxed).newValue % 50 == 0 { progress.signal() }
        return .now(FileAttributes(inode: 100 + k, mode: 0o100644, size: 1))
    }

    func entries(directory: UInt64) throws(FUSEError) -> [DirectoryEntry] { [] }
    func xattr(node: UInt64, name: String) throws(FUSEError) -> [UInt8] { throw FUSEError(ENODATA) }
    func xattrNames(node: UInt64) throws(FUSEError) -> [String] { [] }
    func open(node: UInt64, flags: UInt32) throws(FUSEError) {}
    func statistics() -> FileSystemStatistics { FileSystemStatistics(blocks: 1, files: 1) }
    func readlink(node: UInt64) throws(FUSEError) -> [UInt8] { throw FUSEError(EINVAL) }
    func read(node: UInt64, offset: UInt64, size: Int) throws(FUSEError) -> Answer<[UInt8]> { .now([0x41]) }
}

private func withMountPoint(_ body: (String) throws -> Void) throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("handover-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer {
        umount2(dir, Int32(MNT_DETACH))
        try? FileManager.default.removeItem(atPath: dir)
    }
    try body(dir)
}

/// Aborts the FUSE connection of the mount at `dir` (device `dev`) through fusectl, mounting it if need be: a
/// failed test must not leave a request the kernel waits on forever (the process could not exit).
private func abortConnection(_ dev: UInt64) {
    let dir = "/sys/fs/fuse/connections"
    if (try? FileManager.default.contentsOfDirectory(atPath: dir))?.isEmpty ?? true { mount("fusectl", dir, "fusectl", 0, nil) }
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00)
    try? "1".write(toFile: "\(dir)/\(minor)/abort", atomically: false, encoding: .utf8)
}

/// A mount's options for these tests: nothing cached, so every stat reaches the daemon.
private let uncached = FUSESession.Options(readers: 4, cacheTimeout: .zero, cacheNegativeLookups: false)

@Suite("FUSE session handover without unmounting (real kernel)", .serialized)
struct HandoverTests {
    @Test("suspend, then adopt in another session: a stat loop running across it sees no failure; no INIT the second time")
    func suspendAndAdopt() throws {
        try withMountPoint { dir in
            let a = NamesTree(hangs: false), b = NamesTree(hangs: false)
            let first = try FUSESession.mount(a, at: dir, options: uncached)
            let stop = Atomic<Bool>(false), failures = Atomic<Int>(0), done = DispatchSemaphore(value: 0)
            let t = Thread {
                var k = 0
                while !stop.load(ordering: .acquiring) {
                    var st = stat()
                    if stat("\(dir)/n\(k)", &st) != 0 || st.st_ino != UInt64(100 + k) { failures.add(1, ordering: .relaxed) }
                    k += 1
                }
                done.signal()
            }
            t.start()
            #expect(a.progress.wait(timeout: .now() + 30) == .success, "the first session served nothing")
            let (fds, parameters) = first.suspend()
            #expect(fds.count == 4)
            #expect(parameters.minor == first.negotiatedMinor && parameters.minor > 0)
            let second = try FUSESession.adopt(b, at: dir, fds: fds, parameters: parameters, options: uncached)
            #expect(b.progress.wait(timeout: .now() + 30) == .success, "the adopted session served nothing")
            stop.store(true, ordering: .releasing)
            done.wait()
            second.unmount()
            #expect(failures.load(ordering: .acquiring) == 0)
            #expect(a.served.load(ordering: .relaxed) >= 50 && b.served.load(ordering: .relaxed) >= 50)
            #expect(second.negotiatedMinor == parameters.minor)
        }
    }

    @Test("abandon with a request read and unanswered (as a crash leaves it): the adopting session asks the kernel to resend it, and answers it")
    func resendAfterAbandon() throws {
        try withMountPoint { dir in
            let a = NamesTree(hangs: true), b = NamesTree(hangs: false)
            let first = try FUSESession.mount(a, at: dir, options: uncached)
            var root = stat()
            try #require(stat(dir, &root) == 0)
            let result = Mutex<(Int32, UInt64)>((-1, 0)), done = DispatchSemaphore(value: 0)
            let t = Thread {
                var st = stat()
                let r = stat("\(dir)/hang", &st)
                result.withLock { $0 = (r == 0 ? 0 : errno, UInt64(st.st_ino)) }
                done.signal()
            }
            t.start()
            #expect(a.hangArrived.wait(timeout: .now() + 30) == .success)
            let (fds, parameters) = first.abandon()
            guard parameters.kernelCanResend else {
                // Older kernels: the request stays read and unanswered until its fds close (here: the mount goes).
                Issue.record("this kernel (\(parameters.minor)) does not offer FUSE_HAS_RESEND; the test needs Linux 6.9+")
                for f in fds { close(f) }
                done.wait()
                return
            }
            let second = try FUSESession.adopt(b, at: dir, fds: fds, parameters: parameters, options: uncached)
            if done.wait(timeout: .now() + 30) == .timedOut {
                Issue.record("the resent LOOKUP was never answered")
                abortConnection(UInt64(root.st_dev))
                done.wait()
            }
            #expect(result.withLock { $0 } == (0, 99))
            second.unmount()
        }
    }
}
