// SPDX-License-Identifier: MIT
import DMOPCore
import Foundation
import Testing

/// policy/qemu-xen.policy against what real guests made QEMU ask for: the
/// distinct calls a Linux HVM guest made Debian's QEMU issue on real Xen,
/// recorded with an LD_PRELOAD trace of its libxendevicemodel calls
/// (Tests/xen-guest/learned/*.calls, one "op=NAME field=value ..." a line).
/// Every one of them must be forwarded, and the bounds fitted to them must
/// refuse what lies beyond.
@Suite("The QEMU policy fits real guests")
struct RealGuestPolicyTests {
    static let learned = TestSupport.packageRoot.appendingPathComponent("Tests/xen-guest/learned")

    let policy: Policy = {
        do {
            let path = TestSupport.policyPath("qemu-xen.policy")
            return try Policy.parse(String(contentsOfFile: path, encoding: .utf8), file: path)
        } catch {
            fatalError("policy/qemu-xen.policy: \(error)")
        }
    }()

    /// Buffer 0 with the fields the line names (the others zero), and the
    /// extra buffer the op takes, sized as its count field says.
    static func buffers(_ op: OpSpec, _ values: [String: UInt64]) -> [[UInt8]] {
        let header = op.encodeHeader(values)
        switch op.extraBuffer {
        case .none:
            return [header]
        case .dirtyBitmap(let field):
            return [header, [UInt8](repeating: 0, count: Int(((values[field.name] ?? 0) + 7) / 8))]
        case .extents(let field, let size, _):
            return [header, [UInt8](repeating: 0, count: Int(values[field.name] ?? 0) * size)]
        }
    }

    /// The decision for a session that created ioreq server 0 (QEMU's one).
    func verdict(_ op: OpSpec, _ values: [String: UInt64]) -> Decision {
        let buffers = Self.buffers(op, values)
        func recurse(_ index: Int, _ views: [UnsafeRawBufferPointer]) -> Decision {
            if index == buffers.count {
                return views.withUnsafeBufferPointer {
                    decide(restrictedDomid: 5, policy: policy, request: DMOPRequest(domid: 5, buffers: $0),
                           owned: OwnedIoreqServers([0]))
                }
            }
            return buffers[index].withUnsafeBytes { recurse(index + 1, views + [$0]) }
        }
        return recurse(0, [])
    }

    /// "op=NAME k=v ..." into the op and the values of its payload fields;
    /// words that name no field of the op (trace-only notes) are skipped.
    static func parse(_ line: Substring) -> (OpSpec, [String: UInt64])? {
        let words = line.split(separator: " ")
        guard let first = words.first, first.hasPrefix("op="), let op = Catalogue.op(named: String(first.dropFirst(3))) else {
            return nil
        }
        var values: [String: UInt64] = [:]
        for word in words.dropFirst() {
            let parts = word.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, op.field(named: String(parts[0])) != nil else { continue }
            let text = parts[1]
            let value = text.hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : UInt64(text)
            if let value { values[String(parts[0])] = value }
        }
        return (op, values)
    }

    @Test("every call a recorded real guest made is forwarded")
    func recordedCallsAreForwarded() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.learned.path).filter { $0.hasSuffix(".calls") }
        #expect(!files.isEmpty, "no recorded calls under Tests/xen-guest/learned")
        var checked = 0
        for file in files.sorted() {
            let text = try String(contentsOfFile: Self.learned.appendingPathComponent(file).path, encoding: .utf8)
            for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                let parsed = Self.parse(line)
                #expect(parsed != nil, "\(file): no op in '\(line)'")
                guard let (op, values) = parsed else { continue }
                let decision = verdict(op, values)
                #expect(decision.isForward, "\(file): '\(line)': \(decision)")
                checked += 1
            }
        }
        #expect(checked > 100)
    }

    @Test("the bounds fitted to real guests refuse what lies beyond them")
    func boundsRefuseBeyondTheEvidence() {
        let beyond: [(String, [String: UInt64])] = [
            ("set_mem_type", ["nr": 65, "mem_type": 0]),
            ("track_dirty_vram", ["nr": 32769]),
            ("relocate_memory", ["size": 4097]),
            ("modified_memory", ["nr_extents": 2]),
            // QEMU passes the offset in its APIC MSI window, never the address
            ("inject_msi", ["addr": 0xfee3_5000, "data": 0x700]),
        ]
        for (name, values) in beyond {
            let decision = verdict(TestSupport.op(name), values)
            guard case .refuse(let reason, _) = decision else {
                Issue.record("\(name) \(values) was forwarded")
                continue
            }
            #expect(reason == .conditionFailed, "\(name) \(values): \(decision)")
        }
    }
}
