// SPDX-License-Identifier: MIT
import CPosix
import DMOPClient
import DMOPCore
import DMOPTrusted
import DMOPPosix
import DMOPSimulation
import DMOPTooling
import Glibc

/// One measured round trip: does it once and returns the nanoseconds it
/// took (the clock pair is inside, tight around the I/O or the call).
struct RoundTrip {
    enum Kind { case echo, swiftClient, cLibrary, cLibraryPosted }
    let label: String
    let kind: Kind
    /// Index of the echo row this one is compared with.
    let floor: Int?
    /// The process answering: its CPU time per round trip is reported.
    let server: pid_t
    /// After each block, untimed: a posted row waits until the broker has
    /// served its backlog, so the next row does not pay for it.
    var settle: (() -> Void)? = nil
    let run: () -> UInt64
}

/// Where each process runs while round trips are measured. The same policy
/// applies to the echo child and to the broker, so each ratio compares like
/// with like.
struct Regime {
    /// one-cpu, two-cpus or unpinned (--headline).
    let key: String
    let title: String
    /// CPUs of the bench process (the client side).
    let client: [Int]
    /// CPUs of the echo children and the brokers (the server side).
    let server: [Int]
}

final class Bench {
    let config: BenchConfig
    let domid = BrokerProcess.domid
    let temporary: String
    var targets: [(String, Bool)] = []

    init(_ config: BenchConfig) {
        self.config = config
        do { temporary = try Files.makeTemporaryDirectory("/tmp/dmop-bench.XXXXXX") } catch { fail("\(error)") }
        temporaryDirectory = temporary
    }

    // MARK: Requests, built once

    let intxOp = Bench.op("set_pci_intx_level")
    let vramOp = Bench.op("track_dirty_vram")
    /// 32768 pages: the largest bitmap one 4096-byte privcmd buffer holds.
    let vramPages: UInt32 = 32_768
    /// Two ranges, alternated: each call starts a new range, so the
    /// simulated hypervisor takes its constant-cost path (fill the bitmap)
    /// instead of its per-frame dirty model, which is simulation, not broker.
    let vramRanges: [UInt64] = [0x10_0000, 0x20_0000]

    static func op(_ name: String) -> OpSpec {
        guard let op = Catalogue.op(named: name) else { fail("\(name) is not in the catalogue") }
        return op
    }

    /// set_pci_intx_level on 00:03.0 INTA, level 1 then 0 (assert, deassert).
    lazy var intxBuffers: [[[UInt8]]] = (0...1).map { level in
        [intxOp.encodeHeader(["domain": 0, "bus": 0, "device": 3, "intx": 0, "level": UInt64(1 - level)])]
    }
    lazy var vramBuffers: [[[UInt8]]] = vramRanges.map { pfn in
        [vramOp.encodeHeader(["first_pfn": pfn, "nr": UInt64(vramPages)]),
         [UInt8](repeating: 0, count: Int(vramPages + 7) / 8)]
    }
    /// nr_vcpus: not in qemu-xen.policy, so refused (the refusal path).
    lazy var refusedBuffers: [[UInt8]] = [Bench.op("nr_vcpus").encodeHeader()]

    // MARK: The run

