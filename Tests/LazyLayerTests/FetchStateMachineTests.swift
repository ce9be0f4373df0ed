// SPDX-License-Identifier: Apache-2.0
import FUSE
@testable import LazyLayer
import TestSupport
import Testing
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

private func k(_ n: Int64) -> ChunkKey { ChunkKey(compressedOffset: n, innerOffset: 0) }
private typealias Machine = FetchStateMachine

@Suite("Fetch coordination state machine (no I/O)")
struct FetchStateMachineTests {
    @Test("a read starts a flight for what is not in flight, and joins the flights of what is")
    func startAndJoin() {
        var m = Machine()
        guard case .start(let a, let chunks, let optional, let join) = m.request(required: [k(1), k(2)]) else {
            Issue.record("nothing started")
            return
        }
        #expect(chunks == [k(1), k(2)] && optional.isEmpty && join.isEmpty)
        // A second read of chunk 2 and 3: joins A for 2, starts a flight for 3 only.
        guard case .start(let b, let chunksB, _, let joinB) = m.request(required: [k(2), k(3)]) else {
            Issue.record("nothing started")
            return
        }
        #expect(b != a && chunksB == [k(3)] && joinB == [a])
        // A third read of chunks all in flight: joins both, starts nothing.
        #expect(m.request(required: [k(3), k(1), k(2)]) == .join([b, a]))
        #expect(m.flightCount == 2)
    }

    @Test("a chunk asked twice in one read is fetched once")
    func duplicates() {
        var m = Machine()
        guard case .start(_, let chunks, _, _) = m.request(required: [k(1), k(1)], optional: [k(1), k(2)]) else {
            Issue.record("nothing started")
            return
        }
        #expect(chunks == [k(1), k(2)])
    }

    @Test("an optional sibling in a flight stays optional; required anywhere, it is required")
    func optionality() {
        var m = Machine()
        guard case .start(_, _, let optional, _) = m.request(required: [k(1)], optional: [k(2), k(1)]) else {
            Issue.record("nothing started")
            return
        }
        #expect(optional == [k(2)], "chunk 1 is required by the read itself")
    }

    @Test("a reader that joined a flight where its chunk was only an optional sibling fetches it again if the flight left it out")
    func joinedOptionalSibling() {
        var m = Machine()
        // Reader A: m10 required, m11 as a read-around sibling.
        guard case .start(let a, _, let optional, _) = m.request(required: [k(10)], optional: [k(11)]) else {
            Issue.record("nothing started")
            return
        }
        #expect(optional == [k(11)])
        // Reader B wants m11: it is in A's flight, so B joins.
        #expect(m.request(required: [k(11)]) == .join([a]))
        // A's flight ends; m11 failed verification there and was dropped.
        m.finished(a)
        let delivered: Set<ChunkKey> = [k(10)]
        #expect(m.completed(required: [k(11)], delivered: { delivered.contains($0) }) == .refetch([k(11)]))
        // B's refetch starts a flight of its own, where m11 is required (its second try is there).
        guard case .start(_, let again, let optionalAgain, let joinAgain) = m.request(required: [k(11)]) else {
            Issue.record("the refetch joined a finished flight")
            return
        }
        #expect(again == [k(11)] && optionalAgain.isEmpty && joinAgain.isEmpty)
        #expect(m.completed(required: [k(10)], delivered: { delivered.contains($0) }) == .done)
    }

    @Test("a finished flight frees its chunks, not those a newer flight took over")
    func finishing() {
        var m = Machine()
        guard case .start(let a, _, _, _) = m.request(required: [k(1)]) else { return }
        m.finished(a)
        #expect(m.flight(of: k(1)) == nil && m.flightCount == 0)
        guard case .start(let b, _, _, _) = m.request(required: [k(1)]) else {
            Issue.record("a finished flight was joined")
            return
        }
        m.finished(a)  // a late, repeated end of the old flight changes nothing
        #expect(m.flight(of: k(1)) == b)
    }

