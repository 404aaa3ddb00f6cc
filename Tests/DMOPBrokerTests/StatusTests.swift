// SPDX-License-Identifier: MIT
import DMOPClient
import DMOPTooling
import Foundation
import Glibc
import Testing

/// `dmop-broker status` against two running simulated brokers (one confined
/// with --user) and a stand-in device model with -xen-domid for each of two
/// domains, one of them without a broker.
@Suite("dmop-broker status", .serialized)
struct StatusTests {
    @Test("two brokers with their ids, confinement and counters; the QEMU of each; a QEMU without a broker",
          .enabled(if: geteuid() == 0))
    func twoBrokers() throws {
        let logs = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: logs) }
        let first = try BrokerUnderTest(domid: 41, extraArguments: ["--user", "65534:65534", "--audit-log", logs.path + "/41.log",
                                                                    "--guest-name", "status-one"])
        let second = try BrokerUnderTest(domid: 42, extraArguments: ["--guest-name", "status two"])
        let one = try first.connect()
        for i in 0..<30 { _ = try one.invoke("set_isa_irq_level", ["isa_irq": UInt64(i % 16), "level": 1]) }
        _ = try one.invoke("nr_vcpus")
        let two = try second.connect()
        for _ in 0..<5 { _ = try two.invoke("set_isa_irq_level", ["isa_irq": 3, "level": 0]) }
        // Stand-ins for QEMU: their arguments name the domain as libxl's do.
        let qemu41 = try Spawn.start("/bin/sh", ["/bin/sh", "-c", "sleep 30", "-xen-domid", "41"])
        let qemu43 = try Spawn.start("/bin/sh", ["/bin/sh", "-c", "sleep 30", "-xen-domid", "43"])
        defer {
            for pid in [qemu41, qemu43] {
                kill(pid, SIGKILL)
                _ = try? Spawn.wait(pid)
            }
        }
        usleep(100_000)

        // Only these two: the other tests' brokers are not signalled.
        let only = ["--pid", String(first.pid), "--pid", String(second.pid)]
        let json = try runBroker(["status", "--format", "json"] + only)
        #expect(json.status == 0, "\(json.output)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any], "\(json.output)")
        let brokers = try #require(object["brokers"] as? [[String: Any]])
        var byPid: [Int: [String: Any]] = [:]
        for entry in brokers { if let pid = entry["pid"] as? Int { byPid[pid] = entry } }
        let a = try #require(byPid[Int(first.pid)], "broker \(first.pid) not listed: \(json.output)")
        let b = try #require(byPid[Int(second.pid)], "broker \(second.pid) not listed: \(json.output)")
        #expect(a["domid"] as? Int == 41 && a["guest"] as? String == "status-one")
        #expect(a["uid"] as? String == "65534" && a["gid"] as? String == "65534")
        #expect(a["seccomp"] as? String == "2" && a["no_new_privs"] as? String == "1")
        #expect(a["audit"] as? String == logs.path + "/41.log")
        #expect(a["requests"] as? Int == 31 && a["forwarded"] as? Int == 30 && a["refused"] as? Int == 1 && a["lost"] as? Int == 0, "\(a)")
        #expect(a["qemu_pid"] as? Int == Int(qemu41), "\(a)")
        #expect(b["domid"] as? Int == 42 && b["guest"] as? String == "status two" && b["uid"] as? String == "0")
        #expect(b["requests"] as? Int == 5 && b["forwarded"] as? Int == 5 && b["posted"] as? Int == 0, "\(b)")
        #expect(b["qemu_pid"] is NSNull, "\(b)")
        #expect(brokers.count == 2, "only the brokers named with --pid: \(brokers.map { $0["pid"] ?? "?" })")
        let unbrokered = try #require(object["unbrokered_device_models"] as? [[String: Any]])
        #expect(unbrokered.contains { $0["domid"] as? Int == 43 && $0["qemu_pid"] as? Int == Int(qemu43) }, "\(unbrokered)")
        #expect(!unbrokered.contains { $0["domid"] as? Int == 41 })

        // The exposition format: comments, then NAME{LABELS} VALUE lines.
        let prometheus = try runBroker(["status", "--format", "prometheus"] + only)
        #expect(prometheus.status == 0)
        let sample = try Regex(#"^[a-z_]+\{([a-z_]+="(?:[^"\\]|\\.)*",?)+\} [0-9]+$"#)
        for line in prometheus.output.split(separator: "\n") where !line.hasPrefix("#") {
            #expect(line.wholeMatch(of: sample) != nil, "not an exposition line: \(line)")
        }
        #expect(prometheus.output.contains("dmop_broker_forwarded_total{domid=\"41\",guest=\"status-one\",pid=\"\(first.pid)\"} 30"),
                "\(prometheus.output)")
        #expect(prometheus.output.contains("dmop_device_model_unbrokered{domid=\"43\",pid=\"\(qemu43)\"} 1"))

        let text = try runBroker(["status"] + only)
        #expect(text.status == 0 && text.output.hasPrefix("DOMID ") && text.output.contains("status-one"), "\(text.output)")
        #expect(text.output.contains("not brokered"), "\(text.output)")
        one.close()
        two.close()
        #expect(BrokerUnderTest.exitCode(first.waitForExit()) == 0)
        #expect(BrokerUnderTest.exitCode(second.waitForExit()) == 0)
    }
}
