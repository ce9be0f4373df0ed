// SPDX-License-Identifier: Apache-2.0
// Serves a blob through a LazyLayer (memory source, no network, no mount) and makes the calls the store's
// daemon answers: lookup, getattr, readdir, readlink, listxattr/getxattr, open, cachedRead/read, statfs.
// Errors are fine. Crashes, sanitizer reports, hangs and huge allocations are findings, and so are these
// invariants: a name readdir lists looks up to the node it listed; a read returns exactly the bytes
// [offset, min(offset+size, file size)); cachedRead and read agree; LazyLayer and EStargzReader agree.
// The fuzzer (Fuzz/, target FuzzLayer) and the suite's replay of its reproducers
// (Tests/LazyLayerTests/FuzzRegressionTests.swift) both drive layers with it.
import EStargz
import FUSE
import LazyLayer
import Logging

/// Drives one blob through a LazyLayer as the store's daemon would, checking the invariants above.
public enum LayerFuzzDriver {
    /// What one drive did; `violations` lists the invariants that failed (the fuzzer aborts on any).
    public struct Report: Sendable {
        public var opened = false
        public var nodes = 0
        public var reads = 0
        public var readBytes = 0
        public var errors = 0
        public var violations: [String] = []
        public init() {}
    }

    static let quiet = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Serves `bytes` and makes the daemon's calls; `wrappingOffsets` also reads at offsets whose offset+size
    /// passes Int64.max (FUSE_READ carries a raw u64 offset).
    public static func drive(_ bytes: [UInt8], wrappingOffsets: Bool = true) async -> Report {
        var rep = Report()
        let source = MemoryBlobSource(bytes, name: "fuzz")
        let options = LazyLayerOptions(
            memoryCacheBytes: 32 << 20, diskCache: nil, prefetch: true, prefetchSizeWithoutLandmark: 1 << 20,
            backgroundFetch: false, readAround: bytes.count & 1 == 0 ? 0 : 64 << 10)
        let layer: LazyLayer
        do {
            layer = try await LazyLayer.open(source, options: options, logger: quiet)
        } catch {
            return rep
        }
        rep.opened = true
        // A second reader over the whole blob, for the differential check.
        let direct = try? EStargzReader(blob: MemoryBlob(bytes))
        _ = layer.statistics()

        func violation(_ s: String) { rep.violations.append(s) }

        var queue: [UInt64] = [1]
        var seen: Set<UInt64> = [1]
        var head = 0
        var filesRead = 0
        var regularFiles: [UInt64] = []
        while head < queue.count, rep.nodes < 2000 {
            let node = queue[head]
            head += 1
            rep.nodes += 1
            let attr: FileAttributes
            do { attr = try layer.attributes(node: node) } catch {
                rep.errors += 1
                continue
            }
            // xattrs
            if let names = try? layer.xattrNames(node: node) {
                for n in names.prefix(16) {
                    if (try? layer.xattr(node: node, name: n)) == nil { violation("xattr \(n) of node \(node) is listed but not readable") }
                }
            }
            _ = try? layer.xattr(node: node, name: "trusted.overlay.opaque")
            _ = try? layer.xattr(node: node, name: "user.none")
            switch attr.mode & 0o170000 {
            case 0o040000:
                guard let list = try? layer.entries(directory: node) else {
                    violation("readdir of directory \(node) fails")
                    continue
                }
                for e in list.prefix(300) {
                    do {
                        let a = try await layer.lookup(parent: node, nameBytes: e.name)
                        if a.inode != e.inode && e.type != 0o020000 {
                            violation("readdir of \(node) lists \(e.inode) but lookup finds \(a.inode)")
                        }
                    } catch {
                        if e.type != 0o020000 { violation("readdir of \(node) lists a name lookup does not find: \(error)") }
                    }
                    if seen.insert(e.inode).inserted { queue.append(e.inode) }
                }
                for name in [[], Array(".".utf8), Array("..".utf8), Array("a/b".utf8), Array(".wh.x".utf8),
                             [UInt8](repeating: 0x61, count: 300), [0xff, 0]] as [[UInt8]] {
                    _ = try? await layer.lookup(parent: node, nameBytes: name)
                }
                _ = try? await layer.lookup(parent: node, nameBytes: Array("nonexistent".utf8))
                _ = try? layer.readlink(node: node)
                _ = try? layer.cachedRead(node: node, offset: 0, size: 4096)
            case 0o120000:
                do { _ = try layer.readlink(node: node) } catch { violation("readlink of symlink \(node): \(error)") }
            case 0o100000:
                _ = try? layer.readlink(node: node)
                do { try layer.open(node: node, flags: 0) } catch { violation("open of file \(node): \(error)") }
                regularFiles.append(node)
                guard filesRead < 24 else { continue }
                filesRead += 1
                let s = attr.size
                var reads: [(UInt64, Int)] = [
                    (0, 131_072), (0, 1), (s / 2, 4096), (s &- 1, 131_072), (s, 4096), (4095, 131_072),
                    (s &- 100, 1 << 20), (1 << 32, 131_072), (UInt64(Int64.max) - (1 << 20), 131_072),
                    (UInt64(Int64.max - 131_072), 131_072), (0, 0),
                ]
                // A file of many MiB costs a whole-chunk inflate and hash per read: fewer reads.
                let huge = s > 8 << 20
                if huge { reads = Array(reads.prefix(3)) }
                if wrappingOffsets { reads += [(UInt64(Int64.max), 4096), (UInt64.max, 131_072), (UInt64(Int64.max) - 1, 131_072)] }
                for (off, size) in reads {
                    rep.reads += 1
                    let cached: [UInt8]?
                    do { cached = try layer.cachedRead(node: node, offset: off, size: size) } catch {
                        rep.errors += 1
                        continue
                    }
                    let got: [UInt8]
                    do { got = try await layer.readBytes(node: node, offset: off, size: size) } catch {
                        rep.errors += 1
                        if cached != nil { violation("cachedRead of \(node) at \(off) answered but read failed: \(error)") }
                        continue
                    }
                    rep.readBytes += got.count
                    let want = off >= s ? 0 : Int(min(UInt64(size), s - off))
                    if got.count != want { violation("read of \(node) at \(off)+\(size) (size \(s)) gave \(got.count) bytes, want \(want)") }
                    if let c = cached, c != got { violation("cachedRead and read of \(node) at \(off) differ") }
                    if !huge, let d = direct, node >= 2, off <= UInt64(Int64.max) {
                        let id = d.toc.resolvedNode(EntryID(rawValue: UInt32(node - 2)))
                        if let other = try? d.read(id, at: Int64(off), length: size), other != got {
                            violation("LazyLayer and EStargzReader differ on \(node) at \(off)+\(size)")
                        }
                    }
                }
            default:
                _ = try? layer.readlink(node: node)
                // Not checked: the kernel opens device nodes and FIFOs itself (a whiteout is a 0/0 device,
                // whatever its TOC entry: Tests/LazyLayerTests/Fuzz/whiteout-directory-open-eisdir.esgz).
                _ = try? layer.open(node: node, flags: 0)
                _ = try? layer.cachedRead(node: node, offset: 0, size: 4096)
            }
        }
        // Concurrent reads of the same ranges (singleflight joins, the decompression budget): all that succeed
        // agree, and none hangs (libFuzzer's -timeout).
        for node in regularFiles.prefix(4) {
            let s = (try? layer.attributes(node: node).size) ?? 0
            let asks: [(UInt64, Int)] = [(0, 131_072), (0, 131_072), (s / 2, 4096), (0, 131_072), (s / 2, 4096), (s &- 1, 1)]
            let results = await withTaskGroup(of: (Int, [UInt8]?).self) { g in
                for (i, a) in asks.enumerated() {
                    g.addTask { (i, try? await layer.readBytes(node: node, offset: a.0, size: a.1)) }
                }
                var out = [[UInt8]?](repeating: nil, count: asks.count)
                for await (i, r) in g { out[i] = r }
                return out
            }
            for i in asks.indices {
                for j in asks.indices where j > i && asks[j] == asks[i] {
                    if let x = results[i], let y = results[j], x != y { violation("concurrent reads of \(node) at \(asks[i].0) differ") }
                }
            }
        }
        // Node ids the tree does not name.
        for n: UInt64 in [0, 2, UInt64(layer.reader.toc.nodeCount) + 1, UInt64(layer.reader.toc.nodeCount) + 2, UInt64(UInt32.max) + 2, .max] {
            _ = try? layer.attributes(node: n)
            _ = try? layer.entries(directory: n)
            _ = try? layer.xattrNames(node: n)
            _ = try? layer.readlink(node: n)
            _ = try? layer.cachedRead(node: n, offset: 0, size: 4096)
        }
        // The prefetch (no disk cache: no background fetch), then reads from memory.
        layer.startBackgroundWork()
        await layer.waitForBackgroundWork()
        for node in queue.prefix(64) { _ = try? layer.cachedRead(node: node, offset: 0, size: 131_072) }
        _ = layer.fetchStatistics
        await layer.close()
        return rep
    }
}
