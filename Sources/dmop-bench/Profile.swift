// SPDX-License-Identifier: MIT
import DMOPCore
import DMOPTrusted
import DMOPPosix
import DMOPServer
import DMOPSimulation
import DMOPTooling
import Glibc
import Logging

/// `dmop-bench serve-unconfined --listen PATH --policy PATH`: the broker's
/// request loop (BrokerServer, the audit handler, the simulated hypervisor)
/// in this process, without the sandbox step of `dmop-broker serve`.
/// valgrind cannot run the real broker (it does not implement seccomp(2)),
/// so this is what `valgrind --tool=callgrind` profiles; driven by
/// `dmop-bench load`. Never a way to serve a guest.
enum UnconfinedServeMode {
    static func run(_ arguments: ArraySlice<String>) -> Never {
        var listenPath: String?
        var policyPath = "policy/qemu-xen.policy"
        var rest = arguments
        while let flag = rest.popFirst() {
            guard let value = rest.popFirst() else { fail("serve-unconfined: \(flag) needs a value") }
            switch flag {
            case "--listen": listenPath = value
            case "--policy": policyPath = value
            default: fail("serve-unconfined: unknown option \(flag)")
            }
        }
        guard let listenPath else { fail("serve-unconfined: --listen PATH is required") }
        let domid = BrokerProcess.domid
        let policy: Policy
        let hypervisor: SimulatedHypervisor
        let listener: FileDescriptor
        let restricted: RestrictedHypervisor
        do {
            policy = try Policy.parse(String(decoding: try Files.read(policyPath), as: UTF8.self), file: policyPath)
            hypervisor = try SimulatedHypervisor(guestDomid: domid, vcpus: 2)
            restricted = try RestrictedHypervisor.restrictAndVerify(hypervisor, to: domid)
            listener = try SeqPacket.listen(path: listenPath)
        } catch {
            fail("serve-unconfined: \(error)")
        }
        let audit = Logger(label: "dmop-broker[\(getpid())]") { AuditLogHandler(label: $0) }
        let server = BrokerServer(policy: policy, hypervisor: restricted, peerUID: nil, audit: audit)
        let connection: FileDescriptor
        do { connection = try SeqPacket.accept(listener.rawValue) } catch { fail("serve-unconfined: \(error)") }
        let end = server.serve(connection: connection.rawValue)
        // Closed here, not earlier: the loop above serves their numbers.
        connection.close()
        listener.close()
        unlink(listenPath)
        exit(end == .hangUp ? 0 : 1)
    }
}
