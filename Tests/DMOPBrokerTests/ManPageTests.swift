// SPDX-License-Identifier: MIT
import Foundation
import Glibc
import Testing

@Suite("man pages: lint-clean, every option described")
struct ManPageTests {
    static let mandoc = "/usr/bin/mandoc"
    static var pages: [String] {
        let directory = TestSupport.packageRoot.appendingPathComponent("man")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.sorted().map { directory.appendingPathComponent($0).path }
    }

    @Test("mandoc -Tlint -W warning prints nothing for any page (scripts/install-deps installs mandoc)")
    func lintClean() throws {
        try #require(access(Self.mandoc, X_OK) == 0, "mandoc is not installed")
        #expect(Self.pages.count >= 5)
        let result = try TestSupport.run(Self.mandoc, ["-Tlint", "-W", "warning"] + Self.pages)
        #expect(result.status == 0 && result.output.isEmpty, "\(result.output)")
    }

    /// The long options a --help text lists.
    static func options(inHelp help: String) -> Set<String> {
        var names = Set<String>()
        let scalars = Array(help.unicodeScalars)
        var i = 0
        while i + 2 < scalars.count {
            if scalars[i] == "-", scalars[i + 1] == "-", (i == 0 || !CharacterSet.alphanumerics.contains(scalars[i - 1])),
               CharacterSet.lowercaseLetters.contains(scalars[i + 2]) {
                var j = i + 2
                var name = ""
                while j < scalars.count, CharacterSet.lowercaseLetters.contains(scalars[j]) || scalars[j] == "-" {
                    name.unicodeScalars.append(scalars[j])
                    j += 1
                }
                names.insert(name)
                i = j
            } else {
                i += 1
            }
        }
        return names.subtracting(["help"])
    }

    @Test("every option in the --help of every dmop-broker command is in dmop-broker(8)", arguments: [
        ["serve"], ["demo"], ["policy", "check"], ["policy", "explain"], ["policy", "learn"], ["seccomp-profile"], ["status"],
    ])
    func brokerOptionsDocumented(command: [String]) throws {
        let page = try String(contentsOf: TestSupport.packageRoot.appendingPathComponent("man/dmop-broker.8"), encoding: .utf8)
        let help = try runBroker(command + ["--help"]).output
        let names = Self.options(inHelp: help)
        #expect(!names.isEmpty)
        for name in names {
            let described = page.contains(".It Fl -\(name) ") || page.contains(".It Fl -\(name)\n")
                || page.contains(", -\(name) ") || page.contains(", -\(name),")
            #expect(described, "\(command.joined(separator: " ")) --\(name) has no .It entry in dmop-broker(8)")
        }
    }
}
