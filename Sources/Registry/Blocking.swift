// SPDX-License-Identifier: Apache-2.0
import Dispatch

/// Runs blocking work (mount, unmount, CPU-bound conversion, file I/O on our own mounts) on a Dispatch thread,
/// off the cooperative pool; throws what `body` throws (nothing for a closure that does not throw). Dispatch's
/// global queue, not NIO's fixed pool: an unmount may block for as long as the kernel takes, and must not hold up
/// the blob file I/O that runs there. The one helper for this in the package (the Store, Convert and the tests use it).
public func runBlocking<T: Sendable, E: Error>(_ body: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
    let r = await withCheckedContinuation { (c: CheckedContinuation<Result<T, E>, Never>) in
        DispatchQueue.global().async {
            do throws(E) { c.resume(returning: .success(try body())) } catch { c.resume(returning: .failure(error)) }
        }
    }
    return try r.get()
}
