// SPDX-License-Identifier: MIT
import Foundation
import Testing

/// Which files of the repository are source and must carry the project's
/// SPDX line, and where and in which comment syntax it goes.
enum LicenseHeader {
    static let identifier = "SPDX-License-Identifier: MIT"

    /// The line a file must carry, or nil when the file is not source
    /// (documentation, LICENSE, debian/ metadata, fuzz inputs).
    /// Selection: files starting with #! (scripts, debian/rules), Package.swift,
    /// manual pages under man/, and these extensions.
    static func expectedLine(path: String, firstLine: String) -> String? {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        let ext = name.contains(".") ? String(name.split(separator: ".").last ?? "") : ""
        if firstLine.hasPrefix("#!") { return "# \(identifier)" }
        if path.hasPrefix("man/"), ext.count == 1, ext.first?.isNumber == true { return ".\\\" \(identifier)" }
        switch ext {
        case "swift", "modulemap": return "// \(identifier)"
        case "c", "h", "map": return "/* \(identifier) */"
        case "sh", "policy", "conf", "cfg": return "# \(identifier)"
        default: return nil
        }
    }

    /// Why a file's header is wrong, or nil when it is right or the file is
    /// not source. The line is the first one, or the second after a #! line
    /// or Package.swift's swift-tools-version line (both must stay first).
    static func problem(path: String, contents: String) -> String? {
        let lines = contents.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let first = lines.first ?? ""
        if lines.dropFirst().first?.hasPrefix("#!") == true { return "\(path): the #! line must be the first line" }
        guard let expected = expectedLine(path: path, firstLine: first) else { return nil }
        let index = (first.hasPrefix("#!") || first.hasPrefix("// swift-tools-version")) ? 1 : 0
        if lines.count > index, lines[index] == expected { return nil }
        let place = index == 0 ? "as its first line" : "as its second line"
        return "\(path): needs '\(expected)' \(place)"
    }

    /// The repository's files: tracked ones and new ones not yet added
    /// (so a helper's new file fails before it is committed), ignored ones left
    /// out. Outside a git checkout, every file but build directories.
    static func repositoryFiles(root: URL) throws -> [String] {
        let git = Process()
        git.executableURL = URL(fileURLWithPath: "/usr/bin/git")
        git.arguments = ["-C", root.path, "ls-files", "--cached", "--others", "--exclude-standard", "-z"]
        let pipe = Pipe()
        git.standardOutput = pipe
        git.standardError = FileHandle.nullDevice
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/git") {
            try git.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            git.waitUntilExit()
            if git.terminationStatus == 0 {
                return String(decoding: data, as: UTF8.self).split(separator: "\0").map(String.init)
            }
        }
        // Left out too: build state (SwiftPM's, quilt's, debhelper's, debian/rules'
        // own, the package's staging tree) and top-level directories that are Swift
        // packages of their own (the Debian source package's component tarballs).
        var files: [String] = []
        let enumerator = FileManager.default.enumerator(atPath: root.path)
        while let path = enumerator?.nextObject() as? String {
            if path.hasPrefix(".build") || path.hasPrefix(".git") || path.hasPrefix(".swiftpm") || path.hasPrefix(".pc/")
                || path.hasPrefix("debian/.")
                || path.hasPrefix("debian/dmop-broker/") { continue }
            let components = path.split(separator: "/")
            if components.count > 1,
               FileManager.default.fileExists(atPath: root.appendingPathComponent("\(components[0])/Package.swift").path) {
                continue
            }
            files.append(path)
        }
        return files
    }
}

@Suite("License")
struct LicenseTests {
    @Test("every source file of the repository starts with the SPDX line")
    func everySourceFileHasTheSPDXLine() throws {
        let root = TestSupport.packageRoot
        var checked: [String] = []
        var problems: [String] = []
        for path in try LicenseHeader.repositoryFiles(root: root) {
            let url = root.appendingPathComponent(path)
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), !isDirectory.boolValue,
                  let data = FileManager.default.contents(atPath: url.path) else { continue }
            let contents = String(decoding: data, as: UTF8.self)
            let first = contents.prefix(while: { $0 != "\n" })
            guard LicenseHeader.expectedLine(path: path, firstLine: String(first)) != nil else { continue }
            checked.append(path)
            if let problem = LicenseHeader.problem(path: path, contents: contents) { problems.append(problem) }
        }
        #expect(problems.isEmpty, "\(problems.count) files without the SPDX line:\n\(problems.joined(separator: "\n"))")
        // The selection itself: each kind of source is really looked at.
        for path in ["Package.swift", "scripts/test", ".ci/run", "man/dmop-broker.8", "policy/qemu-xen.policy",
                     "Sources/xendevicemodel/xendevicemodel.c", "Sources/CXen/cxen.h",
                     "Sources/CSeccomp/module.modulemap", "Sources/xendevicemodel/libxendevicemodel.map",
                     "Tests/DMOPBrokerTests/LicenseTests.swift"] {
            #expect(checked.contains(path), "\(path) is not among the files checked")
        }
        #expect(FileManager.default.fileExists(atPath: root.appendingPathComponent("LICENSE").path))
    }

    @Test("a missing or misplaced SPDX line is reported")
    func missingLineIsReported() {
        #expect(LicenseHeader.problem(path: "Sources/X/a.swift", contents: "import Glibc\n") != nil)
        #expect(LicenseHeader.problem(path: "Sources/X/a.swift", contents: "// SPDX-License-Identifier: MIT\nimport Glibc\n") == nil)
        #expect(LicenseHeader.problem(path: "Sources/X/a.c", contents: "// SPDX-License-Identifier: MIT\n") != nil,
                "C takes the block-comment form")
        #expect(LicenseHeader.problem(path: "scripts/new", contents: "#!/bin/sh\necho hi\n") != nil)
        #expect(LicenseHeader.problem(path: "scripts/new", contents: "# SPDX-License-Identifier: MIT\n#!/bin/sh\n") != nil,
                "the #! line must stay first")
        #expect(LicenseHeader.problem(path: "scripts/new", contents: "#!/bin/sh\n# SPDX-License-Identifier: MIT\n") == nil)
        #expect(LicenseHeader.problem(path: "man/x.8", contents: ".Dd May 1, 2026\n") != nil)
        #expect(LicenseHeader.problem(path: "policy/new.policy", contents: "allow nr_vcpus\n") != nil)
        #expect(LicenseHeader.problem(path: "Package.swift",
                                      contents: "// swift-tools-version:6.1\n// SPDX-License-Identifier: MIT\n") == nil)
        #expect(LicenseHeader.problem(path: "README.md", contents: "# dmop-broker\n") == nil, "documentation is not source")
        #expect(LicenseHeader.problem(path: "Tests/fuzz-corpus/decoder/x.bin", contents: "\u{0}\u{1}") == nil)
    }
}