    func run() {
        let allowed = Affinity.allowed()
        print("dmop-bench\(config.quick ? " --quick (short run: figures only, no targets enforced)" : "")")
        print("machine: \(Machine.description())")
        print("broker:  \(config.broker) serve --hypervisor simulated --socket-fd (audit log to a file)")
        print("policy:  \(config.policy)")
        let library = CLibrary(path: config.library)
        print("C lib:   \(library.map { $0.path + " (dlopen, DMOP_BROKER_FD)" } ?? "not built (\(config.library)); Swift client used for the ratio")")
        print("pinning: every round trip is measured in three regimes, the same for echo and broker; rows of one")
        print("         regime are interleaved in blocks so background load hits them alike. The last line uses")
        if config.headline == "one-cpu" {
            print("         'one CPU' (client and server pinned to the same CPU): the most repeatable, and the")
            print("         strictest (smallest floor, and all broker work, audit write included, is serial).")
        } else {
            print("         '\(config.headline)' (--headline).")
        }
        let realtime = config.realtime && Scheduling.set(0, realtime: true)
        if realtime { _ = Scheduling.set(0, realtime: false) }
        print("sched:   round trips, decisions and start-ups at \(realtime ? "SCHED_FIFO priority 1 (bench, echo and broker alike; other load cannot preempt them)" : "normal priority (SCHED_OTHER)\(config.realtime ? ": SCHED_FIFO not permitted" : "")")")
        fflush(nil)

        // A binary just written by the linker has dirty page-cache pages,
        // which smaps counts as the broker's Private_Dirty until writeback;
        // flush them so the memory figures are the broker's own.
        for path in [config.broker, config.library] {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            if fd >= 0 { _ = fsync(fd); close(fd) }
        }
        func wanted(_ part: String) -> Bool { config.only == nil || config.only == part }
        let roundTrips = wanted("roundtrip") ? roundTripRows(library: library, allowed: allowed, realtime: realtime) : nil
        let decision = wanted("decision") ? decisionRows(realtime: realtime) : nil
        let startup = wanted("startup") ? startupRows(realtime: realtime) : nil
        let memory = wanted("memory") ? memoryRows() : nil

        Table.section("targets")
        if let ratio = roundTrips?.headline {
            print("  (ratio: \(ratio.path))")
            check("ratio brokered/echo median <= 1.10", ratio.median <= 1.10, fixed(ratio.median, 2))
            check("ratio brokered/echo p99 <= 1.20", ratio.p99 <= 1.20, fixed(ratio.p99, 2))
        }
        if let posted = roundTrips?.posted {
            check("posted/echo median <= 0.15, all regimes", posted.worstRatio <= 0.15,
                  "\(fixed(posted.worstRatio, 3)) (\(posted.worstRegime))")
            check("posted throughput >= 3.5x waiting", posted.posted >= 3.5 * posted.sync,
                  "x\(fixed(posted.posted / posted.sync, 2)), nothing lost: \(posted.recordNote)")
        }
        if let decision {
            check("decision (set_pci_intx_level) median <= 200 ns", decision.median <= 200, fixed(decision.median, 0) + " ns")
        }
        if let startup {
            let ratio = startup.broker.median / startup.hello.median
            check("start-up <= 2.5x static hello-world", ratio <= 2.5,
                  "x\(fixed(ratio, 2)) (\(Unit.milliseconds.format(startup.broker.median)) / \(Unit.milliseconds.format(startup.hello.median)))")
        }
        if let memory {
            check("broker Private_Dirty <= 1024 kB", memory.last.privateDirtyKiB <= 1024, "\(memory.last.privateDirtyKiB) kB")
            let rssGrowth = memory.last.rssKiB - memory.first.rssKiB
            let dirtyGrowth = memory.last.privateDirtyKiB - memory.first.privateDirtyKiB
            check("no growth \(memory.firstCount) -> \(memory.lastCount) requests", rssGrowth <= 0 && dirtyGrowth <= 0,
                  "VmRSS \(rssGrowth >= 0 ? "+" : "")\(rssGrowth) kB, Private_Dirty \(dirtyGrowth >= 0 ? "+" : "")\(dirtyGrowth) kB")
        }

        _ = rmdirAll(temporary)
        let missed = targets.filter { !$0.1 }.count
        if let posted = roundTrips?.posted {
            print("posted ratio qemu-side/echo median=\(fixed(posted.worstRatio, 3))")
            print("posted throughput ops/s=\(Int(posted.posted)) sync ops/s=\(Int(posted.sync))")
        }
        if let ratio = roundTrips?.headline {
            if ratio.isFallback {
                print("note: the C library is not built; the ratio below is for the Swift client")
            }
            print("ratio brokered/echo median=\(fixed(ratio.median, 2)) p99=\(fixed(ratio.p99, 2))")
        }
        fflush(nil)
        if config.check && missed > 0 { exit(2) }
    }

    func check(_ label: String, _ met: Bool, _ value: String) {
        targets.append((label, met))
        Table.text(label, leftAligned(value, 38) + (config.quick ? "" : (met ? "  met" : "  MISSED")))
    }

    // MARK: Round trips

    struct Headline {
        let path: String
        let median: Double
        let p99: Double
        let isFallback: Bool
    }

    struct PostedResults {
        /// The largest posted/echo median ratio over the regimes, and where.
        var worstRatio = 0.0
        var worstRegime = ""
        /// Calls per second through one broker, unpinned.
        var posted = 0.0
        var sync = 0.0
        var recordNote = ""
    }

    struct RoundTripResults {
        let headline: Headline
        let posted: PostedResults?
    }

