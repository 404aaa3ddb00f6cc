// SPDX-License-Identifier: MIT
import CPosix
import DMOPCore
import DMOPPosix
import Logging

/// `--audit-forwards`: one line per forwarded DMOP, or one per op per
/// interval with counts (the default: a busy guest makes tens of thousands
/// of forwards a second).
public enum AuditForwards: String, Sendable, CaseIterable {
    case aggregate, each
}

/// `--audit-failure`: what the broker does while its audit channel cannot
/// take forward lines (file full, daemon gone).
public enum AuditFailure: String, Sendable, CaseIterable {
    /// Refuse forwards with AUDIT_UNAVAILABLE until the channel works again.
    case refuse
    /// Go on forwarding; the lost lines are counted and reported.
    case `continue`
}

public struct AuditOptions: Sendable {
    public var forwards: AuditForwards
    public var failure: AuditFailure
    /// How long forwards are summed before their line is written (at the
    /// first request after it, at session end, and on SIGUSR1).
    public var interval: UInt64

    public init(forwards: AuditForwards = .each, failure: AuditFailure = .refuse,
                interval: UInt64 = 10_000_000_000) {
        self.forwards = forwards
        self.failure = failure
        self.interval = interval
    }
}

/// Forwards per op in the current interval, for the aggregated lines; and
/// the broker's totals for the SIGUSR1 stats line. Indexed by op number (the
/// catalogue's numbers are small): no allocation per request.
final class RequestCounters {
    struct PerOp {
        var count: UInt64 = 0
        var failed: UInt64 = 0
        var maxLatency: UInt64 = 0
        var rule = ""
    }

    static let slots = Int(Catalogue.ops.map(\.number).max() ?? 0) + 2
    /// The slot of requests naming no known op.
    static let unknownSlot = slots - 1

    var interval: [PerOp] = Array(repeating: PerOp(), count: slots)
    var intervalStart: UInt64
    var intervalUsed = false

    let started: UInt64
    var sessions: UInt64 = 0
    var requests: UInt64 = 0
    /// Changed on every request: unchecked (see Unchecked).
    let forwarded = Unchecked([UInt64](repeating: 0, count: slots))
    let refused = Unchecked([UInt64](repeating: 0, count: slots))
    var rateLimited: UInt64 = 0
    /// Posted requests (protocol 2) since start, for the stats line.
    var posted: UInt64 = 0
    /// Each op's forward line up to its rc, made at its first forward: a
    /// policy has one rule per op and never changes while the broker runs.
    let forwardLineStarts = Unchecked([ForwardLineStart?](repeating: nil, count: slots))

    init(now: UInt64) {
        started = now
        intervalStart = now
    }

    static func slot(_ opNumber: UInt32?) -> Int {
        guard let opNumber, Int(opNumber) < unknownSlot else { return unknownSlot }
        return Int(opNumber)
    }

    static func name(ofSlot slot: Int) -> String {
        slot == unknownSlot ? "unknown" : (Catalogue.op(number: UInt32(slot))?.name ?? "op\(slot)")
    }
}

/// What every forward line of one op, peer and domid has in common:
/// "peer_pid=P peer_uid=U domid=D op=NAME verdict=forward rule=RULE rc=".
struct ForwardLineStart {
    let peer: SeqPacket.Credentials
    let domid: UInt16
    let bytes: [UInt8]

    init(_ peer: SeqPacket.Credentials, _ domid: UInt16, _ opName: String, _ rule: String) {
        self.peer = peer
        self.domid = domid
        let value = Logfmt.needsQuoting(rule) ? Logfmt.quote(rule) : rule
        bytes = Array("peer_pid=\(peer.pid) peer_uid=\(peer.uid) domid=\(domid) op=\(opName) verdict=forward rule=\(value) rc=".utf8)
    }
}

extension BrokerServer {
    func auditForward(_ peer: SeqPacket.Credentials, _ domid: UInt16, _ op: OpSpec, _ rule: String,
                      _ rc: Int32, _ latencyMicros: UInt64) {
        counters.forwarded.value[Int(op.number)] += 1
        if auditOptions.forwards == .aggregate {
            let slot = Int(op.number)
            counters.interval[slot].count += 1
            if rc != 0 { counters.interval[slot].failed += 1 }
            counters.interval[slot].maxLatency = max(counters.interval[slot].maxLatency, latencyMicros)
            if counters.interval[slot].rule != rule { counters.interval[slot].rule = rule }
            counters.intervalUsed = true
            return
        }
        guard let line = auditLines else {
            audit.info("peer_pid=\(peer.pid) peer_uid=\(peer.uid) domid=\(domid) op=\(op.name) verdict=forward rule=\(Logfmt.quote(rule)) rc=\(rc) latency_us=\(latencyMicros)")
            return
        }
        let slot = Int(op.number)
        let start: ForwardLineStart
        if let known = counters.forwardLineStarts.value[slot], known.peer == peer, known.domid == domid {
            start = known
        } else {
            start = ForwardLineStart(peer, domid, op.name, rule)
            counters.forwardLineStarts.value[slot] = start
        }
        // SAFETY: forwardLine copies the bytes into its buffers and keeps no pointer.
        start.bytes.withUnsafeBufferPointer { line.forwardLine(start: $0, rc: rc, latencyMicros: latencyMicros) }
    }

