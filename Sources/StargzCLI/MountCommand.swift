// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Dispatch
import FUSE
import Foundation
import LazyLayer
import OCI
import Registry
import Synchronization
import Store
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

struct MountCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount an eStargz layer from a registry lazily (for debugging); unmounts on Ctrl-C or SIGTERM.",
        discussion: """
            With a layer digest, the layer is mounted at DIR. With the image reference alone, every layer is
            mounted at DIR/<n>-<digest>. Only the chunks that are read are fetched (plus the prefetch and the
            background fetch, unless turned off). Needs root (mount(2) of /dev/fuse).
            """)

    @Argument(help: "The image reference.")
    var reference: String

    @Argument(help: "The layer digest (sha256:…), or the mount directory when mounting every layer.")
    var digestOrDirectory: String

    @Argument(help: "The mount directory.")
    var directory: String?

    @OptionGroup var platform: PlatformOption

    @Flag(help: "Do not fetch what lies before the prefetch landmark at mount.")
    var noPrefetch = false

    @Flag(help: "Do not fetch the rest of the layer in the background.")
    var noBackgroundFetch = false

    @Option(help: "Where verified chunks are kept (default: ~/.cache/stargz/chunks).")
    var cacheDir: String?

    @Option(name: .customLong("memory-cache-mib"), help: "Memory cache bound in MiB.")
    var memoryCacheMiB = 64

    @OptionGroup var registry: RegistryOptions

    func validate() throws {
        if directory != nil && Digest(digestOrDirectory) == nil {
            throw ValidationError("\"\(digestOrDirectory)\" is not a digest (sha256:…)")
        }
        if memoryCacheMiB < 1 { throw ValidationError("--memory-cache-mib must be at least 1") }
    }

    func run() async throws {
        let ref = try parseReference(reference)
        let cache = cacheDir ?? (ProcessInfo.processInfo.environment["HOME"] ?? "/root") + "/.cache/stargz/chunks"
        let options = LazyLayerOptions(
            memoryCacheBytes: memoryCacheMiB << 20, diskCache: try reportingErrors { try DiskChunkCache(directory: cache) },
            prefetch: !noPrefetch, backgroundFetch: !noBackgroundFetch)
        let platform = platform.value
        try await withRegistryClient(registry) { client in
            let image = try await client.resolve(ref, platform: platform)
            var targets: [(Descriptor, String)] = []
            if let dir = directory {
                let want = Digest(digestOrDirectory)!
                guard let d = image.decoded.layers.first(where: { $0.digest == want }) else {
                    throw ValidationError("\(ref) has no layer \(want)")
                }
                targets = [(d, dir)]
            } else {
                for (i, d) in image.decoded.layers.enumerated() {
                    let dir = "\(digestOrDirectory)/\(i)-\(d.digest.encoded.prefix(12))"
                    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                    targets.append((d, dir))
                }
            }
            // Signals are caught from here on: one that arrives while layers are being mounted still
            // unmounts them.
            let stop = SignalWaiter([SIGINT, SIGTERM])
            var mounted: [MountedLayer] = []
            do {
                for (d, dir) in targets {
                    mounted.append(try await MountedLayer.mount(client: client, reference: ref, descriptor: d, at: dir, options: options))
                    print("mounted \(d.digest) at \(dir)")
                }
            } catch {
                for m in mounted { await m.unmount() }
                throw error
            }
            fflush(nil)
            await stop.wait()
            for m in mounted {
                await m.unmount()
                let s = m.layer.fetchStatistics
                print("unmounted \(m.session.mountPoint): \(s.requests) requests, \(s.bytesFetched) bytes fetched, \(s.chunksFetched) chunks")
            }
        }
    }
}

/// Delivers `signals` to this thread and the threads it starts: a parent may have left them blocked (a blocked
/// mask is inherited across exec).
func unblockSignals(_ signals: [Int32]) {
    var set = sigset_t()
    sigemptyset(&set)
    for s in signals { sigaddset(&set, s) }
    pthread_sigmask(SIG_UNBLOCK, &set, nil)
}

/// Catches signals from its creation on; ``wait()`` returns once one of them has arrived (at once if one
/// already has).
// Sendable: `sources` is set once in init and only cancelled after (DispatchSource.cancel is thread-safe);
// the rest is behind the Mutex.
final class SignalWaiter: @unchecked Sendable {
    private struct State {
        var arrived = false
        var waiter: CheckedContinuation<Void, Never>? = nil
    }
    private let state = Mutex(State())
    private var sources: [any DispatchSourceSignal] = []

    init(_ signals: [Int32]) {
        unblockSignals(signals)
        for s in signals {
            signal(s, SIG_IGN)
            let src = DispatchSource.makeSignalSource(signal: s, queue: .global())
            src.setEventHandler { [self] in arrive() }
            sources.append(src)
            src.resume()
        }
    }

    private func arrive() {
        let w = state.withLock { s in
            s.arrived = true
            defer { s.waiter = nil }
            return s.waiter
        }
        w?.resume()
    }

    func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s in
                if s.arrived { return true }
                s.waiter = c
                return false
            }
            if now { c.resume() }
        }
        for src in sources { src.cancel() }
    }
}
