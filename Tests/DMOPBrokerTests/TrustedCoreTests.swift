// SPDX-License-Identifier: MIT
import Foundation
import Testing

/// README's "Trusted core" lists the files a reviewer reads; the list must
/// stay the whole target, and the target small.
@Suite("README's trusted core")
struct TrustedCoreTests {
    static let bound = 1150
    static let directory = "Sources/DMOPTrusted"

    static func codeLines(_ path: String) throws -> Int {
        let text = try String(contentsOfFile: TestSupport.packageRoot.appendingPathComponent(path).path, encoding: .utf8)
        return text.split(separator: "\n", omittingEmptySubsequences: false).filter { line in
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            return !trimmed.isEmpty && !trimmed.hasPrefix("//")
        }.count
    }

    /// The paths of the section's bulleted list, in order.
    static func listed() throws -> [String] {
        let readme = try String(contentsOfFile: TestSupport.packageRoot.appendingPathComponent("README.md").path,
                                encoding: .utf8)
        guard let start = readme.range(of: "\n## Trusted core\n") else { return [] }
        let section = readme[start.upperBound...].prefix { _ in true }
        // The list ends where the second ring (read next, not bounded) begins.
        let end = section.range(of: "\nThe second ring") ?? section.range(of: "\n## ")
        let body = end.map { section[..<$0.lowerBound] } ?? section
        return body.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("- `"), let end = line.dropFirst(3).firstIndex(of: "`") else { return nil }
            return String(line[line.index(line.startIndex, offsetBy: 3)..<end])
        }
    }

    @Test("every listed file exists, and every file of the target is listed")
    func listComplete() throws {
        let listed = try Self.listed()
        #expect(!listed.isEmpty, "README has no Trusted core list")
        for path in listed {
            #expect(FileManager.default.fileExists(atPath: TestSupport.packageRoot.appendingPathComponent(path).path),
                    "\(path) is listed in README's Trusted core but missing")
        }
        let files = try FileManager.default.contentsOfDirectory(
            atPath: TestSupport.packageRoot.appendingPathComponent(Self.directory).path)
            .filter { $0.hasSuffix(".swift") }.map { "\(Self.directory)/\($0)" }
        #expect(Set(files) == Set(listed), "not listed: \(Set(files).subtracting(listed)); listed but not in the target: \(Set(listed).subtracting(files))")
        #expect(Set(listed).count == listed.count, "a file is listed twice")
    }

    @Test("the trusted core stays within its bound")
    func bounded() throws {
        var total = 0
        for path in try Self.listed() {
            let lines = try Self.codeLines(path)
            total += lines
            // README keeps no counts: this is where they are read.
            print("trusted core: \(lines) code lines in \(path)")
        }
        print("trusted core: \(total) code lines in all (bound \(Self.bound))")
        #expect(total > 0 && total <= Self.bound, "the trusted core has \(total) code lines, over \(Self.bound)")
    }
}
