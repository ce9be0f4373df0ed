// SPDX-License-Identifier: Apache-2.0
import Foundation

/// When, how often and how long to wait before the registry client tries again: the one policy of requests,
/// blob streams, range reads and token fetches.
///
/// An attempt that failed in a way worth repeating is tried again while fewer than ``maxRetries`` retries were made,
/// after a delay that doubles from ``baseDelay`` up to ``maxDelay`` and is spread by ``jitter``, so that clients cut
/// off together do not all come back together. A registry's `Retry-After` takes the place of that delay, bounded by
/// ``maxRetryAfter``: an absurd value from a broken or hostile registry costs at most that long per retry, never hours.
///
/// What is worth repeating (``decision(forStatus:idempotent:)``, ``decision(for:idempotent:)``): the statuses in
/// ``retryableStatuses`` (429, 500, 502, 503, 504) and transport errors (connection refused or reset, timeouts, a body
/// cut short), and those only for idempotent calls; every other status, a cancellation and a ``RegistryError`` (already
/// a verdict: a protocol breach, or what an inner loop gave up with) are final.
///
/// ``run(onRetry:onExhausted:_:)`` is the loop: the caller's operation makes one attempt and keeps its own state between
/// attempts (a blob stream its offset, a request its redirect), and the policy counts, waits and gives up. The
/// random source and the sleep are parameters, so tests see the delays without waiting for them.
public struct RetryPolicy: Sendable {
    /// How the computed delay `d` is spread.
    public enum Jitter: Sendable, Equatable, CaseIterable {
        /// Exactly `d`.
        case none
        /// Uniform in `[0, d)`: spreads the most, and may retry at once.
        case full
        /// `d/2` plus uniform in `[0, d/2)`: spread, and never less than half of `d`.
        case equal
    }

    /// Whether a failure is worth another attempt.
    public enum Decision: Sendable, Equatable {
        /// Try again while attempts remain.
        case retry
        /// Give up with this failure.
        case fail
    }

    /// What one attempt came to.
    public enum Outcome<Value> {
        /// The attempt succeeded.
        case success(Value)
        /// The attempt failed in a way worth repeating: it is tried again after the policy's delay (or the
        /// registry's `Retry-After`) while retries remain; otherwise `failure` is thrown.
        case retry(_ failure: any Error, retryAfter: Duration? = nil)
    }

    /// The statuses worth another attempt: rate limited, and server errors other than 501 (not implemented) and
    /// 505 and up (which a repeat does not change).
    public static let retryableStatuses: Set<Int> = [429, 500, 502, 503, 504]

    /// Retries after the first attempt (0: none); a call is attempted at most `maxRetries + 1` times.
    public var maxRetries: Int
    /// The delay before the first retry; it doubles for each further one.
    public var baseDelay: Duration
    /// The bound on the doubling delay (before jitter).
    public var maxDelay: Duration
    /// The bound on a registry's `Retry-After`.
    public var maxRetryAfter: Duration
    /// How the computed delay is spread (not `Retry-After`, which is the registry's word).
    public var jitter: Jitter
    /// A number in `[0, 1)` for the jitter (values outside are clamped).
    public var random: @Sendable () -> Double
    /// Waits between attempts; throws when the task is cancelled.
    public var sleep: @Sendable (Duration) async throws -> Void

