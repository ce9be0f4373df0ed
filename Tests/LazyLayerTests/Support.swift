// SPDX-License-Identifier: Apache-2.0
import CLinuxSys
import EStargz
import FUSE
import Foundation
import LazyLayer
import OCI
import Registry
import Store
import TestSupport
import Testing
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

let fixtures = Paths.fixtures.path

/// Mounts a layer, runs `body`, and unmounts on every path; checks that nothing stays mounted.
func withMountedLayer<T>(
    _ client: RegistryClient, _ ref: Reference, _ layer: Descriptor, at dir: String, options: LazyLayerOptions,
    _ body: (MountedLayer) async throws -> T
) async throws -> T {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let m = try await MountedLayer.mount(client: client, reference: ref, descriptor: layer, at: dir, options: options)
    do {
        let r = try await body(m)
        await m.unmount()
        #expect(!isMounted(dir), "\(dir) is still mounted")
        return r
    } catch {
        await m.unmount()
        forceUnmount(dir)
        throw error
    }
}


struct Stat {
    var mode: UInt32, uid: UInt32, gid: UInt32, size: Int64, mtime: Int, nlink: UInt, rdev: UInt
}

func lstatPath(_ p: String) -> Stat? {
    var st = stat()
    guard lstat(p, &st) == 0 else { return nil }
    return Stat(
        mode: st.st_mode, uid: st.st_uid, gid: st.st_gid, size: Int64(st.st_size), mtime: st.st_mtim.tv_sec,
        nlink: UInt(st.st_nlink), rdev: UInt(st.st_rdev))
}

func listDirectory(_ p: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: p)) ?? []).sorted()
}

/// Compares a mounted layer with the directory `tar -x` made of the same layer: names, types, modes, owners,
/// sizes, times, link counts, link targets, devices, xattrs and content; whiteouts must be in overlay form.
func compareTrees(mount: String, extracted: String, relative: String = "", _ problems: inout [String]) {
    let here = relative.isEmpty ? "" : relative + "/"
    var expectedNames: Set<String> = []
    for name in listDirectory(extracted + "/" + relative) {
        let rel = here + name
        let m = mount + "/" + rel, x = extracted + "/" + rel
        if name == ".wh..wh..opq" {
            if !(xattrs(mount + "/" + relative)["trusted.overlay.opaque"] == [UInt8(ascii: "y")]) { problems.append("\(relative) is not opaque") }
            continue
        }
        if name.hasPrefix(".wh.") {
            let shown = String(name.dropFirst(4))
            expectedNames.insert(shown)
            let s = lstatPath(mount + "/" + here + shown)
            if !(s.map { $0.mode & 0o170000 == 0o020000 && $0.rdev == 0 } == true) { problems.append("\(rel) is not a 0/0 char device") }
            continue
        }
        expectedNames.insert(name)
        guard let ms = lstatPath(m), let xs = lstatPath(x) else {
            problems.append("\(rel) is missing from the mount")
            continue
        }
        if !(ms.mode == xs.mode) { problems.append("\(rel): mode \(String(ms.mode, radix: 8)) vs \(String(xs.mode, radix: 8))") }
        if !(ms.uid == xs.uid && ms.gid == xs.gid) { problems.append("\(rel): owner") }
        let type = xs.mode & 0o170000
        if type != 0o040000 {
            if !(ms.mtime == xs.mtime) { problems.append("\(rel): mtime") }
        }
        if type == 0o100000 {
            if !(ms.size == xs.size) { problems.append("\(rel): size") }
            if !(ms.nlink == xs.nlink) { problems.append("\(rel): nlink") }
            let a = FileManager.default.contents(atPath: m), b = FileManager.default.contents(atPath: x)
            if !(a != nil && a == b) { problems.append("\(rel): content differs") }
            if !(xattrs(m) == xattrs(x)) { problems.append("\(rel): xattrs") }
        }
        if type == 0o120000 {
            if (try? FileManager.default.destinationOfSymbolicLink(atPath: m))
                != (try? FileManager.default.destinationOfSymbolicLink(atPath: x))
            {
                problems.append("\(rel): link target")
            }
        }
        if type == 0o020000 || type == 0o060000 {
            if !(ms.rdev == xs.rdev) { problems.append("\(rel): device") }
        }
        if type == 0o040000 {
            compareTrees(mount: mount, extracted: extracted, relative: rel, &problems)
        }
    }
    let shown = Set(listDirectory(mount + "/" + relative))
    if !(shown == expectedNames) { problems.append("\(relative.isEmpty ? "/" : relative): mount shows \(shown.subtracting(expectedNames)) extra, lacks \(expectedNames.subtracting(shown))") }
}

/// The differences between a mount and an extracted tar (none when they agree).
func treeDifferences(mount: String, extracted: String) async -> [String] {
    await runBlocking {
        var p: [String] = []
        compareTrees(mount: mount, extracted: extracted, &p)
        return p
    }
}

/// `preadFile` on a Dispatch thread.
func blockingRead(_ path: String, offset: Int, length: Int) async -> Result<[UInt8], FUSEError> {
    await runBlocking { preadFile(path, offset: offset, length: length) }
}
