// SPDX-License-Identifier: Apache-2.0
import CLinuxSys
import Foundation
public import Logging
import Synchronization
import TOML
#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// `sd_notify(3)` without libsystemd: one datagram to `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
/// namespace), with fds attached for the fd store (``SystemdFDStore``). Does nothing when the variable is unset.
public enum SystemdNotify {
    /// Sends `state` (`READY=1`, `STOPPING=1`, `FDSTORE=1\nFDNAME=…`) with `fds`; true when it was sent.
    @discardableResult
    public static func send(_ state: String, fds: [Int32] = [], environment: [String: String]? = nil) -> Bool {
        let env = environment ?? ProcessInfo.processInfo.environment
        guard let path = env["NOTIFY_SOCKET"], !path.isEmpty else { return false }
        let sock = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard sock >= 0 else { return false }
        defer { close(sock) }
        let message = Array(state.utf8)
        let sent = message.withUnsafeBytes { b in
            fds.withUnsafeBufferPointer { f in
                CLinuxSys_sendWithFDs(sock, path, b.baseAddress, UInt(b.count), f.baseAddress, Int32(f.count))
            }
        }
        return sent == message.count
    }
}

/// Log lines as upstream writes them: one JSON object per line on stderr, `level`, `msg`, `time`, then fields.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let label: String
    static let lock = Mutex(())

    /// A handler at `level`.
    public init(label: String, level: Logger.Level) {
        self.label = label
        logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields = metadata
        if let extra = event.metadata { fields.merge(extra) { $1 } }
        if let e = event.error { fields["error"] = "\(e)" }
        var out = "{\"level\":\"\(Self.name(event.level))\",\"msg\":\(Self.quote(event.message.description)),\"time\":\"\(Self.now())\""
        for (k, v) in fields.sorted(by: { $0.key < $1.key }) { out += ",\(Self.quote(k)):\(Self.quote("\(v)"))" }
        out += "}\n"
        Self.lock.withLock { _ in FileHandle.standardError.write(Data(out.utf8)) }
    }

    static func name(_ l: Logger.Level) -> String {
        switch l {
        case .trace: "trace"
        case .debug: "debug"
        case .info: "info"
        case .notice: "info"
        case .warning: "warning"
        case .error: "error"
        case .critical: "fatal"
        }
    }

    /// The time as RFC 3339 UTC with milliseconds (`2026-11-29T10:33:07.669Z`), without a formatter
    /// object (ICU) per line.
    static func now() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = tm()
        var secs = ts.tv_sec
        gmtime_r(&secs, &t)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
        }
        return "\(pad(t.tm_year + 1900, 4))-\(pad(t.tm_mon + 1, 2))-\(pad(t.tm_mday, 2))T"
            + "\(pad(t.tm_hour, 2)):\(pad(t.tm_min, 2)):\(pad(t.tm_sec, 2)).\(pad(Int32(ts.tv_nsec / 1_000_000), 3))Z"
    }

    static func quote(_ s: String) -> String { jsonQuoted(s) }

    /// Parses upstream's level names (`trace` … `panic`).
    public static func level(_ s: String) -> Logger.Level? {
        switch s.lowercased() {
        case "trace": .trace
        case "debug": .debug
        case "info": .info
        case "warn", "warning": .warning
        case "error": .error
        case "fatal", "panic": .critical
        default: nil
        }
    }
}
