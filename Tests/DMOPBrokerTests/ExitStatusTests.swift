// SPDX-License-Identifier: MIT
import DMOPServe
import Foundation
import Glibc
import Testing

/// The broker's table (Swift Testing has an ExitStatus of its own).
typealias BrokerExit = DMOPServe.ExitStatus

/// The statuses dmop-broker(8) lists under EXIT STATUS (`.It N`).
func manualExitStatuses(_ page: String) throws -> [Int32] {
    let text = try String(contentsOf: TestSupport.packageRoot.appendingPathComponent("man/\(page)"), encoding: .utf8)
    guard let start = text.range(of: "\n.Sh EXIT STATUS\n") else { throw TestFailure("\(page) has no EXIT STATUS") }
    let section = text[start.upperBound...]
    let end = section.range(of: "\n.Sh ")?.lowerBound ?? section.endIndex
    return section[..<end].split(separator: "\n").compactMap { line in
        line.hasPrefix(".It ") ? Int32(line.dropFirst(4)) : nil
    }
}

@Suite("exit statuses: one table for the code and dmop-broker(8); each failure run")
struct ExitStatusTests {
    @Test("dmop-broker(8) EXIT STATUS lists exactly the statuses of the code (and 159, death by SIGSYS)")
    func manualMatchesCode() throws {
        let documented = try manualExitStatuses("dmop-broker.8")
        #expect(documented == BrokerExit.allCases.map(\.rawValue) + [159])
    }

    struct Failure: CustomTestStringConvertible, Sendable {
        let arguments: [String]
        let status: BrokerExit
        /// What the one line says.
        let says: String
        var testDescription: String { "\(status.rawValue): \(arguments.joined(separator: " "))" }
    }

    static let policy = TestSupport.policyPath("qemu-xen.policy")
    static let simulated = ["serve", "--hypervisor", "simulated", "--domid", "5", "--policy", policy]

    /// Failures that need no real Xen, run one by one (fd 77 is not open
    /// in the broker).
    static let failures: [Failure] = [
        Failure(arguments: ["policy", "explain", "--policy", policy, "--domid", "5", "nr_vcpus"], status: .explainRefused,
                says: "refuse: OP_NOT_ALLOWED"),
        Failure(arguments: ["serve", "--listne", "/tmp/x", "--domid", "5", "--policy", policy], status: .usage,
                says: "Unknown option '--listne'"),
        Failure(arguments: ["serve", "--domid", "5", "--policy", policy], status: .usage,
                says: "give exactly one of --listen PATH and --socket-fd N"),
        Failure(arguments: ["serve", "--domid", "0", "--socket-fd", "77", "--policy", policy], status: .usage,
                says: "domid 0 is dom0"),
        Failure(arguments: ["serve", "--domid", "-1", "--socket-fd", "77", "--policy", policy], status: .usage,
                says: "'-1' is not a domid"),
        Failure(arguments: ["serve", "--domid", "32752", "--socket-fd", "77", "--policy", policy], status: .usage,
                says: "domid 32752 is reserved"),
        Failure(arguments: ["serve", "--domid", "5", "--socket-fd", "77", "--policy", "/tmp"], status: .policy,
                says: "dmop-broker: policy /tmp: read /tmp: EISDIR (Is a directory)"),
        Failure(arguments: ["serve", "--domid", "5", "--socket-fd", "77", "--policy", policy, "--privcmd", "/dev/null", "--allow-root"],
                status: .hypervisorOpen, says: "dmop-broker: --privcmd /dev/null is not a privcmd device"),
        Failure(arguments: ["serve", "--domid", "5", "--socket-fd", "77", "--policy", policy, "--privcmd", "/etc/hostname", "--allow-root"],
                status: .hypervisorOpen, says: "dmop-broker: --privcmd /etc/hostname is not a privcmd device (a regular file)"),
        Failure(arguments: simulated + ["--socket-fd", "77", "--allow-root"], status: .socket,
                says: "dmop-broker: --socket-fd 77: getsockopt(SO_TYPE): EBADF"),
        // serve's own parser (ServeArguments) takes --name=value as ArgumentParser does ...
        Failure(arguments: simulated + ["--socket-fd=77", "--allow-root"], status: .socket,
                says: "dmop-broker: --socket-fd 77: getsockopt(SO_TYPE): EBADF"),
        // ... and leaves every line it cannot take whole to ArgumentParser's messages.
        Failure(arguments: simulated + ["--socket-fd", "77", "--hello-timeout", "soon"], status: .usage,
                says: "The value 'soon' is invalid for '--hello-timeout <hello-timeout>'"),
        Failure(arguments: simulated + ["--socket-fd", "77", "--allow-root", "--allow-root"], status: .socket,
                says: "dmop-broker: --socket-fd 77: getsockopt(SO_TYPE): EBADF"),
        Failure(arguments: simulated + ["--socket-fd", "77", "--simulated-record", "/nonexistent/dir/record", "--allow-root"],
                status: .recordFile, says: "/nonexistent/dir/record"),
        Failure(arguments: simulated + ["--socket-fd", "77", "--audit-log", "/nonexistent/dir/audit.log", "--allow-root"],
                status: .auditLog, says: "dmop-broker: --audit-log /nonexistent/dir/audit.log: audit log directory /nonexistent/dir: ENOENT"),
    ]

