// SPDX-License-Identifier: MIT

/// What `dmop-broker policy check` warns about: an allowed op whose cost in
/// Xen grows with one of its arguments, with no condition bounding that
/// argument. The broker is single-threaded: one such request, say a
/// relocate_memory of 2^32 - 1 frames, holds every other request of the
/// guest (its interrupts) for as long as Xen works on it.
public enum PolicyCostWarnings {
    /// The op, the argument its cost grows with, and a bound upstream QEMU
    /// stays within (the shipped policy/qemu-xen.policy's).
    public static let costlyArguments: [(op: String, field: String, example: String)] = [
        ("relocate_memory", "size", "size <= 4096"),
        ("set_mem_type", "nr", "nr <= 64"),
        ("track_dirty_vram", "nr", "nr <= 32768"),
        ("modified_memory", "nr_extents", "nr_extents == 1"),
    ]

    /// One line per allowed costly op whose argument no condition bounds
    /// from above: "FILE:LINE: warning: ...".
    public static func warnings(_ policy: Policy) -> [String] {
        policy.rules.compactMap { rule in
            guard let costly = costlyArguments.first(where: { $0.op == rule.op.name }),
                  !rule.conditions.contains(where: { $0.field.name == costly.field && bounds($0.test) }) else { return nil }
            return "\(rule.location): warning: allow \(rule.op.name) leaves its argument \(costly.field) unbounded: "
                + "one request costs Xen work in proportion to it, and the broker serves nothing else meanwhile; "
                + "add a condition such as '\(costly.example)'"
        }
    }

    /// Whether a test keeps the value below some bound.
    static func bounds(_ test: Condition.Test) -> Bool {
        switch test {
        case .compare(let comparison, _): comparison == .equal || comparison == .lessOrEqual || comparison == .less
        case .oneOf: true
        }
    }
}
