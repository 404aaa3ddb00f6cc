// SPDX-License-Identifier: MIT
import DMOPCore
import Foundation
import Testing

/// The parser lives outside the trusted core; what it makes of each shipped
/// policy is held here instead, so a parser bug changes a reviewed file.
@Suite("Policies as parsed: printed, held by golden files")
struct PolicyTextTests {
    static let shipped = ["qemu-xen", "qemu-xen-headless"]

    static func parse(_ name: String, file: String? = nil) throws -> Policy {
        let path = TestSupport.packageRoot.appendingPathComponent("policy/\(name).policy").path
        return try Policy.parse(try String(contentsOfFile: path, encoding: .utf8), file: file ?? "policy/\(name).policy")
    }

    @Test("each shipped policy prints as its golden file", arguments: shipped)
    func golden(name: String) throws {
        let golden = try String(contentsOfFile: TestSupport.packageRoot
            .appendingPathComponent("Tests/golden/policy/\(name).txt").path, encoding: .utf8)
        #expect(PolicyText.render(try Self.parse(name)) == golden,
                "regenerate with: dmop-broker policy check --print policy/\(name).policy > Tests/golden/policy/\(name).txt")
    }

    @Test("the printed text parses back to the same rules", arguments: shipped)
    func roundTrip(name: String) throws {
        let policy = try Self.parse(name)
        let again = try Policy.parse(PolicyText.render(policy), file: "printed")
        #expect(again.rules.count == policy.rules.count)
        for (printed, original) in zip(again.rules, policy.rules) {
            #expect(printed.op == original.op && printed.conditions == original.conditions
                    && printed.rateLimit == original.rateLimit && printed.mayPost == original.mayPost,
                    "\(original.location) changed when printed and parsed again")
        }
    }

    @Test("dmop-broker policy check --print prints the same text")
    func command() throws {
        let path = TestSupport.packageRoot.appendingPathComponent("policy/qemu-xen.policy").path
        let (status, output) = try runBroker(["policy", "check", "--print", path])
        #expect(status == 0)
        #expect(output == PolicyText.render(try Self.parse("qemu-xen", file: path)))
    }
}
