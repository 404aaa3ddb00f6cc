// SPDX-License-Identifier: MIT
import DMOPClient
import DMOPCore
import DMOPPosix
import DMOPTooling
import Glibc

/// `dmop-bench soak`: one broker, confined as the wrapper runs it, writes
/// the audit volume of D days of a busy guest in the default configuration
/// (aggregated forwards) into a file that Debian's logrotate rotates once a
/// simulated day with the package's own /etc/logrotate.d/dmop-broker; it
/// reports the broker's memory growth, lost lines and refused forwards.
///
/// Why it is the same volume: with --audit-forwards aggregate the broker
/// writes one `forwards:` line per op per interval (10 s by default), so a
/// guest whose device model uses K ops in every interval writes 8640 * K
/// lines a day. The soak runs the broker with --audit-interval-ms 0, so that
/// every request ends an interval and writes exactly the line of its op, and
/// cycles through K = 4 interrupt and display ops (PCI INTx, ISA IRQ, MSI,
/// dirty VRAM): N requests are N of the same lines a real day has 8640 * 4
/// of, through the same code (counters, line builder, batch, write, fstat).
enum SoakMode {
    static let opsPerInterval = 4
    static let intervalsPerDay = 86_400 / 10

    static func run(_ arguments: ArraySlice<String>) -> Never {
        let directory = Files.selfExecutable().flatMap { path in path.lastIndex(of: "/").map { String(path[..<$0]) } } ?? "."
        var broker = directory + "/dmop-bench-broker"
        var policy = "policy/qemu-xen.policy"
        var logrotateFile = "etc/logrotate.d/dmop-broker"
        var days = 90
        var rest = arguments
        while let flag = rest.popFirst() {
            guard let value = rest.popFirst() else { fail("soak: \(flag) needs a value") }
            switch flag {
            case "--days":
                guard let n = Int(value), n > 1 else { fail("soak: --days '\(value)' is not a number above 1") }
                days = n
            case "--broker": broker = value
            case "--policy": policy = value
            case "--logrotate-config": logrotateFile = value
            default: fail("soak: unknown option \(flag) (--days N, --broker PATH, --policy PATH, --logrotate-config PATH)")
            }
        }
        let logrotate = "/usr/sbin/logrotate"
        guard access(logrotate, X_OK) == 0 else { fail("soak: \(logrotate) is missing (apt-get install logrotate; scripts/install-deps)") }
        guard access(broker, X_OK) == 0 else { fail("soak: no executable broker at \(broker)") }
        let shipped: [UInt8]
        do { shipped = try Files.read(logrotateFile) } catch { fail("soak: \(error) (run from the package root or give --logrotate-config)") }

        // The audit directory is root's and searchable, as the package makes
        // /var/log/dmop-broker; logrotate's state and configuration elsewhere.
        let logs = makeDirectory("/tmp/dmop-soak-logs-XXXXXX")
        let scratch = makeDirectory("/tmp/dmop-soak-XXXXXX")
        defer { _ = rmdirAll(logs); _ = rmdirAll(scratch) }
        let audit = logs + "/guest.log"
        let config = scratch + "/logrotate.conf"
        let text = String(decoding: shipped, as: UTF8.self)
            .replacingAll("/var/log/dmop-broker/", with: logs + "/")
            .replacingAll("/usr/sbin/dmop-broker", with: broker)
        let configFd = open(config, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard configFd >= 0 else { fail("soak: \(SystemError("open \(config)"))") }
        do { try Files.writeAll(configFd, Array(text.utf8)) } catch { fail("soak: \(error)") }
        close(configFd)

        let (pid, client) = start(broker: broker, policy: policy, audit: audit)
        let variants = mix()
        // Two VRAM ranges, alternated as the benchmark does: each query then
        // starts a new range, the simulated hypervisor's constant-cost path
        // rather than its per-frame dirty model (simulation, not broker).
        let otherVram = [Bench.op("track_dirty_vram").encodeHeader(["first_pfn": 0x20_0000, "nr": 32_768]),
                         [UInt8](repeating: 0, count: 4096)]
        // The posted datagrams encoded once (the ids of posted requests only
        // name a failure, and none is expected): the client's cost per
        // request is one send, so the run measures the broker.
        let posted = variants.dropLast().enumerated().map { index, buffers in
            Wire.encodeRequest(domid: BrokerProcess.domid, requestID: UInt32(0x7000_0000 + index), buffers: buffers,
                               flags: Wire.requestFlagPosted)
        }
        let perDay = intervalsPerDay * opsPerInterval
        var refused = 0
        var baseline: MemoryFigures?
        var rotations = 0
        let started = now()
        print("soak: \(days) days of \(perDay) forwards: lines (\(intervalsPerDay) intervals of 10 s, \(opsPerInterval) ops each), one logrotate run a day")
        for day in 1...days {
            // The interrupts posted, as QEMU posts them (protocol 2: no
            // reply to wait for); the VRAM query synchronous, with the
            // failure of any posted request before it.
            for i in 0..<perDay {
                do {
                    if i % variants.count < variants.count - 1 {
                        try client.sendRaw(posted[i % variants.count])
                    } else {
                        let reply = try client.call(buffers: (i / variants.count) & 1 == 0 ? variants[i % variants.count] : otherVram)
                        if reply.result != 0 || reply.origin != .hypervisor { refused += 1 }
                        if reply.postedFailure != nil { refused += 1 }
                    }
                } catch {
                    fail("soak: day \(day), request \(i): \(error)")
                }
            }
            let output = scratch + "/logrotate.out"
            let rotated: Int32
            do {
                let child = try Spawn.start(logrotate, [logrotate, "-f", "-s", scratch + "/logrotate.state", config],
                                            stderrPath: output, environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
                rotated = try Spawn.wait(child)
            } catch {
                fail("soak: logrotate on day \(day): \(error)")
            }
            guard rotated == 0 else {
                let said = String(decoding: (try? Files.read(output)) ?? [], as: UTF8.self)
                fail("soak: logrotate on day \(day): \(Spawn.describe(status: rotated)): \(said)")
            }
            rotations += 1
            // After a day and its rotation the broker is warm: buffers
            // allocated, the file reopened once.
            if day == 1 { baseline = MemoryFigures.of(pid) }
        }
        let last = MemoryFigures.of(pid)
        let brokerCPU = Double(CPUTime.process(pid)) / 1e9
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        let ownCPU = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        let elapsed = Double(now() &- started) / 1e9
        client.close()
        let status = Children.reap(pid)
        guard status == 0 else { fail("soak: broker ended with \(Spawn.describe(status: status))") }
        guard let baseline else { fail("soak: no baseline") }

        // The session end line (in the file of the last day) says what the
        // broker lost; every file logrotate kept is checked for lost-line lines.
        let files = Files.expandDirectory(logs).map { String($0.dropFirst(logs.count + 1)) }
        let finalLog = String(decoding: (try? Files.read(audit, limit: 64 << 20)) ?? [], as: UTF8.self)
        guard let end = finalLog.split(separator: "\n").last(where: { $0.contains(" session end: ") }),
              let lost = Int(field("audit_lost", in: end)) else {
            fail("soak: no session end line in \(audit)")
        }
        // The last whole day, not yet compressed (delaycompress).
        let lastDay = (try? Files.read(audit + ".1", limit: 256 << 20)) ?? []
        let lastDayLines = lastDay.reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
        // One forwards: line per request, or the interval was not the soak's.
        guard lastDayLines >= perDay else {
            fail("soak: one day's file has \(lastDayLines) lines, not \(perDay): forwards were not written one interval each")
        }
        let lostLines = finalLog.split(separator: "\n").filter { $0.contains(" audit lines lost: ") }.count
        // The broker's own counts of refusals, posted ones included.
        refused = max(refused, (Int(field("refused", in: end)) ?? 0) + (Int(field("posted_failed", in: end)) ?? 0))
        let rssGrowth = last.rssKiB - baseline.rssKiB
        let dirtyGrowth = last.privateDirtyKiB - baseline.privateDirtyKiB
        print("soak: \(days * perDay) requests in \(fixed(elapsed, 1)) s, \(rotations) rotations; CPU: broker \(fixed(brokerCPU, 1)) s, client \(fixed(ownCPU, 1)) s; files kept: \(files.sorted().joined(separator: " "))")
        print("soak: one day's file: \(lastDayLines) lines, \(lastDay.count >> 10) KiB")
        print("soak: broker after day 1 VmRSS \(baseline.rssKiB) kB, Private_Dirty \(baseline.privateDirtyKiB) kB; after day \(days) VmRSS \(last.rssKiB) kB, Private_Dirty \(last.privateDirtyKiB) kB; session end: \(end.drop(while: { $0 != " " }).dropFirst())")
        print("soak days=\(days) rss_growth_kb=\(rssGrowth) private_dirty_growth_kb=\(dirtyGrowth) lost=\(lost + lostLines) refused=\(refused)")
        exit(rssGrowth < 64 && dirtyGrowth < 64 && lost == 0 && lostLines == 0 && refused == 0 ? 0 : 1)
    }

    /// A PCI INTx level, an ISA IRQ, an MSI, a dirty-VRAM query: the four
    /// ops of a guest's interrupts and display, one after another (the
    /// query last: it is the synchronous one).
    static func mix() -> [[[UInt8]]] {
        let intx = Bench.op("set_pci_intx_level")
        let isa = Bench.op("set_isa_irq_level")
        let msi = Bench.op("inject_msi")
        let vram = Bench.op("track_dirty_vram")
        return [
            [intx.encodeHeader(["domain": 0, "bus": 0, "device": 3, "intx": 0, "level": 1])],
            [isa.encodeHeader(["isa_irq": 4, "level": 1])],
            [msi.encodeHeader(["addr": 0xfee00, "data": 0x4041])],
            [vram.encodeHeader(["first_pfn": 0x10_0000, "nr": 32_768]), [UInt8](repeating: 0, count: 4096)],
        ]
    }

    static func makeDirectory(_ template: String) -> String {
        let path: String
        do { path = try Files.makeTemporaryDirectory(template) } catch { fail("soak: \(error)") }
        guard chmod(path, 0o755) == 0 else { fail("soak: chmod \(path): \(SystemError("chmod"))") }
        return path
    }

    /// The broker as the wrapper starts it: --socket-fd, --ready-fd, an
    /// audit file, aggregated forwards; dropped to 65534:65534 when root.
    static func start(broker: String, policy: String, audit: String) -> (pid_t, BrokerClient) {
        let pair = Children.seqpacketPair()
        let mine = pair.first, theirs = pair.second
        var pipeFDs: [Int32] = [-1, -1]
        guard pipe(&pipeFDs) == 0 else { fail("pipe: \(SystemError("pipe"))") }
        let readEnd = Children.high(FileDescriptor(owning: pipeFDs[0]))
        let writeEnd = Children.high(FileDescriptor(owning: pipeFDs[1]))
        var arguments = [broker, "serve", "--hypervisor", "simulated", "--domid", String(BrokerProcess.domid),
                         "--policy", policy, "--socket-fd", "3", "--ready-fd", "4",
                         "--audit-log", audit, "--audit-interval-ms", "0"]
        arguments += geteuid() == 0 ? ["--user", "65534:65534"] : []
        let pid: pid_t
        do {
            pid = try Spawn.start(broker, arguments, fds: [(theirs.rawValue, 3), (writeEnd.rawValue, 4)],
                                  stderrPath: "/dev/null", environment: ["SWIFT_BACKTRACE=enable=no", "PATH=/usr/bin:/bin"])
        } catch {
            fail("soak: spawn \(broker): \(error)")
        }
        writeEnd.close()
        theirs.close()
        var poller = pollfd(fd: readEnd.rawValue, events: Int16(POLLIN), revents: 0)
        var ready = [UInt8](repeating: 0, count: 8)
        // SAFETY: read takes at most 6 bytes into the 8 the closure lends.
        let n = poll(&poller, 1, 15_000) == 1 ? ready.withUnsafeMutableBytes { read(readEnd.rawValue, $0.baseAddress, 6) } : -1
        guard n == 6, ready[0..<6] == Array("ready\n".utf8)[...] else {
            fail("soak: broker not ready (\(Spawn.describe(status: Children.reap(pid, seconds: 2))))")
        }
        do { return (pid, try BrokerClient(connection: mine)) } catch { fail("soak: hello: \(error)") }
    }

    /// The value of `key=` in a logfmt line (unquoted values only).
    static func field(_ key: String, in line: Substring) -> Substring {
        guard let range = line.firstRange(of: " \(key)=") else { return "" }
        return line[range.upperBound...].prefix(while: { $0 != " " })
    }
}
