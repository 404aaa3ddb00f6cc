// SPDX-License-Identifier: MIT
import CSeccomp
import CXen
import Glibc

/// One comparison on a system call argument (libseccomp `scmp_arg_cmp`).
public struct ArgumentCondition: Equatable, Sendable, CustomStringConvertible {
    public enum Comparison: Hashable, Sendable {
        case equal(UInt64)
        case notEqual(UInt64)
        /// (arg & mask) == value
        case maskedEqual(mask: UInt64, value: UInt64)
    }

    /// Argument index, 0...5.
    public let index: UInt32
    public let comparison: Comparison
    /// What the constant is, for people ("privcmd fd", "IOCTL_PRIVCMD_DM_OP").
    public let meaning: String

    public init(_ index: UInt32, _ comparison: Comparison, _ meaning: String) {
        self.index = index
        self.comparison = comparison
        self.meaning = meaning
    }

    public var description: String {
        switch comparison {
        case .equal(let v): "arg\(index) == \(Self.show(v)) (\(meaning))"
        case .notEqual(let v): "arg\(index) != \(Self.show(v)) (\(meaning))"
        case .maskedEqual(let mask, let v): "arg\(index) & \(Self.show(mask)) == \(Self.show(v)) (\(meaning))"
        }
    }

    static func show(_ v: UInt64) -> String { v < 4096 ? String(v) : "0x" + String(v, radix: 16) }

    var libseccomp: scmp_arg_cmp {
        switch comparison {
        case .equal(let v): scmp_arg_cmp(arg: index, op: SCMP_CMP_EQ, datum_a: v, datum_b: 0)
        case .notEqual(let v): scmp_arg_cmp(arg: index, op: SCMP_CMP_NE, datum_a: v, datum_b: 0)
        case .maskedEqual(let mask, let v): scmp_arg_cmp(arg: index, op: SCMP_CMP_MASKED_EQ, datum_a: mask, datum_b: v)
        }
    }
}

/// One filter entry: the call, the conditions that must all hold (none:
/// any arguments), and why the broker needs it.
public struct SyscallRule: Equatable, Sendable {
    public let name: String
    public let conditions: [ArgumentCondition]
    public let reason: String

    public init(_ name: String, _ conditions: [ArgumentCondition], _ reason: String) {
        self.name = name
        self.conditions = conditions
        self.reason = reason
    }

    /// A rule with no argument conditions.
    public init(_ name: String, _ reason: String) {
        self.init(name, [], reason)
    }
}

/// The broker's seccomp allow-list for one set of fd numbers, as data: the
/// same value builds the filter, prints `dmop-broker seccomp-profile`, and
/// drives the tests.
public struct SeccompProfile: Sendable {
    public let descriptors: SandboxDescriptors
    public let mode: SeccompMode
    /// Allowed; everything else takes the mode's default action.
    public let allowed: [SyscallRule]
    /// Refused with EPERM in log mode, where the default action would let
    /// them run: calls no broker ever needs and that would turn a bug into
    /// more than a logged line. In enforce and trap mode the default action
    /// already covers them, so they add no rule.
    public let neverAllowed: [SyscallRule]

    /// IOCTL_PRIVCMD_DM_OP, from <xen/sys/privcmd.h> via CXen.
    public static var dmOpRequest: UInt64 { UInt64(cxen_ioctl_privcmd_dm_op()) }

    public init(descriptors: SandboxDescriptors, mode: SeccompMode) throws(SandboxError) {
        try descriptors.validate()
        self.descriptors = descriptors
        self.mode = mode
        self.allowed = Self.allowList(descriptors)
        self.neverAllowed = Self.denyList(descriptors)
    }

    static func fd(_ value: Int32) -> UInt64 { UInt64(UInt32(bitPattern: value)) }

    /// The calls of every request, which the filter tests first, in this
    /// order (libseccomp's priority hint; what is allowed does not change).
    /// Their rules check an argument, so the kernel runs the filter for
    /// each of them: every call tested before them costs every request.
    public static let testedFirst = ["recvmsg", "sendmsg"]

    /// The open flags of the audit file, first and on SIGHUP (AuditSink uses
    /// the same value; a test checks they agree).
    public static let auditFileFlags: Int32 = O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW

