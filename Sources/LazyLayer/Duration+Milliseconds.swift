// SPDX-License-Identifier: Apache-2.0

extension Duration {
    /// The duration in whole milliseconds (rounded down), for log fields (`latency=12ms`).
    public var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }

    /// The duration in milliseconds with a fractional part, rounded to microseconds (upstream's latency lines:
    /// `value=1.234 milliseconds`).
    public var fractionalMilliseconds: Double {
        let ms = Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15
        return (ms * 1000).rounded() / 1000
    }
}