    /// Statuses a test elsewhere runs, or that need a real privcmd or a
    /// failing system call to reach.
    static let coveredElsewhere: [BrokerExit: String] = [
        .ok: "EndToEndTests (hang-up, SIGTERM)",
        .restrict: "needs a real privcmd (scripts/xen-test)",
        .restrictionNotVerified: "needs a privcmd that ignores RESTRICT",
        .rootRefused: "SandboxBrokerTests: as root without --user",
        .privilegeDrop: "needs a failing setresuid",
        .resourceLimits: "needs a failing setrlimit or close_range",
        .seccomp: "needs a failing seccomp_load",
        .readyFd: "needs a ready fd that cannot be written",
        .clientIO: "needs a socket error other than a hang-up",
        .peerRefused: "EndToEndTests / SandboxBrokerTests: --peer-uid",
        .seccompViolation: "SandboxProbeTests: trap mode",
        .clientViolation: "EndToEndTests: protocol error in --socket-fd mode",
        .helloRefused: "EndToEndTests: refused HELLO",
        .xenReleaseUnchecked: "EndToEndTests: a Xen release outside the table",
        .toolsMissing: "BrokerExecutablesTests: the broker alone, without dmop-broker-tools",
    ]

    @Test("each failure exits with its status and says why in one line", arguments: failures)
    func runs(failure: Failure) throws {
        let result = try runBroker(failure.arguments)
        #expect(result.status == failure.status.rawValue, "\(result)")
        #expect(result.output.contains(failure.says), "\(result.output)")
        if result.output.hasPrefix("dmop-broker: ") {
            #expect(result.output.split(separator: "\n").count == 1, "one line: \(result.output)")
        }
        // Words, not code identifiers.
        for identifier in ["rootRefused", "resolveUser", "verifyFds", "Domid(value", "errno 2"] {
            #expect(!result.output.contains(identifier), "\(result.output)")
        }
    }

    @Test("every status is run above or named with the test that covers it")
    func everyStatusAccountedFor() {
        let run = Set(Self.failures.map(\.status))
        for status in BrokerExit.allCases {
            #expect(run.contains(status) || Self.coveredElsewhere[status] != nil, "status \(status.rawValue) is not tested")
        }
    }

    @Test("--audit-log syslog:SOCKET whose daemon is gone (the socket file left behind): refused at start, in words")
    func staleLogSocket() throws {
        let path = "/tmp/dmop-stale-\(getpid()).sock"
        unlink(path)
        defer { unlink(path) }
        // Bound, then closed: the file stays, nothing receives on it.
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        close(fd)
        try #require(bound == 0)
        let result = try runBroker(Self.simulated + ["--socket-fd", "77", "--audit-log", "syslog:\(path)", "--allow-root"])
        #expect(result.status == BrokerExit.auditLog.rawValue, "\(result)")
        #expect(result.output.contains("no daemon listens: ECONNREFUSED"), "\(result.output)")
    }

    @Test("--user with an unknown name: one line that names the option once")
    func unknownUser() throws {
        let result = try runBroker(Self.simulated + ["--listen", "/tmp/dmop-exit-\(getpid()).sock", "--user", "nosuchuser"])
        #expect(result.status == BrokerExit.usage.rawValue, "\(result)")
        let line = try #require(result.output.split(separator: "\n").first { $0.hasPrefix("dmop-broker: ") })
        #expect(String(line) == "dmop-broker: --user 'nosuchuser': no such user", "\(result.output)")
        unlink("/tmp/dmop-exit-\(getpid()).sock")
    }
}
