// SPDX-License-Identifier: MIT
// dmop-seccomp-probe: confines itself with exactly the broker's sandbox
// (Sandbox.confine, the same SeccompProfile), then does the one thing named
// on the command line. Tests run it per forbidden action and expect death
// by SIGSYS (enforce), the trap report (trap), or the log/EPERM outcome
// (log); the `allowed` action is the positive control.
//
// usage: dmop-seccomp-probe [--mode enforce|log|trap] [--user NAME|UID:GID]
//        [--allow-root] [--simulated] [--listen] [--audit-file | --audit-socket]
//        [--trap-exit-code N] ACTION
import CPosix
import CSandbox
import CXen
import DMOPPosix
import DMOPSandbox
import DMOPTooling
import Glibc

func say(_ text: String) {
    var line = "probe: " + text + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }  // SAFETY: write copies the bytes inside the closure.
}

func die(_ text: String, _ code: Int32 = 2) -> Never {
    say(text)
    exit(code)
}

/// The outcome of a forbidden call that did not kill: tests parse it.
func report(_ rc: Int, _ err: Int32 = errno) -> Never {
    say("result rc=\(rc) errno=\(rc < 0 ? Errno.name(err) : "0")")
    exit(0)
}

let actions = [
    "allowed", "crash", "mmap-over-cap", "ioctl-dm-op", "ioctl-other-request", "ioctl-restrict", "ioctl-other-fd", "openat", "socket", "connect",
    "execve", "fork", "clone3", "mprotect-exec", "mmap-exec", "ptrace", "kill-other", "sendmsg-other-fd",
    "recvmsg-other-fd", "write-other-fd", "getsockopt-other-option", "shutdown-other-fd", "read-client", "dup-client",
    "accept-other-fd", "dup3-other-target",
    "audit-openat-other-flags", "audit-openat-other-dir", "audit-dup3-other-target", "audit-fstat-other-fd",
    "audit-sendto-other-fd",
]

