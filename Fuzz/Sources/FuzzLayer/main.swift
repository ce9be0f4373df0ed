// SPDX-License-Identifier: Apache-2.0
// Structure-aware fuzzing of the store's read path. An input is an eStargz blob. The custom mutator takes it
// apart (LayerModel), applies structural mutations (Mutator) and lays out a valid-shaped blob again (payload
// gzip members, a recomputed TOC member, the footer); one mutation in five is libFuzzer's own byte-level one.
// Each input is served through a LazyLayer with the calls the daemon answers (Driver).
//   FUZZ_LAYER_WRITE_SEEDS=DIR FuzzLayer   writes the seed blobs (built with our writer) to DIR and exits
//   FUZZ_LAYER_WRAPPING_OFFSETS=0          no reads at offsets where offset+size passes Int64.max
//   FUZZ_LAYER_SELFTEST=1                  checks the hand-made gzip members and the model's round trip
//   FUZZ_LAYER_PROFILE=1                   prints the time of each mutation and execution
//   FUZZ_LAYER_STATS=1                     prints how far each input got (opened, nodes, reads, bytes served)
import Compression
import Dispatch
import EStargz
import FuzzDriver
import Foundation

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

@_silgen_name("LLVMFuzzerMutate")
func LLVMFuzzerMutate(_ data: UnsafeMutablePointer<UInt8>, _ size: Int, _ maxSize: Int) -> Int

let env = ProcessInfo.processInfo.environment
let profile = env["FUZZ_LAYER_PROFILE"] == "1"
let stats = env["FUZZ_LAYER_STATS"] == "1"
let wrappingOffsets = env["FUZZ_LAYER_WRAPPING_OFFSETS"] != "0"
if let dir = env["FUZZ_LAYER_WRITE_SEEDS"] {
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    for (name, blob) in Seeds.blobs() {
        _ = FileManager.default.createFile(atPath: "\(dir)/seed-\(name).esgz", contents: Data(blob))
    }
    exit(0)
}

if env["FUZZ_LAYER_SELFTEST"] == "1" {
    // The hand-written gzip members inflate (CRC and ISIZE checked), and a seed survives decode + encode.
    for n in [0, 1, 257, 258, 259, 1000, 1 << 20, 16 << 20] {
        let b = Bomb.zeros(n)
        var out = [UInt8](repeating: 1, count: n)
        let ok = b.withUnsafeBytes { i in out.withUnsafeMutableBytes { o in (try? GzipDecompressor().decompressMember(i, into: o)) != nil } }
        print("bomb \(n): \(b.count) bytes, inflates: \(ok && out.allSatisfy { $0 == 0 })")
    }
    for (name, blob) in Seeds.blobs() {
        guard let m = LayerModel(blob: blob) else { print("\(name): does not decode"); continue }
        var again = m
        again.repairDigests()
        let e1 = m.encode(), e2 = again.encode()
        let r = LayerModel(blob: e1)
        print("\(name): \(m.members.count) members, \(m.entries.count) entries, re-encoded \(e1.count) of \(blob.count) bytes, decodes again: \(r != nil), repair changes nothing: \(e1 == e2)")
    }
    exit(0)
}

var fuzzArgc = CommandLine.argc
var fuzzArgv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&fuzzArgc, &fuzzArgv, fuzzLayer))

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzLayer(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) var report = LayerFuzzDriver.Report()
    Task.detached {
        report = await LayerFuzzDriver.drive(bytes, wrappingOffsets: wrappingOffsets)
        done.signal()
    }
    let t0 = ContinuousClock.now
    done.wait()
    if profile { fputs("drive \(ms(since: t0)) ms \(size)\n", stderr) }
    if stats {
        let r = report
        fputs("stats opened=\(r.opened) nodes=\(r.nodes) reads=\(r.reads) bytes=\(r.readBytes) errors=\(r.errors)\n", stderr)
    }
    if !report.violations.isEmpty {
        for v in report.violations.prefix(5) { fputs("FuzzLayer invariant violated: \(v)\n", stderr) }
        abort()
    }
    return 0
}

@_cdecl("LLVMFuzzerCustomMutator")
func customMutator(_ data: UnsafeMutablePointer<UInt8>, _ size: Int, _ maxSize: Int, _ seed: UInt32) -> Int {
    let t0 = ContinuousClock.now
    defer { if profile { fputs("mutate \(ms(since: t0)) ms\n", stderr) } }
    var r = RNG(s: UInt64(seed) &* 0x2545_F491_4F6C_DD1D)
    if r.chance(5) { return LLVMFuzzerMutate(data, size, maxSize) }
    var model = LayerModel(blob: Array(UnsafeBufferPointer(start: data, count: size)))
    if model == nil {
        // Not a blob the model decodes (a byte-level mutation broke it, or the empty input): mostly mutate
        // bytes, sometimes start again from a seed.
        if !r.chance(4) { return LLVMFuzzerMutate(data, size, maxSize) }
        let seeds = Seeds.cached()
        guard !seeds.isEmpty else { return LLVMFuzzerMutate(data, size, maxSize) }
        model = LayerModel(blob: r.pick(seeds))
    }
    guard let base = model else { return LLVMFuzzerMutate(data, size, maxSize) }
    if profile { fputs("  decode \(ms(since: t0)) ms\n", stderr) }
    for attempt in 0..<3 {
        var m = base
        for _ in 0..<(attempt == 0 ? 1 + r.below(3) : 1) {
            let t = ContinuousClock.now
            let c = Mutator.mutate(&m, &r)
            if profile { fputs("  case \(c) \(ms(since: t)) ms\n", stderr) }
        }
        let t1 = ContinuousClock.now
        if r.chance(2) { m.repairDigests() }
        if profile { fputs("  repair \(ms(since: t1)) ms\n", stderr) }
        let t2 = ContinuousClock.now
        let out = m.encode()
        if profile { fputs("  encode \(ms(since: t2)) ms \(out.count)\n", stderr) }
        if out.count <= maxSize {
            out.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: out.count) }
            return out.count
        }
    }
    return LLVMFuzzerMutate(data, size, maxSize)
}

func ms(since t: ContinuousClock.Instant) -> Int64 {
    let d = ContinuousClock.now - t
    return d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
}
