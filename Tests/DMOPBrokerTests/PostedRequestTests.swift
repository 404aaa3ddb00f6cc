// SPDX-License-Identifier: MIT
import DMOPCore
import DMOPPosix
import Foundation
import Glibc
import Testing

/// Protocol version 2: posted requests against a real broker.
/// A posted request is decided, rate-limited, audited and ordered like a
/// synchronous one, gets no REPLY, and its failure rides on the next
/// synchronous REPLY.
@Suite("Posted requests (protocol 2)", .serialized)
struct PostedRequestTests {
    static let policy = TestSupport.packageRoot.appendingPathComponent("Tests/clib/posted.policy").path
    static let isa = Int(TestSupport.op("set_isa_irq_level").number)
    static let intx = Int(TestSupport.op("set_pci_intx_level").number)
    static let msi = Int(TestSupport.op("inject_msi").number)
    static let nrVcpus = Int(TestSupport.op("nr_vcpus").number)
    static let irq = Int(TestSupport.op("set_irq_level").number)

    static func intxHeader(device: UInt64, level: UInt64, intx: UInt64 = 0) -> [UInt8] {
        Hostile.header("set_pci_intx_level", ["device": device, "intx": intx, "level": level])
    }
    static let msiHeader = Hostile.header("inject_msi", ["addr": 0xfee0_0000, "data": 0x4041])
    static let vcpusHeader = Hostile.header("nr_vcpus")

    static func post(_ peer: HostilePeer, id: UInt32, _ buffer: [UInt8]) throws {
        try peer.send(Wire.encodeRequest(domid: 5, requestID: id, buffers: [buffer], flags: Wire.requestFlagPosted))
    }

    @Test("HELLO 1...2: version 2, posted_ops names exactly the rules marked posted")
    func negotiation() throws {
        let (broker, peer) = try Hostile.session(hello: false, policy: Self.policy)
        let welcome = try peer.hello()
        #expect(welcome.version == 2)
        #expect(welcome.postedOps == UInt32(1 << Self.isa | 1 << Self.intx | 1 << Self.msi))
        #expect(welcome.postedOps & ~welcome.allowedOps == 0)
        peer.close()
        Hostile.expectExit(broker, 0)
    }

