// SPDX-License-Identifier: MIT
import ArgumentParser
import CPosix
import DMOPSandbox
import DMOPServe
import DMOPServer

/// The tools executable: every command of dmop-broker(8). `dmop-broker`
/// runs it for every command line but the `serve` lines its own parser
/// takes, so help, usage errors and the other commands come from here.
@main
struct DMOPBroker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dmop-broker",
        abstract: "Forward only the DMOPs a policy allows, for one Xen domain, from a deprivileged device model.",
        version: "dmop-broker \(brokerVersion)",
        subcommands: [ServeCommand.self, DemoCommand.self, PolicyCommand.self, SeccompProfileCommand.self,
                      CatalogueCommand.self, StatusCommand.self]
    )

    static func main() {
        // ArgumentParser writes its messages to stderr one character at a
        // time; line buffering makes that one write(2) per line.
        _ = cposix_line_buffer_stderr()
        main(nil)
    }
}

extension Domid: ExpressibleByArgument {
    /// --domid's transform: DMOPServe's refusal, worded as ArgumentParser's.
    static func argument(_ text: String) throws -> Domid {
        do { return try parse(text) } catch { throw ValidationError(error.description) }
    }

    public static var defaultCompletionKind: CompletionKind { .default }
}

extension HypervisorKind: ExpressibleByArgument {}
extension SeccompMode: ExpressibleByArgument {}
extension AuditChannel: ExpressibleByArgument {}
extension AuditForwards: ExpressibleByArgument {}
extension AuditFailure: ExpressibleByArgument {}
extension XenReleaseArgument: ExpressibleByArgument {}
extension XenAcceptance: ExpressibleByArgument {}
