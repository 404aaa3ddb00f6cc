// SPDX-License-Identifier: MIT
import CXen
import DMOPClient
import DMOPCore
import DMOPTrusted
import DMOPSimulation
import Foundation
import Glibc
import Testing

/// Ownership of ioreq servers, rate limits, and the bounded audit log:
/// the pure parts, then end to end.
@Suite("Session rules: ownership, rate limits, audit bounds", .serialized)
struct SessionRulesTests {
    @Test("ownership: ioreq server ops need an id the session created")
    func ownershipDecision() throws {
        let policy = try Policy.parse("""
        allow get_ioreq_server_info
        allow map_io_range_to_ioreq_server
        allow unmap_io_range_from_ioreq_server
        allow set_ioreq_server_state
        allow destroy_ioreq_server
        allow map_mem_type_to_ioreq_server
        allow create_ioreq_server
        """, file: "o.policy")
        let owned = OwnedIoreqServers([0, 3])
        for name in ["get_ioreq_server_info", "map_io_range_to_ioreq_server", "unmap_io_range_from_ioreq_server",
                     "set_ioreq_server_state", "destroy_ioreq_server", "map_mem_type_to_ioreq_server"] {
            for (id, allowed) in [(0, true), (3, true), (1, false), (0xffff, false)] {
                let bytes = TestSupport.op(name).encodeHeader(["id": UInt64(id)])
                let decision = bytes.withUnsafeBytes { header in
                    [header].withUnsafeBufferPointer {
                        decide(restrictedDomid: 5, policy: policy, request: DMOPRequest(domid: 5, buffers: $0), owned: owned)
                    }
                }
                if allowed {
                    #expect(decision.isForward, "\(name) id \(id): \(decision)")
                } else if case .refuse(let reason, _) = decision {
                    #expect(reason == .notOwner, "\(name) id \(id)")
                } else {
                    Issue.record("\(name) id \(id) forwarded")
                }
            }
        }
        // create names no server: ownership does not apply.
        #expect(TestSupport.decideBytes(policy: policy, [TestSupport.op("create_ioreq_server").encodeHeader()]).isForward)
    }