    @Test("a version 1 client is served as before: posted_ops 0, and the posted flag is a protocol error")
    func versionOneClient() throws {
        let (broker, peer) = try Hostile.session(hello: false, policy: Self.policy)
        let welcome = try peer.hello(Hello(minVersion: 1, maxVersion: 1))
        #expect(welcome.version == 1)
        #expect(welcome.postedOps == 0)
        try peer.request(id: 1, [Hostile.isaIrq(3, level: 1)])
        peer.expectReply(id: 1, result: 0, reason: nil)
        try Self.post(peer, id: 2, Hostile.isaIrq(3))
        peer.expectProtocolError(.headerReservedNonzero, requestID: 2)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [Self.isa])
    }

    @Test("unknown REQUEST flags are refused in version 2 too")
    func unknownFlags() throws {
        let (broker, peer) = try Hostile.session(policy: Self.policy)
        try peer.send(Wire.encodeRequest(domid: 5, requestID: 9, buffers: [Hostile.isaIrq(3)], flags: 0x0002))
        peer.expectProtocolError(.headerReservedNonzero, requestID: 9)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [])
    }

    @Test("posted and synchronous requests reach the hypervisor in the order sent; only the synchronous ones are answered")
    func ordering() throws {
        let (broker, peer) = try Hostile.session(policy: Self.policy)
        var expected: [Int] = []
        var synchronous: [UInt32] = []
        for i in 0..<600 {
            let id = UInt32(i)
            switch i % 7 {
            case 6:
                try peer.request(id: id, [Self.vcpusHeader])
                expected.append(Self.nrVcpus)
                synchronous.append(id)
            case 0, 3:
                try Self.post(peer, id: id, Hostile.isaIrq(UInt64(i % 16), level: UInt64(i & 1)))
                expected.append(Self.isa)
            case 1, 4:
                try Self.post(peer, id: id, Self.intxHeader(device: UInt64(i % 32), level: UInt64(i & 1)))
                expected.append(Self.intx)
            default:
                try Self.post(peer, id: id, Self.msiHeader)
                expected.append(Self.msi)
            }
            // Keep the socket from filling: read the replies as they come.
            if i % 7 == 6 {
                let reply = peer.expectReply(id: id, result: 0, reason: nil)
                #expect(reply?.postedFailure == nil)
            }
        }
        try peer.request(id: 10_000, [Self.vcpusHeader])
        expected.append(Self.nrVcpus)
        peer.expectReply(id: 10_000, result: 0, reason: nil)
        #expect(peer.receive(timeoutMs: 200) == .silence, "a posted request was answered")
        peer.close()
        Hostile.expectExit(broker, 0)
        let records = broker.records
        #expect(records.map(\.op) == expected)
        #expect(records.allSatisfy { $0.rc == 0 }, "\(broker.recordLines.filter { !$0.hasSuffix("\"rc\":0}") })")
        #expect(broker.auditLog.contains("posted=\(600 - synchronous.count) posted_failed=0"), "\(broker.auditLog)")
    }

    @Test("the first posted failure (refusal or hypervisor error) comes with the next synchronous REPLY; later ones are counted")
    func failureDelivery() throws {
        let (broker, peer) = try Hostile.session(policy: Self.policy)
        try Self.post(peer, id: 10, Hostile.isaIrq(16))                       // condition fails
        try Self.post(peer, id: 11, Self.intxHeader(device: 3, level: 1))      // fine
        try Self.post(peer, id: 12, Hostile.header("set_irq_level", ["irq": 1]))  // not marked posted
        try Self.post(peer, id: 13, Self.intxHeader(device: 3, level: 1, intx: 4))  // Xen: EINVAL
        try peer.request(id: 14, [Self.vcpusHeader])
        let reply = peer.expectReply(id: 14, result: 0, reason: nil)
        #expect(reply?.buffers.count == 1, "nr_vcpus still writes back its output")
        #expect(reply?.postedFailure == PostedFailure(requestID: 10, op: UInt32(Self.isa), result: -EPERM,
                                                      origin: .broker, reason: .conditionFailed, laterFailures: 2))
        // Delivered once.
        try peer.request(id: 15, [Self.vcpusHeader])
        #expect(peer.expectReply(id: 15, result: 0, reason: nil)?.postedFailure == nil)
        // A hypervisor failure first.
        try Self.post(peer, id: 16, Self.intxHeader(device: 40, level: 1))
        try peer.request(id: 17, [Hostile.header("set_pci_link_route", ["link": 9])])  // refused itself
        let refused = peer.expectReply(id: 17, result: -EPERM, reason: .conditionFailed)
        #expect(refused?.postedFailure == PostedFailure(requestID: 16, op: UInt32(Self.intx), result: -EINVAL,
                                                        origin: .hypervisor, reason: nil, laterFailures: 0))
        peer.close()
        Hostile.expectExit(broker, 0)
        Hostile.expectRecord(broker, ops: [Self.intx, Self.intx, Self.nrVcpus, Self.nrVcpus, Self.intx])
        let audit = broker.auditLog
        #expect(audit.contains("posted failure delivered: peer_pid="), "\(audit)")
        #expect(audit.contains("request_id=10 op=set_isa_irq_level rc=-1 reason=CONDITION_FAILED later_failures=2"), "\(audit)")
        #expect(audit.contains("request_id=16 op=set_pci_intx_level rc=-22 reason=- later_failures=0"), "\(audit)")
        #expect(audit.contains("reason=POSTING_NOT_ALLOWED"), "\(audit)")
        #expect(audit.contains("posted=5 posted_failed=4"), "\(audit)")
    }

    @Test("hostile: a posted flood of refused ops gets no reply flood, a bounded audit and flat memory")
    func postedFlood() throws {
        let (broker, peer) = try Hostile.session(policy: Self.policy)
        let total = 100_000
        let started = Date()
        var rssBefore = 0
        let refused = [Wire.encodeRequest(domid: 5, requestID: 1, buffers: [Hostile.isaIrq(16)], flags: Wire.requestFlagPosted),
                       Wire.encodeRequest(domid: 6, requestID: 2, buffers: [Hostile.isaIrq(1)], flags: Wire.requestFlagPosted),
                       Wire.encodeRequest(domid: 5, requestID: 3, buffers: [Self.vcpusHeader], flags: Wire.requestFlagPosted)]
        for i in 0..<total {
            try peer.send(refused[i % 3])
            if i == 10_000 { rssBefore = Hostile.residentKiB(broker.pid) ?? 0 }
        }
        #expect(peer.receive(timeoutMs: 300) == .silence, "the broker answered a posted request")
        try peer.request(id: 99, [Self.vcpusHeader])
        let reply = peer.expectReply(id: 99, result: 0, reason: nil)
        #expect(reply?.postedFailure?.requestID == 1)
        #expect(reply?.postedFailure?.reason == .conditionFailed)
        #expect(reply?.postedFailure?.laterFailures == UInt32(total - 1))
        let rssAfter = Hostile.residentKiB(broker.pid) ?? 0
        let seconds = Date().timeIntervalSince(started)
        #expect(peer.receive(timeoutMs: 200) == .silence)
        #expect(rssBefore > 0 && rssAfter - rssBefore < 256, "VmRSS grew from \(rssBefore) to \(rssAfter) KiB")
        peer.close()
        Hostile.expectExit(broker, 0)
        #expect(broker.records.map(\.op) == [Self.nrVcpus])
        let lines = broker.auditLog.split(separator: "\n")
        let refusalLines = lines.filter { $0.contains("verdict=refuse") }.count
        #expect(refusalLines <= 50 * (Int(seconds) + 2), "\(refusalLines) refusal lines in \(seconds) s")
        #expect(lines.count < 200 + 60 * Int(seconds), "\(lines.count) audit lines in \(seconds) s")
        print("posted flood: \(total) refused posted requests in \(String(format: "%.1f", seconds)) s; VmRSS \(rssBefore) -> \(rssAfter) KiB; \(lines.count) audit lines")
    }

    @Test("the window: while the broker is stopped the sender blocks on a full socket; after SIGCONT everything arrives, in order")
    func stoppedBroker() throws {
        let (broker, peer) = try Hostile.session(policy: Self.policy)
        kill(broker.pid, SIGSTOP)
        defer { kill(broker.pid, SIGCONT) }
        // kill() returns before the broker stops: one still running would
        // take requests from the full socket and let the blocking send pass.
        #expect(Self.waitUntilStopped(broker.pid), "the broker did not stop within 10 s")
        let flags = fcntl(peer.fd, F_GETFL)
        _ = fcntl(peer.fd, F_SETFL, flags | O_NONBLOCK)
        var window = 0
        while true {
            let bytes = Wire.encodeRequest(domid: 5, requestID: UInt32(window), buffers: [Hostile.isaIrq(UInt64(window % 16))],
                                           flags: Wire.requestFlagPosted)
            let n = bytes.withUnsafeBytes { send(peer.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                #expect(errno == EAGAIN)
                break
            }
            window += 1
            guard window < 1_000_000 else { break }
        }
        _ = fcntl(peer.fd, F_SETFL, flags)
        #expect(window > 100 && window < 1_000_000, "window \(window)")
        print("posted window: \(window) requests of 52 bytes fit the socket while the broker is stopped")
        // A blocking sender waits (nothing is dropped) until the broker runs.
        // (nil until the send returns)
        let sendResult = Shared<String?>(nil)
        let fd = peer.fd
        let sender = Thread {
            let bytes = Wire.encodeRequest(domid: 5, requestID: 77_777, buffers: [PostedRequestTests.msiHeader],
                                           flags: Wire.requestFlagPosted)
            var n: Int
            repeat {
                n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            } while n < 0 && errno == EINTR
            sendResult.set(n < 0 ? "failed: \(Errno.name(errno))" : "\(n) bytes")
        }
        sender.start()
        usleep(300_000)
        #expect(sendResult.get() == nil,
                "the send did not block while the broker was stopped (send: \(sendResult.get() ?? "-"); broker state \(ProcStatus.state(broker.pid) ?? "?"))")
        kill(broker.pid, SIGCONT)
        let deadline = Date().addingTimeInterval(10)
        while sendResult.get() == nil && Date() < deadline { usleep(1_000) }
        #expect(sendResult.get()?.hasSuffix(" bytes") == true, "the blocked send: \(sendResult.get() ?? "still blocked after 10 s")")
        try peer.request(id: 88_888, [Self.vcpusHeader])
        let reply = peer.expectReply(id: 88_888, result: 0, reason: nil)
        #expect(reply?.postedFailure == nil)
        peer.close()
        Hostile.expectExit(broker, 0)
        let records = broker.records
        #expect(records.map(\.op) == Array(repeating: Self.isa, count: window) + [Self.msi, Self.nrVcpus])
        #expect(records.allSatisfy { $0.rc == 0 })
    }

    @Test("policy: 'posted' parses after conditions and rate; ops that write results back cannot be posted")
    func policyGrammar() throws {
        let policy = try Policy.parse("allow inject_msi if addr <= 0xfffff rate 100/s burst 10 posted\nallow set_isa_irq_level posted\nallow set_pci_intx_level\n",
                                      file: "p")
        #expect(policy.rules.map(\.mayPost) == [true, true, false])
        #expect(policy.postedOpsMask == UInt32(1 << Self.msi | 1 << Self.isa))
        #expect(throws: PolicyError.self) { try Policy.parse("allow nr_vcpus posted\n", file: "p") }
        #expect(throws: PolicyError.self) { try Policy.parse("allow track_dirty_vram posted\n", file: "p") }
        #expect(throws: PolicyError.self) { try Policy.parse("allow inject_msi posted rate 1/s\n", file: "p") }
        do {
            _ = try Policy.parse("allow create_ioreq_server posted\n", file: "p")
        } catch {
            #expect("\(error)".contains("writes results back, so it cannot be posted"))
        }
    }
}

extension PostedRequestTests {
    static func waitUntilStopped(_ pid: pid_t) -> Bool {
        for _ in 0..<1_000 {
            if ProcStatus.state(pid) == "T" { return true }
            usleep(10_000)
        }
        return false
    }
}

/// A value two threads share.
final class Shared<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func get() -> Value { lock.lock(); defer { lock.unlock() }; return value }
    func set(_ new: Value) { lock.lock(); value = new; lock.unlock() }
}
