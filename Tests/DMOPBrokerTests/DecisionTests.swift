// SPDX-License-Identifier: MIT
import DMOPCore
import Testing

@Suite("The decision")
struct DecisionTests {
    let policy: Policy = {
        do {
            return try Policy.parse("""
            allow create_ioreq_server
            allow set_isa_irq_level if isa_irq <= 15 and level <= 1
            allow track_dirty_vram if nr <= 32768
            allow modified_memory if nr_extents <= 256
            allow inject_msi if addr >= 0xfee00000 and addr <= 0xfeefffff
            allow remote_shutdown if reason in 0, 1
            allow inject_event
            """, file: "t.policy")
        } catch {
            fatalError("test policy: \(error)")
        }
    }()

    func header(_ op: String, _ fields: [String: UInt64] = [:]) -> [UInt8] {
        TestSupport.op(op).encodeHeader(fields)
    }

    func verdict(domid: UInt16 = 5, _ buffers: [[UInt8]]) -> Decision {
        TestSupport.decideBytes(restricted: 5, policy: policy, domid: domid, buffers)
    }

    func refusal(domid: UInt16 = 5, _ buffers: [[UInt8]]) -> ReasonCode? {
        if case .refuse(let reason, _) = verdict(domid: domid, buffers) { return reason }
        return nil
    }

    struct Row: CustomTestStringConvertible {
        let name: String
        let domid: UInt16
        let buffers: [[UInt8]]
        let expected: ReasonCode?
        var testDescription: String { name }
    }

    static let irq = TestSupport.op("set_isa_irq_level").encodeHeader(["isa_irq": 4, "level": 1])

    static func with(_ bytes: [UInt8], _ offset: Int, _ value: UInt8) -> [UInt8] {
        var copy = bytes
        copy[offset] = value
        return copy
    }

    static let table: [Row] = {
        func h(_ op: String, _ f: [String: UInt64] = [:]) -> [UInt8] { TestSupport.op(op).encodeHeader(f) }
        let extent: [UInt8] = [1, 0, 0, 0, 0, 0, 0, 0] + [0x10, 0, 0, 0, 0, 0, 0, 0]
        return [
            Row(name: "allowed op, own domid", domid: 5, buffers: [irq], expected: nil),
            Row(name: "another domid", domid: 6, buffers: [irq], expected: .domidMismatch),
            Row(name: "dom0", domid: 0, buffers: [irq], expected: .domidMismatch),
            Row(name: "DOMID_FIRST_RESERVED 0x7FF0", domid: 0x7FF0, buffers: [irq], expected: .domidReserved),
            Row(name: "DOMID_SELF 0x7FF0 / DOMID_INVALID 0x7FF4", domid: 0x7FF4, buffers: [irq], expected: .domidReserved),
            Row(name: "0xFFFF", domid: 0xFFFF, buffers: [irq], expected: .domidReserved),
            Row(name: "no buffers", domid: 5, buffers: [], expected: .badBufferCount),
            Row(name: "buffer 0 of 3 bytes", domid: 5, buffers: [[9, 0, 0]], expected: .badBufferSize),
            Row(name: "op 0", domid: 5, buffers: [with(irq, 0, 0)], expected: .opUnknown),
            Row(name: "op 21", domid: 5, buffers: [with(irq, 0, 21)], expected: .opUnknown),
            Row(name: "op 0xffffffff", domid: 5, buffers: [[0xff, 0xff, 0xff, 0xff] + Array(irq[4...])], expected: .opUnknown),
            Row(name: "op not in the policy (nr_vcpus)", domid: 5, buffers: [h("nr_vcpus")], expected: .opNotAllowed),
            Row(name: "two buffers for a one-buffer op", domid: 5, buffers: [irq, [0]], expected: .badBufferCount),
            Row(name: "16 buffers", domid: 5, buffers: [[UInt8]](repeating: irq, count: 16), expected: .badBufferCount),
            Row(name: "modified_memory with one buffer (XSA-506)", domid: 5,
                buffers: [h("modified_memory", ["nr_extents": 1])], expected: .badBufferCount),
            Row(name: "modified_memory, three buffers", domid: 5,
                buffers: [h("modified_memory", ["nr_extents": 1]), extent, extent], expected: .badBufferCount),
            Row(name: "modified_memory, nr_extents 2 with one extent", domid: 5,
                buffers: [h("modified_memory", ["nr_extents": 2]), extent], expected: .badBufferSize),
            Row(name: "modified_memory, one extent", domid: 5,
                buffers: [h("modified_memory", ["nr_extents": 1]), extent], expected: nil),
            Row(name: "modified_memory, extent pad not zero", domid: 5,
                buffers: [h("modified_memory", ["nr_extents": 1]), with(extent, 5, 1)], expected: .payloadFieldNonzero),
            Row(name: "modified_memory, opaque not zero", domid: 5,
                buffers: [h("modified_memory", ["nr_extents": 1, "opaque": 1]), extent], expected: .payloadFieldNonzero),
            Row(name: "modified_memory, 257 extents (condition)", domid: 5,
                buffers: [h("modified_memory", ["nr_extents": 257]), [UInt8](repeating: 0, count: 257 * 16)],
                expected: .conditionFailed),
            Row(name: "track_dirty_vram, bitmap ceil(nr/8)", domid: 5,
                buffers: [h("track_dirty_vram", ["nr": 9]), [0, 0]], expected: nil),
            Row(name: "track_dirty_vram, bitmap short by one byte", domid: 5,
                buffers: [h("track_dirty_vram", ["nr": 9]), [0]], expected: .badBufferSize),
            Row(name: "track_dirty_vram, one buffer", domid: 5,
                buffers: [h("track_dirty_vram", ["nr": 8])], expected: .badBufferCount),
            Row(name: "track_dirty_vram, nr 0 with empty bitmap (log stop)", domid: 5,
                buffers: [h("track_dirty_vram"), []], expected: nil),
            Row(name: "track_dirty_vram, nr over the condition", domid: 5,
                buffers: [h("track_dirty_vram", ["nr": 40000]), [UInt8](repeating: 0, count: 4096)],
                expected: .badBufferSize),
            Row(name: "header pad not zero", domid: 5, buffers: [with(irq, 4, 1)], expected: .payloadFieldNonzero),
            Row(name: "create_ioreq_server pad not zero", domid: 5,
                buffers: [with(h("create_ioreq_server"), 9, 1)], expected: .payloadFieldNonzero),
            Row(name: "inject_event pad1 not zero", domid: 5,
                buffers: [with(h("inject_event"), 8 + 12, 1)], expected: .payloadFieldNonzero),
            Row(name: "buffer 0 of 9 bytes (payload needs 10)", domid: 5, buffers: [Array(irq.prefix(9))],
                expected: .badBufferSize),
            Row(name: "buffer 0 of exactly 8 + payload", domid: 5, buffers: [Array(irq.prefix(10))], expected: nil),
            Row(name: "buffer 0 of 33 bytes", domid: 5, buffers: [irq + [0]], expected: .badBufferSize),
            Row(name: "condition fails: isa_irq 16", domid: 5, buffers: [h("set_isa_irq_level", ["isa_irq": 16])],
                expected: .conditionFailed),
            Row(name: "condition fails: MSI outside the APIC window", domid: 5,
                buffers: [h("inject_msi", ["addr": 0xfed0_0000])], expected: .conditionFailed),
            Row(name: "condition holds: MSI in the window", domid: 5,
                buffers: [h("inject_msi", ["addr": 0xfee0_0000, "data": 1])], expected: nil),
            Row(name: "condition 'in': reason 3 (crash)", domid: 5, buffers: [h("remote_shutdown", ["reason": 3])],
                expected: .conditionFailed),
            Row(name: "condition 'in': reason 1 (reboot)", domid: 5, buffers: [h("remote_shutdown", ["reason": 1])],
                expected: nil),
        ]
    }()

