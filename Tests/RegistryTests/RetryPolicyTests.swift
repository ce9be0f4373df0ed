// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing

@testable import Registry

/// The one retry policy of the registry client, with its sleep and random source replaced: the delays are
/// recorded, never waited for.
@Suite("Retry policy")
struct RetryPolicyTests {
    /// The delays a policy asked to sleep for, in order.
    actor Sleeps {
        private(set) var delays: [Duration] = []
        func record(_ d: Duration) { delays.append(d) }
    }

    /// A transport-level failure (not a RegistryError): what a connection reset looks like to the policy.
    struct Reset: Error, Equatable {
        var attempt: Int
    }

    func policy(
        maxRetries: Int = 3, base: Duration = .milliseconds(100), maxDelay: Duration = .seconds(1),
        jitter: RetryPolicy.Jitter = .none, random: @escaping @Sendable () -> Double = { 0.5 },
        sleeps: Sleeps = Sleeps()
    ) -> RetryPolicy {
        RetryPolicy(
            maxRetries: maxRetries, baseDelay: base, maxDelay: maxDelay, maxRetryAfter: .seconds(30), jitter: jitter,
            random: random, sleep: { await sleeps.record($0) })
    }

    // MARK: Delays

    @Test("the delay doubles from the base delay and stops at the bound, whatever the attempt")
    func doublingAndCap() {
        let p = policy()
        #expect((1...6).map { p.delay(forAttempt: $0) } == [100, 200, 400, 800, 1000, 1000].map { .milliseconds($0) })
        #expect(p.delay(forAttempt: 1_000_000) == .seconds(1))
        #expect(p.delay(forAttempt: Int.max) == .seconds(1))
        #expect(p.delay(forAttempt: 0) == .milliseconds(100))
        // The client's defaults: 200 ms doubling, at most 10 s.
        let d = RetryPolicy(jitter: .none)
        let want = [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000].map { Duration.milliseconds($0) }
        #expect((1...8).map { d.delay(forAttempt: $0) } == want)
    }

    @Test("jitter stays within its bounds for any random value", arguments: [0.0, 0.25, 0.5, 0.999_999, 1.0, -3.0, 7.0])
    func jitterBounds(_ u: Double) {
        for attempt in 1...6 {
            let d = policy(jitter: .none).delay(forAttempt: attempt)
            let full = policy(jitter: .full, random: { u }).delay(forAttempt: attempt)
            let equal = policy(jitter: .equal, random: { u }).delay(forAttempt: attempt)
            #expect(full >= .zero && full <= d)
            #expect(equal >= d / 2 && equal <= d)
        }
        let clamped = min(max(u, 0), 1)
        #expect(policy(jitter: .full, random: { u }).delay(forAttempt: 3) == .milliseconds(400) * clamped)
        let equal = policy(jitter: .equal, random: { u }).delay(forAttempt: 3)
        #expect(equal == .milliseconds(200) + .milliseconds(200) * clamped)
    }

    @Test("Retry-After replaces the computed delay, without jitter, and is bounded")
    func retryAfterHonouredAndCapped() {
        let p = policy(jitter: .full, random: { 0 })
        #expect(p.delay(forAttempt: 1, retryAfter: .seconds(7)) == .seconds(7))
        #expect(p.delay(forAttempt: 5, retryAfter: .zero) == .zero)
        #expect(p.delay(forAttempt: 1, retryAfter: .seconds(86_400 * 365)) == .seconds(30))
        #expect(p.delay(forAttempt: 1, retryAfter: .seconds(-5)) == .zero)
        var q = p
        q.maxRetryAfter = .seconds(2)
        #expect(q.delay(forAttempt: 1, retryAfter: .seconds(3)) == .seconds(2))
    }

