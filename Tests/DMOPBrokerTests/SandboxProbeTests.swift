// SPDX-License-Identifier: MIT
import DMOPPosix
import DMOPSandbox
import DMOPTooling
import Foundation
import Glibc
import Testing

/// Runs dmop-seccomp-probe, which confines itself with Sandbox.confine (the
/// broker's own code path and profile) and then does one thing.
enum SeccompProbe {
    static var path: String { TestSupport.productsDirectory.appendingPathComponent("dmop-seccomp-probe").path }

    struct Outcome: CustomStringConvertible {
        let status: Int32
        let stderr: String
        var signal: Int32? { status & 0x7f == 0 ? nil : status & 0x7f }
        var exitCode: Int32? { status & 0x7f == 0 ? (status >> 8) & 0xff : nil }
        var confined: Bool { stderr.contains("probe: confined:") }
        /// The "result rc=.. errno=.." line of a forbidden call that did not kill.
        var result: (rc: Int, errno: String)? {
            guard let line = stderr.split(separator: "\n").last(where: { $0.hasPrefix("probe: result ") }) else { return nil }
            let fields = line.split(separator: " ")
            guard fields.count == 4, let rc = Int(fields[2].dropFirst(3)) else { return nil }
            return (rc, String(fields[3].dropFirst(6)))
        }
        var description: String { "\(Spawn.describe(status: status)); stderr: \(stderr)" }
    }

    /// Root runs the probe with --allow-root unless a --user is given.
    static func run(_ arguments: [String],
                    environment: [String] = ["SWIFT_BACKTRACE=enable=no", "PATH=/usr/bin:/bin"]) throws -> Outcome {
        let directory = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let errPath = directory.appendingPathComponent("stderr").path
        var argv = [path]
        if geteuid() == 0, !arguments.contains("--user") { argv.append("--allow-root") }
        argv += ["--trap-exit-code", String(ExitCodes.seccompViolation)] + arguments
        let pid = try Spawn.start(path, argv, stderrPath: errPath, environment: environment)
        let status = try Spawn.wait(pid)
        let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        return Outcome(status: status, stderr: stderr)
    }
}

/// The broker's exit statuses the tests check (dmop-broker(8)).
enum ExitCodes {
    static let seccompViolation: Int32 = 78
}

/// One forbidden action: the probe's argument, any set-up flags, the system
/// call the trap reports, and what log mode does with it.
struct Mutation: CustomTestStringConvertible, Sendable {
    enum InLogMode: Sendable {
        /// Refused with EPERM even in log mode (SeccompProfile.neverAllowed).
        case eperm
        /// Runs (and is logged): the probe reports a result other than EPERM.
        case runs
    }

    let action: String
    let flags: [String]
    let syscall: String
    let inLog: InLogMode
    var testDescription: String { ([action] + flags).joined(separator: " ") }

    init(_ action: String, _ syscall: String, _ inLog: InLogMode = .runs, flags: [String] = []) {
        self.action = action
        self.syscall = syscall
        self.inLog = inLog
        self.flags = flags
    }
}

let sandboxMutations: [Mutation] = [
    Mutation("ioctl-other-request", "ioctl", .eperm),
    Mutation("ioctl-restrict", "ioctl", .eperm),
    Mutation("ioctl-other-fd", "ioctl"),
    Mutation("ioctl-dm-op", "ioctl", flags: ["--simulated"]),
    Mutation("openat", "openat"),
    Mutation("socket", "socket"),
    Mutation("connect", "connect"),
    Mutation("execve", "execve", .eperm),
    Mutation("fork", "clone"),
    Mutation("clone3", "clone3"),
    Mutation("mprotect-exec", "mprotect"),
    Mutation("mmap-exec", "mmap"),
    Mutation("ptrace", "ptrace", .eperm),
    Mutation("kill-other", "kill"),
    Mutation("sendmsg-other-fd", "sendmsg"),
    Mutation("recvmsg-other-fd", "recvmsg"),
    Mutation("write-other-fd", "write"),
    Mutation("getsockopt-other-option", "getsockopt"),
    Mutation("getsockopt-other-option", "getsockopt", flags: ["--listen"]),
    Mutation("shutdown-other-fd", "shutdown"),
    Mutation("read-client", "read"),
    Mutation("dup-client", "dup"),
    Mutation("accept-other-fd", "accept4", flags: ["--listen"]),
    Mutation("dup3-other-target", "dup3", flags: ["--listen"]),
    Mutation("audit-openat-other-flags", "openat", flags: ["--audit-file"]),
    Mutation("audit-openat-other-dir", "openat", flags: ["--audit-file"]),
    Mutation("audit-dup3-other-target", "dup3", flags: ["--audit-file"]),
    Mutation("audit-fstat-other-fd", "fstat", flags: ["--audit-file"]),
    Mutation("write-other-fd", "write", flags: ["--audit-file"]),
    Mutation("audit-sendto-other-fd", "sendto", flags: ["--audit-socket"]),
]