    @Test("close: the flights running are to be cancelled, and nothing starts or joins afterwards")
    func close() {
        var m = Machine()
        guard case .start(let a, _, _, _) = m.request(required: [k(1)]) else { return }
        guard case .start(let b, _, _, _) = m.request(required: [k(2)]) else { return }
        #expect(m.close() == [a, b])
        #expect(m.request(required: [k(3)]) == .fail)
        #expect(m.request(required: [k(1)]) == .fail, "not even a join of a flight being cancelled")
        m.finished(a)
        m.finished(b)
        #expect(m.flightCount == 0)
    }
}

@Suite("Chunk fetcher: closing")
struct FetcherCloseTests {
    @Test("close cancels a fetch in flight and waits for it; its reader is answered; later reads fail (EIO, closed)")
    func closeCancels() async throws {
        let blob = try fixture("kitchen-sink.esgz")
        let source = HeldSource(blob)
        let layer = try await LazyLayer.open(source, options: LazyLayerOptions(prefetch: false, backgroundFetch: false))
        let etc = try await layer.lookup(parent: 1, nameBytes: Array("data".utf8))
        let big = try await layer.lookup(parent: etc.inode, nameBytes: Array("big.txt".utf8))
        source.hold()
        let reader = Task { try await layer.readBytes(node: big.inode, offset: 0, size: 4096) }
        for _ in 0..<1_000_000 where source.heldReads == 0 { await Task.yield() }
        #expect(source.heldReads == 1 && layer.fetcher.flightCount == 1)
        await layer.close()  // returns only once the held fetch has been cancelled and has returned
        #expect(layer.fetcher.flightCount == 0)
        do {
            _ = try await reader.value
            Issue.record("a read of a closed layer answered")
        } catch {
            #expect((error as? LazyLayerError)?.code == .closed && FUSEError(replyingTo: error).errno == EIO, "\(error)")
        }
        let after = await #expect(throws: LazyLayerError.self) { _ = try await layer.readBytes(node: big.inode, offset: 0, size: 4096) }
        #expect(after?.code == .closed)
        source.release()
    }
}

extension FetchStateMachineTests {
    @Test("an optional neighbour that another read fetches is not waited for")
    func optionalInFlightNotJoined() {
        var m = Machine()
        guard case .start(let prefetch, _, _, _) = m.request(required: [k(1), k(2), k(3)]) else { return }
        // A read of chunk 9 with chunk 2 as a read-around neighbour: 2 is in the prefetch, which it does not join.
        guard case .start(_, let chunks, let optional, let join) = m.request(required: [k(9)], optional: [k(2), k(10)]) else {
            Issue.record("nothing started")
            return
        }
        #expect(chunks == [k(9), k(10)] && optional == [k(10)] && join.isEmpty)
        // Required, it is waited for.
        #expect(m.request(required: [k(2)]) == .join([prefetch]))
    }
}

@Suite("Fetch scheduler: cancellation")
struct SchedulerCancellationTests {
    @Test("a background turn waiting for the foreground to end leaves at once when cancelled")
    func cancelWhileForegroundRuns() async {
        let s = FetchScheduler(silence: .zero, backgroundSlots: 1)
        s.enter()  // a read that does not end
        let turn = Task { try await s.backgroundTurn() }
        for _ in 0..<1_000_000 where s.waitingForTurn == 0 { await Task.yield() }
        turn.cancel()
        await #expect(throws: CancellationError.self) { try await turn.value }
        s.leave()
    }

    @Test("a turn waiting for a slot leaves when cancelled, holding none; the slot goes to the next")
    func cancelWhileSlotsAreTaken() async throws {
        let s = FetchScheduler(silence: .zero, backgroundSlots: 1)
        try await s.backgroundTurn()  // takes the only slot
        let second = Task { try await s.backgroundTurn() }
        for _ in 0..<1_000_000 where s.waitingForTurn == 0 { await Task.yield() }
        second.cancel()
        await #expect(throws: CancellationError.self) { try await second.value }
        s.endTurn()
        try await s.backgroundTurn()  // the slot came back, not to the cancelled waiter
        s.endTurn()
    }
}