    @Test("decision table", arguments: table)
    func row(_ row: Row) {
        let decision = verdict(domid: row.domid, row.buffers)
        if let expected = row.expected {
            #expect(refusal(domid: row.domid, row.buffers) == expected, "\(decision)")
        } else {
            #expect(decision.isForward, "\(decision)")
        }
    }

    @Test("a forward names the rule that allowed it")
    func forwardRule() {
        guard case .forward(let allowed) = verdict([Self.irq]) else { Issue.record("refused"); return }
        #expect(allowed.rule.location == "t.policy:2")
    }

    @Test("the domid checks come before everything else")
    func domidFirst() {
        // Another domid with an op the policy lacks and bad buffers: still a domid refusal.
        #expect(refusal(domid: 7, [header("nr_vcpus"), [1], [2]]) == .domidMismatch)
        #expect(refusal(domid: 0x7FF4, []) == .domidReserved)
    }

    @Test("an empty policy refuses every op")
    func emptyPolicy() throws {
        let empty = try Policy.parse("", file: "empty")
        for op in Catalogue.ops {
            var buffers = [op.encodeHeader()]
            if op.bufferCount == 2 { buffers.append([]) }
            let decision = TestSupport.decideBytes(policy: empty, buffers)
            #expect(decision == .refuse(.opNotAllowed, "op \(op.name) is not allowed by empty"))
        }
    }

    @Test("exhaustive over one byte of op and domid: only allowed ops for domid 5 forward")
    func exhaustive() {
        let allowed = Set(policy.rules.map(\.op.number))
        for domid: UInt16 in [0, 4, 5, 6, 0x7FEF, 0x7FF0, 0xFFFF] {
            for op: UInt32 in 0...40 {
                var bytes = Self.irq
                bytes[0] = UInt8(op)
                var buffers = [bytes]
                if op == 7 || op == 11 { buffers.append([]) }
                let forwarded = verdict(domid: domid, buffers).isForward
                if forwarded {
                    #expect(domid == 5 && allowed.contains(op), "forwarded domid \(domid) op \(op)")
                }
            }
        }
    }
}
