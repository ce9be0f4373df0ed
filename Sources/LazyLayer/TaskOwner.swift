// SPDX-License-Identifier: Apache-2.0

/// The tasks a layer starts (its fetches and its background work), children of one task group: ``close()``
/// cancels them and waits until every one has returned, so nothing of a closed layer runs on.
final class TaskOwner: Sendable {
    typealias Job = @Sendable () async -> Void
    private let jobs: AsyncStream<Job>.Continuation
    private let runner: Task<Void, Never>

    init() {
        let (stream, continuation) = AsyncStream.makeStream(of: Job.self)
        jobs = continuation
        runner = Task {
            await withDiscardingTaskGroup { group in
                for await job in stream { group.addTask { await job() } }
            }
        }
    }

    deinit { jobs.finish() }

    /// Starts `job` as a child of the group; false when the owner is closed (the job does not run).
    func spawn(_ job: @escaping Job) -> Bool {
        if case .enqueued = jobs.yield(job) { return true }
        return false
    }

    /// Cancels every job and waits for them. Jobs spawned but not started yet still run, as cancelled children:
    /// each must check for cancellation before work that does not check it itself.
    func close() async {
        jobs.finish()
        runner.cancel()
        await runner.value
    }
}