    func roundTripRows(library: CLibrary?, allowed: [Int], realtime: Bool) -> RoundTripResults {
        // Brokers: one for the Swift client, one for the C library (its
        // session is per process), each on its own socketpair.
        let swiftBroker = BrokerProcess.start(config, auditLog: temporary + "/audit-swift.log")
        let client: BrokerClient
        do {
            guard let connection = swiftBroker.connection.take() else { fail("broker connection gone") }
            client = try BrokerClient(connection: connection)
        } catch {
            fail("hello to the broker: \(error)")
        }
        // Message sizes of the floor: the Swift client's real request, and
        // the broker's real reply.
        func probe(_ buffers: [[UInt8]], _ name: String) -> (request: Int, reply: Int) {
            let reply: Reply
            do { reply = try client.call(buffers: buffers) } catch { fail("\(name): \(error)") }
            guard reply.result == 0 else { fail("\(name): result \(reply.result) from the broker") }
            let request = Wire.encodeRequest(domid: domid, requestID: 0, buffers: buffers).count
            let replySize = Wire.replyHeaderSize + reply.buffers.reduce(0) { $0 + Wire.replyDescriptorSize + $1.bytes.count }
            return (request, replySize)
        }
        let small = probe(intxBuffers[0], "set_pci_intx_level")
        let large = probe(vramBuffers[0], "track_dirty_vram")
        _ = probe(vramBuffers[1], "track_dirty_vram")

        let executable = Files.selfExecutable() ?? CommandLine.arguments[0]
        let smallEcho = EchoServer.start(executable: executable, replySize: small.reply)
        let largeEcho = EchoServer.start(executable: executable, replySize: large.reply)

        var cBroker: BrokerProcess?
        var cHandle: OpaquePointer?
        var cSocket: Int32 = -1
        if let library {
            let broker = BrokerProcess.start(config, auditLog: temporary + "/audit-clib.log")
            guard let connection = broker.connection.take() else { fail("broker connection gone") }
            cSocket = connection.release()
            // The synchronous rows wait for every reply, as a version 1 broker.
            cHandle = library.openSession(fd: cSocket, posting: false)
            cBroker = broker
        }
        // Posting needs a session of its own: a second copy of the library.
        var postedBroker: BrokerProcess?
        var postedLibrary: CLibrary?
        var postedHandle: OpaquePointer?
        var postedSocket: Int32 = -1
        if library != nil, let copy = CLibrary(path: config.library, separateCopy: true) {
            let broker = BrokerProcess.start(config, auditLog: temporary + "/audit-posted.log")
            guard let connection = broker.connection.take() else { fail("broker connection gone") }
            postedSocket = connection.release()
            postedHandle = copy.openSession(fd: postedSocket)
            postedBroker = broker
            postedLibrary = copy
        }

        // The rows. Request bytes of the echo rows are the Swift client's
        // real requests, so the sizes match byte for byte.
        // SAFETY: freed by the defer, after the rows that receive into it have run.
        let receive = UnsafeMutableRawBufferPointer.allocate(byteCount: Wire.maxRequestSize, alignment: 16)
        defer { receive.deallocate() }
        func stable(_ bytes: [UInt8]) -> UnsafeRawBufferPointer {
            // SAFETY: an initialized copy the caller owns (freed at the end of
            // this function, after the rows that send it).
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 16)
            copy.copyBytes(from: bytes)
            return UnsafeRawBufferPointer(copy)
        }
        let smallRequest = stable(Wire.encodeRequest(domid: domid, requestID: 1, buffers: intxBuffers[0]))
        let largeRequest = stable(Wire.encodeRequest(domid: domid, requestID: 1, buffers: vramBuffers[0]))
        precondition(smallRequest.count == small.request && largeRequest.count == large.request)

        func echo(_ fd: Int32, _ request: UnsafeRawBufferPointer, _ replySize: Int) -> UInt64 {
            var truncated: Int32 = 0
            var fds: Int32 = 0
            let started = now()
            let sent = cposix_send_datagram(fd, request.baseAddress, request.count, -1)
            let n = cposix_recv_datagram(fd, receive.baseAddress, receive.count, &truncated, &fds)
            let elapsed = now() &- started
            guard sent == request.count, n == replySize else { fail("echo: sent \(sent), received \(n) of \(replySize)") }
            return elapsed
        }
        // Each row alternates its own two variants (intx level 1/0, the two
        // VRAM ranges).
        var turns = [0, 0, 0, 0]
        func swiftCall(_ variants: [[[UInt8]]], _ name: String, _ turn: inout Int) -> UInt64 {
            turn &+= 1
            let started = now()
            let reply: Reply
            do { reply = try client.call(buffers: variants[turn & 1]) } catch { fail("\(name): \(error)") }
            let elapsed = now() &- started
            guard reply.result == 0 else { fail("\(name): result \(reply.result)") }
            return elapsed
        }