    @Test("Retry-After headers: seconds or an HTTP date; anything else is no Retry-After")
    func retryAfterHeader() {
        let now = Date(timeIntervalSince1970: 784_111_767)  // Sun, 06 Nov 1994 08:49:27 GMT
        #expect(RetryPolicy.retryAfter("120", now: now) == .seconds(120))
        #expect(RetryPolicy.retryAfter(" 5 ", now: now) == .seconds(5))
        #expect(RetryPolicy.retryAfter("0", now: now) == .zero)
        #expect(RetryPolicy.retryAfter("Sun, 06 Nov 1994 08:49:37 GMT", now: now) == .seconds(10))
        #expect(RetryPolicy.retryAfter("Sun, 06 Nov 1994 08:00:00 GMT", now: now) == .zero)
        for bad in [nil, "", "-1", "1.5", "soon", "99999999999999999999999", "١٢"] {
            #expect(RetryPolicy.retryAfter(bad, now: now) == nil, "\(bad ?? "nil")")
        }
        // A far-future date is read, and the policy bounds the wait.
        let far = RetryPolicy.retryAfter("Fri, 31 Dec 9999 23:59:59 GMT", now: now)
        #expect(far != nil)
        #expect(policy().delay(forAttempt: 1, retryAfter: far) == .seconds(30))
    }

    // MARK: Classification

    @Test("statuses: 429, 500, 502, 503 and 504 are retried for idempotent calls; nothing else is")
    func statusTable() {
        let p = policy()
        let table: [(Int, RetryPolicy.Decision)] = [
            (200, .fail), (206, .fail), (301, .fail), (400, .fail), (401, .fail), (403, .fail), (404, .fail),
            (408, .fail), (413, .fail), (416, .fail), (429, .retry), (500, .retry), (501, .fail), (502, .retry),
            (503, .retry), (504, .retry), (505, .fail), (599, .fail),
        ]
        for (status, want) in table {
            #expect(p.decision(forStatus: status, idempotent: true) == want, "\(status)")
            #expect(p.decision(forStatus: status, idempotent: false) == .fail, "\(status), not idempotent")
        }
    }

    @Test("errors: transport errors are retried for idempotent calls; cancellations and RegistryErrors never")
    func errorTable() {
        let p = policy()
        #expect(p.decision(for: Reset(attempt: 1), idempotent: true) == .retry)
        #expect(p.decision(for: Reset(attempt: 1), idempotent: false) == .fail)
        for idempotent in [true, false] {
            #expect(p.decision(for: CancellationError(), idempotent: idempotent) == .fail)
            #expect(p.decision(for: RegistryError(.transport, "inner loop gave up"), idempotent: idempotent) == .fail)
            #expect(p.decision(for: RegistryError(.serverError, "503", status: 503), idempotent: idempotent) == .fail)
        }
    }

