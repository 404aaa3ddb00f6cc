// SPDX-License-Identifier: MIT
@testable import DMOPServe
import Foundation
import Glibc
import Testing

/// The two executables: `dmop-broker` serves without swift-argument-parser
/// and runs `dmop-broker-tools` for every other command line.
@Suite("broker executables: a lean dmop-broker, dmop-broker-tools for the rest")
struct BrokerExecutablesTests {
    static let policy = TestSupport.policyPath("qemu-xen.policy")

    @Test("dmop-broker links neither swift-argument-parser nor Foundation; dmop-broker-tools does")
    func brokerIsLean() throws {
        let broker = try Data(contentsOf: URL(fileURLWithPath: TestSupport.brokerPath))
        let tools = try Data(contentsOf: TestSupport.productsDirectory.appendingPathComponent(BrokerExecutables.tools))
        // Module names as they appear in mangled symbols and metadata.
        for module in ["14ArgumentParser", "20FoundationEssentials"] {
            #expect(broker.range(of: Data(module.utf8)) == nil, "dmop-broker contains \(module)")
        }
        #expect(tools.range(of: Data("14ArgumentParser".utf8)) != nil, "the tools lost ArgumentParser?")
    }

    @Test("the shipped dmop-broker has no simulated hypervisor; the tools and the benchmark's broker do")
    func noSimulatorInTheBroker() throws {
        let broker = try Data(contentsOf: URL(fileURLWithPath: TestSupport.brokerPath))
        // The module's name as every one of its mangled symbols carries it.
        let simulator = Data("14DMOPSimulation".utf8)
        #expect(broker.range(of: simulator) == nil, "dmop-broker links DMOPSimulation")
        for other in [BrokerExecutables.tools, "dmop-bench-broker"] {
            let data = try Data(contentsOf: TestSupport.productsDirectory.appendingPathComponent(other))
            #expect(data.range(of: simulator) != nil, "\(other) lost the simulated hypervisor?")
        }
    }

    @Test("a simulated serve line given to dmop-broker is served by the tools, with the same outcome")
    func simulatedServeRunsInTheTools() throws {
        // Usage errors come out of whichever executable serves the line: the
        // same text from both shows the hand-over kept every argument.
        let line = ["serve", "--hypervisor", "simulated", "--domid", "5", "--policy", Self.policy,
                    "--listen", "/nonexistent/dir/broker.sock", "--allow-root"]
        let tools = TestSupport.productsDirectory.appendingPathComponent(BrokerExecutables.tools).path
        let viaBroker = try runBroker(line)
        let direct = try TestSupport.run(tools, line)
        #expect(viaBroker.status != 0 && viaBroker.status == direct.status, "\(viaBroker) vs \(direct)")
        #expect(viaBroker.output.contains("/nonexistent/dir"), "\(viaBroker.output)")
    }

