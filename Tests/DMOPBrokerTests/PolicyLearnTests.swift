// SPDX-License-Identifier: MIT
import DMOPCore
import Foundation
import Testing

@Suite("policy learn")
struct PolicyLearnTests {
    @Test("audit lines: forwarded and policy-denied ops are learned; hostile refusals are not")
    func auditLines() throws {
        var learner = PolicyLearner()
        learner.addSource("a.log")
        let lines = [
            "2026-11-22T04:18:24Z dmop-broker[1] info peer_pid=2 peer_uid=0 domid=5 op=set_isa_irq_level verdict=forward rule=p:1 rc=0 latency_us=3",
            "2026-11-22T04:18:24Z dmop-broker[1] info peer_pid=2 peer_uid=0 domid=5 op=set_isa_irq_level verdict=forward rule=p:1 rc=0 latency_us=3",
            "2026-11-22T04:18:24Z dmop-broker[1] notice peer_pid=2 peer_uid=0 domid=5 op=nr_vcpus verdict=refuse reason=OP_NOT_ALLOWED rule=- rc=-1",
            "2026-11-22T04:18:24Z dmop-broker[1] notice peer_pid=2 peer_uid=0 domid=6 op=inject_event verdict=refuse reason=DOMID_MISMATCH rule=- rc=-1",
            "2026-11-22T04:18:24Z dmop-broker[1] notice peer_pid=2 peer_uid=0 domid=5 op=inject_msi verdict=refuse reason=CONDITION_FAILED rule=- rc=-1",
            "2026-11-22T04:18:24Z dmop-broker[1] notice peer_pid=2 peer_uid=0 domid=5 op=op99 verdict=refuse reason=OP_UNKNOWN rule=- rc=-1",
            "2026-11-22T04:18:24Z dmop-broker[1] info session start: peer_pid=2 peer_uid=0 domid=5",
        ]
        for line in lines { learner.noteAuditLine(Substring(line)) }
        #expect(learner.seen[9] == PolicyLearner.Seen(forwarded: 2, deniedByPolicy: 0, deniedByCondition: 0))
        #expect(learner.seen[20]?.deniedByPolicy == 1)
        #expect(learner.seen[14]?.deniedByCondition == 1)
        #expect(learner.seen[13] == nil)
        #expect(learner.ignored == 1)
        let policy = try Policy.parse(learner.render(), file: "learned")
        #expect(policy.rules.map(\.op.name) == ["set_isa_irq_level", "inject_msi", "nr_vcpus"])
    }

    @Test("record entries: ops by number; unknown numbers are left out and counted")
    func records() throws {
        var learner = PolicyLearner()
        for op in [1, 3, 3, 7, -1, 999] { learner.noteForwarded(opNumber: op) }
        #expect(learner.ignored == 2)
        let policy = try Policy.parse(learner.render(), file: "learned")
        #expect(policy.rules.map(\.op.name) == ["create_ioreq_server", "map_io_range_to_ioreq_server", "track_dirty_vram"])
        #expect(learner.render().contains("2 entr(ies) named no op"))
    }

    @Test("nothing seen: a policy that allows nothing, and says so")
    func empty() throws {
        let text = PolicyLearner().render()
        #expect(text.contains("allows nothing"))
        #expect(try Policy.parse(text, file: "learned").rules.isEmpty)
    }

    @Test("end to end: learn from a demo session's record and audit log")
    func fromDemoSession() throws {
        let broker = try BrokerUnderTest()
        let client = try broker.connect()
        _ = try client.createIoreqServer()
        _ = try client.invoke("set_isa_irq_level", ["isa_irq": 1, "level": 1])
        _ = try client.invoke("nr_vcpus")  // not in qemu-xen.policy
        client.connection.close()
        _ = broker.waitForExit()
        let fromRecord = try runBroker(["policy", "learn", "--record", broker.recordPath])
        #expect(fromRecord.status == 0)
        #expect(try Policy.parse(fromRecord.output, file: "r").rules.map(\.op.name) == ["create_ioreq_server", "set_isa_irq_level"])
        let fromAudit = try runBroker(["policy", "learn", "--audit", broker.auditPath])
        #expect(fromAudit.status == 0)
        #expect(try Policy.parse(fromAudit.output, file: "a").rules.map(\.op.name) == ["create_ioreq_server", "set_isa_irq_level", "nr_vcpus"])
        #expect(try runBroker(["policy", "learn"]).status == 64)
    }
}
