// SPDX-License-Identifier: MIT
import DMOPCore
import DMOPPolicyLearning
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
        client.close()
        _ = broker.waitForExit()
        let fromRecord = try runBroker(["policy", "learn", "--record", broker.recordPath])
        #expect(fromRecord.status == 0)
        // The record holds every call that reached the hypervisor: with the
        // broker's own destroy of the session's server at its end.
        #expect(try Policy.parse(fromRecord.output, file: "r").rules.map(\.op.name)
                == ["create_ioreq_server", "destroy_ioreq_server", "set_isa_irq_level"])
        // stderr: a log the device model could write; only with --trust-log.
        let fromStderr = try runBroker(["policy", "learn", "--audit", broker.auditPath])
        #expect(fromStderr.status == 64 && fromStderr.output.contains("--trust-log"), "\(fromStderr)")
        let fromAudit = try runBroker(["policy", "learn", "--trust-log", broker.auditPath])
        #expect(fromAudit.status == 0)
        #expect(try Policy.parse(fromAudit.output, file: "a").rules.map(\.op.name) == ["create_ioreq_server", "set_isa_irq_level", "nr_vcpus"])
        #expect(try runBroker(["policy", "learn"]).status == 64)
    }

    /// A session of create_ioreq_server, set_isa_irq_level and a refused
    /// nr_vcpus, audited as `arguments` say.
    func session(_ arguments: [String]) throws -> BrokerUnderTest {
        let broker = try BrokerUnderTest(extraArguments: arguments)
        let client = try broker.connect()
        _ = try client.createIoreqServer()
        _ = try client.invoke("set_isa_irq_level", ["isa_irq": 1, "level": 1])
        _ = try client.invoke("nr_vcpus")
        client.close()
        _ = broker.waitForExit()
        return broker
    }

    @Test("--audit: an --audit-log FILE is read; the same lines forged into a file by anyone else are refused")
    func auditFileTrusted() throws {
        let scratch = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: scratch) }
        let path = scratch.appendingPathComponent("audit.log").path
        _ = try session(["--audit-log", path])
        let learned = try runBroker(["policy", "learn", "--audit", path])
        #expect(learned.status == 0, "\(learned)")
        #expect(try Policy.parse(learned.output, file: "a").rules.map(\.op.name) == ["create_ioreq_server", "set_isa_irq_level", "nr_vcpus"])
        // QEMU's lines in the same file (what stderr under libxl looks like).
        let mixed = scratch.appendingPathComponent("mixed.log").path
        try (try String(contentsOfFile: path, encoding: .utf8) + "qemu-system-i386: -serial pty: char device redirected\n")
            .write(toFile: mixed, atomically: true, encoding: .utf8)
        chmod(mixed, 0o600)
        let refusedMixed = try runBroker(["policy", "learn", "--audit", mixed])
        #expect(refusedMixed.status == 64 && refusedMixed.output.contains("not the broker's"), "\(refusedMixed)")
        // World-writable: anyone could have written it.
        chmod(path, 0o666)
        let refusedMode = try runBroker(["policy", "learn", "--audit", path])
        #expect(refusedMode.status == 64 && refusedMode.output.contains("others may write"), "\(refusedMode)")
    }

    @Test("--journal: entries selected by the kernel's _PID are learned; --journal alone is refused",
          .enabled(if: AuditChannelTests.journalRunning || ProcessInfo.processInfo.environment["CI"] != nil))
    func journal() throws {
        try #require(AuditChannelTests.journalRunning, "journald is not running (.ci/run starts it)")
        // journald reads _COMM, which the learner selects on, from /proc as
        // an entry arrives: the broker stays alive until the entries are in.
        let broker = try BrokerUnderTest(extraArguments: ["--audit-log", "journal", "--audit-forwards", "each"])
        let client = try broker.connect()
        _ = try client.createIoreqServer()
        _ = try client.invoke("set_isa_irq_level", ["isa_irq": 1, "level": 1])
        _ = try client.invoke("nr_vcpus")
        var rules: [String] = []
        for _ in 0..<50 {
            let learned = try runBroker(["policy", "learn", "--journal", "--journal-pid", String(broker.pid)])
            #expect(learned.status == 0, "\(learned)")
            rules = (try? Policy.parse(learned.output, file: "j").rules.map(\.op.name)) ?? []
            if rules.count == 3 { break }
            usleep(100_000)
        }
        client.close()
        _ = broker.waitForExit()
        #expect(rules == ["create_ioreq_server", "set_isa_irq_level", "nr_vcpus"])
        let bare = try runBroker(["policy", "learn", "--journal"])
        #expect(bare.status == 64 && bare.output.contains("--journal-uid"), "\(bare)")
    }
}
