// SPDX-License-Identifier: MIT
import DMOPCore
import DMOPPosix
@testable import DMOPServer
import Foundation
import Glibc
import Testing

/// The audit's line budgets (dmop-broker(8), Audit log): refusals and
/// deliveries of posted failures each have their own budget and their own
/// exact counts, and what one client can add is bounded. The throttle is
/// driven with its own clock (nanoseconds given by the test): no timing.
@Suite("Audit budgets: refusals and posted failures apart, a bounded hostile rate")
struct AuditBudgetTests {
    static let second: UInt64 = 1_000_000_000

    @Test("in any minute each budget admits at most burst + 60 s / spacing lines (60), and counts every other line exactly")
    func budgetArithmetic() {
        var throttle = AuditThrottle(now: 0)
        var admitted = 0, offered = 0, counted = 0
        var admittedAt: [UInt64] = []
        // 1000 refusals a second for three minutes.
        for ms in 0..<UInt64(180_000) {
            let now = ms * 1_000_000
            offered += 1
            if throttle.admitRefusalLine(.opNotAllowed, now: now) {
                admitted += 1
                admittedAt.append(now)
            }
            for line in throttle.summaries(now: now) where line.hasPrefix("suppressed ") {
                counted += Self.number(after: "OP_NOT_ALLOWED=", in: line)
            }
        }
        for line in throttle.summaries(now: 180 * Self.second, force: true) {
            counted += Self.number(after: "OP_NOT_ALLOWED=", in: line)
        }
        #expect(admitted + counted == offered, "\(admitted) lines + \(counted) counted of \(offered)")
        let perMinute = AuditThrottle.lineBurst + Int(60 * Self.second / AuditThrottle.lineSpacing)
        #expect(perMinute == 60)
        // Every window of a minute, starting at any admitted line.
        for (index, start) in admittedAt.enumerated() {
            let inWindow = admittedAt[index...].prefix { $0 < start + 60 * Self.second }.count
            #expect(inWindow <= perMinute, "\(inWindow) lines in the minute from \(start) ns")
        }
        // The burst at once, then the sustained rate: one at 6 s, 12 s, ... 174 s.
        #expect(admitted == 50 + 29, "\(admitted)")
    }

    @Test("a flood of posted hypervisor failures uses up neither the refusal budget nor its count")
    func deliveriesApartFromRefusals() {
        var throttle = AuditThrottle(now: 0)
        var deliveryLines = 0
        for i in 0..<UInt64(10_000) where throttle.admitDeliveryLine(.hypervisor, now: i * 100_000) {
            deliveryLines += 1
        }
        #expect(deliveryLines == AuditThrottle.lineBurst)
        // One real refusal, within the same second: its own line.
        let refusalAdmitted = throttle.admitRefusalLine(.opNotAllowed, now: 1_000_000_000)
        #expect(refusalAdmitted)
        let lines = throttle.summaries(now: 11 * Self.second)
        #expect(lines == ["suppressed 9950 posted failure delivery line(s) in the last 11.0 s: hypervisor=9950"], "\(lines)")
        #expect(!lines.joined().contains("OP_NOT_ALLOWED"))
    }

    @Test("a posted refusal's delivery is counted by its reason, a hypervisor failure as hypervisor, in one summary line")
    func deliveryKindsCounted() {
        var throttle = AuditThrottle(now: 0)
        for _ in 0..<AuditThrottle.lineBurst { _ = throttle.admitDeliveryLine(.hypervisor, now: 0) }
        var admitted = 0
        for _ in 0..<3 where throttle.admitDeliveryLine(.refused(.conditionFailed), now: 0) { admitted += 1 }
        for _ in 0..<2 where throttle.admitDeliveryLine(.hypervisor, now: 0) { admitted += 1 }
        #expect(admitted == 0)
        let early = throttle.summaries(now: 5 * Self.second)
        #expect(early == [], "not before the interval")
        let due = throttle.summaries(now: 10 * Self.second)
        #expect(due == ["suppressed 5 posted failure delivery line(s) in the last 10.0 s: CONDITION_FAILED=3 hypervisor=2"])
    }

