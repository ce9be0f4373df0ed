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

    /// Completes the flight and wakes every waiter; the first result stands (a later call changes nothing).
    func finish(_ r: Result<Value, any Error>) {
        let waiters = state.withLock { s -> [CheckedContinuation<Value, any Error>] in
            guard s.result == nil else { return [] }
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
        var idleWaiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var freeSlots: Int
        /// Waiting for a slot, in arrival order (ids), each resumed with whether it got the slot.
        var slotWaiters: [(id: Int, continuation: CheckedContinuation<Bool, Never>)] = []
        var waiting = 0
        var nextID = 0
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
            defer { s.idleWaiters = [:] }
            return Array(s.idleWaiters.values)
        }
        for w in waiters { w.resume() }
    }

    /// Waits until the foreground has been quiet for the silence period and a background slot is free, then
    /// takes the slot; give it back with ``endTurn()``. Throws `CancellationError` when the task is cancelled,
    /// at whichever wait it is in (a closing layer must not wait for other layers' reads to end).
    func backgroundTurn() async throws {
        state.withLock { $0.waiting += 1 }
        defer { state.withLock { $0.waiting -= 1 } }
        while true {
            try Task.checkCancellation()
            try await waitForIdle()
            let wake = state.withLock { $0.active == 0 ? $0.quietSince + silence : nil }
            guard let wake else { continue }
            if wake > .now {
                try await Task.sleep(until: wake, clock: .continuous)
                continue
            }
            break
        }
        try await takeSlot()
    }

    private func newID() -> Int {
        state.withLock { s in
            defer { s.nextID += 1 }
            return s.nextID
        }
    }

    /// Returns once no foreground work runs; throws when cancelled.
    private func waitForIdle() async throws {
        let id = newID()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s in
                    if s.active == 0 || Task.isCancelled { return true }
                    s.idleWaiters[id] = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            state.withLock { $0.idleWaiters.removeValue(forKey: id) }?.resume()
        }
        try Task.checkCancellation()
    }

    /// Takes a background slot, waiting in turn for one; throws (holding none) when cancelled.
    private func takeSlot() async throws {
        let id = newID()
        let got = await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
                let now: Bool? = state.withLock { s in
                    if Task.isCancelled { return false }
                    if s.freeSlots > 0 {
                        s.freeSlots -= 1
                        return true
                    }
                    s.slotWaiters.append((id, c))
                    return nil
                }
                if let now { c.resume(returning: now) }
            }
        } onCancel: {
            let c = state.withLock { s -> CheckedContinuation<Bool, Never>? in
                guard let i = s.slotWaiters.firstIndex(where: { $0.id == id }) else { return nil }
                return s.slotWaiters.remove(at: i).continuation
            }
            c?.resume(returning: false)
        }
        guard got else { throw CancellationError() }
    }

    /// Background fetches waiting for their turn (for tests and metrics).
    var waitingForTurn: Int { state.withLock { $0.waiting } }

    /// Gives back the slot ``backgroundTurn()`` took.
    func endTurn() {
        let next = state.withLock { s -> CheckedContinuation<Bool, Never>? in
            if s.slotWaiters.isEmpty {
                s.freeSlots += 1
                return nil
            }
            return s.slotWaiters.removeFirst().continuation
        }
        next?.resume(returning: true)  // the slot passes to the next waiter
    }
}