// Everything runs inside one nonisolated function: top-level code and its
// closures are @MainActor in Swift 6, and the runtime's isolation checks on
// such closures call gettid(2), which the broker's filter does not allow.
func runProbe() -> Never {
    var mode = SeccompMode.enforce
    var user: UserSpec?
    var allowRoot = false
    var simulated = false
    var listening = false
    var auditFile = false
    var auditSocket = false
    var trapExitCode: Int32 = 78
    var action: String?
    var arguments = CommandLine.arguments.dropFirst()
    while let argument = arguments.popFirst() {
        switch argument {
        case "--mode":
            guard let value = arguments.popFirst(), let parsed = SeccompMode(rawValue: value) else { die("--mode enforce|log|trap") }
            mode = parsed
        case "--user":
            guard let value = arguments.popFirst() else { die("--user needs a value") }
            do { user = try UserSpec.resolve(value) } catch { die("\(error)") }
        case "--allow-root": allowRoot = true
        case "--simulated": simulated = true
        case "--listen": listening = true
        case "--audit-file": auditFile = true
        case "--audit-socket": auditSocket = true
        case "--trap-exit-code":
            guard let value = arguments.popFirst(), let code = Int32(value) else { die("--trap-exit-code N") }
            trapExitCode = code
        case "--list":
            for name in actions { print(name) }
            exit(0)
        default:
            guard !argument.hasPrefix("-"), action == nil, actions.contains(argument) else { die("unknown argument \(argument)") }
            action = argument
        }
    }
    guard let action else { die("no action; one of: \(actions.joined(separator: " "))") }

    // --- Set-up, unconfined: the same kinds of fds a broker holds. ---
    func openNull() -> Int32 {
        let fd = open("/dev/null", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { die("open /dev/null: \(SystemError("open"))") }
        return fd
    }

    /// Stand-in for privcmd: DM_OP on /dev/null reaches the kernel and fails
    /// with ENOTTY, which proves the filter let it through.
    let privcmd = openNull()
    let otherNull = openNull()
    let parent = getppid()

    let pair: SocketPair
    do { pair = try SeqPacket.pair() } catch { die("\(error)") }
    // The probe's end stays open until it exits (a FileDescriptor's
    // lifetime may end at its last use, before an action needs the peer).
    let peer = pair.second.release()
    let mine = pair.first
    // Non-blocking, so that a receive on it that log mode lets through
    // returns EAGAIN instead of hanging.
    _ = fcntl(peer, F_SETFL, O_NONBLOCK)
    // With --simulated the stand-in stays open with no rights: an ioctl on
    // it would reach the kernel if the filter let it.
    var extra: [Int32] = [otherNull, peer] + (simulated ? [privcmd] : [])
    var client: ClientSocket
    var listenerFd: Int32 = -1
    let socketPath = "/tmp/dmop-seccomp-probe-\(getpid()).sock"
    /// A socket made before confinement, for the connect action.
    let spareSocket = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard spareSocket >= 0 else { die("socket: \(SystemError("socket"))") }
    extra.append(spareSocket)

    if listening {
        let listener: FileDescriptor
        do { listener = try SeqPacket.listen(path: socketPath) } catch { die("\(error)") }
        listenerFd = listener.release()
        let connecting: FileDescriptor
        do { connecting = try SeqPacket.connect(path: socketPath) } catch { die("\(error)") }
        unlink(socketPath)
        do { try SeqPacket.send(connecting.rawValue, Array("ping".utf8)) } catch { die("\(error)") }
        extra.append(connecting.release())
        // Placeholder on the fixed number, as the server reserves it.
        let slot = fcntl(listenerFd, F_DUPFD_CLOEXEC, 20)
        guard slot >= 0 else { die("F_DUPFD: \(SystemError("fcntl"))") }
        client = .listening(listener: listenerFd, clientFd: slot)
        mine.close()
    } else {
        do { try SeqPacket.send(peer, Array("ping".utf8)) } catch { die("\(error)") }
        client = .inherited(fd: mine.release())
    }

    var readyPipe: [Int32] = [-1, -1]
    guard pipe(&readyPipe) == 0, fcntl(readyPipe[0], F_SETFD, FD_CLOEXEC) == 0 else { die("pipe: \(SystemError("pipe"))") }
    extra.append(readyPipe[0])
    let rwPage = mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    guard rwPage != MAP_FAILED else { die("mmap: \(SystemError("mmap"))") }

    // The audit channel's fds as serve --audit-log FILE or journal/syslog
    // holds them. FILE: a private directory (the positive control's reopen
    // creates the file again in it; the test removes it, named on stderr).
    var audit: AuditDescriptors?
    var auditDirectory: Int32 = -1
    var auditFd: Int32 = -1
    var auditAddress = sockaddr_un()
    if auditFile {
        let directory: String
        do { directory = try Files.makeTemporaryDirectory("/tmp/dmop-seccomp-probe-audit-XXXXXX") } catch { die("\(error)") }
        auditDirectory = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        auditFd = openat(auditDirectory, "audit.log", SeccompProfile.auditFileFlags, 0o600)
        guard auditDirectory >= 0, auditFd >= 0 else { die("audit file: \(SystemError("open"))") }
        unlinkat(auditDirectory, "audit.log", 0)
        if action == "allowed" { say("audit directory: \(directory)") } else { rmdir(directory) }
        audit = .file(fd: auditFd, directory: auditDirectory)
    } else if auditSocket {
        // A bound receiver, so that the allowed sendto succeeds; in the
        // abstract namespace (leading NUL): no file is left behind.
        let name = [0] + Array("dmop-seccomp-probe-\(getpid())".utf8)
        let receiver = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        auditAddress.sun_family = sa_family_t(AF_UNIX)
        // SAFETY: the name (a NUL and under 30 bytes) fits sun_path's 108;
        // copied inside the closure. The sockaddr_un, initialised, is larger
        // than the one sockaddr rebound, and bind reads it during the call.
        withUnsafeMutableBytes(of: &auditAddress.sun_path) { $0.copyBytes(from: name) }
        let bound = withUnsafePointer(to: &auditAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(receiver, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        auditFd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard receiver >= 0, bound == 0, auditFd >= 0 else { die("audit socket: \(SystemError("socket"))") }
        extra.append(receiver)
        audit = .socket(fd: auditFd)
    }
    func sendAudit(_ fd: Int32) -> Int {
        // SAFETY: auditAddress is an initialised sockaddr_un, larger than the
        // one sockaddr rebound; sendto reads it only during the call.
        withUnsafePointer(to: &auditAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, "x", 1, Int32(MSG_NOSIGNAL), $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }

    let descriptors = SandboxDescriptors(privcmd: simulated ? nil : privcmd, client: client, ready: readyPipe[1],
                                         record: nil, audit: audit, extra: extra)
    let config = SandboxConfig(user: user, allowRoot: allowRoot, descriptors: descriptors, seccompMode: mode,
                               trapExitCode: trapExitCode)
    let confinement: Confinement
    do { confinement = try Sandbox.confine(config) } catch {
        die("\(error) [category \(error.category)]", 3)
    }
    say("\(confinement)")

    // --- Confined. ---
    let dmOp = UInt(cxen_ioctl_privcmd_dm_op())
    let clientFd = client.clientFd
    func ioctlRC(_ fd: Int32, _ request: UInt) -> Int {
        var scratch = [UInt8](repeating: 0, count: 64)
        // SAFETY: 64 bytes, more than any of the privcmd arguments the
        // requests name (and the fds are /dev/null, whose ioctls read none);
        // used only during the call; baseAddress is non-nil (not empty).
        return Int(scratch.withUnsafeMutableBytes { ioctl(fd, request, $0.baseAddress!) })
    }

    switch action {
    case "allowed":
        var connected = clientFd
        var revents: Int16 = 0
        if let listener = client.listener {
            guard cposix_wait(listener, Int16(POLLIN), 10_000_000_000, &revents) == 1 else { die("ppoll on the listener: \(SystemError("ppoll"))", 4) }
            let accepted = cposix_accept_cloexec(listener)
            guard accepted >= 0 else { die("accept4: \(SystemError("accept4"))", 4) }
            guard cposix_dup3_cloexec(accepted, clientFd) == clientFd else { die("dup3: \(SystemError("dup3"))", 4) }
            close(accepted)
            connected = clientFd
        }
        if !simulated {
            let rc = ioctlRC(privcmd, dmOp)
            guard rc == -1, errno == ENOTTY else { die("DM_OP on the privcmd stand-in: rc \(rc) \(Errno.name(errno)), want ENOTTY", 4) }
        }
        let credentials: SeqPacket.Credentials
        do { credentials = try SeqPacket.peerCredentials(connected) } catch { die("\(error)", 4) }
        var buffer = [UInt8](repeating: 0, count: 64)
        guard cposix_wait(connected, Int16(POLLIN), 10_000_000_000, &revents) == 1 else { die("ppoll on the client: \(SystemError("ppoll"))", 4) }
        let received: SeqPacket.Received
        // SAFETY: receive writes at most raw.count bytes, inside the closure.
        do { received = try buffer.withUnsafeMutableBytes { raw throws(SystemError) in try SeqPacket.receive(connected, into: raw) } } catch { die("\(error)", 4) }
        guard received == .datagram(4), buffer.prefix(4).elementsEqual("ping".utf8) else { die("received \(received)", 4) }
        do { try SeqPacket.send(connected, Array("pong".utf8)) } catch { die("\(error)", 4) }
        // Heap growth through brk and mmap, and a large realloc (mremap).
        var big = [UInt8](repeating: 1, count: 2 << 20)
        big.append(contentsOf: [UInt8](repeating: 2, count: 2 << 20))
        if listening { shutdown(connected, Int32(SHUT_RDWR)) }
        if auditFile {
            // A line, then what SIGHUP does: reopen by name, dup3 onto the
            // same number, the new file's size and link count.
            guard csandbox_probe_raw_write(auditFd, "x\n", 2) == 2 else { die("audit write: \(SystemError("write"))", 4) }
            let fresh = openat(auditDirectory, "audit.log", SeccompProfile.auditFileFlags, 0o600)
            guard fresh >= 0 else { die("audit reopen: \(SystemError("openat"))", 4) }
            guard cposix_dup3_cloexec(fresh, auditFd) == auditFd else { die("audit dup3: \(SystemError("dup3"))", 4) }
            close(fresh)
            var status = stat()
            guard cposix_fstat(auditFd, &status) == 0, status.st_size == 0, status.st_nlink == 1 else { die("audit fstat: \(SystemError("fstat"))", 4) }
        }
        if auditSocket, sendAudit(auditFd) != 1 { die("audit sendto: \(SystemError("sendto"))", 4) }
        do { try Sandbox.signalReady(fd: readyPipe[1]) } catch { die("\(error)", 4) }
        say("allowed: ok (\(simulated ? "no ioctl" : "ENOTTY from DM_OP"), peer pid \(credentials.pid), ping/pong, \(big.count) bytes)")
        exit(0)
    case "crash":
        // A Swift runtime trap after confinement: must end in SIGILL, not in
        // a SIGSYS from the backtracer's system calls.
        let values = [Int](repeating: 0, count: 1)
        say("crashing: \(values[Int(parent) & 0x7fff_ffff | 1])")
        exit(0)
    case "mmap-over-cap":
        // An allowed call that RLIMIT_AS must refuse: twice the cap.
        let size = Int(ResourceLimits.defaultAddressSpace) * 2
        let block = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        report(block == MAP_FAILED ? -1 : 0)
    case "ioctl-dm-op": report(ioctlRC(privcmd, dmOp))
    case "ioctl-other-request": report(ioctlRC(privcmd, UInt(cxen_ioctl_privcmd_hypercall())))
    case "ioctl-restrict": report(ioctlRC(privcmd, UInt(cxen_ioctl_privcmd_restrict())))
    case "ioctl-other-fd": report(ioctlRC(otherNull, dmOp))
    case "openat": report(Int(open("/etc/hostname", O_RDONLY | O_CLOEXEC)))
    case "socket": report(Int(socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)))
    case "connect":
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        // SAFETY: an initialised sockaddr_un, larger than the one sockaddr
        // rebound; connect reads only its family, during the call.
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(spareSocket, $0, socklen_t(MemoryLayout<sa_family_t>.size)) }
        }
        report(Int(rc))
    case "execve":
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        let envp: [UnsafeMutablePointer<CChar>?] = [nil]
        report(Int(execve("/bin/true", argv, envp)))
    case "fork": report(csandbox_probe_fork())
    case "clone3": report(csandbox_probe_clone3())
    case "mprotect-exec": report(Int(mprotect(rwPage, 4096, PROT_READ | PROT_EXEC)))
    case "mmap-exec":
        let page = mmap(nil, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        report(page == MAP_FAILED ? -1 : 0)
    case "ptrace": report(csandbox_probe_ptrace_traceme())
    case "kill-other": report(csandbox_probe_kill(parent, 0))
    case "sendmsg-other-fd":
        do { try SeqPacket.send(peer, Array("x".utf8)); report(1) } catch { report(-1, error.errno) }
    case "recvmsg-other-fd":
        var buffer = [UInt8](repeating: 0, count: 16)
        var truncated: Int32 = 0, fds: Int32 = 0
        // SAFETY: the receive writes at most $0.count bytes, inside the closure.
        report(buffer.withUnsafeMutableBytes { cposix_recv_datagram(peer, $0.baseAddress, $0.count, &truncated, &fds) })
    case "write-other-fd": report(csandbox_probe_raw_write(otherNull, "x", 1))
    case "getsockopt-other-option":
        var value: Int32 = 0
        var length = socklen_t(4)
        report(Int(getsockopt(clientFd, SOL_SOCKET, SO_TYPE, &value, &length)))
    case "shutdown-other-fd": report(Int(shutdown(peer, Int32(SHUT_RDWR))))
    case "read-client":
        var byte: UInt8 = 0
        report(read(clientFd, &byte, 1))
    case "dup-client": report(Int(dup(clientFd)))
    case "accept-other-fd": report(Int(cposix_accept_cloexec(spareSocket)))
    case "dup3-other-target": report(Int(cposix_dup3_cloexec(privcmd, 40)))
    case "audit-openat-other-flags": report(Int(openat(auditDirectory, "audit.log", O_RDWR | O_CLOEXEC)))
    case "audit-openat-other-dir": report(Int(openat(otherNull, "audit.log", SeccompProfile.auditFileFlags, 0o600)))
    case "audit-dup3-other-target": report(Int(cposix_dup3_cloexec(auditFd, 41)))
    case "audit-fstat-other-fd":
        var status = stat()
        report(Int(cposix_fstat(otherNull, &status)))
    case "audit-sendto-other-fd": report(sendAudit(otherNull))
    default: die("unhandled action \(action)")
    }
}

runProbe()
