// SPDX-License-Identifier: MIT
import ArgumentParser
import CVersion
import DMOPCore
import DMOPPosix
import Glibc

@main
struct DMOPBroker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dmop-broker",
        abstract: "Forward only the DMOPs a policy allows, for one Xen domain, from a deprivileged device model.",
        version: "dmop-broker \(brokerVersion)",
        subcommands: [ServeCommand.self, DemoCommand.self, PolicyCommand.self, SeccompProfileCommand.self]
    )
}

/// The release version (Package.swift).
let brokerVersion = String(cString: dmop_broker_version())

/// Prints one clear line and exits with a status of dmop-broker(8).
/// The listen socket this process bound, removed by `fail` on a refused
/// start. Cleared before the seccomp filter is loaded (it forbids unlink).
nonisolated(unsafe) var boundSocketPath: String?

func fail(_ status: ExitStatus, _ message: String) -> Never {
    var line = "dmop-broker: \(message)\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    if let path = boundSocketPath { unlink(path) }
    Glibc.exit(status.rawValue)
}

/// Loads and parses a policy file, or exits with the policy status.
func loadPolicy(_ path: String) -> Policy {
    do {
        let bytes = try Files.read(path)
        return try Policy.parse(String(decoding: bytes, as: UTF8.self), file: path)
    } catch let error as PolicyError {
        fail(.policy, "\(error)")
    } catch {
        fail(.policy, "policy \(path): \(error)")
    }
}

/// A domid from the command line: decimal, below DOMID_FIRST_RESERVED.
struct Domid: ExpressibleByArgument {
    let value: UInt16
    init?(argument: String) {
        guard let value = UInt16(argument), value < DMOPABI.firstReservedDomid else { return nil }
        self.value = value
    }
    static var defaultCompletionKind: CompletionKind { .default }
}
