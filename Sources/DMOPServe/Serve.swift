// SPDX-License-Identifier: MIT
import CPosix
import DMOPCore
import DMOPTrusted
import DMOPPosix
import DMOPSandbox
import DMOPServer
import Glibc
import Logging

public enum HypervisorKind: String, CaseIterable, Sendable {
    case privcmd, simulated
}

/// The simulated hypervisor behind a serve line that asks for it, with its
/// record file's fd (kept open through the confinement). The shipped broker
/// links no simulator: the executables that do (the tools, the benchmark's
/// broker) pass a factory to `ServeOptions.run(simulated:)`.
public struct SimulatedBackend {
    public let hypervisor: any Hypervisor
    public let recordFD: Int32?

    public init(hypervisor: any Hypervisor, recordFD: Int32?) {
        self.hypervisor = hypervisor
        self.recordFD = recordFD
    }
}

public typealias SimulatedBackendFactory = (ServeOptions) throws(HypervisorError) -> SimulatedBackend

/// `dmop-broker serve`'s options, with their defaults (dmop-broker(8)).
/// Filled by ServeArguments in the broker, or by ArgumentParser in the
/// tools executable; both then call run().
public struct ServeOptions {
    public var domid: Domid
    public var listen: String?
    public var socketFD: Int32?
    public var policy: String
    public var hypervisor: HypervisorKind = .privcmd
    public var privcmd: String = "/dev/xen/privcmd"
    public var simulatedRecord: String?
    public var simulatedVcpus: UInt32 = 2
    public var simulatedXenVersion: XenReleaseArgument?
    public var acceptXen: [XenAcceptance] = []
    public var peerUid: UInt32?
    public var readyFd: Int32?
    public var auditLog: AuditChannel = .stderr
    public var auditForwards: AuditForwards = .aggregate
    public var auditFailure: AuditFailure = .refuse
    /// --audit-interval-ms: how long aggregated forwards are summed.
    public var auditIntervalMilliseconds: UInt32 = 10_000
    public var guestName: String?
    public var helloTimeout: UInt32 = 10
    public var confinement = ConfinementOptions()

    public init(domid: Domid, policy: String) {
        self.domid = domid
        self.policy = policy
    }

    /// The refusal of a combination of options, or nil. "Exactly one of"
    /// is checked in run(): refused here, it would hide an unknown option
    /// (a mistyped --listen) behind this message in ArgumentParser's output.
    public func invalidCombination() -> String? {
        if simulatedRecord != nil && hypervisor != .simulated {
            return "--simulated-record needs --hypervisor simulated"
        }
        if simulatedXenVersion != nil && hypervisor != .simulated {
            return "--simulated-xen-version needs --hypervisor simulated"
        }
        return nil
    }