    /// Creates a policy; the defaults are the client's (5 retries from 200 ms, 10 s and 30 s bounds, equal jitter).
    public init(
        maxRetries: Int = 5, baseDelay: Duration = .milliseconds(200), maxDelay: Duration = .seconds(10),
        maxRetryAfter: Duration = .seconds(30), jitter: Jitter = .equal,
        random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) },
        sleep: @escaping @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) }
    ) {
        self.maxRetries = maxRetries
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.maxRetryAfter = maxRetryAfter
        self.jitter = jitter
        self.random = random
        self.sleep = sleep
    }

    // MARK: Delays

    /// How long to wait after attempt number `attempt` (1 for the first) failed: the registry's `retryAfter`,
    /// bounded by ``maxRetryAfter``, or else `baseDelay · 2^(attempt-1)`, bounded by ``maxDelay`` and spread by
    /// ``jitter``.
    public func delay(forAttempt attempt: Int, retryAfter: Duration? = nil) -> Duration {
        if let retryAfter { return min(max(retryAfter, .zero), max(maxRetryAfter, .zero)) }
        // The exponent is bounded only so that the product cannot overflow; maxDelay is the real bound.
        let doubled = max(baseDelay, .zero) * (1 << min(max(attempt - 1, 0), 30))
        let d = min(doubled, max(maxDelay, .zero))
        let u = min(max(random(), 0), 1)
        switch jitter {
        case .none: return d
        case .full: return d * u
        case .equal: return d / 2 + (d / 2) * u
        }
    }

    /// A `Retry-After` header value: delay-seconds or an HTTP date (as a wait from `now`; a past date is no wait).
    /// Nil when absent or neither.
    static func retryAfter(_ value: String?, now: Date = Date()) -> Duration? {
        guard let v = value?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
        if v.allSatisfy(\.isASCII) && v.allSatisfy(\.isNumber) {
            return Int64(v).map { .seconds($0) }  // nil when it overflows: unreadable, so the policy's own delay
        }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = f.date(from: v) else { return nil }
        let seconds = date.timeIntervalSince(now)
        guard seconds > 0 else { return .zero }
        // Far-future dates are bounded later, by maxRetryAfter; bound here too so the conversion cannot trap.
        return .milliseconds(Int64(min(seconds, 1e9) * 1000))
    }

    // MARK: Classification

    /// Whether a reply with `status` is worth another attempt: the ``retryableStatuses``, for idempotent calls.
    public func decision(forStatus status: Int, idempotent: Bool) -> Decision {
        idempotent && Self.retryableStatuses.contains(status) ? .retry : .fail
    }

    /// Whether a thrown error is worth another attempt: a transport error is, for idempotent calls (a request
    /// that may have been acted on is not sent twice); a cancellation and a ``RegistryError`` are final.
    public func decision(for error: any Error, idempotent: Bool) -> Decision {
        if error is CancellationError || error is RegistryError { return .fail }
        return idempotent ? .retry : .fail
    }

    /// The outcome of an attempt that threw `error`: `.retry(wrap(error))` when ``decision(for:idempotent:)`` says
    /// so; otherwise it throws, `error` itself when it is a cancellation or a ``RegistryError``, else `wrap(error)`.
    ///
    /// `wrap` turns a transport error into the error the caller reports (a ``RegistryError`` naming what failed).
    public func outcome<Value>(
        after error: any Error, idempotent: Bool, wrap: (any Error) -> any Error = { $0 }
    ) throws -> Outcome<Value> {
        if error is CancellationError || error is RegistryError { throw error }
        let failure = wrap(error)
        guard decision(for: error, idempotent: idempotent) == .retry else { throw failure }
        return .retry(failure)
    }

    // MARK: The loop

    /// Runs `operation` until it succeeds, retrying what it returns as ``Outcome/retry(_:retryAfter:)`` after
    /// ``delay(forAttempt:retryAfter:)`` while fewer than ``maxRetries`` retries were made, and then throwing the
    /// last failure.
    ///
    /// An error thrown by `operation` ends the loop at once (classify with ``outcome(after:idempotent:wrap:)`` to
    /// retry it instead). Cancellation is checked before every attempt.
    ///
    /// - Parameters:
    ///   - onRetry: Told of each retry before its wait: the attempt that failed, its failure and the delay.
    ///   - onExhausted: Told of the failure of the last attempt when no retry is left, before it is thrown.
    ///   - operation: One attempt, given its number (1 for the first).
    public func run<Value>(
        onRetry: (_ attempt: Int, _ failure: any Error, _ delay: Duration) -> Void = { _, _, _ in },
        onExhausted: (_ failure: any Error) -> Void = { _ in },
        _ operation: (_ attempt: Int) async throws -> Outcome<Value>
    ) async throws -> Value {
        var attempt = 1
        while true {
            try Task.checkCancellation()
            switch try await operation(attempt) {
            case .success(let value):
                return value
            case .retry(let failure, let retryAfter):
                guard attempt <= maxRetries else {
                    onExhausted(failure)
                    throw failure
                }
                let wait = delay(forAttempt: attempt, retryAfter: retryAfter)
                onRetry(attempt, failure, wait)
                try await self.sleep(wait)
                attempt += 1
            }
        }
    }
}

extension RetryPolicy.Outcome: Sendable where Value: Sendable {}
