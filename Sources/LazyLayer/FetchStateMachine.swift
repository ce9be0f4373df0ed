// SPDX-License-Identifier: Apache-2.0

/// The coordination of a layer's fetches, with no I/O: which chunks are in flight in which fetch, who joins
/// what, what a reader must fetch again, and what closing cancels. Events go in, actions come out; the
/// ``ChunkFetcher`` carries the actions out (starts tasks, waits on flights, cancels).
///
/// The cases it settles:
/// - a read whose chunks are all in flight joins those flights and starts nothing (singleflight);
/// - a read that finds its chunk in flight only as another read's *optional* sibling (read-around) joins that
///   flight, and if the flight leaves the chunk out (it failed verification there: optional chunks are dropped,
///   not retried), the read fetches it again itself, where it is required and gets its second try;
/// - an optional chunk already in flight is left to that flight: the read does not wait for it;
/// - a waiter that is cancelled (a FUSE interrupt) leaves without touching the flight others wait on;
/// - after ``close()`` nothing starts, and every flight still running is to be cancelled.
struct FetchStateMachine: Sendable {
    /// A fetch in flight.
    struct FlightID: Hashable, Sendable, Comparable {
        var raw: Int
        static func < (a: FlightID, b: FlightID) -> Bool { a.raw < b.raw }
    }

    /// What a read must do for its chunks.
    enum RequestAction: Equatable {
        /// Start `flight` for `chunks` (of which `optional` may be dropped), and wait for it and for `join`.
        case start(flight: FlightID, chunks: [ChunkKey], optional: Set<ChunkKey>, join: [FlightID])
        /// Every chunk is in flight already: wait for these.
        case join([FlightID])
        /// The layer is closing: fail the read.
        case fail
    }

    /// What happens after a read's flights have finished.
    enum CompletionAction: Equatable {
        /// Every required chunk came.
        case done
        /// These required chunks did not come (they were optional in a flight this read joined): fetch them.
        case refetch([ChunkKey])
    }

    private struct Flight {
        var chunks: [ChunkKey]
        var optional: Set<ChunkKey>
    }
    private var inFlight: [ChunkKey: FlightID] = [:]
    private var flights: [FlightID: Flight] = [:]
    private var nextID = 0
    private(set) var closed = false

    /// Flights running now.
    var flightCount: Int { flights.count }

    /// The flight `key` is in, if any.
    func flight(of key: ChunkKey) -> FlightID? { inFlight[key] }

    /// A read needs `required` and would like `optional` (neither cached): what it must start and join.
    mutating func request(required: [ChunkKey], optional: [ChunkKey] = []) -> RequestAction {
        guard !closed else { return .fail }
        var join: [FlightID] = []
        var mine: [ChunkKey] = []
        var mineOptional = Set<ChunkKey>()
        var seen = Set<ChunkKey>()
        let optionalSet = Set(optional).subtracting(required)
        for k in required + optional where seen.insert(k).inserted {
            if let f = inFlight[k] {
                // A neighbour someone else fetches is not worth waiting for (it may be a whole prefetch).
                if !optionalSet.contains(k), !join.contains(f) { join.append(f) }
            } else {
                mine.append(k)
                if optionalSet.contains(k) { mineOptional.insert(k) }
            }
        }
        guard !mine.isEmpty else { return .join(join) }
        let id = FlightID(raw: nextID)
        nextID += 1
        flights[id] = Flight(chunks: mine, optional: mineOptional)
        for k in mine { inFlight[k] = id }
        return .start(flight: id, chunks: mine, optional: mineOptional, join: join)
    }

    /// Flight `id` has ended (with a result or an error): its chunks are no longer in flight.
    mutating func finished(_ id: FlightID) {
        guard let f = flights.removeValue(forKey: id) else { return }
        for k in f.chunks where inFlight[k] == id { inFlight[k] = nil }
    }

    /// A read's flights have delivered `delivered`: whether its required chunks are all there.
    func completed(required: [ChunkKey], delivered: (ChunkKey) -> Bool) -> CompletionAction {
        let lacking = required.filter { !delivered($0) }
        return lacking.isEmpty ? .done : .refetch(lacking)
    }

    /// The layer closes: nothing starts from now on; the flights returned are to be cancelled.
    mutating func close() -> [FlightID] {
        closed = true
        return flights.keys.sorted()
    }
}