    /// Sets up, confines and serves; exits with a status of dmop-broker(8).
    /// Without `simulated`, a `--hypervisor simulated` line is run by the
    /// tools executable (the same line, before any side effect).
    public func run(simulated: SimulatedBackendFactory? = nil) -> Never {
        if hypervisor == .simulated, simulated == nil {
            BrokerExecutables.execTools(CommandLine.arguments, why: "the simulated hypervisor is in")
        }
        guard (listen == nil) != (socketFD == nil) else {
            fail(.usage, "give exactly one of --listen PATH and --socket-fd N")
        }
        if cposix_install_stop_handler() != 0 { fail(.socket, "sigaction: \(SystemError("sigaction"))") }
        // 1. Arguments and policy, all resolved before the first side effect.
        let policy = loadPolicy(self.policy)
        let user = confinement.resolveUser()

        // The audit channel: every later line goes there.
        let sink: AuditSink
        do {
            sink = try AuditSink.open(auditLog, owner: user.map { (uid: $0.uid, gid: $0.gid) })
        } catch {
            fail(.auditLog, "--audit-log \(auditLog): \(error)")
        }
        sink.guestName = guestName
        let audit = Logger(label: "dmop-broker[\(getpid())]") { AuditLogHandler(label: $0, sink: sink) }

        // 2. The hypervisor: open, check its release, restrict, prove the restriction.
        let (hypervisor, recordFD) = makeHypervisor(simulated: simulated)
        checkXenRelease(hypervisor.xenVersion, audit: audit)
        let unverified: UnverifiedRestriction
        do {
            unverified = try RestrictedHypervisor.restrict(hypervisor, to: domid.value)
        } catch {
            if error.step == .notPrivcmd { fail(.hypervisorOpen, "--privcmd \(error)") }
            fail(.restrict, "restrict to domid \(domid.value): \(error)")
        }
        let restricted: RestrictedHypervisor
        do {
            restricted = try unverified.verify()
        } catch {
            fail(.restrictionNotVerified, "restriction to domid \(domid.value) not in force: \(error)")
        }
        audit.info("restriction verified: domid=\(domid.value) hypervisor=\(hypervisor.kind) (a plain hypercall is refused with EPERM)")

        // 3. The socket.
        let endpoint = openEndpoint()

        // The server allocates its buffers, and the first audit line warms
        // up what logging touches, before the filter forbids new things.
        // One client slot in --listen mode: a connection that never says
        // HELLO must not hold it. After the HELLO an idle client keeps it
        // (QEMU may be idle for as long as its guest is).
        let server = BrokerServer(policy: policy, hypervisor: restricted,
                                  peerUID: peerUid, audit: audit,
                                  auditOptions: AuditOptions(forwards: auditForwards, failure: auditFailure,
                                                            interval: UInt64(auditIntervalMilliseconds) * 1_000_000),
                                  helloTimeoutNanoseconds: listen == nil ? nil : UInt64(helloTimeout) * 1_000_000_000)
        if case .connected = endpoint { server.blockingReceive = true }
        audit.info("starting version=\(brokerVersion) domid=\(domid.value) hypervisor=\(hypervisor.kind) xen_version=\(hypervisor.xenVersion >> 16).\(hypervisor.xenVersion & 0xffff) policy=\(Logfmt.quote(policy.source)) allowed=\(policy.rules.map(\.op.name).joined(separator: ",")) audit_log=\(Logfmt.quote(auditLog.description)) audit_forwards=\(auditForwards.rawValue) audit_failure=\(auditFailure.rawValue)\(guestName.map { " guest=\(Logfmt.quote($0))" } ?? "")")

        // 4-5. Drop privileges, close fds, rlimits, seccomp.
        confinement.confine(user: user, hypervisor: hypervisor, record: recordFD, endpoint: endpoint, readyFd: readyFd,
                            auditSink: sink, audit: audit)
        boundSocketPath = nil

        // 6. Ready: confined, and no client byte read yet.
        if let readyFd {
            do { try Sandbox.signalReady(fd: readyFd) } catch { fail(.readyFd, "\(error)") }
        }

        // 7. Serve.
        switch endpoint {
        case .connected(let fd):
            let end = server.serve(connection: fd)
            server.finish()
            exitFor(end)
        case .listening(let listener, let slot):
            while true {
                var revents: Int16 = 0
                // Not Syscall's retry: an EINTR here is a signal to act on.
                if cposix_wait(listener, Int16(POLLIN), -1, &revents) < 0 {
                    if errno == EINTR, cposix_stop_signal() != 0 { break }
                    if cposix_runtime_signal_pending() != 0 { server.handleRuntimeSignals() }
                    continue
                }
                if cposix_stop_signal() != 0 { break }
                if cposix_runtime_signal_pending() != 0 { server.handleRuntimeSignals() }
                let connection: FileDescriptor
                do {
                    connection = try SeqPacket.accept(listener)
                } catch {
                    if error.errno == EAGAIN || error.errno == ECONNABORTED { continue }
                    audit.error("accept failed: \(error)")
                    continue
                }
                // Every client lives on the same fd number, so the seccomp
                // filter can pin socket I/O to it.
                guard cposix_dup3_cloexec(connection.rawValue, slot) == slot else {
                    audit.error("dup3 failed: \(SystemError("dup3"))")
                    continue
                }
                connection.close()
                let end = server.serve(connection: slot)
                shutdown(slot, Int32(SHUT_RDWR))
                if end == .stopped { break }
            }
            server.finish()
            Glibc.exit(ExitStatus.ok.rawValue)
        }
    }

