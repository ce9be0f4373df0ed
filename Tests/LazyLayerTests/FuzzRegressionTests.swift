// SPDX-License-Identifier: Apache-2.0
// Replays the inputs libFuzzer found (Fuzz/, target FuzzLayer) that crashed the store's read path, each saved
// as an eStargz blob in Tests/LazyLayerTests/Fuzz/. Each is served through a LazyLayer with the calls the
// daemon answers, by the fuzzer's own driver (Sources/FuzzDriver): errors are fine, a crash fails the whole
// run, and the driver's invariants must hold.
import EStargz
import FUSE
import FuzzDriver
import Foundation
import LazyLayer
import Logging
import Testing

private let reproducerDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("Fuzz").path

private let reproducers: [String] =
    ((try? FileManager.default.contentsOfDirectory(atPath: reproducerDirectory)) ?? [])
    .filter { !$0.hasPrefix(".") && !$0.hasSuffix(".md") }.sorted()

@Suite("Fuzz reproducers (FuzzLayer) are served without a crash")
struct FuzzRegressionTests {
    @Test("a saved reproducer gives errors or the right bytes, and the driver's invariants hold", arguments: reproducers)
    func replay(_ name: String) async throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(reproducerDirectory)/\(name)")))
        let report = await LayerFuzzDriver.drive(bytes)
        #expect(report.violations == [], "\(name)")
    }

    @Test("a whiteout that is a directory in the TOC shows as a 0/0 device and opens like one (fuzz finding)")
    func whiteoutDirectory() async throws {
        let bytes = [UInt8](
            try Data(contentsOf: URL(fileURLWithPath: "\(reproducerDirectory)/whiteout-directory-open-eisdir.esgz")))
        let layer = try await LazyLayer.open(
            MemoryBlobSource(bytes), options: LazyLayerOptions(prefetch: false, backgroundFetch: false))
        let etc = try await layer.lookup(parent: 1, nameBytes: Array("etc".utf8))
        let wh = try await layer.lookup(parent: etc.inode, nameBytes: Array("os-release".utf8))
        #expect(wh.mode == 0o020000 && wh.device == (0, 0))
        #expect(try layer.entries(directory: etc.inode).map(\.type) == [0o020000])
        // It opens as a device with no driver would (the kernel never asks: it opens devices itself), lists
        // nothing and reads nothing, whatever the TOC entry behind it.
        #expect(throws: FUSEError(ENXIO)) { try layer.open(node: wh.inode, flags: 0) }
        #expect(throws: FUSEError(ENOTDIR)) { try layer.entries(directory: wh.inode) }
        #expect(throws: FUSEError(EINVAL)) { try layer.cachedRead(node: wh.inode, offset: 0, size: 4096) }
    }
}