        var rows: [RoundTrip] = []
        rows.append(RoundTrip(label: "echo floor, \(small.request) B -> \(small.reply) B", kind: .echo, floor: nil, server: smallEcho.pid) {
            echo(smallEcho.connection.rawValue, smallRequest, small.reply)
        })
        let smallFloor = rows.count - 1
        rows.append(RoundTrip(label: "set_pci_intx_level, Swift client", kind: .swiftClient, floor: smallFloor, server: swiftBroker.pid) {
            swiftCall(self.intxBuffers, "set_pci_intx_level", &turns[0])
        })
        // SAFETY: one bit per VRAM page (32768 is a multiple of 64), written by the
        // library; freed by the defer, after the rows that use it have run.
        let bitmap = UnsafeMutablePointer<UInt>.allocate(capacity: Int(vramPages) / (8 * MemoryLayout<UInt>.size))
        defer { bitmap.deallocate() }
        if let library, let cHandle {
            rows.append(RoundTrip(label: "set_pci_intx_level, C library", kind: .cLibrary, floor: smallFloor, server: cBroker?.pid ?? 0) {
                turns[2] &+= 1
                let started = now()
                let rc = library.setPciIntxLevel(cHandle, self.domid, 0, 0, 3, 0, UInt32(turns[2] & 1))
                let elapsed = now() &- started
                guard rc == 0 else { fail("xendevicemodel_set_pci_intx_level: \(rc), errno \(errno)") }
                return elapsed
            })
        }
        let vramPages = self.vramPages
        if let postedLibrary, let postedHandle {
            var turn = 0
            rows.append(RoundTrip(label: "set_pci_intx_level posted, C library", kind: .cLibraryPosted, floor: smallFloor,
                                  server: postedBroker?.pid ?? 0,
                                  settle: {
                // A call that waits is a barrier: the backlog is served.
                let rc = postedLibrary.trackDirtyVram(postedHandle, self.domid, self.vramRanges[0], vramPages, bitmap)
                guard rc == 0 else { fail("barrier after posted calls: \(rc), errno \(errno)") }
            }) {
                turn &+= 1
                let started = now()
                let rc = postedLibrary.setPciIntxLevel(postedHandle, self.domid, 0, 0, 3, 0, UInt32(turn & 1))
                let elapsed = now() &- started
                guard rc == 0 else { fail("posted xendevicemodel_set_pci_intx_level: \(rc), errno \(errno)") }
                return elapsed
            })
        }
        rows.append(RoundTrip(label: "echo floor, \(large.request) B -> \(large.reply) B", kind: .echo, floor: nil, server: largeEcho.pid) {
            echo(largeEcho.connection.rawValue, largeRequest, large.reply)
        })
        let largeFloor = rows.count - 1
        rows.append(RoundTrip(label: "track_dirty_vram 4096 B bitmap, Swift client", kind: .swiftClient, floor: largeFloor, server: swiftBroker.pid) {
            swiftCall(self.vramBuffers, "track_dirty_vram", &turns[1])
        })
        if let library, let cHandle {
            rows.append(RoundTrip(label: "track_dirty_vram 4096 B bitmap, C library", kind: .cLibrary, floor: largeFloor, server: cBroker?.pid ?? 0) {
                turns[3] &+= 1
                let started = now()
                let rc = library.trackDirtyVram(cHandle, self.domid, self.vramRanges[turns[3] & 1], self.vramPages, bitmap)
                let elapsed = now() &- started
                guard rc == 0 else { fail("xendevicemodel_track_dirty_vram: \(rc), errno \(errno)") }
                return elapsed
            })
        }

        // The regimes.
        let oneCPU = config.cpu ?? allowed.last ?? 0
        guard allowed.contains(oneCPU) else { fail("--cpu \(oneCPU) is not one this process may use (\(allowed))") }
        var regimes = [Regime(key: "one-cpu", title: "round trip, one CPU: client and server both pinned to CPU \(oneCPU)",
                              client: [oneCPU], server: [oneCPU])]
        if let other = allowed.first(where: { $0 != oneCPU }) {
            regimes.append(Regime(key: "two-cpus", title: "round trip, two CPUs: client pinned to CPU \(other), server to CPU \(oneCPU)",
                                  client: [other], server: [oneCPU]))
        }
        regimes.append(Regime(key: "unpinned", title: "round trip, unpinned: all of CPUs \(allowed) for every process",
                              client: allowed, server: allowed))
        guard regimes.contains(where: { $0.key == config.headline }) else {
            fail("--headline \(config.headline): this machine has no such regime (one CPU allowed?)")
        }

