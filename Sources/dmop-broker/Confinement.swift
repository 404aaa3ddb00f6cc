import ArgumentParser
import DMOPHypervisor
import Glibc

enum SeccompModeOption: String, ExpressibleByArgument, CaseIterable {
    case enforce, log, trap
}

/// Options of the confinement step of `serve` (dmop-broker(8), SECURITY).
struct ConfinementOptions: ParsableArguments {
    @Option(help: "Drop to this user after setup: NAME or UID:GID. Required when started as root.")
    var user: String?

    @Flag(help: "Allow running as root without --user (tests only).")
    var allowRoot = false

    @Option(help: "seccomp action for a system call outside the allow-list: enforce (kill), log, or trap (report and exit).")
    var seccomp: SeccompModeOption = .enforce

    func confine(hypervisor: any Hypervisor, endpoint: ServeCommand.Endpoint, readyFd: Int32?) {
        if geteuid() == 0 && user == nil && !allowRoot {
            fail(.rootRefused, "started as root without --user; give --user NAME|UID:GID (or --allow-root for tests)")
        }
    }
}
