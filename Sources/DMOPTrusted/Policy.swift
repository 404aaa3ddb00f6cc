// SPDX-License-Identifier: MIT
/// A policy: which ops may reach the hypervisor, and on what arguments.
/// Default deny: an op without a rule is refused. Format: dmop-broker.policy(5).
public struct Policy: Sendable {
    /// Where the policy came from, for audit lines ("policy/qemu-xen.policy").
    public let source: String
    public let rules: [PolicyRule]
    /// Rules by op number, for the hot path.
    private let table: [PolicyRule?]

    public init(source: String, rules: [PolicyRule]) {
        self.source = source
        self.rules = rules
        var table = [PolicyRule?](repeating: nil, count: Catalogue.highestNumber + 1)
        for rule in rules { table[Int(rule.op.number)] = rule }
        self.table = table
    }

    @inline(__always)
    public func rule(forOp number: UInt32) -> PolicyRule? {
        guard number < UInt32(table.count) else { return nil }
        return table[Int(number)]
    }

    /// Bit n set when op n is allowed (WELCOME's allowed_ops).
    public var allowedOpsMask: UInt32 {
        rules.reduce(0) { $0 | (1 << $1.op.number) }
    }

    /// Bit n set when op n may be posted (WELCOME's posted_ops).
    public var postedOpsMask: UInt32 {
        rules.reduce(0) { $0 | ($1.mayPost ? 1 << $1.op.number : 0) }
    }
}

/// A final class, as OpSpec: a rule travels through the decision, the
/// forward and the outcome, and a reference copies with one retain.
/// Immutable, so value semantics are unchanged.
public final class PolicyRule: Sendable, Equatable {
    public let op: OpSpec
    public let line: Int
    public let conditions: [Condition]
    /// "file:line" of the rule, for audit lines.
    public let location: String
    /// Applied by the decision's gate; nil: no limit.
    public let rateLimit: RateLimit?
    /// `posted`: a version 2 client may send the op without waiting.
    public let mayPost: Bool

    public init(op: OpSpec, line: Int, conditions: [Condition], location: String, rateLimit: RateLimit? = nil,
                mayPost: Bool = false) {
        self.op = op
        self.line = line
        self.conditions = conditions
        self.location = location
        self.rateLimit = rateLimit
        self.mayPost = mayPost
    }

    public static func == (lhs: PolicyRule, rhs: PolicyRule) -> Bool {
        lhs === rhs
            || (lhs.op == rhs.op && lhs.line == rhs.line && lhs.conditions == rhs.conditions
                && lhs.location == rhs.location && lhs.rateLimit == rhs.rateLimit && lhs.mayPost == rhs.mayPost)
    }
}

/// An argument condition on one input field of buffer 0.
/// A final class for the reason PolicyRule is one: each request walks its
/// rule's conditions.
public final class Condition: Sendable, Equatable, CustomStringConvertible {
    public enum Comparison: String, Sendable, CaseIterable {
        case equal = "==", notEqual = "!=", lessOrEqual = "<=", greaterOrEqual = ">=", less = "<", greater = ">"
    }
    public enum Test: Sendable, Equatable {
        case compare(Comparison, UInt64)
        case oneOf([UInt64])
    }
    public let field: FieldSpec
    public let test: Test

    public init(field: FieldSpec, test: Test) {
        self.field = field
        self.test = test
    }

    public static func == (lhs: Condition, rhs: Condition) -> Bool {
        lhs === rhs || (lhs.field == rhs.field && lhs.test == rhs.test)
    }

    @inline(__always)
    public func holds(in buffer: UnsafeRawBufferPointer) -> Bool {
        guard let value = field.value(in: buffer) else { return false }
        switch test {
        case .compare(let comparison, let bound):
            switch comparison {
            case .equal: return value == bound
            case .notEqual: return value != bound
            case .lessOrEqual: return value <= bound
            case .greaterOrEqual: return value >= bound
            case .less: return value < bound
            case .greater: return value > bound
            }
        case .oneOf(let values):
            return values.contains(value)
        }
    }

    public var description: String {
        switch test {
        case .compare(let comparison, let bound): "\(field.name) \(comparison.rawValue) \(bound)"
        case .oneOf(let values): "\(field.name) in \(values.map(String.init).joined(separator: ","))"
        }
    }
}
