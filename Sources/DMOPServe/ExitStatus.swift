// SPDX-License-Identifier: MIT
/// Exit statuses of `dmop-broker`, one per reason, listed in dmop-broker(8).
/// A toolstack reads them to tell why a broker went away.
public enum ExitStatus: Int32, CaseIterable, Sendable {
    /// Clean end: the client hung up (--socket-fd), or SIGTERM/SIGINT.
    case ok = 0
    /// `policy explain`: the request would be refused.
    case explainRefused = 1
    /// Bad command line (ArgumentParser's own code).
    case usage = 64
    /// The policy file could not be read or did not parse.
    case policy = 65
    /// The hypervisor device could not be opened or queried.
    case hypervisorOpen = 66
    /// IOCTL_PRIVCMD_RESTRICT failed or the domid is reserved.
    case restrict = 67
    /// The restriction did not take (a plain hypercall was not refused).
    case restrictionNotVerified = 68
    /// The socket could not be set up (inherit, bind, listen).
    case socket = 69
    /// Refused to run as root without --user (or --allow-root).
    case rootRefused = 70
    /// setgroups/setresgid/setresuid or a prctl failed.
    case privilegeDrop = 71
    /// Closing inherited fds or setting an rlimit failed.
    case resourceLimits = 72
    /// The seccomp filter could not be built or loaded.
    case seccomp = 73
    /// The ready fd could not be written.
    case readyFd = 74
    /// The simulated record file could not be opened.
    case recordFile = 75
    /// An I/O error on the client socket other than a hang-up.
    case clientIO = 76
    /// The peer's uid is not the one --peer-uid allows (--socket-fd mode).
    case peerRefused = 77
    /// A seccomp trap: the broker made a system call its filter lacks.
    case seccompViolation = 78
    /// The client broke the protocol and was disconnected (--socket-fd mode,
    /// where the broker lives for that one client).
    case clientViolation = 79
    /// The client's HELLO named no protocol version or DMOP ABI in
    /// common with the broker; it got REFUSED (--socket-fd mode).
    case helloRefused = 80
    /// The --audit-log channel could not be opened.
    case auditLog = 81
    /// The hypervisor is a Xen release outside the table of releases whose
    /// DMOP ABI this build was checked against (or its version could not be
    /// read), and --accept-xen does not name it.
    case xenReleaseUnchecked = 82
    /// A command other than `serve` (or a `serve` command line that needs
    /// the full parser's help or error) was given, and the tools executable
    /// that runs it is missing or cannot be executed.
    case toolsMissing = 83
}