@Suite("seccomp: per-rule mutations in a confined probe")
struct SandboxProbeTests {
    @Test("positive control: the calls the broker makes pass the filter", arguments: [
        [], ["--listen"], ["--simulated"], ["--mode", "trap"], ["--mode", "log"], ["--listen", "--mode", "trap"],
        ["--audit-file"], ["--audit-socket"], ["--listen", "--audit-file", "--mode", "trap"],
    ])
    func allowedCallsWork(flags: [String]) throws {
        let outcome = try SeccompProbe.run(flags + ["allowed"])
        if let line = outcome.stderr.split(separator: "\n").first(where: { $0.hasPrefix("probe: audit directory: ") }) {
            try? FileManager.default.removeItem(atPath: String(line.dropFirst("probe: audit directory: ".count)))
        }
        #expect(outcome.exitCode == 0, "\(outcome)")
        #expect(outcome.stderr.contains("probe: allowed: ok"), "\(outcome)")
    }

    @Test("a crash after confinement ends in SIGILL, with the Swift backtracer left enabled", arguments: ["enforce", "trap"])
    func crashIsACrash(mode: String) throws {
        let outcome = try SeccompProbe.run(["--mode", mode, "crash"], environment: ["SWIFT_BACKTRACE=enable=yes", "PATH=/usr/bin:/bin"])
        #expect(outcome.confined, "\(outcome)")
        #expect(outcome.signal == SIGILL, "\(outcome)")
    }

    @Test("RLIMIT_AS: an allowed mmap beyond the cap fails with ENOMEM")
    func addressSpaceCap() throws {
        let outcome = try SeccompProbe.run(["mmap-over-cap"])
        #expect(outcome.confined && outcome.result?.rc == -1 && outcome.result?.errno == "ENOMEM", "\(outcome)")
    }

    @Test("positive control: DM_OP on the privcmd fd reaches the kernel (ENOTTY from /dev/null)")
    func dmOpReachesKernel() throws {
        let outcome = try SeccompProbe.run(["ioctl-dm-op"])
        #expect(outcome.exitCode == 0, "\(outcome)")
        #expect(outcome.result?.rc == -1 && outcome.result?.errno == "ENOTTY", "\(outcome)")
    }

    @Test("positive control, dropped to 65534:65534 (root only)", .enabled(if: geteuid() == 0))
    func allowedAfterDrop() throws {
        let outcome = try SeccompProbe.run(["--user", "65534:65534", "--listen", "allowed"])
        #expect(outcome.exitCode == 0, "\(outcome)")
        #expect(outcome.stderr.contains("uid 65534/65534/65534 gid 65534/65534/65534, 0 supplementary groups"), "\(outcome)")
    }

    @Test("enforce: the forbidden call kills the process with SIGSYS", arguments: sandboxMutations)
    func enforceKills(mutation: Mutation) throws {
        let outcome = try SeccompProbe.run(mutation.flags + [mutation.action])
        #expect(outcome.confined, "probe did not get confined: \(outcome)")
        #expect(outcome.signal == SIGSYS, "\(outcome)")
        #expect(outcome.result == nil, "the call returned: \(outcome)")
    }

    @Test("trap: the handler names the call on stderr and exits 78", arguments: sandboxMutations)
    func trapReports(mutation: Mutation) throws {
        let outcome = try SeccompProbe.run(mutation.flags + ["--mode", "trap", mutation.action])
        #expect(outcome.exitCode == ExitCodes.seccompViolation, "\(outcome)")
        let number = try #require(SeccompProfile.number(of: mutation.syscall))
        #expect(outcome.stderr.contains("dmop-broker: seccomp: forbidden system call \(number) (\(mutation.syscall)), arch 0xc000003e"),
                "\(outcome)")
    }

    @Test("log: the call runs and is logged, except the never-allowed ones, which get EPERM", arguments: sandboxMutations)
    func logMode(mutation: Mutation) throws {
        let outcome = try SeccompProbe.run(mutation.flags + ["--mode", "log", mutation.action])
        #expect(outcome.exitCode == 0, "\(outcome)")
        let result = try #require(outcome.result, "\(outcome)")
        switch mutation.inLog {
        case .eperm: #expect(result.rc == -1 && result.errno == "EPERM", "\(outcome)")
        case .runs: #expect(result.errno != "EPERM", "\(outcome)")
        }
    }

    @Test("every conditional rule of the profile has a mutation that breaks its condition")
    func mutationsCoverConditionalRules() throws {
        let profiles = [
            try SeccompProfile(descriptors: SandboxDescriptors(privcmd: 3, client: .listening(listener: 4, clientFd: 10),
                                                               ready: 5, record: 6), mode: .enforce),
            try SeccompProfile(descriptors: SandboxDescriptors(privcmd: 3, client: .inherited(fd: 4)), mode: .enforce),
            try SeccompProfile(descriptors: SandboxDescriptors(privcmd: 3, client: .listening(listener: 4, clientFd: 10),
                                                               audit: .file(fd: 7, directory: 8)), mode: .enforce),
            try SeccompProfile(descriptors: SandboxDescriptors(privcmd: 3, client: .inherited(fd: 4),
                                                               audit: .socket(fd: 7)), mode: .enforce),
        ]
        let covered = Set(sandboxMutations.map(\.syscall))
        for profile in profiles {
            for rule in profile.allowed where !rule.conditions.isEmpty {
                #expect(covered.contains(rule.name), "no mutation test breaks the condition of \(rule.name)")
            }
        }
    }
}
