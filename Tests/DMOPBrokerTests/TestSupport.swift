// SPDX-License-Identifier: MIT
import DMOPCore
import Foundation

/// Shared helpers for the tests.
enum TestSupport {
    /// Directory holding the built products (dmop-broker, helpers): the
    /// test bundle lives beside them.
    static var productsDirectory: URL {
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = bundle.deletingLastPathComponent()
        // Swift Testing on Linux may run from the .xctest inside the products dir.
        while !FileManager.default.fileExists(atPath: directory.appendingPathComponent("dmop-broker").path),
              directory.path != "/" {
            directory = directory.deletingLastPathComponent()
        }
        return directory
    }

    /// The broker under test: this build's, or DMOP_TEST_BROKER's, the
    /// broker of a build against another release's Xen headers
    /// (scripts/test-trixie-headers runs each build's clients against the
    /// other build's broker).
    static var brokerPath: String {
        if let other = ProcessInfo.processInfo.environment["DMOP_TEST_BROKER"], !other.isEmpty { return other }
        return productsDirectory.appendingPathComponent("dmop-broker").path
    }

    /// The package root (policy/, man/ live there).
    static var packageRoot: URL {
        var directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: directory.appendingPathComponent("Package.swift").path) {
            directory = directory.deletingLastPathComponent()
        }
        return directory
    }

    static func policyPath(_ name: String) -> String {
        packageRoot.appendingPathComponent("policy/\(name)").path
    }

    static func policy(_ text: String, file: String = "test.policy") throws -> Policy {
        try Policy.parse(text, file: file)
    }

    static func op(_ name: String) -> OpSpec {
        guard let op = Catalogue.op(named: name) else { fatalError("no op \(name) in the catalogue") }
        return op
    }

    /// Runs the decision on byte arrays.
    static func decideBytes(restricted: UInt16 = 5, policy: Policy, domid: UInt16 = 5, _ buffers: [[UInt8]]) -> Decision {
        func recurse(_ index: Int, _ views: [UnsafeRawBufferPointer]) -> Decision {
            if index == buffers.count {
                return views.withUnsafeBufferPointer {
                    decide(restrictedDomid: restricted, policy: policy, request: DMOPRequest(domid: domid, buffers: $0))
                }
            }
            return buffers[index].withUnsafeBytes { recurse(index + 1, views + [$0]) }
        }
        return recurse(0, [])
    }

    static func temporaryDirectory() -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("dmop-test-\(UUID().uuidString.prefix(8))")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Compiles a C program with the system headers and returns its output.
    static func compileAndRun(_ source: String, flags: [String] = []) throws -> String {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let cFile = directory.appendingPathComponent("probe.c")
        let binary = directory.appendingPathComponent("probe")
        try source.write(to: cFile, atomically: true, encoding: .utf8)
        let compile = try run("/usr/bin/cc", ["-std=gnu11", "-Wall", "-o", binary.path, cFile.path] + flags)
        guard compile.status == 0 else { throw TestFailure("cc failed: \(compile.output)") }
        let result = try run(binary.path, [])
        guard result.status == 0 else { throw TestFailure("probe failed: \(result.output)") }
        return result.output
    }

    static func run(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
