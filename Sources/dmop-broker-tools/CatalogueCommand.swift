// SPDX-License-Identifier: MIT
import ArgumentParser
import DMOPCore
import DMOPServe

/// `dmop-broker catalogue`: the op table the decision checks against, for
/// review (dmop-broker(8)).
struct CatalogueCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "catalogue",
        abstract: "Print the DMOP op table: buffers, fields with offsets and widths, ioreq-server roles, reply buffers.")

    func run() {
        print(CatalogueTable.render(), terminator: "")
    }
}
