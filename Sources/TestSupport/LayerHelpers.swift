// SPDX-License-Identifier: Apache-2.0
import CLinuxSys
import Foundation
public import LazyLayer
public import Registry
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// A reference fixture's bytes (Tests/Fixtures/estargz).
public func fixture(_ name: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: Paths.fixtures.appendingPathComponent(name)))
}

/// A registry client for test registries: plain HTTP to `hosts`, few and short retries.
public func registryClient(_ hosts: String...) -> RegistryClient {
    var h: [String: HostConfiguration] = [:]
    for host in hosts { h[host] = HostConfiguration(insecure: true) }
    return RegistryClient(configuration: RegistryConfiguration(hosts: h, maxRetries: 2, retryBaseDelay: .milliseconds(5)))
}

/// Lazy layer options for tests: nothing fetched unless asked, memory only unless a cache directory is given.
public func quietOptions(cache: String? = nil, prefetch: Bool = false, background: Bool = false) throws -> LazyLayerOptions {
    LazyLayerOptions(
        diskCache: try cache.map { try DiskChunkCache(directory: $0) }, prefetch: prefetch, backgroundFetch: background)
}

/// The extended attributes of `p` (not following a symlink).
public func xattrs(_ p: String) -> [String: [UInt8]] {
    var names = [Int8](repeating: 0, count: 65536)
    let n = llistxattr(p, &names, names.count)
    guard n > 0 else { return [:] }
    var out: [String: [UInt8]] = [:]
    for name in names.prefix(n).split(separator: 0) {
        let key = String(decoding: name.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var v = [UInt8](repeating: 0, count: 65536)
        let m = lgetxattr(p, key, &v, v.count)
        if m >= 0 { out[key] = Array(v.prefix(m)) }
    }
    return out
}