    /// The hypervisor, and the simulated one's record fd.
    func makeHypervisor(simulated: SimulatedBackendFactory?) -> (any Hypervisor, Int32?) {
        do throws(HypervisorError) {
            switch hypervisor {
            case .privcmd:
                let device = try PrivcmdHypervisor(path: privcmd)
                // /dev/null or another character device: no privcmd ioctl.
                if device.versionQueryErrno == ENOTTY {
                    fail(.hypervisorOpen, "--privcmd \(privcmd) is not a privcmd device (it does not know IOCTL_PRIVCMD_HYPERCALL)")
                }
                return (device, nil)
            case .simulated:
                guard let simulated else { fail(.usage, "this executable has no simulated hypervisor") }
                let backend = try simulated(self)
                return (backend.hypervisor, backend.recordFD)
            }
        } catch {
            if error.step == .recordFile { fail(.recordFile, "\(error)") }
            if error.step == .notPrivcmd { fail(.hypervisorOpen, "--privcmd \(error)") }
            fail(.hypervisorOpen, "\(hypervisor.rawValue): \(error)")
        }
    }

    enum Endpoint {
        case connected(Int32)
        /// The listening fd and the fixed fd number each client is moved to.
        case listening(Int32, slot: Int32)
    }

    func openEndpoint() -> Endpoint {
        if let socketFD {
            var type: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(socketFD, SOL_SOCKET, SO_TYPE, &type, &length) == 0 else {
                fail(.socket, "--socket-fd \(socketFD): \(SystemError("getsockopt(SO_TYPE)"))")
            }
            guard type == Int32(SOCK_SEQPACKET.rawValue) else {
                fail(.socket, "--socket-fd \(socketFD) is not a SOCK_SEQPACKET socket")
            }
            _ = fcntl(socketFD, F_SETFD, FD_CLOEXEC)
            // Blocking: after a reply the broker waits for the next request
            // in recvmsg (sends and the other receives pass MSG_DONTWAIT).
            // A periodic SIGALRM interrupts it, which bounds how long a stop
            // signal, blocked outside ppoll, waits while the client idles
            // (not SO_RCVTIMEO, which arms a kernel timer on every receive).
            let flags = fcntl(socketFD, F_GETFL)
            guard flags >= 0, fcntl(socketFD, F_SETFL, flags & ~O_NONBLOCK) == 0 else {
                fail(.socket, "--socket-fd \(socketFD): \(SystemError("fcntl"))")
            }
            guard cposix_start_receive_ticks(BrokerServer.receiveTickNanoseconds) == 0 else {
                fail(.socket, "--socket-fd \(socketFD): \(SystemError("setitimer"))")
            }
            return .connected(socketFD)
        }
        guard let listen else { fail(.usage, "no socket") }
        let listener: FileDescriptor
        // The socket is 0600; with --peer-uid it is handed to the one uid
        // allowed to connect, so a broker started as root can serve a QEMU
        // running as its own user.
        do { listener = try SeqPacket.listen(path: listen, owner: peerUid) } catch { fail(.socket, "\(error)") }
        boundSocketPath = listen
        // Reserve the client slot now, before the filter is loaded.
        let slot = fcntl(listener.rawValue, F_DUPFD_CLOEXEC, 10)
        guard slot >= 0 else { fail(.socket, "\(SystemError("fcntl(F_DUPFD_CLOEXEC)"))") }
        let flags = fcntl(listener.rawValue, F_GETFL)
        guard flags >= 0, fcntl(listener.rawValue, F_SETFL, flags | O_NONBLOCK) == 0 else {
            fail(.socket, "\(SystemError("fcntl(O_NONBLOCK)"))")
        }
        return .listening(listener.release(), slot: slot)
    }

    func exitFor(_ end: SessionEnd) -> Never {
        switch end {
        case .hangUp, .stopped:
            Glibc.exit(ExitStatus.ok.rawValue)
        case .helloRefused:
            Glibc.exit(ExitStatus.helloRefused.rawValue)
        case .protocolViolation:
            Glibc.exit(ExitStatus.clientViolation.rawValue)
        case .peerRefused:
            Glibc.exit(ExitStatus.peerRefused.rawValue)
        case .ioError:
            Glibc.exit(ExitStatus.clientIO.rawValue)
        case .helloTimeout:
            Glibc.exit(ExitStatus.clientViolation.rawValue)
        }
    }
}
