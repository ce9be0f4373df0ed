// SPDX-License-Identifier: Apache-2.0
import Testing

@testable import LazyLayer

/// The shared budget of chunk decompression (many reads of chunks that each claim 64 MiB take turns).
@Suite("Decompression memory budget")
struct MemoryBudgetTests {
    /// Waits (yielding, no clock) until `budget` has `n` claims waiting.
    func waiters(_ budget: MemoryBudget, _ n: Int) async {
        while budget.usage.waiting != n { await Task.yield() }
    }

    @Test("a claim that does not fit waits for a release, then takes its share")
    func waitsForRelease() async {
        let b = MemoryBudget(capacity: 100)
        await b.acquire(60)
        #expect(b.usage.held == 60)
        let second = Task { await b.acquire(50) }
        await waiters(b, 1)
        #expect(b.usage.held == 60)
        b.release(60)
        await second.value
        #expect(b.usage == (held: 50, waiting: 0))
        b.release(50)
        #expect(b.usage == (held: 0, waiting: 0))
    }

    @Test("a claim larger than the whole budget goes through alone, and others wait for it")
    func oversized() async {
        let b = MemoryBudget(capacity: 100)
        await b.acquire(500)
        let small = Task { await b.acquire(10) }
        await waiters(b, 1)
        b.release(500)
        await small.value
        #expect(b.usage == (held: 10, waiting: 0))
        // While something is held, an oversized claim waits.
        let big = Task { await b.acquire(500) }
        await waiters(b, 1)
        b.release(10)
        await big.value
        b.release(500)
        #expect(b.usage == (held: 0, waiting: 0))
    }

    @Test("waiters are served in order: a small claim does not overtake a large one")
    func inOrder() async {
        let b = MemoryBudget(capacity: 100)
        await b.acquire(90)
        let large = Task { await b.acquire(50) }
        await waiters(b, 1)
        let small = Task { await b.acquire(5) }
        await waiters(b, 2)
        #expect(b.usage.held == 90, "the small claim overtook the large one")
        b.release(90)
        await large.value
        await small.value
        #expect(b.usage == (held: 55, waiting: 0))
    }
}
