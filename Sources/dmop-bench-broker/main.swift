// SPDX-License-Identifier: MIT
// dmop-broker with the simulated hypervisor linked in, for the benchmark
// alone (never installed): its start-up, memory and round trips are the
// shipped broker's serve path plus the simulator, measured without the
// hand-over to the tools that the shipped broker makes for a simulated line.
import DMOPServe
import DMOPSimulatedServe

let arguments = CommandLine.arguments
if arguments.count > 1, arguments[1] == "serve", let options = ServeArguments.parse(arguments.dropFirst(2)) {
    options.run(simulated: SimulatedServe.backend)
}
BrokerExecutables.execTools(arguments)