    static func allowList(_ d: SandboxDescriptors) -> [SyscallRule] {
        let client = fd(d.client.clientFd)
        let noExec = ArgumentCondition(2, .maskedEqual(mask: UInt64(PROT_EXEC), value: 0), "prot without PROT_EXEC")
        var rules: [SyscallRule] = []

        // The request loop: one datagram in, one out, on the client socket only.
        rules.append(SyscallRule("ppoll", "wait for the client or listening socket with the stop signals unblocked only during the wait, so none is lost (pollfd is a pointer: the fd cannot be checked here; waiting grants nothing)"))
        rules.append(SyscallRule("rt_sigpending", "every 64th ready wait: is a stop signal pending that a busy client would otherwise starve"))
        rules.append(SyscallRule("recvmsg", [ArgumentCondition(0, .equal(client), "client socket")],
                                 "receive one request datagram; fds passed along are closed at once"))
        rules.append(SyscallRule("sendmsg", [ArgumentCondition(0, .equal(client), "client socket")],
                                 "send one reply datagram (MSG_NOSIGNAL)"))
        rules.append(SyscallRule("getsockopt", [
            ArgumentCondition(0, .equal(client), "client socket"),
            ArgumentCondition(1, .equal(UInt64(SOL_SOCKET)), "SOL_SOCKET"),
            ArgumentCondition(2, .equal(UInt64(SO_PEERCRED)), "SO_PEERCRED"),
        ], "read the peer's uid to enforce --peer-uid"))
        rules.append(SyscallRule("shutdown", [ArgumentCondition(0, .equal(client), "client socket")],
                                 "end a finished connection in --listen mode before the next accept"))
        if case .listening(let listener, _) = d.client {
            rules.append(SyscallRule("accept4", [ArgumentCondition(0, .equal(fd(listener)), "listening socket")],
                                     "take the next connection in --listen mode"))
            rules.append(SyscallRule("dup3", [ArgumentCondition(1, .equal(client), "fixed client fd")],
                                     "move an accepted connection onto the one fd number the socket rules name"))
        }

        // The one hypercall path: DM_OP on the restricted privcmd fd.
        if let privcmd = d.privcmd {
            rules.append(SyscallRule("ioctl", [
                ArgumentCondition(0, .equal(fd(privcmd)), "privcmd fd"),
                ArgumentCondition(1, .equal(dmOpRequest), "IOCTL_PRIVCMD_DM_OP"),
            ], "forward an allowed DMOP; no other privcmd ioctl (HYPERCALL, IRQFD, MMAP*, RESTRICT) and no other fd"))
        }

        // Output: audit lines, the record file, the ready line.
        rules.append(SyscallRule("write", [ArgumentCondition(0, .equal(fd(SandboxDescriptors.stderrFd)), "stderr")],
                                 "audit and error lines"))
        if let record = d.record {
            rules.append(SyscallRule("write", [ArgumentCondition(0, .equal(fd(record)), "record file")],
                                     "simulated hypervisor's call record (O_APPEND, bounded by RLIMIT_FSIZE)"))
        }
        switch d.audit {
        case .file(let audit, let directory):
            rules.append(SyscallRule("write", [ArgumentCondition(0, .equal(fd(audit)), "audit file")],
                                     "audit lines (--audit-log FILE, O_APPEND, bounded by RLIMIT_FSIZE)"))
            rules.append(SyscallRule("openat", [
                ArgumentCondition(0, .equal(fd(directory)), "audit directory"),
                ArgumentCondition(2, .equal(UInt64(UInt32(bitPattern: auditFileFlags))), "O_WRONLY|O_APPEND|O_CREAT|O_CLOEXEC|O_NOFOLLOW"),
            ], "SIGHUP: open the audit file again by name after rotation (write-only, in its own directory only)"))
            rules.append(SyscallRule("dup3", [ArgumentCondition(1, .equal(fd(audit)), "audit file")],
                                     "SIGHUP: move the reopened audit file onto the fd number the write rule names"))
            rules.append(SyscallRule("fstat", [ArgumentCondition(0, .equal(fd(audit)), "audit file")],
                                     "the audit file's size and link count: the room kept for refusals follows the file (copytruncate), and a line written to a deleted file is written again after a reopen"))
        case .socket(let audit):
            rules.append(SyscallRule("sendto", [ArgumentCondition(0, .equal(fd(audit)), "audit socket")],
                                     "audit lines to journald or syslog (--audit-log journal|syslog), one datagram each"))
        case nil:
            break
        }
        if let ready = d.ready {
            rules.append(SyscallRule("write", [ArgumentCondition(0, .equal(fd(ready)), "ready fd")],
                                     "the one 'ready' line after confinement"))
        }
        rules.append(SyscallRule("close", "drop a finished connection, the ready fd, fds that arrived by SCM_RIGHTS (closing is never a gain of access)"))

        // Memory: glibc malloc. The census of a whole session shows none of
        // these (the heap is warm before confinement); they stay because a
        // larger request or a free may still grow or trim the heap, and they
        // touch only the broker's own address space, capped by RLIMIT_AS.
        rules.append(SyscallRule("brk", "glibc malloc grows or trims the main heap"))
        rules.append(SyscallRule("mmap", [noExec], "malloc of a large block; never a new executable mapping"))
        rules.append(SyscallRule("munmap", "free of a large block"))
        rules.append(SyscallRule("mremap", "realloc of a large block"))
        rules.append(SyscallRule("madvise", "malloc trimming of freed memory (MADV_DONTNEED)"))
        rules.append(SyscallRule("mprotect", [noExec], "malloc arena growth; never makes memory executable"))

        // Time: the vDSO answers without a syscall where the clocksource
        // allows it; on a clocksource without vDSO support (possible in a Xen
        // dom0) glibc falls back to the system call.
        rules.append(SyscallRule("clock_gettime", "audit timestamps and rate limits on a clocksource without vDSO"))

        // Signals and exit.
        rules.append(SyscallRule("rt_sigreturn", "return from the SIGTERM/SIGINT stop handler, the SIGHUP/SIGUSR1 flag handler and the SIGALRM receive tick"))
        rules.append(SyscallRule("exit_group", "exit with the status that says why"))
        return rules
    }