    @Test("an id the session does not own gets Xen's errno for an absent server (ENOENT), on every op that names one")
    func notOwnedLooksAbsent() throws {
        let ops = Catalogue.ops.filter { $0.ioreqServerField != nil }
        #expect(ops.map(\.name).sorted() == ["destroy_ioreq_server", "get_ioreq_server_info", "map_io_range_to_ioreq_server",
                                             "map_mem_type_to_ioreq_server", "set_ioreq_server_state",
                                             "unmap_io_range_from_ioreq_server"])
        let policy = try Policy.parse(ops.map { "allow \($0.name)" }.joined(separator: "\n"), file: "o.policy")
        // Otherwise valid arguments, so that Xen's answer is about the id.
        let valid: [String: [String: UInt64]] = [
            "get_ioreq_server_info": ["flags": 1],
            "map_io_range_to_ioreq_server": ["type": 0, "start": 0x3f8, "end": 0x3ff],
            "unmap_io_range_from_ioreq_server": ["type": 0, "start": 0x3f8, "end": 0x3ff],
            "set_ioreq_server_state": ["enabled": 1],
            "map_mem_type_to_ioreq_server": ["type": UInt64(HVMMEM_ioreq_server.rawValue),
                                             "flags": UInt64(XEN_DMOP_IOREQ_MEM_ACCESS_WRITE)],
        ]
        let xen = try SimulatedHypervisor(guestDomid: 5)
        for op in ops {
            let header = op.encodeHeader((valid[op.name] ?? [:]).merging(["id": 7]) { $1 })
            guard case .refuse(let reason, _) = TestSupport.decideBytes(policy: policy, [header]) else {
                Issue.record("\(op.name) of a server nobody created was forwarded"); continue
            }
            #expect(reason == .notOwner, "\(op.name)")
            let rc = DMOP.withBuffers(sizes: [header.count], fill: [header]) { xen.dmOp(domid: 5, buffers: $0) }
            #expect(rc == -ENOENT, "\(op.name): the model of Xen says \(rc)")
            #expect(-reason.errno == rc, "\(op.name): broker \(-reason.errno), Xen \(rc)")
        }
    }

    @Test("the owned set follows create and destroy as Xen completed them, and stays bounded")
    func ownershipUpdates() {
        var owned = OwnedIoreqServers()
        let create = TestSupport.op("create_ioreq_server")
        create.encodeHeader(["id": 7]).withUnsafeBytes { owned.update(after: create, header: $0) }
        #expect(owned.ids == [7])
        let state = TestSupport.op("set_ioreq_server_state")
        state.encodeHeader(["id": 7]).withUnsafeBytes { owned.update(after: state, header: $0) }
        #expect(owned.ids == [7])
        let destroy = TestSupport.op("destroy_ioreq_server")
        destroy.encodeHeader(["id": 7]).withUnsafeBytes { owned.update(after: destroy, header: $0) }
        #expect(owned.ids.isEmpty)
        var full = OwnedIoreqServers()
        for id in 0..<1000 { full.insert(UInt16(id)) }
        #expect(full.ids.count == OwnedIoreqServers.capacity)
    }

    @Test("token bucket: burst, refill, no overflow on long gaps")
    func tokenBucket() throws {
        var bucket = TokenBucket(RateLimit(perSecond: 10, burst: 3), now: 0)
        var admitted: [Bool] = []
        for _ in 0..<5 { admitted.append(bucket.admit(now: 0)) }
        admitted.append(bucket.admit(now: 99_000_000))    // 0.099 s: not yet one token
        admitted.append(bucket.admit(now: 100_000_000))   // 0.1 s: one token
        admitted.append(bucket.admit(now: 100_000_000))
        for _ in 0..<4 { admitted.append(bucket.admit(now: UInt64.max / 2)) }  // a long gap refills the burst only
        #expect(admitted == [true, true, true, false, false, false, true, false, true, true, true, false])

        var fast = TokenBucket(RateLimit(perSecond: RateLimit.maximum, burst: RateLimit.maximum), now: 0)
        let fastAdmitted = fast.admit(now: UInt64.max)
        #expect(fastAdmitted)

        var limiter = RateLimiter(policy: try Policy.parse("allow inject_msi rate 1/s burst 1\nallow nr_vcpus", file: "r"), now: 0)
        let limited = [limiter.admit(op: 14, now: 1), limiter.admit(op: 14, now: 2)]
        let unlimited = [limiter.admit(op: 20, now: 2), limiter.admit(op: 20, now: 2), limiter.admit(op: 9999, now: 2)]
        #expect(limited == [true, false])
        #expect(unlimited == [true, true, true])
    }

    @Test("ownership end to end: a second session cannot drive the first one's server")
    func ownership() throws {
        let broker = try BrokerUnderTest(mode: .listen)
        let first = try broker.connect()
        let id = try first.createIoreqServer()
        // Never created by anyone: refused before Xen could say ENOENT.
        let unknown = try first.invoke("set_ioreq_server_state", ["id": UInt64(id) + 1, "enabled": 1])
        #expect(unknown.reason == .notOwner)
        first.close()
        usleep(100_000)
        let second = try broker.connect()
        for op in ["get_ioreq_server_info", "set_ioreq_server_state", "destroy_ioreq_server"] {
            let reply = try second.invoke(op, ["id": UInt64(id)])
            #expect(reply.reason == .notOwner && reply.result == -ENOENT, "\(op)")
        }
        let map = try second.invoke("map_io_range_to_ioreq_server", ["id": UInt64(id), "type": 0, "start": 0x60, "end": 0x60])
        #expect(map.reason == .notOwner)
        // The first session's server went with it (Xen may reuse the id).
        #expect(broker.auditLog.contains("ioreq server destroyed at session end: peer_pid="))
        #expect(broker.auditLog.contains("id=\(id) rc=0"))
        let own = try second.createIoreqServer()
        _ = try second.perform("map_io_range_to_ioreq_server", ["id": UInt64(own), "type": 0, "start": 0x60, "end": 0x60])
        second.close()
        usleep(100_000)
        kill(broker.pid, SIGTERM)
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 0)
        #expect(broker.records.map(\.op) == [1, 6, 1, 3, 6])
        #expect(broker.auditLog.contains("reason=NOT_OWNER"))
    }

    @Test("rate limits: over the limit is EAGAIN, logged as one aggregated line")
    func rateLimit() throws {
        let directory = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let policy = directory.appendingPathComponent("rate.policy").path
        try "allow inject_msi rate 1/s burst 5\nallow set_isa_irq_level\n".write(toFile: policy, atomically: true, encoding: .utf8)
        let broker = try BrokerUnderTest(policy: policy)
        let client = try broker.connect()
        var results: [Int32] = []
        for _ in 0..<20 {
            let reply = try client.invoke("inject_msi", ["addr": 0xfee0_0000, "data": 1])
            results.append(reply.result)
            if reply.result != 0 { #expect(reply.reason == .rateLimited && reply.origin == .broker) }
        }
        // 5 from the burst; at most one more if a second passed meanwhile.
        let admitted = results.filter { $0 == 0 }.count
        #expect(admitted == 5 || admitted == 6)
        #expect(results.filter { $0 == -EAGAIN }.count == 20 - admitted)
        #expect(try client.invoke("set_isa_irq_level", ["isa_irq": 1]).result == 0)
        client.close()
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 0)
        #expect(broker.records.filter { $0.op == 14 }.count == admitted)
        let log = broker.auditLog
        #expect(!log.contains("reason=RATE_LIMITED"))
        #expect(log.contains("rate limit: op=inject_msi refused=\(20 - admitted)"))
    }

    @Test("a flood of refusals keeps the audit log bounded, every refusal accounted for")
    func refusalFlood() throws {
        let broker = try BrokerUnderTest()
        let client = try broker.connect()
        let header = TestSupport.op("nr_vcpus").encodeHeader()
        // In windows of 8: a SEQPACKET peer's queue is short, and a client that
        // never reads would block the broker's replies (and so itself).
        for _ in 0..<250 {
            for _ in 0..<8 { try client.send(buffers: [header]) }
            for _ in 0..<8 { #expect(try client.nextReply().reason == .opNotAllowed) }
        }
        client.close()
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 0)
        let lines = broker.auditLog.split(separator: "\n")
        let refusalLines = lines.filter { $0.contains("verdict=refuse") }.count
        #expect(refusalLines <= 100, "\(refusalLines) refusal lines")
        let counted = lines.filter { $0.contains("suppressed") }.compactMap { line -> Int? in
            guard let range = line.range(of: "OP_NOT_ALLOWED=") else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }.reduce(0, +)
        #expect(counted > 0)
        #expect(refusalLines + counted == 2000)
    }
}
