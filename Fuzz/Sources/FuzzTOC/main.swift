// SPDX-License-Identifier: Apache-2.0
// The footer and TOC parser under libFuzzer. The first byte picks what the rest is fed to:
//   0: a whole blob (footer, TOC member, TOC JSON, index), then reads of every file
//   1: TOC JSON directly (parser and index)
//   2: a footer tail
//   3: a tar stream (the writer's input parser)
import EStargz

#if canImport(Glibc)
import Glibc
#endif

// SwiftPM links executables with `main` aliased to `FuzzTOC_main`, so libFuzzer's own main is never used:
// this top-level code hands control to libFuzzer's driver instead.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

var fuzzArgc = CommandLine.argc
var fuzzArgv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&fuzzArgc, &fuzzArgv, fuzzTOC))

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzTOC(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let mode = data[0] % 4
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    let limits = TOCLimits(maxTOCSize: 4 << 20, maxEntries: 100_000)
    switch mode {
    case 0:
        if let r = try? EStargzReader(blob: MemoryBlob(bytes), options: ReaderOptions(limits: limits)) {
            for e in r.toc.entries.prefix(64) where e.type == .reg {
                if let id = r.lookup(e.name) { _ = try? r.read(id, at: 0, length: 1 << 16) }
            }
            _ = r.prefetch
        }
    case 1:
        if let toc = try? TOC.parse(json: bytes, payloadEnd: 1 << 30, blobSize: 1 << 31, limits: limits) {
            toc.walk { _, node, _ in _ = toc.children(of: node).count }
            _ = toc.entries.count
        }
    case 2:
        _ = try? Footer.parse(tail: bytes, blobSize: Int64(bytes.count) + 4096)
    default:
        let tr = TarReader(MemoryStream(bytes))
        var n = 0
        while n < 1000, let h = try? tr.next() {
            _ = TarWriter.header(h)
            n += 1
        }
    }
    return 0
}
