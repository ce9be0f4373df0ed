// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// One fetch shared by every reader that needs its chunks (singleflight). Waiters can be cancelled
/// (a FUSE interrupt) without cancelling the fetch the others still wait for.
final class Flight: Sendable {
    typealias Value = [ChunkKey: [UInt8]]
    private struct State {
        var result: Result<Value, any Error>? = nil
        var waiters: [Int: CheckedContinuation<Value, any Error>] = [:]
        var nextWaiter = 0
    }
    private let state = Mutex(State())

    /// Completes the flight and wakes every waiter.
    func finish(_ r: Result<Value, any Error>) {
        let waiters = state.withLock { s in
            s.result = r
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for w in waiters { w.resume(with: r) }
    }

    /// Waits for the result; a cancelled waiter leaves with `CancellationError`.
    func wait() async throws -> Value {
        let id = state.withLock { s in
            defer { s.nextWaiter += 1 }
            return s.nextWaiter
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Value, any Error>) in
                let done: Result<Value, any Error>? = state.withLock { s in
                    if let r = s.result { return r }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    s.waiters[id] = c
                    return nil
                }
                if let done { c.resume(with: done) }
            }
        } onCancel: {
            let c = state.withLock { $0.waiters.removeValue(forKey: id) }
            c?.resume(throwing: CancellationError())
        }
    }
}

/// Counts on-demand reads so that background fetching yields to them.
final class DemandGate: Sendable {
    private struct State {
        var active = 0
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    func enter() { state.withLock { $0.active += 1 } }

    func leave() {
        let waiters = state.withLock { s in
            s.active -= 1
            guard s.active == 0 else { return [CheckedContinuation<Void, Never>]() }
            defer { s.idleWaiters = [] }
            return s.idleWaiters
        }
        for w in waiters { w.resume() }
    }

    /// Returns when no on-demand read is running.
    func waitIdle() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s in
                if s.active == 0 { return true }
                s.idleWaiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}