    static func denyList(_ d: SandboxDescriptors) -> [SyscallRule] {
        var rules: [SyscallRule] = [
            SyscallRule("execve", "would replace the broker with any program, holding privcmd"),
            SyscallRule("execveat", "the same through a directory fd"),
            SyscallRule("ptrace", "would attach to or be controlled by another process"),
            SyscallRule("process_vm_writev", "would write another process's memory"),
        ]
        if let privcmd = d.privcmd {
            rules.append(SyscallRule("ioctl", [
                ArgumentCondition(0, .equal(fd(privcmd)), "privcmd fd"),
                ArgumentCondition(1, .notEqual(dmOpRequest), "not IOCTL_PRIVCMD_DM_OP"),
            ], "any other privcmd ioctl (IRQFD replays DMOPs from kernel context; HYPERCALL; MMAP*)"))
        }
        return rules
    }

    /// The names of all calls the filter lets through, sorted.
    public var allowedNames: [String] { Array(Set(allowed.map(\.name))).sorted() }

    /// The kernel's number for a name on this architecture, or nil.
    public static func number(of name: String) -> Int32? {
        let nr = seccomp_syscall_resolve_name(name)
        return nr >= 0 ? nr : nil
    }

    /// A table for people: one line per rule with its number, conditions
    /// and reason.
    public func render() -> String {
        var out = ""
        let defaultAction = switch mode {
        case .enforce: "kill the process (SIGSYS)"
        case .log: "allow and log (audit type=1326), except the calls refused below"
        case .trap: "SIGSYS to a handler that names the call on stderr and exits"
        }
        out += "seccomp profile, mode \(mode.rawValue): anything not listed -> \(defaultAction)\n"
        out += "architecture: native x86_64 only; any other ABI (i386, x32) -> kill the process\n"
        var roles = "fds: "
        roles += descriptors.privcmd.map { "privcmd=\($0)" } ?? "privcmd=none (simulated hypervisor: no ioctl)"
        switch descriptors.client {
        case .inherited(let fd): roles += ", client=\(fd) (inherited)"
        case .listening(let listener, let clientFd): roles += ", listener=\(listener), client=\(clientFd) (fixed dup3 target)"
        }
        if let ready = descriptors.ready { roles += ", ready=\(ready)" }
        if let record = descriptors.record { roles += ", record=\(record)" }
        switch descriptors.audit {
        case .file(let fd, let directory): roles += ", audit file=\(fd), audit directory=\(directory)"
        case .socket(let fd): roles += ", audit socket=\(fd)"
        case nil: break
        }
        out += roles + "\n\nallowed:\n"
        out += Self.table(allowed)
        if mode == .log, !neverAllowed.isEmpty {
            out += "\nrefused with EPERM even in log mode:\n"
            out += Self.table(neverAllowed)
        }
        return out
    }

    static func table(_ rules: [SyscallRule]) -> String {
        let nameWidth = max(8, rules.map(\.name.count).max() ?? 0)
        var out = ""
        for rule in rules {
            let nr = number(of: rule.name).map(String.init) ?? "?"
            let name = rule.name + String(repeating: " ", count: max(0, nameWidth - rule.name.count))
            let number = String(repeating: " ", count: max(0, 4 - nr.count)) + nr
            let conditions = rule.conditions.isEmpty ? "any arguments" : rule.conditions.map(\.description).joined(separator: " && ")
            out += "  \(name) \(number)  \(conditions)\n"
            out += "  \(String(repeating: " ", count: nameWidth + 5))  why: \(rule.reason)\n"
        }
        return out
    }
}
