// SPDX-License-Identifier: MIT
import Foundation
import Glibc

/// Builds the C test programs of Tests/clib once per test run, against the
/// system <xendevicemodel.h> and Debian's libxendevicemodel, and a private
/// directory where our libdmop-xendevicemodel.so answers to the name
/// libxendevicemodel.so.1 (what dmop-qemu-wrapper puts on LD_LIBRARY_PATH).
struct ClientLibraryFixture: Sendable {
    let directory: URL
    let libraryDirectory: URL
    let golden: String
    let e2e: String
    let posted: String
    let postedResults: String
    let fakeQEMU: String

    static let products = TestSupport.productsDirectory
    static var libraryPath: String { products.appendingPathComponent("libdmop-xendevicemodel.so").path }
    static var wrapperPath: String { products.appendingPathComponent("dmop-qemu-wrapper").path }
    static var clibSources: URL { TestSupport.packageRoot.appendingPathComponent("Tests/clib") }

    /// Compiled once; every test gets the same result (or the same error).
    static let shared: Result<ClientLibraryFixture, TestFailure> = Result { try build() }
        .mapError { $0 as? TestFailure ?? TestFailure("\($0)") }

    static func get() throws -> ClientLibraryFixture { try shared.get() }

    private static func build() throws -> ClientLibraryFixture {
        guard FileManager.default.fileExists(atPath: libraryPath) else {
            throw TestFailure("\(libraryPath) is missing: build the dmop-xendevicemodel product (swift build)")
        }
        let directory = TestSupport.temporaryDirectory()
        let lib = directory.appendingPathComponent("lib")
        try FileManager.default.createDirectory(at: lib, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: lib.appendingPathComponent("libxendevicemodel.so.1").path,
                                                   withDestinationPath: libraryPath)
        let root = TestSupport.packageRoot
        let includes = ["-I", root.appendingPathComponent("Sources/xendevicemodel/include").path,
                        "-I", root.appendingPathComponent("Sources/dmop-qemu-wrapper").path,
                        "-I", root.appendingPathComponent("Sources/CXen").path]
        func compile(_ name: String, _ libs: [String]) throws -> String {
            let out = directory.appendingPathComponent(name).path
            let source = clibSources.appendingPathComponent("\(name).c").path
            // Linked against Xen's own library, as QEMU is.
            let result = try ProcessRun.run("/usr/bin/cc",
                                            ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-o", out, source]
                                                + includes + libs)
            guard result.status == 0 else { throw TestFailure("cc \(name).c failed:\n\(result.output)") }
            return out
        }
        return ClientLibraryFixture(
            directory: directory, libraryDirectory: lib,
            golden: try compile("golden", ["-rdynamic", "-lxendevicemodel", "-lxentoolcore", "-lpthread", "-ldl"]),
            e2e: try compile("e2e", ["-lxendevicemodel", "-lxentoolcore", "-lpthread"]),
            posted: try compile("posted", ["-lxendevicemodel", "-lxentoolcore", "-lpthread"]),
            postedResults: try compile("posted_results", ["-lxendevicemodel", "-lxentoolcore"]),
            fakeQEMU: try compile("fake_qemu", ["-lxendevicemodel", "-lxentoolcore", "-ldl"]))
    }

    /// A fresh scratch directory for one test.
    func scratch(_ name: String) throws -> URL {
        let url = directory.appendingPathComponent("\(name)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Our library first on the loader's path, as the wrapper arranges.
    var ourLibraryEnvironment: [String: String] { ["LD_LIBRARY_PATH": libraryDirectory.path] }
}

/// Runs a program with a deadline, output (stdout and stderr, in order)
/// captured to a file so that processes it leaves behind cannot hold a pipe
/// open.
enum ProcessRun {
    struct Outcome: CustomStringConvertible {
        let status: Int32
        let output: String
        let seconds: Double
        var description: String { "exit \(status) after \(String(format: "%.2f", seconds)) s:\n\(output)" }
    }

    static func run(_ path: String, _ arguments: [String], environment: [String: String] = [:],
                    removing: [String] = [], timeout: Double = 120) throws -> Outcome {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("dmop-run-\(UUID().uuidString)")
        guard FileManager.default.createFile(atPath: log.path, contents: nil) else {
            throw TestFailure("cannot create \(log.path)")
        }
        defer { try? FileManager.default.removeItem(at: log) }
        let handle = try FileHandle(forWritingTo: log)
        defer { try? handle.close() }

        var env = ProcessInfo.processInfo.environment
        for key in removing { env.removeValue(forKey: key) }
        // The test runner's own variables must not steer the programs.
        env.removeValue(forKey: "DMOP_BROKER_FD")
        env.removeValue(forKey: "DMOP_BROKER_SOCKET")
        env.removeValue(forKey: "LD_LIBRARY_PATH")
        env["SWIFT_BACKTRACE"] = "enable=no"
        for (key, value) in environment { env[key] = value }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.environment = env
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        let start = Date()
        try process.run()
        while process.isRunning {
            if Date().timeIntervalSince(start) > timeout {
                process.terminate()
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
                throw TestFailure("\(path) did not finish within \(timeout) s:\n\(output)")
            }
            usleep(10_000)
        }
        process.waitUntilExit()
        let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        return Outcome(status: process.terminationStatus, output: output,
                       seconds: Date().timeIntervalSince(start))
    }

    /// True once pid has exited (gone, or a zombie nobody reaps: the broker
    /// is adopted by init, which may not reap here).
    static func hasExited(_ pid: pid_t) -> Bool {
        guard let state = ProcStatus.state(pid) else { return true }
        return state == "Z" || state == "X"
    }

    static func waitForExit(_ pid: pid_t, timeout: Double) -> Bool {
        let start = Date()
        while Date().timeIntervalSince(start) < timeout {
            if hasExited(pid) { return true }
            usleep(20_000)
        }
        return hasExited(pid)
    }

    /// The closing "N passed, M failed" line of a C test program.
    static func counts(_ output: String, program: String) -> (passed: Int, failed: Int)? {
        for line in output.split(separator: "\n").reversed() where line.hasPrefix("\(program): ") {
            let words = line.split(separator: " ")
            guard words.count >= 5, let passed = Int(words[words.count - 4]),
                  let failed = Int(words[words.count - 2]) else { continue }
            return (passed, failed)
        }
        return nil
    }
}
