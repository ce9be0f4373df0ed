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

    /// Readers waiting for the flight now.
    var waiterCount: Int { state.withLock { $0.waiters.count } }

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

/// Decides when background fetching may use the network, as upstream's background task manager does: only
/// once on-demand reads and prefetches have been quiet for `silence`, and with at most `backgroundSlots`
/// background requests at a time. One scheduler can be shared by every layer of a process (the store does),
/// so that a container reading from one layer holds back the background fetch of all of them.
public final class FetchScheduler: Sendable {
    private struct State {
        var active = 0
        var quietSince: ContinuousClock.Instant
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
        var freeSlots: Int
        var slotWaiters: [CheckedContinuation<Void, Never>] = []
        var waiting = 0
    }
    private let state: Mutex<State>
    /// How long reads must have stopped before background fetching (re)starts.
    public let silence: Duration

    /// A scheduler; upstream's store uses a 5 s silence and `max_concurrency` (2) slots.
    public init(silence: Duration = .seconds(5), backgroundSlots: Int = 2) {
        self.silence = silence
        state = Mutex(State(quietSince: .now, freeSlots: max(1, backgroundSlots)))
    }

    /// An on-demand read or a prefetch starts.
    func enter() { state.withLock { $0.active += 1 } }

    /// An on-demand read or a prefetch ends.
    func leave() {
        let waiters = state.withLock { s in
            s.active -= 1
            guard s.active == 0 else { return [CheckedContinuation<Void, Never>]() }
            s.quietSince = .now
            defer { s.idleWaiters = [] }
            return s.idleWaiters
        }
        for w in waiters { w.resume() }
    }

    /// Waits until the foreground has been quiet for the silence period and a background slot is free, then
    /// takes the slot; give it back with ``endTurn()``. Throws `CancellationError` when the task is cancelled.
    func backgroundTurn() async throws {
        state.withLock { $0.waiting += 1 }
        defer { state.withLock { $0.waiting -= 1 } }
        while true {
            try Task.checkCancellation()
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s in
                    if s.active == 0 { return true }
                    s.idleWaiters.append(c)
                    return false
                }
                if now { c.resume() }
            }
            let wake = state.withLock { $0.active == 0 ? $0.quietSince + silence : nil }
            guard let wake else { continue }
            if wake > .now {
                try await Task.sleep(until: wake, clock: .continuous)
                continue
            }
            break
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s in
                if s.freeSlots > 0 {
                    s.freeSlots -= 1
                    return true
                }
                s.slotWaiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    /// Background fetches waiting for their turn (for tests and metrics).
    var waitingForTurn: Int { state.withLock { $0.waiting } }

    /// Gives back the slot ``backgroundTurn()`` took.
    func endTurn() {
        let next = state.withLock { s in
            if s.slotWaiters.isEmpty {
                s.freeSlots += 1
                return nil as CheckedContinuation<Void, Never>?
            }
            return s.slotWaiters.removeFirst()
        }
        next?.resume()
    }
}