    @Test("outcome(after:): retried and wrapped, or thrown (wrapped for transport errors, as is otherwise)")
    func outcomeAfter() throws {
        let p = policy()
        let wrap = { (e: any Error) -> any Error in RegistryError(.transport, "wrapped", cause: e) }
        let o: RetryPolicy.Outcome<Int> = try p.outcome(after: Reset(attempt: 1), idempotent: true, wrap: wrap)
        guard case .retry(let failure, let after) = o else {
            Issue.record("not retried")
            return
        }
        #expect((failure as? RegistryError)?.code == .transport)
        #expect(after == nil)
        #expect(throws: RegistryError(.transport, "")) {
            let _: RetryPolicy.Outcome<Int> = try p.outcome(after: Reset(attempt: 1), idempotent: false, wrap: wrap)
        }
        #expect(throws: CancellationError.self) {
            let _: RetryPolicy.Outcome<Int> = try p.outcome(after: CancellationError(), idempotent: true, wrap: wrap)
        }
        do {
            let _: RetryPolicy.Outcome<Int> = try p.outcome(
                after: RegistryError(.notFound, "gone"), idempotent: true, wrap: wrap)
            Issue.record("a RegistryError was retried")
        } catch let e as RegistryError {
            #expect(e.code == .notFound && e.message == "gone")
        }
    }

    // MARK: The loop

    @Test("the loop stops after maxRetries retries and throws the last failure; the delays double")
    func givesUp() async throws {
        let sleeps = Sleeps()
        let p = policy(maxRetries: 3, sleeps: sleeps)
        var attempts: [Int] = []
        await #expect(throws: Reset(attempt: 4)) {
            let _: Int = try await p.run { attempt in
                attempts.append(attempt)
                return .retry(Reset(attempt: attempt))
            }
        }
        #expect(attempts == [1, 2, 3, 4])
        #expect(await sleeps.delays == [100, 200, 400].map { .milliseconds($0) })
    }

    @Test("no retries configured: one attempt, no sleep")
    func noRetries() async throws {
        let sleeps = Sleeps()
        var count = 0
        await #expect(throws: Reset(attempt: 1)) {
            let _: Int = try await policy(maxRetries: 0, sleeps: sleeps).run { attempt in
                count += 1
                return .retry(Reset(attempt: attempt))
            }
        }
        #expect(count == 1)
        #expect(await sleeps.delays.isEmpty)
    }

    @Test("a success after retries returns its value; Retry-After is slept as given; onRetry sees each retry")
    func succeedsAfterRetries() async throws {
        let sleeps = Sleeps()
        let p = policy(maxRetries: 5, jitter: .equal, random: { 0 }, sleeps: sleeps)
        var told: [(Int, Duration)] = []
        let value = try await p.run(onRetry: { attempt, _, delay in told.append((attempt, delay)) }) {
            (attempt: Int) -> RetryPolicy.Outcome<String> in
            switch attempt {
            case 1: return .retry(Reset(attempt: 1))
            case 2: return .retry(Reset(attempt: 2), retryAfter: .seconds(3))
            default: return .success("third time")
            }
        }
        #expect(value == "third time")
        #expect(await sleeps.delays == [.milliseconds(50), .seconds(3)])
        #expect(told.map(\.0) == [1, 2])
        #expect(told.map(\.1) == [.milliseconds(50), .seconds(3)])
    }

    @Test("a thrown error ends the loop at once")
    func thrownIsFinal() async throws {
        let sleeps = Sleeps()
        var count = 0
        await #expect(throws: Reset(attempt: 1)) {
            let _: Int = try await policy(sleeps: sleeps).run { attempt in
                count += 1
                throw Reset(attempt: attempt)
            }
        }
        #expect(count == 1)
        #expect(await sleeps.delays.isEmpty)
    }

    @Test("a non-idempotent call is not retried after a transport error; an idempotent one is")
    func nonIdempotent() async throws {
        for idempotent in [false, true] {
            let sleeps = Sleeps()
            let p = policy(maxRetries: 2, sleeps: sleeps)
            var count = 0
            do {
                let _: Int = try await p.run { attempt in
                    count += 1
                    do {
                        throw Reset(attempt: attempt)
                    } catch {
                        return try p.outcome(after: error, idempotent: idempotent) {
                            RegistryError(.transport, "PUT failed after \(attempt) attempts", cause: $0)
                        }
                    }
                }
                Issue.record("succeeded")
            } catch let e as RegistryError {
                #expect(e.code == .transport)
                #expect((e.cause as? Reset) == Reset(attempt: count))
            }
            #expect(count == (idempotent ? 3 : 1))
            #expect(await sleeps.delays.count == (idempotent ? 2 : 0))
        }
    }

    @Test("a cancelled task stops the loop before its next attempt")
    func cancellation() async throws {
        var count = 0
        await #expect(throws: CancellationError.self) {
            let _: Int = try await policy(maxRetries: 10).run { attempt in
                count += 1
                withUnsafeCurrentTask { $0?.cancel() }
                return .retry(Reset(attempt: attempt))
            }
        }
        #expect(count == 1)
    }

    @Test("RegistryConfiguration: maxRetries and retryBaseDelay are the policy's fields")
    func configuration() {
        var c = RegistryConfiguration(maxRetries: 2, retryBaseDelay: .milliseconds(7))
        #expect(c.retryPolicy.maxRetries == 2 && c.retryPolicy.baseDelay == .milliseconds(7))
        #expect(c.retryPolicy.maxDelay == .seconds(10) && c.retryPolicy.maxRetryAfter == .seconds(30))
        c.maxRetries = 4
        c.retryBaseDelay = .seconds(1)
        #expect(c.retryPolicy.maxRetries == 4 && c.retryPolicy.baseDelay == .seconds(1))
        c.retryPolicy.maxRetries = 1
        #expect(c.maxRetries == 1)
        let d = RegistryConfiguration()
        #expect(d.maxRetries == 5 && d.retryBaseDelay == .milliseconds(200) && d.retryPolicy.jitter == .equal)
    }
}
