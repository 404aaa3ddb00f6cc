// SPDX-License-Identifier: MIT
import ArgumentParser
import DMOPClient
import DMOPCore
import DMOPPosix
import DMOPServe
import DMOPTooling
import Glibc

/// Starts a broker on the simulated hypervisor, plays what QEMU does for a
/// guest, plus two things a compromised QEMU might try, and prints it all.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run a broker on the simulated hypervisor and a QEMU-like client; print a transcript.")

    @Option(help: "Policy for the demo broker (default: policy/qemu-xen.policy of the source tree, else qemu-xen.policy in /etc/dmop-broker, else in /usr/share/dmop-broker).")
    var policy: String?

    @Option(help: "Domid of the simulated guest.")
    var domid: Domid = Domid(argument: "5")!

    func run() throws {
        guard let tools = Files.selfExecutable() else { fail(.usage, "cannot find my own executable") }
        // The broker a toolstack runs, or this executable's own serve. (The
        // type is written out: Swift 6.2 infers String? here.)
        let executable: String = BrokerExecutables.brokerCandidates(toolsPath: tools).first { access($0, X_OK) == 0 } ?? tools
        let policy = self.policy ?? Self.defaultPolicy(executable: executable)
        let workDirectory = makeTemporaryDirectory()
        let record = workDirectory + "/record.jsonl"
        let auditLog = workDirectory + "/audit.log"
        let pair = try SeqPacket.pair()
        let brokerEnd = pair.first, clientEnd = pair.second
        var readyPipe: [Int32] = [-1, -1]
        guard pipe(&readyPipe) == 0 else { fail(.readyFd, "\(SystemError("pipe"))") }
        for end in readyPipe { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }

        let arguments = [executable, "serve", "--hypervisor", "simulated", "--domid", String(domid.value),
                         "--socket-fd", "3", "--ready-fd", "4", "--policy", policy,
                         "--simulated-record", record] + (geteuid() == 0 ? ["--allow-root"] : [])
        section("Starting the broker")
        say("$ " + arguments.dropFirst().map { $0.hasPrefix(workDirectory) ? "$TMP" + $0.dropFirst(workDirectory.count) : $0 }.joined(separator: " "))
        let pid = try Spawn.start(executable, arguments,
                                  fds: [(brokerEnd.rawValue, 3), (readyPipe[1], 4)], stderrPath: auditLog)
        brokerEnd.close()
        close(readyPipe[1])
        var ready = [UInt8](repeating: 0, count: 16)
        // SAFETY: read writes at most $0.count bytes into the buffer the
        // closure lends.
        let n = ready.withUnsafeMutableBytes { read(readyPipe[0], $0.baseAddress, $0.count) }
        close(readyPipe[0])
        guard n > 0, String(decoding: ready[0..<n], as: UTF8.self) == "ready\n" else {
            let status = try Spawn.wait(pid)
            printFile(auditLog)
            fail(.readyFd, "the broker did not become ready (\(Spawn.describe(status: status)))")
        }
        say("broker pid \(pid) is ready")

        section("Hello")
        let client = try BrokerClient(connection: clientEnd)
        let w = client.welcome
        say("protocol v\(w.version), domid \(w.domid), Xen \(w.xenVersion >> 16).\(w.xenVersion & 0xffff), DMOP ABI 0x\(String(w.dmopABI, radix: 16))")
        say("policy allows: " + Catalogue.ops.filter { w.allowedOps & (1 << $0.number) != 0 }.map(\.name).joined(separator: " "))

        section("What QEMU does for an HVM guest")
        let id = try step("create_ioreq_server (atomic buffered ioreqs)") {
            let id = try client.createIoreqServer(handleBufioreq: 2)
            return ("ioreq server id \(id)", id)
        }
        try step("get_ioreq_server_info (no gfns, as QEMU asks)") {
            let info = try client.ioreqServerInfo(id: id, gfns: false)
            return ("bufioreq event channel port \(info.bufioreqPort)", ())
        }
        let ranges: [(String, UInt64, UInt64, UInt64)] = [
            ("ports 0x3f8-0x3ff (COM1)", 0, 0x3f8, 0x3ff),
            ("MMIO 0xfeb00000-0xfeb00fff", 1, 0xfeb0_0000, 0xfeb0_0fff),
            ("PCI 0000:00:03.0", 2, 0x18, 0x18),
        ]
        for (label, type, start, end) in ranges {
            try step("map_io_range_to_ioreq_server \(label)") {
                _ = try client.perform("map_io_range_to_ioreq_server",
                                       ["id": UInt64(id), "type": type, "start": start, "end": end])
                return ("mapped", ())
            }
        }
        try step("set_ioreq_server_state enabled") {
            _ = try client.perform("set_ioreq_server_state", ["id": UInt64(id), "enabled": 1])
            return ("enabled", ())
        }
        try step("set_isa_irq_level IRQ 4 high, then low (a serial interrupt)") {
            _ = try client.perform("set_isa_irq_level", ["isa_irq": 4, "level": 1])
            _ = try client.perform("set_isa_irq_level", ["isa_irq": 4, "level": 0])
            return ("raised and lowered", ())
        }
        try step("set_pci_intx_level 00:03.0 INTA# high, then low") {
            _ = try client.perform("set_pci_intx_level", ["device": 3, "intx": 0, "level": 1])
            _ = try client.perform("set_pci_intx_level", ["device": 3, "intx": 0, "level": 0])
            return ("asserted and deasserted", ())
        }
        try step("inject_msi addr 0x35000 data 0x4041 (QEMU passes the offset in its MSI window)") {
            _ = try client.perform("inject_msi", ["addr": 0x3_5000, "data": 0x4041])
            return ("injected", ())
        }
        try step("track_dirty_vram first_pfn 0xf0000, 64 pages (a display refresh)") {
            let bitmap = try client.trackDirtyVram(firstPfn: 0xf0000, pages: 64)
            let dirty = bitmap.reduce(0) { $0 + $1.nonzeroBitCount }
            return ("bitmap \(bitmap.map { hex($0) }.joined()) (\(dirty) dirty page(s))", ())
        }

        section("What a compromised QEMU might try")
        try refusal("inject_event into vCPU 0 (not in the policy)") {
            try client.invoke("inject_event", ["vcpuid": 0, "vector": 0x0e, "type": 3, "error_code": 0xffff_ffff])
        }
        try refusal("set_isa_irq_level for domid \(domid.value + 1) (another guest)") {
            try client.invoke("set_isa_irq_level", ["isa_irq": 1, "level": 1], domid: domid.value + 1)
        }
        try refusal("set_ioreq_server_state of server \(id + 1) (not created by this session)") {
            try client.invoke("set_ioreq_server_state", ["id": UInt64(id) + 1, "enabled": 1])
        }
        try refusal("modified_memory with one buffer (the XSA-506 shape)") {
            try client.call(buffers: [Catalogue.op(named: "modified_memory")!.encodeHeader(["nr_extents": 1])])
        }

        section("Teardown")
        try step("destroy_ioreq_server \(id)") {
            _ = try client.perform("destroy_ioreq_server", ["id": UInt64(id)])
            return ("destroyed", ())
        }
        client.close()
        let status = try Spawn.wait(pid)
        say("client hung up; broker \(Spawn.describe(status: status))")

        section("What reached the (simulated) hypervisor")
        printFile(record)
        section("The broker's audit log")
        printFile(auditLog)
        unlink(record)
        unlink(auditLog)
        rmdir(workDirectory)
    }

    @discardableResult
    func step<T>(_ label: String, _ body: () throws -> (String, T)) throws -> T {
        do {
            let (outcome, value) = try body()
            say("  ok      \(label): \(outcome)")
            return value
        } catch {
            say("  FAILED  \(label): \(error)")
            throw ExitCode.failure
        }
    }

    func refusal(_ label: String, _ body: () throws -> Reply) throws {
        let reply = try body()
        if let reason = reply.reason {
            say("  refused \(label): \(reason.name), \(Errno.name(-reply.result)) to the client; nothing reached Xen")
        } else {
            say("  FAILED  \(label): not refused by the broker (result \(reply.result))")
            throw ExitCode.failure
        }
    }

    /// The shipped policy: in the working directory's source tree, above the
    /// build directory the executable lives in, or installed: the local copy
    /// in /etc/dmop-broker wins over the package's default (dmop-broker.policy(5)).
    static func defaultPolicy(executable: String) -> String {
        let relative = "policy/qemu-xen.policy"
        var candidates = [relative]
        var directory = executable
        while let slash = directory.lastIndex(of: "/"), slash != directory.startIndex {
            directory = String(directory[..<slash])
            candidates.append(directory + "/" + relative)
        }
        candidates.append("/etc/dmop-broker/qemu-xen.policy")
        candidates.append("/usr/share/dmop-broker/qemu-xen.policy")
        return candidates.first { access($0, R_OK) == 0 } ?? relative
    }

    func section(_ title: String) { say("\n== \(title)") }
    func say(_ line: String) { print(line) }
    func hex(_ byte: UInt8) -> String { (byte < 16 ? "0" : "") + String(byte, radix: 16) }

    func printFile(_ path: String) {
        guard let bytes = try? Files.read(path) else { say("(no \(path))"); return }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") { say("  " + line) }
    }

    func makeTemporaryDirectory() -> String {
        do { return try Files.makeTemporaryDirectory("/tmp/dmop-demo.XXXXXX") } catch { fail(.usage, "\(error)") }
    }
}