    /// Against a real broker: 300 posted MSIs that Xen refuses (vector 0,
    /// no pirq: -ERANGE), each delivered by a call that waits, then one
    /// request the policy does not allow. The refusal keeps its line; the
    /// deliveries are counted as hypervisor failures, not as refusals.
    @Test("a single real refusal's line survives a flood of posted hypervisor failures")
    func refusalSurvivesPostedFailureFlood() throws {
        let policy = TestSupport.packageRoot.appendingPathComponent("Tests/clib/posted.policy").path
        let (broker, peer) = try Hostile.session(policy: policy)
        let failing = Hostile.header("inject_msi", ["addr": 0, "data": 0])
        let rounds = 300
        for round in 0..<rounds {
            let id = UInt32(2 * round)
            try peer.send(Wire.encodeRequest(domid: 5, requestID: id, buffers: [failing], flags: Wire.requestFlagPosted))
            try peer.request(id: id + 1, [Hostile.header("nr_vcpus")])
            let reply = peer.expectReply(id: id + 1, result: 0, reason: nil)
            #expect(reply?.postedFailure?.result == -ERANGE && reply?.postedFailure?.origin == .hypervisor)
        }
        try peer.request(id: 10_000, [Hostile.header("relocate_memory", ["size": 1])])
        peer.expectReply(id: 10_000, result: -EPERM, reason: .opNotAllowed)
        peer.close()
        Hostile.expectExit(broker, 0)
        let lines = broker.auditLog.split(separator: "\n")
        #expect(lines.contains { $0.contains("op=relocate_memory verdict=refuse reason=OP_NOT_ALLOWED") },
                "the refusal lost its line:\n\(broker.auditLog)")
        let delivered = lines.filter { $0.contains(" posted failure delivered: ") }.count
        let counted = lines.filter { $0.contains(" posted failure delivery line(s) ") }
            .map { Self.number(after: "hypervisor=", in: $0) }.reduce(0, +)
        #expect(delivered + counted == rounds, "\(delivered) lines + \(counted) counted")
        #expect(!lines.contains { $0.contains("suppressed") && $0.contains("OP_NOT_ALLOWED") }, "\(broker.auditLog)")
    }

    /// --listen: 80 connections, each sending one malformed datagram (bad
    /// magic). Each session's protocol-error line shares the session's
    /// budget: a burst of 20 sessions, then one a second; the rest counted.
    @Test("a reconnection flood of malformed datagrams: protocol-error lines within the session budget, the rest counted")
    func protocolErrorFlood() throws {
        let broker = try BrokerUnderTest(mode: .listen)
        let started = Date()
        let sessions = 80
        for _ in 0..<sessions {
            let connection = try broker.rawConnection()
            try SeqPacket.send(connection.rawValue, [UInt8](repeating: 0xff, count: 16))
            var buffer = [UInt8](repeating: 0, count: 256)
            _ = buffer.withUnsafeMutableBytes { read(connection.rawValue, $0.baseAddress, $0.count) }
            connection.close()
        }
        let seconds = Int(Date().timeIntervalSince(started)) + 1
        kill(broker.pid, SIGTERM)
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 0)
        let lines = broker.auditLog.split(separator: "\n")
        let errors = lines.filter { $0.contains(" protocol error: ") }.count
        let starts = lines.filter { $0.contains(" session start: ") }.count
        let counted = lines.map { Self.number(after: "suppressed the start and end lines of ", in: $0) }.reduce(0, +)
        #expect(errors == starts, "\(errors) protocol-error lines for \(starts) logged sessions")
        #expect(errors <= AuditThrottle.sessionBurst + seconds, "\(errors) protocol-error lines in \(seconds) s")
        #expect(starts + counted == sessions, "\(starts) logged + \(counted) counted")
    }

    static func number(after key: String, in line: some StringProtocol) -> Int {
        guard let range = line.range(of: key) else { return 0 }
        return Int(line[range.upperBound...].prefix { $0.isNumber }) ?? 0
    }
}

/// The journal's fields (dmop-broker(8), --audit-log journal): a session
/// end's reason is not a refusal reason, and aggregated forwards carry
/// their failures.
@Suite("Audit: journal fields")
struct JournalFieldTests {
    static func fields(_ message: String) -> [String: String] {
        Dictionary(AuditSink.journalFieldPairs(message).map { ($0.field, $0.value) }) { first, _ in first }
    }

    @Test("DMOP_REASON holds refusal reasons only; a session end's reason is DMOP_END_REASON")
    func reasonsApart() {
        let end = Self.fields("session end: peer_pid=7 reason=hang-up requests=3 forwarded=2 refused=1 audit_lost=0")
        #expect(end["DMOP_END_REASON"] == "hang-up" && end["DMOP_REASON"] == nil, "\(end)")
        #expect(end["DMOP_PEER_PID"] == "7")
        let quoted = Self.fields("session end: peer_pid=7 reason=\"protocol-error:BAD_MAGIC\" requests=1")
        #expect(quoted["DMOP_END_REASON"] == "protocol-error:BAD_MAGIC" && quoted["DMOP_REASON"] == nil)
        let refusal = Self.fields("peer_pid=7 peer_uid=0 domid=5 op=nr_vcpus verdict=refuse reason=OP_NOT_ALLOWED rule=- rc=-1 latency_us=3 detail=\"no\"")
        #expect(refusal["DMOP_REASON"] == "OP_NOT_ALLOWED" && refusal["DMOP_END_REASON"] == nil, "\(refusal)")
    }

    @Test("an aggregated forwards entry carries DMOP_COUNT and DMOP_FAILED")
    func forwardsFailures() {
        let forwards = Self.fields("forwards: peer_pid=7 peer_uid=0 domid=5 op=inject_msi verdict=forward rule=p:3 count=20 failed=4 latency_us_max=9 seconds=10.0")
        #expect(forwards["DMOP_COUNT"] == "20" && forwards["DMOP_FAILED"] == "4" && forwards["DMOP_OP"] == "inject_msi", "\(forwards)")
    }
}
