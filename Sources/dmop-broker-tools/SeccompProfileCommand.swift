// SPDX-License-Identifier: MIT
import ArgumentParser
import DMOPPosix
import DMOPSandbox
import DMOPServe
import Glibc

/// `dmop-broker seccomp-profile`: the allow-list `serve` would load, for
/// review. The filter binds rules to fd numbers; the defaults are the
/// numbers `serve` gets when started with only stdio open (privcmd or the
/// record file first, then the listener, then the client slot at 10).
struct SeccompProfileCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seccomp-profile",
        abstract: "Print the seccomp allow-list that serve loads, one rule per line with its reason.")

    @Option(help: "privcmd (ioctl DM_OP allowed on --privcmd-fd) or simulated (no ioctl at all).")
    var hypervisor: HypervisorKind = .privcmd

    @Option(name: .customLong("socket-fd"), help: "Profile for --socket-fd N (default: --listen).")
    var socketFD: Int32?

    @Option(name: .customLong("privcmd-fd"), help: "The privcmd fd number.")
    var privcmdFD: Int32 = 3

    @Option(name: .customLong("listener-fd"), help: "The listening socket's fd number (--listen).")
    var listenerFD: Int32 = 4

    @Option(name: .customLong("client-fd"), help: "The fixed fd number each accepted connection is moved to (--listen).")
    var clientFD: Int32 = 10

    @Option(name: .customLong("ready-fd"), help: "The ready fd, if serve gets one.")
    var readyFD: Int32?

    @Option(name: .customLong("record-fd"), help: "The simulated record file's fd, if any.")
    var recordFD: Int32?

    @Option(help: "enforce, log or trap.")
    var mode: SeccompMode = .enforce

    @Flag(help: "Also print libseccomp's pseudo filter code (the BPF program as text).")
    var pfc = false

    func run() throws {
        let client: ClientSocket = socketFD.map { .inherited(fd: $0) } ?? .listening(listener: listenerFD, clientFd: clientFD)
        let descriptors = SandboxDescriptors(privcmd: hypervisor == .privcmd ? privcmdFD : nil, client: client,
                                             ready: readyFD, record: recordFD)
        let filter: SeccompFilter
        do {
            filter = try SeccompFilter(SeccompProfile(descriptors: descriptors, mode: mode))
        } catch {
            fail(error.category == .usage ? .usage : .seccomp, "\(error)")
        }
        var text = filter.profile.render()
        // SAFETY: the view is written out within the closure and not kept.
        text.withUTF8 { raw in _ = try? Syscall.writeAll(1, UnsafeRawBufferPointer(raw)) }
        if pfc {
            _ = write(1, "\n", 1)
            do { try filter.exportPFC(to: 1) } catch { fail(.seccomp, "\(error)") }
        }
    }
}
