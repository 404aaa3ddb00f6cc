// SPDX-License-Identifier: MIT
import CSandbox
import DMOPServe
import DMOPSimulation
import DMOPTrusted

/// `serve --hypervisor simulated`: the simulated privcmd and Xen behind a
/// broker, for the executables that carry the simulator (the tools, and
/// dmop-bench-broker); the shipped dmop-broker hands such a line to the tools.
public enum SimulatedServe {
    public static func backend(_ options: ServeOptions) throws(HypervisorError) -> SimulatedBackend {
        // A broker whose line the shipped one handed over goes by the
        // broker's name, as its audit says it is (journald's _COMM, which
        // `policy learn --journal` selects on, and ps).
        _ = csandbox_set_name(BrokerExecutables.broker)
        let release = options.simulatedXenVersion?.release ?? SimulatedXen.defaultRelease
        let hypervisor = try SimulatedHypervisor(guestDomid: options.domid.value, vcpus: options.simulatedVcpus,
                                                 xenVersion: release.xenVersion, recordPath: options.simulatedRecord)
        let record = hypervisor.recordFileDescriptor
        return SimulatedBackend(hypervisor: hypervisor, recordFD: record >= 0 ? record : nil)
    }
}