    /// "peer_pid=P peer_uid=U domid=D op=NAME": how every request line starts.
    private func appendRequest(_ line: AuditLineWriter, _ peer: SeqPacket.Credentials, _ domid: UInt16, _ opName: String) {
        line.append("peer_pid="); line.append(peer.pid)
        line.append(" peer_uid="); line.append(peer.uid)
        line.append(" domid="); line.append(domid)
        line.append(" op="); line.append(string: opName)
    }

    func auditRefusal(_ peer: SeqPacket.Credentials, _ domid: UInt16, _ opName: String, _ reason: ReasonCode,
                      _ rc: Int32, _ latencyMicros: UInt64, _ detail: String) {
        guard let line = auditLines else {
            audit.notice("peer_pid=\(peer.pid) peer_uid=\(peer.uid) domid=\(domid) op=\(opName) verdict=refuse reason=\(reason.name) rule=- rc=\(rc) latency_us=\(latencyMicros) detail=\(Logfmt.quote(detail))")
            return
        }
        guard line.begin(.notice, .refusal) else { return }
        appendRequest(line, peer, domid, opName)
        line.append(" verdict=refuse reason="); line.append(string: reason.name)
        line.append(" rule=- rc="); line.append(rc)
        line.append(" latency_us="); line.append(latencyMicros)
        // Always quoted, as before: the detail is words.
        line.append(" detail="); line.append(string: Logfmt.quote(detail).quotedAlways)
        line.end()
    }

    /// The aggregated forward lines of the interval, once it is over (or at
    /// `force`): one per op, with its count, failures, worst latency.
    func flushForwardCounts(_ peer: SeqPacket.Credentials, now: UInt64, force: Bool) {
        guard counters.intervalUsed, force || now &- counters.intervalStart >= auditOptions.interval else {
            if !counters.intervalUsed { counters.intervalStart = now }
            return
        }
        let tenths = (now &- counters.intervalStart) / 100_000_000
        for slot in counters.interval.indices where counters.interval[slot].count > 0 {
            let tally = counters.interval[slot]
            counters.interval[slot] = RequestCounters.PerOp()
            guard let line = auditLines else {
                audit.info("forwards: peer_pid=\(peer.pid) peer_uid=\(peer.uid) domid=\(domid) op=\(RequestCounters.name(ofSlot: slot)) verdict=forward rule=\(Logfmt.quote(tally.rule)) count=\(tally.count) failed=\(tally.failed) latency_us_max=\(tally.maxLatency) seconds=\(tenths / 10).\(tenths % 10)")
                continue
            }
            guard line.begin(.info, .bulk) else { continue }
            line.append("forwards: ")
            appendRequest(line, peer, domid, RequestCounters.name(ofSlot: slot))
            line.append(" verdict=forward rule="); line.append(value: tally.rule)
            line.append(" count="); line.append(tally.count)
            line.append(" failed="); line.append(tally.failed)
            line.append(" latency_us_max="); line.append(tally.maxLatency)
            line.append(" seconds="); line.append(tenths / 10); line.append("."); line.append(tenths % 10)
            line.end()
        }
        // One line per op per interval: no reason to hold them back.
        auditLines?.writeBatch()
        counters.intervalUsed = false
        counters.intervalStart = now
    }

    /// The refusal that replaces a forward while the audit channel cannot
    /// take its line and --audit-failure is refuse.
    var auditRefusesForwards: Bool {
        auditOptions.failure == .refuse && !(auditLines?.acceptsBulk ?? true)
    }

    /// SIGHUP and SIGUSR1, taken between requests.
    public func handleRuntimeSignals(_ peer: SeqPacket.Credentials? = nil) {
        if cposix_take_hangup() != 0 {
            // Batched lines belong to the file they were written for.
            auditLines?.writeBatch()
            let outcome = auditLines?.sink.reopen() ?? "nothing to reopen"
            audit.notice("SIGHUP: \(outcome)")
        }
        if cposix_take_stats_request() != 0 {
            if let peer { flushForwardCounts(peer, now: cposix_monotonic_ns(), force: true) }
            audit.info("\(statsLine(now: cposix_monotonic_ns()))")
        }
    }

    /// "stats: uptime_s=.. sessions=.. requests=.. forwarded=.. refused=..
    /// rate_limited=.. audit_lost=.. forwarded.OP=N refused.OP=N ..."
    func statsLine(now: UInt64) -> String {
        let forwarded = counters.forwarded.value.reduce(0, +)
        let refused = counters.refused.value.reduce(0, +)
        var text = "stats: uptime_s=\((now &- counters.started) / 1_000_000_000) sessions=\(counters.sessions) requests=\(counters.requests) forwarded=\(forwarded) refused=\(refused) rate_limited=\(counters.rateLimited) posted=\(counters.posted) audit_lost=\(auditLines?.sink.lost ?? 0)"
        for slot in 0..<RequestCounters.slots where counters.forwarded.value[slot] > 0 {
            text += " forwarded.\(RequestCounters.name(ofSlot: slot))=\(counters.forwarded.value[slot])"
        }
        for slot in 0..<RequestCounters.slots where counters.refused.value[slot] > 0 {
            text += " refused.\(RequestCounters.name(ofSlot: slot))=\(counters.refused.value[slot])"
        }
        return text
    }
}

private extension String {
    /// A detail is quoted even when one word, as the lines always had it.
    var quotedAlways: String { hasPrefix("\"") ? self : "\"\(self)\"" }
}
