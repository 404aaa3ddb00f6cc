// SPDX-License-Identifier: MIT
/// The ioreq servers one client session created. A session may name only
/// these: Xen itself lets any dom0 emulator drive any server of the guest
/// (xen/common/ioreq.c checks only that the caller is the guest's device
/// model domain), so a second or reconnected client could otherwise take
/// over the first one's servers.
public struct OwnedIoreqServers: Equatable, Sendable {
    /// Xen allows 8 servers per domain (MAX_NR_IOREQ_SERVERS); a bound keeps
    /// the set small whatever happens.
    public static let capacity = 64
    public private(set) var ids: [UInt16] = []

    public init(_ ids: [UInt16] = []) {
        for id in ids { insert(id) }
    }

    @inline(__always)
    public func contains(_ id: UInt16) -> Bool { ids.contains(id) }

    public mutating func insert(_ id: UInt16) {
        guard !ids.contains(id), ids.count < Self.capacity else { return }
        ids.append(id)
    }

    public mutating func remove(_ id: UInt16) {
        ids.removeAll { $0 == id }
    }

    /// Follows a call the hypervisor completed with rc 0: a created server
    /// joins the set (its id as Xen wrote it back), a destroyed one leaves.
    public mutating func update(after op: OpSpec, header: UnsafeRawBufferPointer) {
        switch op.ioreqServer {
        case .none, .names: return
        case .creates(let field):
            if let id = field.value(in: header) { insert(UInt16(truncatingIfNeeded: id)) }
        case .destroys(let field):
            if let id = field.value(in: header) { remove(UInt16(truncatingIfNeeded: id)) }
        }
    }
}

/// A per-op rate limit of a policy rule: `rate N/s burst M`.
public struct RateLimit: Equatable, Sendable, CustomStringConvertible {
    public let perSecond: UInt64
    public let burst: UInt64
    /// Parser bound: keeps the bucket's fixed-point arithmetic in range.
    public static let maximum: UInt64 = 1_000_000_000

    public init(perSecond: UInt64, burst: UInt64) {
        self.perSecond = perSecond
        self.burst = burst
    }

    public var description: String { "rate \(perSecond)/s burst \(burst)" }
}

/// A token bucket in integer nanosecond arithmetic: deterministic for a
/// given sequence of timestamps, so it can be tested without a clock.
public struct TokenBucket: Sendable {
    public let limit: RateLimit
    /// Tokens times 1e9 (one token = one request).
    private var scaledTokens: UInt64
    private var last: UInt64
    private static let scale: UInt64 = 1_000_000_000

    public init(_ limit: RateLimit, now: UInt64) {
        self.limit = limit
        scaledTokens = limit.burst * Self.scale
        last = now
    }

    /// Takes one token if there is one. `now` is monotonic nanoseconds.
    public mutating func admit(now: UInt64) -> Bool {
        if now > last {
            let capacity = limit.burst * Self.scale
            // Past the time to refill completely, more elapsed time changes
            // nothing; clamping keeps the product below 2^64.
            let elapsed = min(now - last, capacity / max(limit.perSecond, 1) + 1)
            scaledTokens = min(capacity, scaledTokens + elapsed * limit.perSecond)
            last = now
        }
        guard scaledTokens >= Self.scale else { return false }
        scaledTokens -= Self.scale
        return true
    }
}

/// Rate-limit state of a broker: one bucket per rule that has a limit. A
/// class: the request handler shares it with nothing, and a reference keeps
/// exclusivity checks off requests whose rule has no limit.
public final class RateLimiter {
    private var buckets: [TokenBucket?]

    public init(policy: Policy, now: UInt64) {
        buckets = (0...Catalogue.highestNumber).map { number in
            policy.rule(forOp: UInt32(number))?.rateLimit.map { TokenBucket($0, now: now) }
        }
    }

    /// True when `op` may go now (always, for ops without a limit).
    public func admit(op: UInt32, now: UInt64) -> Bool {
        guard op < UInt32(buckets.count), buckets[Int(op)] != nil else { return true }
        return buckets[Int(op)]!.admit(now: now)
    }
}
