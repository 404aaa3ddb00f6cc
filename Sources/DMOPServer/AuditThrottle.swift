// SPDX-License-Identifier: MIT
import DMOPCore

/// A line budget: `burst` lines at once, then one line per `spacing`
/// nanoseconds (a token bucket, counted in nanoseconds of credit so the
/// arithmetic is exact). Over any window of T ns it admits at most
/// burst + T / spacing lines.
struct LineBudget {
    let burst: UInt64
    let spacing: UInt64
    private var credit: UInt64
    private var last: UInt64

    init(burst: Int, spacing: UInt64, now: UInt64) {
        self.burst = UInt64(burst)
        self.spacing = spacing
        credit = UInt64(burst) * spacing
        last = now
    }

    mutating func admit(now: UInt64) -> Bool {
        // A clock that went back (never on CLOCK_MONOTONIC) refills nothing.
        let earned = now > last ? now - last : 0
        last = max(last, now)
        credit = min(burst * spacing, credit &+ min(earned, burst * spacing))
        guard credit >= spacing else { return false }
        credit -= spacing
        return true
    }
}

/// Keeps the audit log bounded under a flood, whatever one client sends
/// (dmop-broker(8), AUDIT LOG). Forwarded calls are always logged (or
/// aggregated); three kinds of lines a client can cause at will have a
/// budget each, so a flood of one never uses up another's:
///   - refusals (one line per refused request),
///   - deliveries of posted failures (refused by the policy or failed in
///     the hypervisor: counted apart, so a hypervisor failure is never
///     counted as a refusal),
///   - session start and end lines (reconnection floods).
/// What a budget does not admit is counted; once an interval has passed,
/// one summary line per kind carries the exact counts. Rate-limit refusals
/// are never logged one by one: one summary line per op per interval.
struct AuditThrottle {
    /// Summaries are written at most once per interval.
    static let interval: UInt64 = 10_000_000_000
    /// Refusal lines and delivery lines: each a burst of 50 (a device
    /// model's start-up with a policy that lacks a few ops, or a hostile
    /// session probing every refusal, keeps every line), then one per 6 s:
    /// at most 60 lines in any minute, per kind.
    static let lineBurst = 50
    static let lineSpacing: UInt64 = 6_000_000_000
    /// Session start and end lines: a burst of 20, then one session per
    /// second.
    static let sessionBurst = 20
    static let sessionSpacing: UInt64 = 1_000_000_000

    /// What a delivered posted failure was: the broker's refusal (with its
    /// reason), or the hypervisor's error.
    enum PostedFailureKind: Hashable, Comparable {
        case refused(ReasonCode)
        case hypervisor

        var name: String {
            switch self {
            case .refused(let reason): reason.name
            case .hypervisor: "hypervisor"
            }
        }

        static func < (lhs: Self, rhs: Self) -> Bool {
            switch (lhs, rhs) {
            case (.refused(let a), .refused(let b)): a.rawValue < b.rawValue
            case (.refused, .hypervisor): true
            default: false
            }
        }
    }

    private var windowStart: UInt64
    private var refusalBudget: LineBudget
    private var deliveryBudget: LineBudget
    private var sessionBudget: LineBudget
    private var suppressed: [ReasonCode: Int] = [:]
    private var suppressedDeliveries: [PostedFailureKind: Int] = [:]
    private var rateLimited: [String: Int] = [:]
    private var suppressedSessions = 0

    init(now: UInt64) {
        windowStart = now
        refusalBudget = LineBudget(burst: Self.lineBurst, spacing: Self.lineSpacing, now: now)
        deliveryBudget = LineBudget(burst: Self.lineBurst, spacing: Self.lineSpacing, now: now)
        sessionBudget = LineBudget(burst: Self.sessionBurst, spacing: Self.sessionSpacing, now: now)
    }

    /// Whether this refusal gets its own line; if not, it is counted.
    mutating func admitRefusalLine(_ reason: ReasonCode, now: UInt64) -> Bool {
        if refusalBudget.admit(now: now) { return true }
        suppressed[reason, default: 0] += 1
        return false
    }

    /// Whether the delivery of a posted failure gets its own line; if not,
    /// it is counted by kind.
    mutating func admitDeliveryLine(_ kind: PostedFailureKind, now: UInt64) -> Bool {
        if deliveryBudget.admit(now: now) { return true }
        suppressedDeliveries[kind, default: 0] += 1
        return false
    }

    /// Whether a new session's start and end lines are written; if not,
    /// the session is counted.
    mutating func admitSessionLine(now: UInt64) -> Bool {
        if sessionBudget.admit(now: now) { return true }
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
        let deliveries = suppressedDeliveries.values.reduce(0, +)
        if deliveries > 0 {
            let detail = suppressedDeliveries.sorted { $0.key < $1.key }
                .map { "\($0.key.name)=\($0.value)" }.joined(separator: " ")
            lines.append("suppressed \(deliveries) posted failure delivery line(s) in the last \(format(seconds)) s: \(detail)")
        }
        if suppressedSessions > 0 {
            lines.append("suppressed the start and end lines of \(suppressedSessions) session(s) in the last \(format(seconds)) s")
        }
        windowStart = now
        suppressedSessions = 0
        suppressed.removeAll(keepingCapacity: true)
        suppressedDeliveries.removeAll(keepingCapacity: true)
        rateLimited.removeAll(keepingCapacity: true)
        return lines
    }

    private func format(_ seconds: Double) -> String {
        let tenths = Int((seconds * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }
}