        let servers = [smallEcho.pid, largeEcho.pid, swiftBroker.pid] + (cBroker.map { [$0.pid] } ?? [])
            + (postedBroker.map { [$0.pid] } ?? [])
        var posted: PostedResults? = postedLibrary == nil ? nil : PostedResults()
        var headline: Headline?
        if realtime {
            for pid in [0] + servers where !Scheduling.set(pid, realtime: true) {
                fail("sched_setscheduler(\(pid), SCHED_FIFO): \(SystemError("sched_setscheduler"))")
            }
        }
        for regime in regimes {
            Affinity.set(0, regime.client)
            for pid in servers { Affinity.set(pid, regime.server) }
            let (summaries, cpu) = measure(rows, regime: regime.key)
            Table.section(regime.title)
            print(leftAligned("measurement", Table.labelWidth) + rightAligned("n", 9) + rightAligned("median", 13)
                  + rightAligned("p99", 13) + "   cpu: client  server   vs echo: median   p99")
            for (index, row) in rows.enumerated() {
                let share = cpu[index]
                var note = rightAligned(Unit.microseconds.format(Double(share.client) / Double(max(share.count, 1))), 11)
                    + rightAligned(Unit.microseconds.format(Double(share.server) / Double(max(share.count, 1))), 10)
                if let floor = row.floor {
                    note += rightAligned("x" + fixed(summaries[index].median / summaries[floor].median, 2), 17)
                        + rightAligned("x" + fixed(summaries[index].p99 / summaries[floor].p99, 2), 7)
                }
                Table.row(row.label, summaries[index], .microseconds, note: note)
            }
            fflush(nil)
            if let index = rows.firstIndex(where: { $0.kind == .cLibraryPosted }) {
                let ratio = summaries[index].median / summaries[smallFloor].median
                if ratio >= posted!.worstRatio {
                    posted!.worstRatio = ratio
                    posted!.worstRegime = regime.key
                }
            }
            if headline == nil && regime.key == config.headline {
                let wanted: RoundTrip.Kind = library == nil ? .swiftClient : .cLibrary
                guard let index = rows.firstIndex(where: { $0.kind == wanted && $0.floor == smallFloor }) else {
                    fail("no headline row")
                }
                headline = Headline(path: "set_pci_intx_level, \(wanted == .cLibrary ? "C library" : "Swift client"), \(regime.key)",
                                    median: summaries[index].median / summaries[smallFloor].median,
                                    p99: summaries[index].p99 / summaries[smallFloor].p99,
                                    isFallback: library == nil)
            }
        }
        Affinity.set(0, allowed)
        if realtime { _ = Scheduling.set(0, realtime: false) }
        if posted != nil, let library {
            (posted!.posted, posted!.sync, posted!.recordNote) = throughputRows(library: library, allowed: allowed, realtime: realtime)
        }

