// SPDX-License-Identifier: MIT
import ArgumentParser
import DMOPSandbox
import DMOPServe
import DMOPSimulatedServe
import DMOPServer

/// `serve` as ArgumentParser declares it: its help and its usage errors.
/// A line that parses here runs the same ServeOptions.run() as the broker.
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve one guest's device model: restrict privcmd to --domid, confine, then forward allowed DMOPs.")

    @Option(parsing: .unconditional, help: "The guest's domid (1 to 32751); privcmd is restricted to it.",
            transform: Domid.argument)
    var domid: Domid

    @Option(help: "Listen on this Unix socket path (mode 0600; only a stale socket is replaced).")
    var listen: String?

    @Option(name: .customLong("socket-fd"), help: "Serve the connected SOCK_SEQPACKET socket inherited on this fd; exit when it hangs up.")
    var socketFD: Int32?

    @Option(help: "Policy file (dmop-broker.policy(5)).")
    var policy: String

    @Option(help: "privcmd (the real driver) or simulated (a model of privcmd and Xen).")
    var hypervisor: HypervisorKind = .privcmd

    @Option(help: "Path of the privcmd device.")
    var privcmd: String = "/dev/xen/privcmd"

    @Option(help: "Simulated mode: append one JSON line per call that reached the hypervisor to this file.")
    var simulatedRecord: String?

    @Option(help: "Simulated mode: the guest's number of vCPUs.")
    var simulatedVcpus: UInt32 = 2

    @Option(help: ArgumentHelp("Simulated mode: the Xen release XENVER_version reports.", valueName: "X.Y"))
    var simulatedXenVersion: XenReleaseArgument?

    @Option(help: ArgumentHelp("Run on this Xen release although it is not one whose DMOP ABI this build was checked against (a risk: see dmop-broker(8)); 'unknown' accepts a hypervisor whose version cannot be read. Repeatable.", valueName: "X.Y"))
    var acceptXen: [XenAcceptance] = []

    @Option(help: "Only serve a peer with this uid (SO_PEERCRED).")
    var peerUid: UInt32?

    @Option(help: "Write 'ready\\n' to this fd once serving, then close it.")
    var readyFd: Int32?

    @Option(name: .customLong("audit-log"), help: ArgumentHelp(
        "Where audit lines go: stderr, journal (journald's native protocol), syslog (RFC 5424 on /dev/log; syslog:SOCKET for another socket), or a FILE path (opened before confinement, appended; SIGHUP reopens it).",
        valueName: "stderr|journal|syslog|FILE"))
    var auditLog: AuditChannel = .stderr

    @Option(name: .customLong("audit-forwards"), help: "aggregate: one line per op per 10 s with counts; each: one line per forwarded DMOP.")
    var auditForwards: AuditForwards = .aggregate

    @Option(name: .customLong("audit-failure"), help: "When the audit log cannot take forward lines: refuse (refuse forwards with AUDIT_UNAVAILABLE until it can) or continue (forward, count the lost lines).")
    var auditFailure: AuditFailure = .refuse

    @Option(name: .customLong("audit-interval-ms"), help: "--audit-forwards aggregate: sum forwards over this many milliseconds per line (0: every forward ends its interval; dmop-bench soak uses it to write days of lines in minutes).")
    var auditIntervalMilliseconds: UInt32 = 10_000

    @Option(name: .customLong("guest-name"), help: "The guest's name, for the audit trail (journal field DMOP_GUEST, start line).")
    var guestName: String?

    @Option(help: "--listen: disconnect a client that sends no HELLO within this many seconds.")
    var helloTimeout: UInt32 = 10

    @OptionGroup var confinement: ConfinementArguments

    var options: ServeOptions {
        var options = ServeOptions(domid: domid, policy: policy)
        options.listen = listen
        options.socketFD = socketFD
        options.hypervisor = hypervisor
        options.privcmd = privcmd
        options.simulatedRecord = simulatedRecord
        options.simulatedVcpus = simulatedVcpus
        options.simulatedXenVersion = simulatedXenVersion
        options.acceptXen = acceptXen
        options.peerUid = peerUid
        options.readyFd = readyFd
        options.auditLog = auditLog
        options.auditForwards = auditForwards
        options.auditFailure = auditFailure
        options.auditIntervalMilliseconds = auditIntervalMilliseconds
        options.guestName = guestName
        options.helloTimeout = helloTimeout
        options.confinement.user = confinement.user
        options.confinement.allowRoot = confinement.allowRoot
        options.confinement.seccomp = confinement.seccomp
        return options
    }

    func validate() throws {
        if let refusal = options.invalidCombination() { throw ValidationError(refusal) }
    }

    func run() {
        options.run(simulated: SimulatedServe.backend)
    }
}

/// The confinement options of `serve` (dmop-broker(8), SECURITY).
struct ConfinementArguments: ParsableArguments {
    @Option(help: "Drop to this user after setup: NAME or UID:GID. Required when started as root.")
    var user: String?

    @Flag(help: "Allow running as root without --user (tests only).")
    var allowRoot = false

    @Option(help: "seccomp action for a system call outside the allow-list: enforce (kill the process), log (let it run, kernel logs it), or trap (report its name and exit 78).")
    var seccomp: SeccompMode = .enforce
}
