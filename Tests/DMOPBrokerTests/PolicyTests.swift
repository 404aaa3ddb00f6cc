// SPDX-License-Identifier: MIT
import DMOPCore
import Testing

@Suite("Policy parser")
struct PolicyTests {
    func error(_ text: String) -> PolicyError? {
        do {
            _ = try Policy.parse(text, file: "p.policy")
            return nil
        } catch {
            return error
        }
    }

    @Test("comments, blank lines, conditions")
    func parses() throws {
        let policy = try Policy.parse("""
        # comment

        allow set_isa_irq_level if isa_irq <= 15 and level in 0, 1   # trailing
        \tallow inject_msi if addr >= 0xfee00000
        allow nr_vcpus
        """, file: "p.policy")
        #expect(policy.rules.map(\.op.name) == ["set_isa_irq_level", "inject_msi", "nr_vcpus"])
        #expect(policy.rules[0].conditions.map(\.description) == ["isa_irq <= 15", "level in 0,1"])
        #expect(policy.rules[0].location == "p.policy:3")
        #expect(policy.rules[1].conditions.map(\.description) == ["addr >= 4276092928"])
        #expect(policy.allowedOpsMask == (1 << 9) | (1 << 14) | (1 << 20))
        #expect(policy.rule(forOp: 9)?.line == 3)
        #expect(policy.rule(forOp: 1) == nil)
        #expect(policy.rule(forOp: 9999) == nil)
    }

    @Test("the shipped policies parse and allow what the issue lists")
    func shipped() throws {
        let text = try String(contentsOfFile: TestSupport.policyPath("qemu-xen.policy"), encoding: .utf8)
        let policy = try Policy.parse(text, file: "qemu-xen.policy")
        #expect(Set(policy.rules.map(\.op.name)) == [
            "create_ioreq_server", "get_ioreq_server_info", "map_io_range_to_ioreq_server",
            "unmap_io_range_from_ioreq_server", "set_ioreq_server_state", "destroy_ioreq_server",
            "track_dirty_vram", "set_pci_intx_level", "set_isa_irq_level", "set_pci_link_route",
            "modified_memory", "set_mem_type", "inject_msi", "remote_shutdown", "relocate_memory",
            "pin_memory_cacheattr",
        ])
        let strictText = try String(contentsOfFile: TestSupport.policyPath("qemu-xen-headless.policy"), encoding: .utf8)
        let strict = try Policy.parse(strictText, file: "qemu-xen-headless.policy")
        #expect(Set(strict.rules.map(\.op.name)).isStrictSubset(of: Set(policy.rules.map(\.op.name))))
    }

    @Test("unknown op: line and column of the name")
    func unknownOp() {
        let e = error("allow nr_vcpus\n  allow frobnicate\n")
        #expect(e?.line == 2 && e?.column == 9)
        #expect(e?.description.hasPrefix("p.policy:2:9: unknown op 'frobnicate'") == true)
    }

    @Test("unknown keyword")
    func unknownKeyword() {
        let e = error("deny nr_vcpus")
        #expect(e?.line == 1 && e?.column == 1)
    }

    @Test("missing op name")
    func missingOp() {
        let e = error("allow")
        #expect(e?.line == 1 && e?.column == 6)
    }

    @Test("duplicate rule for one op")
    func duplicate() {
        let e = error("allow nr_vcpus\nallow nr_vcpus")
        #expect(e?.line == 2 && e?.message.contains("already has a rule at line 1") == true)
    }

    @Test("unknown field, output field, padding field")
    func fields() {
        #expect(error("allow set_isa_irq_level if irq <= 1")?.column == 28)
        #expect(error("allow create_ioreq_server if id == 1")?.message.contains("output") == true)
        #expect(error("allow inject_msi if pad == 0")?.message.contains("padding") == true)
    }

    @Test("bad comparison, bad number, number too wide for the field")
    func numbers() {
        #expect(error("allow set_isa_irq_level if isa_irq ~ 1")?.column == 36)
        #expect(error("allow set_isa_irq_level if isa_irq <= x1")?.message.contains("not a number") == true)
        let wide = error("allow set_isa_irq_level if isa_irq <= 256")
        #expect(wide?.column == 39 && wide?.message.contains("does not fit") == true)
        #expect(error("allow set_isa_irq_level if isa_irq <= 99999999999999999999")?.message.contains("not a number") == true)
    }

    @Test("junk after a rule, a dangling 'and', 'if' without condition")
    func junk() {
        #expect(error("allow nr_vcpus please")?.column == 16)
        #expect(error("allow set_isa_irq_level if isa_irq <= 1 and")?.line == 1)
        #expect(error("allow set_isa_irq_level if")?.line == 1)
        #expect(error("allow set_isa_irq_level if isa_irq <= 1 or level == 1")?.column == 41)
        #expect(error("allow nr_vcpus $")?.column == 16)
    }

    @Test("an empty policy allows nothing")
    func empty() throws {
        let policy = try Policy.parse("# nothing\n", file: "empty")
        #expect(policy.rules.isEmpty && policy.allowedOpsMask == 0)
    }
}

@Suite("Policy parser: rate limits")
struct PolicyRateTests {
    func error(_ text: String) -> PolicyError? {
        do { _ = try Policy.parse(text, file: "p.policy"); return nil } catch { return error }
    }

    @Test("rate limits: with and without conditions, default burst, errors")
    func rates() throws {
        let policy = try Policy.parse("""
        allow inject_msi if addr >= 0xfee00000 rate 1000/s burst 50
        allow set_isa_irq_level rate 20/s
        allow nr_vcpus
        """, file: "r.policy")
        #expect(policy.rules[0].rateLimit == RateLimit(perSecond: 1000, burst: 50))
        #expect(policy.rules[0].conditions.count == 1)
        #expect(policy.rules[1].rateLimit == RateLimit(perSecond: 20, burst: 20))
        #expect(policy.rules[2].rateLimit == nil)
        #expect(error("allow nr_vcpus rate 0/s")?.column == 21)
        #expect(error("allow nr_vcpus rate 10")?.message.contains("'/s'") == true)
        #expect(error("allow nr_vcpus rate 10/s burst 0")?.message.contains("burst") == true)
        #expect(error("allow nr_vcpus rate 2000000000/s")?.message.contains("rate must be") == true)
        #expect(error("allow nr_vcpus rate 10/s rate 5/s")?.line == 1)
        #expect(error("allow nr_vcpus rate 10/s if vcpus == 1") != nil)
    }

    @Test("CRLF line ends: every line is its own line, a leading comment hides nothing")
    func crlfLineEnds() throws {
        let policy = try Policy.parse("# shipped from another system\r\nallow nr_vcpus\r\n\r\nallow set_isa_irq_level if isa_irq <= 15\r\n",
                                      file: "p.policy")
        #expect(policy.rules.map(\.op.name) == ["nr_vcpus", "set_isa_irq_level"])
        #expect(policy.rules[1].location == "p.policy:4")
        let bad = error("# comment\r\nallow nr_vcpus\r\nallow no_such_op\r\n")
        #expect(bad.map { "\($0)" }?.hasPrefix("p.policy:3:7: unknown op 'no_such_op'") == true, "\(String(describing: bad))")
    }
}
