// SPDX-License-Identifier: MIT
import DMOPClient
import DMOPCore
import DMOPPosix
import DMOPTooling
import Glibc

/// `dmop-bench hostile-audit`: how fast one hostile client can grow its
/// broker's audit. One broker in the default configuration (aggregated
/// forwards, `--audit-log FILE`, the shipped policy) serves a client that,
/// for a bounded time and as fast as the broker answers, sends what the
/// policy refuses (ops it does not allow, failed conditions, another domid,
/// wrong buffer counts, rate-limited calls) and posted interrupts that the
/// policy refuses or Xen fails, each followed by a call that waits; then
/// one malformed datagram, which ends the session. Prints the audit file's
/// growth in bytes per second and checks that every refusal the client
/// caused is in the audit: on a line of its own or counted in a summary.
enum HostileAuditMode {
    static func run(_ arguments: ArraySlice<String>, broker: String, policy defaultPolicy: String) -> Never {
        var seconds = 60.0
        var policy = defaultPolicy
        var auditPath: String?
        var rest = arguments
        while let flag = rest.popFirst() {
            guard let value = rest.popFirst() else { fail("hostile-audit: \(flag) needs a value") }
            switch flag {
            case "--seconds":
                guard let n = Double(value), n > 0 else { fail("hostile-audit: --seconds '\(value)' is not a positive number") }
                seconds = n
            case "--policy": policy = value
            case "--audit-log": auditPath = value
            default: fail("hostile-audit: unknown option \(flag)")
            }
        }
        let directory: String
        do { directory = try Files.makeTemporaryDirectory("/tmp/dmop-hostile-audit.XXXXXX") } catch { fail("\(error)") }
        temporaryDirectory = directory
        // A fresh file: what it holds at the end is what this run added.
        let audit = auditPath ?? directory + "/audit.log"
        unlink(audit)
        var config = BenchConfig(broker: broker, library: "")
        config.policy = policy
        guard access(broker, X_OK) == 0 else { fail("hostile-audit: no executable broker at \(broker)") }
        guard access(policy, R_OK) == 0 else { fail("hostile-audit: no policy at \(policy)") }
        let process = BrokerProcess.start(config, auditLog: directory + "/stderr.log",
                                          arguments: ["--audit-log", audit], forwardsEach: false)
        let client: BrokerClient
        do {
            guard let connection = process.connection.take() else { fail("hostile-audit: broker connection gone") }
            client = try BrokerClient(connection: connection)
        } catch {
            fail("hostile-audit: hello to the broker: \(error)")
        }
        let domid = BrokerProcess.domid
        let intx = Bench.op("set_pci_intx_level"), isa = Bench.op("set_isa_irq_level")
        let msi = Bench.op("inject_msi")
        // A call that waits and that the policy allows: each delivers the
        // posted failure before it.
        let barrier = Bench.op("set_pci_link_route").encodeHeader(["link": 0, "isa_irq": 5])
        // What the shipped policy refuses, one request each.
        let refused: [(domid: UInt16, buffers: [[UInt8]])] = [
            (domid, [Bench.op("inject_event").encodeHeader(["vector": 0x20])]),        // op not allowed
            (domid, [isa.encodeHeader(["isa_irq": 20, "level": 1])]),                   // condition
            (domid, [intx.encodeHeader(["device": 40, "level": 1])]),                   // condition
            (domid &+ 1, [intx.encodeHeader(["device": 3, "level": 1])]),               // another domid
            (domid, [Bench.op("modified_memory").encodeHeader(["nr_extents": 1])]),    // one buffer of two
            (domid, [Bench.op("remote_shutdown").encodeHeader(["reason": 7])]),        // condition
        ]
        // Posted: refused by the policy, and failed by Xen (vector 0, no pirq).
        let postedRefused = msi.encodeHeader(["addr": 0xfee0_0000, "data": 0x4041])
        let postedXenFailed = msi.encodeHeader(["addr": 0, "data": 0])
        var sent = 0, refusedByBroker = 0, postedRefusals = 0, deliveries = 0
        let started = now()
        let deadline = started &+ UInt64(seconds * 1e9)
        do {
            while now() < deadline {
                for request in refused {
                    let reply = try client.call(domid: request.domid, buffers: request.buffers)
                    sent += 1
                    if reply.origin == .broker { refusedByBroker += 1 }
                }
                for posted in [postedXenFailed, postedRefused] {
                    try client.post(buffers: [posted])
                    let reply = try client.call(buffers: [barrier])
                    sent += 2
                    if reply.origin == .broker { refusedByBroker += 1 }
                    if reply.postedFailure != nil { deliveries += 1 }
                }
                postedRefusals += 1
            }
            // The malformed datagram: bad magic, which ends the session.
            try client.sendRaw([UInt8](repeating: 0x41, count: 24))
            _ = try? client.nextMessage()
        } catch {
            fail("hostile-audit: \(error)")
        }
        let elapsed = Double(now() &- started) / 1e9
        client.close()
        // The malformed datagram ended the session: the broker exits on its
        // own, with the status of a protocol error.
        process.connection = nil
        _ = Children.reap(process.pid)
        guard let raw = try? Files.read(audit, limit: 1 << 30) else { fail("hostile-audit: cannot read \(audit)") }
        let text = String(decoding: raw, as: UTF8.self)
        let bytes = text.utf8.count
        let lines = text.split(separator: "\n")
        // Every refusal: its own line, or a count in a summary line.
        let refusalLines = lines.filter { $0.contains(" verdict=refuse ") }.count
        var summarized = 0
        for line in lines where line.contains("suppressed ") && line.contains(" refusal line(s)") {
            summarized += Self.leadingNumber(after: "suppressed ", in: line)
        }
        for line in lines where line.contains(" rate limit: ") {
            summarized += Self.leadingNumber(after: "refused=", in: line)
        }
        var deliveriesSummarized = 0
        for line in lines where line.contains("suppressed ") && line.contains(" posted failure delivery line(s)") {
            deliveriesSummarized += Self.leadingNumber(after: "suppressed ", in: line)
        }
        let deliveryLines = lines.filter { $0.contains(" posted failure delivered: ") }.count
        let audited = refusalLines + summarized
        let refusals = refusedByBroker + postedRefusals
        print("hostile-audit: \(sent) requests in \(fixed(elapsed, 1)) s, \(refusals) refused by the broker, \(postedRefusals) posted ones failed by Xen, \(deliveries) posted failures delivered")
        print("hostile-audit: \(audited) refusals audited (\(refusalLines) lines, \(summarized) in summaries); \(deliveryLines + deliveriesSummarized) deliveries audited (\(deliveryLines) lines, \(deliveriesSummarized) in summaries); \(lines.count) lines")
        print("hostile-audit bytes=\(bytes) seconds=\(fixed(elapsed, 1)) bytes_per_second=\(fixed(Double(bytes) / elapsed, 0))")
        var exact = true
        if audited != refusals {
            print("hostile-audit: the audit counts \(audited) refusals, the client caused \(refusals)")
            exact = false
        }
        if deliveryLines + deliveriesSummarized != deliveries {
            print("hostile-audit: the audit counts \(deliveryLines + deliveriesSummarized) deliveries, the client got \(deliveries)")
            exact = false
        }
        _ = rmdirAll(directory)
        exit(exact ? 0 : 1)
    }

    /// The decimal number right after `key` in `line` (0 when none).
    static func leadingNumber(after key: String, in line: Substring) -> Int {
        guard let range = line.firstRange(of: key) else { return 0 }
        return Int(line[range.upperBound...].prefix { $0.isNumber }) ?? 0
    }
}
