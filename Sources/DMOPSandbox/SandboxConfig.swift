// SPDX-License-Identifier: MIT
/// How the broker's filter treats a system call that is not on the list.
public enum SeccompMode: String, Sendable, CaseIterable {
    /// Kill the whole process (SIGSYS, as if by a signal): the default.
    case enforce
    /// Let it run and have the kernel log it (audit type=1326), to find what
    /// a new distribution needs. The calls in `SeccompProfile.neverAllowed`
    /// still fail, with EPERM.
    case log
    /// Deliver SIGSYS to a handler that writes the call's number and name to
    /// stderr and exits with `SandboxConfig.trapExitCode`.
    case trap
}

/// The client socket as the filter sees it: a fixed fd number.
public enum ClientSocket: Equatable, Sendable {
    /// `--socket-fd N`: connected already, inherited from the toolstack.
    case inherited(fd: Int32)
    /// `--listen PATH`: the server accept4()s on `listener` and dup3()s each
    /// connection onto `clientFd` (open as a placeholder at confinement, or not).
    case listening(listener: Int32, clientFd: Int32)

    /// The fd number recvmsg/sendmsg/getsockopt are bound to.
    public var clientFd: Int32 {
        switch self {
        case .inherited(let fd): fd
        case .listening(_, let clientFd): clientFd
        }
    }

    public var listener: Int32? {
        if case .listening(let listener, _) = self { return listener }
        return nil
    }
}

/// The audit channel's fds, when it is not stderr (`serve --audit-log`).
public enum AuditDescriptors: Equatable, Sendable {
    /// A FILE: the file (written, O_APPEND) and its directory (SIGHUP
    /// reopens the file by name there and dup3()s it onto `fd`).
    case file(fd: Int32, directory: Int32)
    /// journal or syslog: an unconnected datagram socket (sendto).
    case socket(fd: Int32)

    public var fd: Int32 {
        switch self {
        case .file(let fd, _), .socket(let fd): fd
        }
    }
}

/// The fd numbers the filter binds its rules to. Every number is fixed
/// before the filter is loaded; a rule can only compare against constants.
public struct SandboxDescriptors: Equatable, Sendable {
    /// The restricted privcmd fd; nil with the simulated hypervisor (then no
    /// ioctl at all is allowed).
    public var privcmd: Int32?
    public var client: ClientSocket
    /// Where `ready\n` is written once, after the filter is loaded.
    public var ready: Int32?
    /// The simulated hypervisor's record file (O_APPEND).
    public var record: Int32?
    /// The audit channel, when it is not stderr.
    public var audit: AuditDescriptors?
    /// Kept open but given no rights by the filter (tests use this).
    public var extra: [Int32]

    public init(privcmd: Int32?, client: ClientSocket, ready: Int32? = nil, record: Int32? = nil,
                audit: AuditDescriptors? = nil, extra: [Int32] = []) {
        self.privcmd = privcmd
        self.client = client
        self.ready = ready
        self.record = record
        self.audit = audit
        self.extra = extra
    }

    /// fd 2: audit and error lines.
    public static let stderrFd: Int32 = 2

    /// The fds that must be open when confinement starts (not the listening
    /// mode's client number, which is opened by dup3 later).
    public var mustBeOpen: [(role: String, fd: Int32)] {
        var list: [(String, Int32)] = []
        if let privcmd { list.append(("privcmd", privcmd)) }
        switch client {
        case .inherited(let fd): list.append(("client socket", fd))
        case .listening(let listener, _): list.append(("listening socket", listener))
        }
        if let ready { list.append(("ready fd", ready)) }
        if let record { list.append(("record file", record)) }
        switch audit {
        case .file(let fd, let directory):
            list.append(("audit file", fd))
            list.append(("audit directory", directory))
        case .socket(let fd):
            list.append(("audit socket", fd))
        case nil:
            break
        }
        for fd in extra { list.append(("extra", fd)) }
        return list
    }

    /// Everything that stays open if it is open: stdio, `mustBeOpen`, and in
    /// listening mode the fixed client number (the server may hold it with a
    /// placeholder so that accept4 can never return that very number, which
    /// dup3 would then refuse).
    public var kept: Set<Int32> {
        var set: Set<Int32> = [0, 1, 2]
        for entry in mustBeOpen { set.insert(entry.fd) }
        set.insert(client.clientFd)
        return set
    }

    /// Rejects negative numbers and one fd in two roles (a filter bound to
    /// an fd number that means two things would allow both on each).
    public func validate() throws(SandboxError) {
        var roles: [(String, Int32)] = mustBeOpen
        if case .listening(_, let clientFd) = client { roles.append(("client fd", clientFd)) }
        // At most six roles: compared pairwise rather than through a
        // Dictionary, whose first use costs more at start than this does.
        for (index, (role, fd)) in roles.enumerated() {
            guard fd >= 0 else { throw SandboxError(.configuration, "\(role) fd \(fd) is negative") }
            if let other = roles[..<index].first(where: { $0.1 == fd }) {
                throw SandboxError(.configuration, "fd \(fd) is both the \(other.0) and the \(role)")
            }
        }
        if case .listening(_, let clientFd) = client, clientFd <= 2 {
            throw SandboxError(.configuration, "the fixed client fd \(clientFd) must not be a stdio fd")
        }
    }
}

/// Everything `Sandbox.confine` needs.
public struct SandboxConfig: Sendable {
    /// `--user`; nil keeps the current ids (refused for root unless `allowRoot`).
    public var user: UserSpec?
    /// `--allow-root`: tests only.
    public var allowRoot: Bool
    public var descriptors: SandboxDescriptors
    public var seccompMode: SeccompMode
    /// RLIMIT_AS in bytes; see `ResourceLimits.defaultAddressSpace`.
    public var addressSpaceLimit: UInt64
    /// How far a kept regular file (record file, or stderr redirected to a
    /// log file) may grow past its size at confinement (RLIMIT_FSIZE).
    public var fileGrowthLimit: UInt64
    /// Exit status of the --seccomp trap handler (ExitStatus.seccompViolation).
    public var trapExitCode: Int32

    public init(user: UserSpec?, allowRoot: Bool = false, descriptors: SandboxDescriptors,
                seccompMode: SeccompMode = .enforce,
                addressSpaceLimit: UInt64 = ResourceLimits.defaultAddressSpace,
                fileGrowthLimit: UInt64 = ResourceLimits.defaultFileGrowth,
                trapExitCode: Int32) {
        self.user = user
        self.allowRoot = allowRoot
        self.descriptors = descriptors
        self.seccompMode = seccompMode
        self.addressSpaceLimit = addressSpaceLimit
        self.fileGrowthLimit = fileGrowthLimit
        self.trapExitCode = trapExitCode
    }
}
