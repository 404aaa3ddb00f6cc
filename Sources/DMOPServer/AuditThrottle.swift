// SPDX-License-Identifier: MIT
import DMOPCore

/// Keeps the audit log bounded under a flood of refusals. Forwarded calls
/// are always logged; refusals are logged one by one up to
/// `maxRefusalLines` per interval, then counted; rate-limit refusals are
/// never logged one by one. Once an interval has passed, one summary line
/// per kind carries the counts.
struct AuditThrottle {
    static let interval: UInt64 = 1_000_000_000
    static let maxRefusalLines = 50
    /// Sessions whose start and end lines are written per interval.
    static let maxSessionLines = 20

    private var windowStart: UInt64
    private var refusalLines = 0
    private var suppressed: [ReasonCode: Int] = [:]
    private var rateLimited: [String: Int] = [:]
    private var sessionLines = 0
    private var suppressedSessions = 0

    init(now: UInt64) {
        windowStart = now
    }

    /// Whether this refusal gets its own line; if not, it is counted.
    mutating func admitRefusalLine(_ reason: ReasonCode) -> Bool {
        if refusalLines < Self.maxRefusalLines {
            refusalLines += 1
            return true
        }
        suppressed[reason, default: 0] += 1
        return false
    }

    /// Whether a new session's start and end lines are written; if not,
    /// the session is counted.
    mutating func admitSessionLine() -> Bool {
        if sessionLines < Self.maxSessionLines {
            sessionLines += 1
            return true
        }
        suppressedSessions += 1
        return false
    }

    mutating func countRateLimited(op: String) {
        rateLimited[op, default: 0] += 1
    }

    /// Summary lines once the interval is over (or at `force`), and a new
    /// interval. Empty when there is nothing to say.
    mutating func summaries(now: UInt64, force: Bool = false) -> [String] {
        guard force || now &- windowStart >= Self.interval else { return [] }
        let seconds = Double(now &- windowStart) / 1e9
        var lines: [String] = []
        for (op, count) in rateLimited.sorted(by: { $0.key < $1.key }) {
            lines.append("rate limit: op=\(op) refused=\(count) in the last \(format(seconds)) s")
        }
        let total = suppressed.values.reduce(0, +)
        if total > 0 {
            let detail = suppressed.sorted { $0.key.rawValue < $1.key.rawValue }
                .map { "\($0.key.name)=\($0.value)" }.joined(separator: " ")
            lines.append("suppressed \(total) refusal line(s) in the last \(format(seconds)) s: \(detail)")
        }
        if suppressedSessions > 0 {
            lines.append("suppressed the start and end lines of \(suppressedSessions) session(s) in the last \(format(seconds)) s")
        }
        windowStart = now
        refusalLines = 0
        sessionLines = 0
        suppressedSessions = 0
        suppressed.removeAll(keepingCapacity: true)
        rateLimited.removeAll(keepingCapacity: true)
        return lines
    }

    private func format(_ seconds: Double) -> String {
        let tenths = Int((seconds * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }
}