        // Hang up everything: each server must end cleanly.
        // xendevicemodel_close keeps the process's broker session (QEMU may
        // open another handle), so end the session on the socket itself.
        if let library, let cHandle {
            _ = library.close(cHandle)
            shutdown(cSocket, Int32(SHUT_RDWR))
        }
        cBroker?.stop()
        if let postedLibrary, let postedHandle {
            _ = postedLibrary.close(postedHandle)
            shutdown(postedSocket, Int32(SHUT_RDWR))
        }
        postedBroker?.stop()
        client.close()
        swiftBroker.stop()
        smallEcho.stop()
        largeEcho.stop()
        // SAFETY: the rows that sent them have all run; nothing uses them after.
        smallRequest.deallocate()
        largeRequest.deallocate()
        guard let headline else { fail("no regime measured") }
        return RoundTripResults(headline: headline, posted: posted)
    }

    /// set_pci_intx_level through one broker, as fast as it goes: waiting
    /// for each reply, then posted (a barrier at the end), each through its
    /// own copy of the C library and its own broker, unpinned. Both brokers
    /// record every call that reached the simulated hypervisor: the posted
    /// one must hold every call.
    func throughputRows(library: CLibrary, allowed: [Int], realtime: Bool) -> (posted: Double, sync: Double, note: String) {
        let calls = config.quick ? 20_000 : 200_000
        func run(posting: Bool) -> (perSecond: Double, record: [SimulationRecord.Entry]) {
            guard let copy = CLibrary(path: config.library, separateCopy: true) else { fail("\(config.library) is gone") }
            let record = temporary + "/record-\(posting ? "posted" : "sync").jsonl"
            let broker = BrokerProcess.start(config, auditLog: temporary + "/audit-throughput.log", record: record)
            guard let connection = broker.connection.take() else { fail("broker connection gone") }
            let fd = connection.release()
            let handle = copy.openSession(fd: fd, posting: posting)
            if realtime { _ = Scheduling.set(0, realtime: true); _ = Scheduling.set(broker.pid, realtime: true) }
            let started = now()
            for i in 0..<calls {
                let rc = copy.setPciIntxLevel(handle, domid, 0, 0, 3, 0, UInt32(i & 1))
                guard rc == 0 else { fail("set_pci_intx_level \(i): \(rc), errno \(errno)") }
            }
            // Any waiting call is a barrier behind the posted ones.
            // SAFETY: one bit per VRAM page, written by the library during the call;
            // freed by the defer after it.
            let bitmap = UnsafeMutablePointer<UInt>.allocate(capacity: Int(vramPages) / (8 * MemoryLayout<UInt>.size))
            defer { bitmap.deallocate() }
            let rc = copy.trackDirtyVram(handle, domid, vramRanges[0], vramPages, bitmap)
            let elapsed = now() &- started
            if realtime { _ = Scheduling.set(0, realtime: false) }
            guard rc == 0 else { fail("barrier: \(rc), errno \(errno)") }
            _ = copy.close(handle)
            shutdown(fd, Int32(SHUT_RDWR))
            broker.stop()
            let entries: [SimulationRecord.Entry]
            do { entries = try SimulationRecord.read(path: record) } catch { fail("record \(record): \(error)") }
            return (Double(calls) / (Double(elapsed) / 1e9), entries)
        }
        let sync = run(posting: false)
        let posted = run(posting: true)
        let intx = Int(intxOp.number)
        let wanted = Array(repeating: intx, count: calls) + [Int(vramOp.number)]
        let complete = posted.record.map(\.op) == wanted && posted.record.allSatisfy { $0.rc == 0 }
            && sync.record.map(\.op) == wanted
        guard complete else {
            fail("the posted broker's record does not hold the \(calls) calls in order (\(posted.record.count) entries)")
        }
        Table.section("throughput through one broker, unpinned: \(calls) set_pci_intx_level calls, then one barrier")
        Table.text("waiting for each reply (DMOP_POSTED=0)", "\(Int(sync.perSecond)) calls/s")
        Table.text("posted", "\(Int(posted.perSecond)) calls/s, x\(fixed(posted.perSecond / sync.perSecond, 2))")
        fflush(nil)
        return (posted.perSecond, sync.perSecond, "record holds all \(calls), in order, rc 0")
    }

    /// CPU time per round trip (from /proc/.../schedstat): where the time
    /// goes, client side and server side.
    struct CPUShare {
        var client: UInt64 = 0
        var server: UInt64 = 0
        var count = 0
    }

    /// Warms every row up, then runs them round-robin in blocks until each
    /// has `iterations` samples.
    func measure(_ rows: [RoundTrip], regime: String) -> ([Summary], [CPUShare]) {
        let warmup = min(2_000, config.iterations)
        for row in rows { for _ in 0..<warmup { _ = row.run() } }
        var samples = rows.map { _ in Samples(capacity: config.iterations) }
        let tracing = config.samplesDirectory != nil
        var starts = rows.map { _ in Samples(capacity: tracing ? config.iterations : 0) }
        var cpu = rows.map { _ in CPUShare() }
        // Short blocks, so that a burst of the host's load (tens to hundreds
        // of milliseconds) falls on every row alike rather than on one row's
        // block; each block starts with a few untimed round trips, so that
        // the switch from the previous row's server is not in the figures.
        let block = 200, rewarm = 4
        var done = 0
        while done < config.iterations {
            let n = min(block, config.iterations - done)
            for (index, row) in rows.enumerated() {
                for _ in 0..<rewarm { _ = row.run() }
                row.settle?()
                let client = CPUTime.thisThread()
                let server = CPUTime.process(row.server)
                if tracing {
                    for _ in 0..<n {
                        starts[index].add(now())
                        samples[index].add(row.run())
                    }
                } else {
                    for _ in 0..<n { samples[index].add(row.run()) }
                }
                row.settle?()
                cpu[index].client &+= CPUTime.thisThread() &- client
                cpu[index].server &+= CPUTime.process(row.server) &- server
                cpu[index].count += n
            }
            done += n
        }
        if let directory = config.samplesDirectory {
            for (index, row) in rows.enumerated() {
                writeSamples(directory + "/" + regime + "-" + String(index) + ".txt", row.label,
                             starts: starts[index].values, durations: samples[index].values)
            }
        }
        return (samples.map { $0.summary() }, cpu)
    }

    /// One line per round trip: start (CLOCK_MONOTONIC, comparable across
    /// rows) and duration, in nanoseconds.
    func writeSamples(_ path: String, _ label: String, starts: [UInt64], durations: [UInt64]) {
        guard let file = fopen(path, "w") else { fail("--samples: cannot create \(path)") }
        fputs("# \(label): start_ns duration_ns (CLOCK_MONOTONIC)\n", file)
        for (start, duration) in zip(starts, durations) {
            fputs(String(start) + " " + String(duration) + "\n", file)
        }
        guard fclose(file) == 0 else { fail("--samples: cannot write \(path)") }
    }

    // MARK: Decision, in-process

    func decisionRows(realtime: Bool) -> Summary {
        if realtime { _ = Scheduling.set(0, realtime: true) }
        defer { if realtime { _ = Scheduling.set(0, realtime: false) } }
        let policy: Policy
        do {
            let text = try Files.read(config.policy)
            policy = try Policy.parse(String(decoding: text, as: UTF8.self), file: config.policy)
        } catch {
            fail("policy \(config.policy): \(error)")
        }
        Table.section("in-process (no socket), per call: batches of 1000 calls timed, so the clock is not in the figure")
        Table.header()
        let batch = 1_000
        let batches = config.decisions / batch

        func timeDecisions(_ buffers: [[UInt8]], forward: Bool) -> Summary {
            var samples = Samples(capacity: batches)
            // SAFETY: initialized copies and their list, freed by the defer after
            // the last decision; `request` does not leave this function.
            let views = buffers.map { bytes in
                let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 16)
                copy.copyBytes(from: bytes)
                return UnsafeRawBufferPointer(copy)
            }
            let viewList = UnsafeMutableBufferPointer<UnsafeRawBufferPointer>.allocate(capacity: views.count)
            _ = viewList.initialize(from: views)
            defer { views.forEach { $0.deallocate() }; viewList.deallocate() }
            let request = DMOPRequest(domid: domid, buffers: UnsafeBufferPointer(viewList))
            for round in 0..<(batches + batches / 10) {
                let started = now()
                for _ in 0..<batch {
                    guard decide(restrictedDomid: domid, policy: policy, request: request).isForward == forward else {
                        fail("decision is not \(forward ? "forward" : "refuse")")
                    }
                }
                // The first tenth warms up.
                if round >= batches / 10 { samples.add(now() &- started) }
            }
            return samples.summary().perCall(batch)
        }
        let intx = timeDecisions(intxBuffers[0], forward: true)
        Table.row("decide: set_pci_intx_level (forward, 5 conditions)", intx, .nanoseconds)
        Table.row("decide: track_dirty_vram 4096 B (forward)", timeDecisions(vramBuffers[0], forward: true), .nanoseconds)
        Table.row("decide: nr_vcpus (refused, not in policy)", timeDecisions(refusedBuffers, forward: false), .nanoseconds)

        // The simulated hypervisor behind the broker, alone: its share of
        // the brokered rows (a real DMOP costs hypervisor time instead).
        let hypervisor: SimulatedHypervisor
        do {
            hypervisor = try SimulatedHypervisor(guestDomid: domid, vcpus: 2)
            try hypervisor.restrict(to: domid)
        } catch {
            fail("simulated hypervisor: \(error)")
        }
        func timeDMOp(_ variants: [[[UInt8]]]) -> Summary {
            // SAFETY: initialized copies, freed by the defer after the last call;
            // each list is viewed only for its call.
            let copies = variants.map { buffers in
                buffers.map { bytes in
                    let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 16)
                    copy.copyBytes(from: bytes)
                    return copy
                }
            }
            defer { copies.forEach { $0.forEach { $0.deallocate() } } }
            var samples = Samples(capacity: batches)
            let rounds = max(batches / 10, 10)
            for round in 0..<(rounds + rounds / 10) {
                let started = now()
                for i in 0..<batch {
                    let rc = copies[i & 1].withUnsafeBufferPointer { hypervisor.dmOp(domid: domid, buffers: $0) }
                    guard rc == 0 else { fail("simulated dmOp: \(rc)") }
                }
                if round >= rounds / 10 { samples.add(now() &- started) }
            }
            return samples.summary().perCall(batch)
        }
        Table.row("simulated hypervisor dmOp: set_pci_intx_level", timeDMOp(intxBuffers), .nanoseconds)
        Table.row("simulated hypervisor dmOp: track_dirty_vram 4096 B", timeDMOp(vramBuffers), .nanoseconds)
        fflush(nil)
        return intx
    }

    // MARK: Start-up

    func startupRows(realtime: Bool) -> (broker: Summary, hello: Summary) {
        // The brokers inherit SCHED_FIFO from the bench (posix_spawn keeps
        // the policy): other load on the machine does not stretch the figure.
        if realtime { _ = Scheduling.set(0, realtime: true) }
        defer { if realtime { _ = Scheduling.set(0, realtime: false) } }
        // Two untimed runs first: a toolstack starts brokers from a binary
        // already in the page cache.
        for _ in 0..<2 {
            let broker = BrokerProcess.start(config, auditLog: temporary + "/audit-startup.log")
            broker.stop()
        }
        var samples = Samples(capacity: config.startupRuns)
        for _ in 0..<config.startupRuns {
            let broker = BrokerProcess.start(config, auditLog: temporary + "/audit-startup.log")
            samples.add(broker.startupNanoseconds)
            broker.stop()
        }
        let summary = samples.summary()
        // The floor: dmop-bench-hello, a Swift program that does nothing,
        // built like the broker (scripts/bench: --static-swift-stdlib),
        // spawned and reaped the same way.
        let executable = Files.selfExecutable() ?? CommandLine.arguments[0]
        let hello = String(executable[..<(executable.lastIndex(of: "/") ?? executable.startIndex)]) + "/dmop-bench-hello"
        guard access(hello, X_OK) == 0 else { fail("no \(hello) (build the dmop-bench-hello product)") }
        var helloSamples = Samples(capacity: config.startupRuns)
        for round in 0..<(config.startupRuns + 2) {
            let started = now()
            let pid: pid_t
            do { pid = try Spawn.start(hello, [hello]) } catch { fail("spawn \(hello): \(error)") }
            // A blocking wait: reap's polling would add its 10 ms period.
            let status = (try? Spawn.wait(pid)) ?? -1
            let elapsed = now() &- started
            guard status == 0 else { fail("dmop-bench-hello: \(Spawn.describe(status: status))") }
            if round >= 2 { helloSamples.add(elapsed) }
        }
        let helloSummary = helloSamples.summary()
        Table.section("start-up: posix_spawn to 'ready' read from --ready-fd (unpinned\(realtime ? ", SCHED_FIFO" : ""))")
        Table.header()
        Table.row("dmop-bench-broker serve --hypervisor simulated", summary, .milliseconds)
        Table.row("static Swift hello-world (spawn to exit)", helloSummary, .milliseconds)
        fflush(nil)
        return (summary, helloSummary)
    }

    // MARK: Memory

    struct MemoryResults {
        let firstCount: Int
        let first: MemoryFigures
        let lastCount: Int
        let last: MemoryFigures
    }

    /// One broker serves a QEMU-like mix (mostly set_pci_intx_level, every
    /// tenth a track_dirty_vram, every hundredth a refused op) through the
    /// Swift client, 8 requests in flight; its memory is read at each
    /// checkpoint with nothing in flight.
    func memoryRows() -> MemoryResults {
        let broker = BrokerProcess.start(config, auditLog: temporary + "/audit-memory.log")
        guard let connection = broker.connection.take() else { fail("broker connection gone") }
        let client: BrokerClient
        do { client = try BrokerClient(connection: connection) } catch { fail("hello: \(error)") }

        enum Kind { case intx, vram, refused }
        func kind(_ i: Int) -> Kind { i % 100 == 99 ? .refused : (i % 10 == 5 ? .vram : .intx) }
        func buffers(_ i: Int) -> [[UInt8]] {
            switch kind(i) {
            case .intx: intxBuffers[i & 1]
            case .vram: vramBuffers[(i / 10) & 1]
            case .refused: refusedBuffers
            }
        }

        Table.section("broker memory: a QEMU-like mix, 8 in flight; VmRSS (/proc/PID/status), Private_Dirty (smaps_rollup)")
        print(leftAligned("requests served", Table.labelWidth) + rightAligned("VmRSS", 13) + rightAligned("Private_Dirty", 16))
        func report(_ count: Int) -> MemoryFigures {
            let figures = MemoryFigures.of(broker.pid)
            print(leftAligned("  " + String(count), Table.labelWidth) + rightAligned("\(figures.rssKiB) kB", 13)
                  + rightAligned("\(figures.privateDirtyKiB) kB", 16))
            fflush(nil)
            return figures
        }
        _ = report(0)
        let depth = 8
        var sent = 0
        var received = 0
        var results: [(Int, MemoryFigures)] = []
        let started = now()
        for checkpoint in config.memoryCheckpoints {
            while received < checkpoint {
                while sent < checkpoint && sent - received < depth {
                    do { try client.send(buffers: buffers(sent)) } catch { fail("send: \(error)") }
                    sent += 1
                }
                let reply: Reply
                do { reply = try client.nextReply() } catch { fail("reply: \(error)") }
                switch kind(received) {
                case .refused:
                    guard reply.origin == .broker, reply.reason == .opNotAllowed else { fail("nr_vcpus was not refused: \(reply)") }
                case .intx, .vram:
                    guard reply.result == 0 else { fail("request \(received): result \(reply.result)") }
                }
                received += 1
            }
            results.append((checkpoint, report(checkpoint)))
        }
        let seconds = Double(now() &- started) / 1e9
        print("  (\(received) requests in \(fixed(seconds, 1)) s)")
        client.close()
        broker.stop()
        guard let first = results.first, let last = results.last else { fail("no memory checkpoints") }
        return MemoryResults(firstCount: first.0, first: first.1, lastCount: last.0, last: last.1)
    }
}

extension Summary {
    /// A batch summary as per-call figures.
    func perCall(_ batch: Int) -> Summary {
        let n = Double(batch)
        return Summary(count: count * batch, median: median / n, p99: p99 / n, min: min / n, max: max / n)
    }
}

/// Removes the bench's own temporary directory (flat: audit logs only).
func rmdirAll(_ path: String) -> Bool {
    guard let directory = opendir(path) else { return false }
    while let entry = readdir(directory) {
        // SAFETY: a copy of d_name, read within its bytes up to the NUL.
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { unlink(path + "/" + name) }
    }
    closedir(directory)
    return rmdir(path) == 0
}
