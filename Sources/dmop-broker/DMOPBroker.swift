// SPDX-License-Identifier: MIT
import ArgumentParser
import CVersion
import DMOPCore
import DMOPPosix
import DMOPTooling
import Glibc

@main
struct DMOPBroker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dmop-broker",
        abstract: "Forward only the DMOPs a policy allows, for one Xen domain, from a deprivileged device model.",
        version: "dmop-broker \(brokerVersion)",
        subcommands: [ServeCommand.self, DemoCommand.self, PolicyCommand.self, SeccompProfileCommand.self,
                      CatalogueCommand.self]
    )

    /// `serve` goes around ArgumentParser's parsing when it can (see
    /// ServeFastPath); every other command line goes through it.
    static func main() {
        let arguments = CommandLine.arguments.dropFirst()
        if arguments.first == "serve", let serve = ServeFastPath.parse(arguments.dropFirst()) {
            do {
                try serve.run()
            } catch {
                exit(withError: error)
            }
            exit()
        }
        main(nil)
    }
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

/// A guest's domid from the command line: decimal, 1 up to below
/// DOMID_FIRST_RESERVED. Domain 0 is never a DMOP target.
struct Domid: ExpressibleByArgument, CustomStringConvertible {
    let value: UInt16
    init?(argument: String) {
        guard let value = try? Self.parse(argument) else { return nil }
        self = value
    }

    private init(value: UInt16) { self.value = value }

    static func parse(_ argument: String) throws -> Domid {
        let highest = DMOPABI.firstReservedDomid - 1
        guard let value = UInt16(argument) else {
            throw ValidationError("'\(argument)' is not a domid: give a number from 1 to \(highest)")
        }
        guard value != 0 else { throw ValidationError("domid 0 is dom0, never a device model's guest") }
        guard value <= highest else {
            throw ValidationError("domid \(value) is reserved (\(DMOPABI.firstReservedDomid) and above are special ids, not guests)")
        }
        return Domid(value: value)
    }

    var description: String { String(value) }
    static var defaultCompletionKind: CompletionKind { .default }
}
