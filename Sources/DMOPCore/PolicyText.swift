// SPDX-License-Identifier: MIT
import DMOPTrusted

/// A parsed policy printed back as policy text (`dmop-broker policy check
/// --print`): one canonical rule a line, with what each name resolved to.
/// Tests/golden/policy holds it for the shipped policies, and it parses back
/// to the same rules.
public enum PolicyText {
    public static func render(_ policy: Policy) -> String {
        var text = "# \(policy.source) as parsed: \(policy.rules.count) rule(s); each note gives the op number\n"
        text += "# and every condition's field as offset/width in buffer 0\n"
        for rule in policy.rules {
            var line = "allow \(rule.op.name)"
            if !rule.conditions.isEmpty {
                line += " if " + rule.conditions.map { condition in
                    switch condition.test {
                    case .compare(let comparison, let bound): "\(condition.field.name) \(comparison.rawValue) \(bound)"
                    case .oneOf(let values): "\(condition.field.name) in \(values.map(String.init).joined(separator: ", "))"
                    }
                }.joined(separator: " and ")
            }
            if let limit = rule.rateLimit { line += " \(limit)" }
            if rule.mayPost { line += " posted" }
            let fields = rule.conditions.map { "\($0.field.name)@\($0.field.offset)/\($0.field.width)" }
            text += line + "  # line \(rule.line): op \(rule.op.number)"
                + (fields.isEmpty ? "" : "; " + fields.joined(separator: " ")) + "\n"
        }
        return text
    }
}
