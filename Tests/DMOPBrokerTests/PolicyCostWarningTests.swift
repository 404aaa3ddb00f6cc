// SPDX-License-Identifier: MIT
import DMOPCore
import Foundation
import Testing

/// `dmop-broker policy check` warns about allowed ops whose cost grows with
/// an argument no condition bounds (dmop-broker(8), policy check): the
/// broker serves one request at a time, so one such request holds the
/// guest's interrupts.
@Suite("Policy check: warnings on unbounded costly arguments")
struct PolicyCostWarningTests {
    static let unbounded = """
        # each costly op without a bound on its costly argument
        allow relocate_memory      if src_gfn >= 0x100
        allow set_mem_type         if mem_type == 0
        allow track_dirty_vram
        allow modified_memory      if nr_extents >= 1
        allow set_isa_irq_level    if isa_irq <= 15

        """

    @Test("each costly op's argument is a field of its payload")
    func argumentsExist() throws {
        for costly in PolicyCostWarnings.costlyArguments {
            let op = try #require(Catalogue.op(named: costly.op), "\(costly.op)")
            #expect(op.field(named: costly.field) != nil, "\(costly.op) has no field \(costly.field)")
            // The suggested bound parses and is itself a bound.
            let policy = try Policy.parse("allow \(costly.op) if \(costly.example)\n", file: "p")
            #expect(PolicyCostWarnings.warnings(policy).isEmpty, "\(costly.example)")
        }
    }

    @Test("warns, naming file:line, the op and the argument, for each unbounded one; exit status 0")
    func warnsOnUnbounded() throws {
        let directory = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("costly.policy").path
        try Self.unbounded.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try runBroker(["policy", "check", path])
        #expect(result.status == 0, "\(result.output)")
        for (line, op, field) in [(2, "relocate_memory", "size"), (3, "set_mem_type", "nr"),
                                  (4, "track_dirty_vram", "nr"), (5, "modified_memory", "nr_extents")] {
            #expect(result.output.contains("\(path):\(line): warning: allow \(op) leaves its argument \(field) unbounded"),
                    "\(op): \(result.output)")
        }
        let warnings = result.output.split(separator: "\n").filter { $0.contains("warning:") }
        #expect(warnings.count == 4, "\(result.output)")
    }

    @Test("==, <=, < and in bound an argument; >= and != do not")
    func whatBounds() throws {
        for (condition, warned) in [("size == 16", false), ("size <= 4096", false), ("size < 4097", false),
                                    ("size in 1, 16", false), ("size >= 1", true), ("size != 0", true),
                                    ("size >= 1 and size <= 64", false)] {
            let policy = try Policy.parse("allow relocate_memory if \(condition)\n", file: "p.policy")
            let warnings = PolicyCostWarnings.warnings(policy)
            #expect(warnings.isEmpty != warned, "\(condition): \(warnings)")
            if warned { #expect(warnings.first?.hasPrefix("p.policy:1: warning: allow relocate_memory") == true) }
        }
    }

    @Test("the shipped policies check without a warning")
    func shippedClean() throws {
        let result = try runBroker(["policy", "check", TestSupport.policyPath("qemu-xen.policy"),
                                    TestSupport.policyPath("qemu-xen-headless.policy")])
        #expect(result.status == 0 && !result.output.contains("warning"), "\(result.output)")
    }
}
