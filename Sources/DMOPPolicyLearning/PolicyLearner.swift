// SPDX-License-Identifier: MIT
import DMOPCore

/// Learns a minimal policy from what a device model really did, as
/// audit2allow does for SELinux: run a session under a permissive policy (or
/// the simulated hypervisor with --simulated-record), feed the audit log or
/// the record here, review the result, add argument conditions.
public struct PolicyLearner {
    public struct Seen: Equatable {
        public var forwarded = 0
        /// Refused because the policy lacked the op: the device model needs it.
        public var deniedByPolicy = 0
        /// Refused by an argument condition: the rule exists, its condition may be too narrow.
        public var deniedByCondition = 0

        public init(forwarded: Int = 0, deniedByPolicy: Int = 0, deniedByCondition: Int = 0) {
            self.forwarded = forwarded
            self.deniedByPolicy = deniedByPolicy
            self.deniedByCondition = deniedByCondition
        }
    }

    public private(set) var seen: [UInt32: Seen] = [:]
    public private(set) var sources: [String] = []
    /// Lines or entries that named no known op.
    public private(set) var ignored = 0

    public init() {}

    public mutating func addSource(_ name: String) { sources.append(name) }

    /// One call that reached the hypervisor (a --simulated-record entry).
    public mutating func noteForwarded(opNumber: Int) {
        guard opNumber >= 0, let op = Catalogue.op(number: UInt32(opNumber)) else {
            ignored += 1
            return
        }
        seen[op.number, default: Seen()].forwarded += 1
    }

    /// One audit-log line of dmop-broker serve. Lines that are not per-request
    /// decisions, and refusals that say nothing about what the device model
    /// needs (another domid, malformed buffers, not its server), are skipped.
    public mutating func noteAuditLine(_ line: Substring) {
        // Not a broker line (QEMU shares stderr under libxl).
        guard let pairs = try? Logfmt.parse(line) else { return }
        func value(_ key: String) -> String? { pairs.first { $0.key == key }?.value ?? nil }
        guard let opName = value("op"), let verdict = value("verdict") else { return }
        guard let op = Catalogue.op(named: opName) else {
            ignored += 1
            return
        }
        // An aggregated line stands for `count` forwards.
        let count = value("count").flatMap { Int($0) } ?? 1
        switch (verdict, value("reason")) {
        case ("forward", _):
            seen[op.number, default: Seen()].forwarded += count
        case ("refuse", "OP_NOT_ALLOWED"):
            seen[op.number, default: Seen()].deniedByPolicy += 1
        case ("refuse", "CONDITION_FAILED"):
            seen[op.number, default: Seen()].deniedByCondition += 1
        default:
            break
        }
    }

    /// The learned policy, in dmop-broker.policy(5) format, ops in catalogue
    /// order, one line each with what was seen.
    public func render() -> String {
        var text = "# Learned by `dmop-broker policy learn` from: \(sources.joined(separator: ", "))\n"
        text += "# Review before use: add argument conditions and rate limits (dmop-broker.policy(5)).\n"
        if seen.isEmpty { text += "# Nothing was seen: this policy allows nothing.\n" }
        let width = Catalogue.ops.map(\.name.count).max() ?? 0
        for op in Catalogue.ops.sorted(by: { $0.number < $1.number }) {
            guard let counts = seen[op.number] else { continue }
            var notes = ["\(counts.forwarded) forwarded"]
            if counts.deniedByPolicy > 0 { notes.append("\(counts.deniedByPolicy) refused: not in the policy") }
            if counts.deniedByCondition > 0 { notes.append("\(counts.deniedByCondition) refused by a condition: review it") }
            let padding = String(repeating: " ", count: width - op.name.count)
            text += "allow \(op.name)\(padding)  # \(notes.joined(separator: ", "))\n"
        }
        if ignored > 0 { text += "# \(ignored) entr(ies) named no op of dm_op.h and were left out.\n" }
        return text
    }
}
