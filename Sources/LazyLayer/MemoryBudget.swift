// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// Bytes that chunk decompression may hold at once, shared by every layer of a store.
///
/// A TOC may claim up to ``EStargz/TOCLimits/maxChunkSize`` for each chunk, and a chunk that really inflates that
/// far costs its author only its compressed bytes (deflate reaches 1032:1). Many reads of such chunks at once
/// would each hold a whole chunk: the budget makes them take turns instead of taking the daemon's memory. A
/// claim larger than the whole budget is let through alone (when nothing else is held), so it never waits
/// forever. Waiters are served in order.
public final class MemoryBudget: Sendable {
    private struct State {
        var available: Int
        var held = 0
        var waiters: [(bytes: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }
    private let state: Mutex<State>
    /// The budget, in bytes.
    public let capacity: Int

    /// A budget of `capacity` bytes.
    public init(capacity: Int) {
        self.capacity = max(1, capacity)
        state = Mutex(State(available: max(1, capacity)))
    }

    /// Takes `bytes`, waiting while others hold too much of the budget.
    func acquire(_ bytes: Int) async {
        let n = max(0, bytes)
        let now = state.withLock { s -> Bool in
            guard s.waiters.isEmpty, Self.fits(n, s) else { return false }
            s.available -= n
            s.held += 1
            return true
        }
        if now { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let resume = state.withLock { s -> Bool in
                // Released while this task was on its way here: take it now if it fits and nobody is first.
                if s.waiters.isEmpty, Self.fits(n, s) {
                    s.available -= n
                    s.held += 1
                    return true
                }
                s.waiters.append((n, c))
                return false
            }
            if resume { c.resume() }
        }
    }

    /// Gives back what ``acquire(_:)`` took.
    func release(_ bytes: Int) {
        let ready = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.available += max(0, bytes)
            s.held -= 1
            var out: [CheckedContinuation<Void, Never>] = []
            while let first = s.waiters.first, Self.fits(first.bytes, s) {
                s.waiters.removeFirst()
                s.available -= first.bytes
                s.held += 1
                out.append(first.continuation)
            }
            return out
        }
        for c in ready { c.resume() }
    }

    /// A claim fits when the budget has room for it, or when it is larger than the whole budget and nothing
    /// else is held.
    private static func fits(_ n: Int, _ s: State) -> Bool { n <= s.available || s.held == 0 }

    /// Bytes held now, and claims waiting (for tests and metrics).
    public var usage: (held: Int, waiting: Int) {
        state.withLock { s in (capacity - s.available, s.waiters.count) }
    }
}
