// SPDX-License-Identifier: MIT
import Foundation
import Testing

/// The version is written once, in Package.swift; everything that shows it
/// must show that one.
@Suite("Version")
struct VersionTests {
    /// `let version = "X"` in Package.swift.
    static func packageVersion() throws -> String {
        let manifest = try String(contentsOfFile: TestSupport.packageRoot.appendingPathComponent("Package.swift").path,
                                  encoding: .utf8)
        for line in manifest.split(separator: "\n") where line.hasPrefix("let version = \"") {
            let value = line.dropFirst("let version = \"".count).prefix(while: { $0 != "\"" })
            if !value.isEmpty { return String(value) }
        }
        throw TestFailure("Package.swift has no `let version = \"...\"` line")
    }

    @Test("dmop-broker --version and dmop-qemu-wrapper --version print Package.swift's version")
    func binariesPrintTheVersion() throws {
        let version = try Self.packageVersion()
        let broker = try runBroker(["--version"])
        #expect(broker.status == 0)
        #expect(broker.output == "dmop-broker \(version)\n")
        let wrapper = try TestSupport.run(ClientLibraryFixture.wrapperPath, ["--version"])
        #expect(wrapper.status == 0)
        #expect(wrapper.output == "dmop-qemu-wrapper \(version)\n")
    }

    @Test("the broker's start line names the version")
    func startLineNamesTheVersion() throws {
        let version = try Self.packageVersion()
        let broker = try BrokerUnderTest()
        let client = try broker.connect()
        _ = try client.invoke("set_isa_irq_level", ["isa_irq": 4, "level": 1])
        let start = broker.auditLog.split(separator: "\n").first { $0.contains("starting ") }
        #expect(start?.contains("starting version=\(version) ") == true, "start line: \(start ?? "none")")
    }

    /// The Debian version is the upstream version and a Debian revision
    /// (3.0 (quilt) source package): VERSION-N.
    @Test("debian/changelog's newest entry is Package.swift's version with a Debian revision")
    func changelogNamesTheVersion() throws {
        let version = try Self.packageVersion()
        let changelog = try String(contentsOfFile: TestSupport.packageRoot.appendingPathComponent("debian/changelog").path,
                                   encoding: .utf8)
        let first = changelog.prefix(while: { $0 != "\n" })
        let prefix = "dmop-broker (\(version)-"
        let revision = first.hasPrefix(prefix) ? first.dropFirst(prefix.count).prefix(while: { $0 != ")" }) : ""
        #expect(!revision.isEmpty && revision.allSatisfy { $0.isNumber || $0 == "." || $0 == "~" || $0 == "+" },
                "debian/changelog starts with: \(first)")
    }
}
