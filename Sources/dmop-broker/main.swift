// SPDX-License-Identifier: MIT
// The broker: `dmop-broker serve` runs here; every other command line goes
// to the tools executable (BrokerExecutables).
import DMOPServe
import Glibc

let arguments = CommandLine.arguments
if arguments.count > 1, arguments[1] == "serve", let options = ServeArguments.parse(arguments.dropFirst(2)) {
    options.run()
}
if arguments.count == 2, arguments[1] == "--version" {
    var line = "\(BrokerExecutables.broker) \(brokerVersion)\n"
    // SAFETY: the view lives for the write, which copies the bytes.
    line.withUTF8 { _ = write(1, $0.baseAddress, $0.count) }
    exit(0)
}
BrokerExecutables.execTools(arguments)