    @Test("the installed layout and a build directory, both ways")
    func candidates() {
        #expect(BrokerExecutables.toolsCandidates(brokerPath: "/usr/sbin/dmop-broker")
            == ["/usr/libexec/dmop-broker/dmop-broker-tools", "/usr/sbin/dmop-broker-tools"])
        #expect(BrokerExecutables.brokerCandidates(toolsPath: "/usr/local/libexec/dmop-broker/dmop-broker-tools")
            == ["/usr/local/sbin/dmop-broker", "/usr/local/libexec/dmop-broker/dmop-broker"])
        #expect(BrokerExecutables.toolsCandidates(brokerPath: "/b/.build/debug/dmop-broker")
            == ["/b/.build/libexec/dmop-broker/dmop-broker-tools", "/b/.build/debug/dmop-broker-tools"])
        #expect(BrokerExecutables.brokerCandidates(toolsPath: "/b/.build/debug/dmop-broker-tools").last
            == "/b/.build/debug/dmop-broker")
    }

    @Test("the other commands, --help and a serve line the broker cannot take run in the tools, as before")
    func runsTheTools() throws {
        let tools = TestSupport.productsDirectory.appendingPathComponent(BrokerExecutables.tools).path
        for arguments in [["catalogue"], ["--help"], ["serve", "--help"], ["policy", "check", Self.policy]] {
            let viaBroker = try runBroker(arguments)
            let direct = try TestSupport.run(tools, arguments)
            #expect(viaBroker.status == direct.status && viaBroker.output == direct.output, "\(arguments)")
            #expect(!viaBroker.output.isEmpty)
        }
        let version = try runBroker(["--version"])
        #expect(version.status == 0 && version.output == "dmop-broker \(brokerVersion)\n", "\(version)")
    }

    @Test("serve's own parser knows every option of `serve --help`, and takes the wrapper's line whole")
    func parserCoversServe() throws {
        let tools = TestSupport.productsDirectory.appendingPathComponent(BrokerExecutables.tools).path
        let help = try TestSupport.run(tools, ["serve", "--help"]).output
        var documented = Set<String>()
        for word in help.split(whereSeparator: { $0 == " " || $0 == "\n" }) where word.hasPrefix("--") {
            documented.insert(String(word.prefix { $0 == "-" || ("a"..."z").contains($0) }))
        }
        documented.subtract(["--help", "--version"])
        let known = Set(ServeArguments.Values.names.map { "--" + $0 } + ["--allow-root"])
        #expect(documented == known, "only in --help: \(documented.subtracting(known)); only in the parser: \(known.subtracting(documented))")
        // What dmop-qemu-wrapper passes: parsed here, no exec of the tools.
        let wrapperLine = ["--domid", "7", "--socket-fd", "3", "--ready-fd", "4", "--policy", Self.policy,
                           "--user", "dmop-7", "--audit-log=/var/log/dmop-broker/-7.log", "--guest-name=-guest,7"]
        let options = try #require(ServeArguments.parse(wrapperLine[...]))
        #expect(options.domid.value == 7 && options.socketFD == 3 && options.readyFd == 4
                && options.confinement.user == "dmop-7" && options.guestName == "-guest,7")
        #expect(options.auditIntervalMilliseconds == 10_000)
        let soak = try #require(ServeArguments.parse((wrapperLine + ["--audit-interval-ms", "0"])[...]))
        #expect(soak.auditIntervalMilliseconds == 0)
        #expect(ServeArguments.parse((wrapperLine + ["--audit-interval-ms", "-1"])[...]) == nil)
    }

    @Test("the broker alone: serve still runs; anything else exits 83 and names what is missing")
    func toolsMissing() throws {
        let directory = "/tmp/dmop-lone-broker-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let lone = directory + "/dmop-broker"
        try FileManager.default.copyItem(atPath: TestSupport.brokerPath, toPath: lone)

        // Parsed and run by the broker itself: it gets as far as opening
        // the privcmd device (/dev/null is not one).
        let serve = try TestSupport.run(lone, ["serve", "--privcmd", "/dev/null", "--domid", "5",
                                               "--policy", Self.policy, "--socket-fd", "77", "--allow-root"])
        #expect(serve.status == ExitStatus.hypervisorOpen.rawValue && serve.output.contains("not a privcmd device"),
                "\(serve)")
        let version = try TestSupport.run(lone, ["--version"])
        #expect(version.status == 0, "\(version)")

        let missing = "\(directory)/dmop-broker-tools: ENOENT"
        for (arguments, says) in [
            (["policy", "check", Self.policy], "'policy' is run by dmop-broker-tools, which cannot be run"),
            (["serve", "--help"], "this serve command line needs the full parser"),
            (["serve", "--hypervisor", "simulated", "--domid", "5", "--policy", Self.policy, "--socket-fd", "77"],
             "the simulated hypervisor is in dmop-broker-tools, which cannot be run"),
            ([], "the usage text is printed by dmop-broker-tools"),
        ] {
            let result = try TestSupport.run(lone, arguments)
            #expect(result.status == ExitStatus.toolsMissing.rawValue, "\(arguments): \(result)")
            #expect(result.output.hasPrefix("dmop-broker: ") && result.output.contains(says)
                    && result.output.contains(missing), "\(result.output)")
            #expect(result.output.split(separator: "\n").count == 1, "one line: \(result.output)")
        }
    }
}
