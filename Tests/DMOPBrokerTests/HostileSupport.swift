// SPDX-License-Identifier: MIT
import DMOPClient
import DMOPCore
import DMOPPosix
import DMOPTooling
import Foundation
import Glibc
import Testing

/// A client that sends whatever bytes a test gives it, fds included, and
/// reads the broker's answer with a timeout, so no hostile scenario can hang
/// the suite.
final class HostilePeer {
    enum Outcome: Equatable, CustomStringConvertible {
        case message(BrokerMessage)
        /// The broker closed the connection.
        case hangUp
        /// Nothing arrived within the timeout.
        case silence
        /// Bytes the client decoder refuses: a broker bug.
        case undecodable(String)

        var description: String {
            switch self {
            case .message(let m): "\(m)"
            case .hangUp: "hang-up"
            case .silence: "silence"
            case .undecodable(let text): "undecodable: \(text)"
            }
        }
    }

    /// The peer's socket; nil once closed.
    private var socket: FileDescriptor?
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Wire.maxRequestSize + 1, alignment: 16)

    init(_ socket: consuming FileDescriptor) { self.socket = Optional(socket) }

    /// The socket's descriptor; -1 once closed.
    var fd: Int32 { socket.rawValue }

    /// Hangs up now, while the test goes on.
    func close() { socket = nil }
    deinit { buffer.deallocate() }

    func send(_ bytes: [UInt8]) throws {
        try SeqPacket.send(fd, bytes)
    }

    /// sendmsg with `fds` in one SCM_RIGHTS message (the broker's own helper
    /// passes one fd at most; a hostile client passes many).
    func send(_ bytes: [UInt8], passing fds: [Int32]) throws {
        let headerSize = MemoryLayout<cmsghdr>.size
        let dataSize = fds.count * MemoryLayout<Int32>.size
        let alignment = MemoryLayout<Int>.size
        let space = headerSize + (dataSize + alignment - 1) / alignment * alignment
        let control = UnsafeMutableRawBufferPointer.allocate(byteCount: space, alignment: alignment)
        defer { control.deallocate() }
        control.initializeMemory(as: UInt8.self, repeating: 0)
        var header = cmsghdr()
        header.cmsg_len = headerSize + dataSize
        header.cmsg_level = SOL_SOCKET
        header.cmsg_type = Int32(SCM_RIGHTS)
        control.storeBytes(of: header, as: cmsghdr.self)
        for (index, passed) in fds.enumerated() {
            control.storeBytes(of: passed, toByteOffset: headerSize + index * MemoryLayout<Int32>.size, as: Int32.self)
        }
        var payload = bytes
        let sent = payload.withUnsafeMutableBytes { raw -> Int in
            var iov = iovec(iov_base: raw.baseAddress, iov_len: raw.count)
            return withUnsafeMutablePointer(to: &iov) { iovPointer in
                var message = msghdr()
                message.msg_iov = iovPointer
                message.msg_iovlen = 1
                message.msg_control = control.baseAddress
                message.msg_controllen = space
                return sendmsg(fd, &message, Int32(MSG_NOSIGNAL))
            }
        }
        guard sent == bytes.count else { throw SystemError("sendmsg with \(fds.count) fds") }
    }

    /// Sends a HELLO and requires the WELCOME.
    @discardableResult
    func hello(_ hello: Hello = Hello()) throws -> Welcome {
        try send(Wire.encodeHello(hello))
        guard case .message(.welcome(let welcome)) = receive() else { throw TestFailure("no WELCOME") }
        return welcome
    }

    func request(domid: UInt16 = 5, id: UInt32, _ buffers: [[UInt8]]) throws {
        try send(Wire.encodeRequest(domid: domid, requestID: id, buffers: buffers))
    }

    func receive(timeoutMs: Int32 = 10_000) -> Outcome {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while true {
            let ready = poll(&poller, 1, timeoutMs)
            if ready < 0 && errno == EINTR { continue }
            if ready == 0 { return .silence }
            break
        }
        let received: SeqPacket.Received
        do {
            received = try SeqPacket.receive(fd, into: buffer)
        } catch {
            return error.errno == ECONNRESET ? .hangUp : .undecodable("\(error)")
        }
        switch received {
        case .hangUp: return .hangUp
        case .truncated: return .undecodable("over \(buffer.count) bytes")
        case .fdsAttached(let count, _): return .undecodable("\(count) fds from the broker")
        case .datagram(let n):
            do {
                return .message(try Wire.decodeBrokerMessage(UnsafeRawBufferPointer(rebasing: buffer[0..<n])))
            } catch {
                return .undecodable("\(error)")
            }
        }
    }

    /// The next message must be this REPLY; returns it.
    @discardableResult
    func expectReply(id: UInt32, domid: UInt16 = 5, result: Int32, reason: ReasonCode?,
                     sourceLocation: SourceLocation = #_sourceLocation) -> Reply? {
        let outcome = receive()
        guard case .message(.reply(let reply)) = outcome else {
            Issue.record("expected REPLY \(id), got \(outcome)", sourceLocation: sourceLocation)
            return nil
        }
        #expect(reply.requestID == id && reply.domid == domid, "reply \(reply.requestID)/\(reply.domid)",
                sourceLocation: sourceLocation)
        #expect(reply.result == result, "result \(reply.result), expected \(result)", sourceLocation: sourceLocation)
        #expect(reply.reason == reason, "reason \(String(describing: reply.reason))", sourceLocation: sourceLocation)
        #expect(reply.origin == (reason == nil ? .hypervisor : .broker), sourceLocation: sourceLocation)
        if reason != nil { #expect(reply.buffers.isEmpty, sourceLocation: sourceLocation) }
        return reply
    }

    /// A refusal of a well-formed request: REPLY origin broker, the reason's
    /// errno; the session goes on.
    func expectRefusal(id: UInt32, domid: UInt16 = 5, _ reason: ReasonCode,
                       sourceLocation: SourceLocation = #_sourceLocation) {
        expectReply(id: id, domid: domid, result: -reason.errno, reason: reason, sourceLocation: sourceLocation)
    }

    /// PROTOCOL_ERROR with this reason, then the broker closes.
    func expectProtocolError(_ reason: ReasonCode, requestID: UInt32 = 0,
                             sourceLocation: SourceLocation = #_sourceLocation) {
        let outcome = receive()
        guard case .message(.protocolError(let error)) = outcome else {
            Issue.record("expected PROTOCOL_ERROR \(reason.name), got \(outcome)", sourceLocation: sourceLocation)
            return
        }
        #expect(error.reason == reason, "PROTOCOL_ERROR \(error.reason.name): \(error.text)", sourceLocation: sourceLocation)
        #expect(error.requestID == requestID, "request_id \(error.requestID)", sourceLocation: sourceLocation)
        #expect(!error.text.isEmpty, sourceLocation: sourceLocation)
        expectHangUp(sourceLocation: sourceLocation)
    }

    func expectHangUp(sourceLocation: SourceLocation = #_sourceLocation) {
        let outcome = receive()
        #expect(outcome == .hangUp, "expected the broker to close, got \(outcome)", sourceLocation: sourceLocation)
    }

    /// An allowed op still goes through: the session is alive and sane.
    func expectStillServing(id: UInt32 = 0x5AFE, sourceLocation: SourceLocation = #_sourceLocation) throws {
        try request(id: id, [Hostile.isaIrq(3)])
        expectReply(id: id, result: 0, reason: nil, sourceLocation: sourceLocation)
    }
}

enum Hostile {
    static let setIsaIrqLevel = Int(TestSupport.op("set_isa_irq_level").number)

    /// A valid set_isa_irq_level buffer 0 (allowed by qemu-xen.policy).
    static func isaIrq(_ irq: UInt64, level: UInt64 = 0) -> [UInt8] {
        TestSupport.op("set_isa_irq_level").encodeHeader(["isa_irq": irq, "level": level])
    }

    static func header(_ op: String, _ fields: [String: UInt64] = [:]) -> [UInt8] {
        TestSupport.op(op).encodeHeader(fields)
    }

    /// A --socket-fd broker on the simulated hypervisor and a raw peer,
    /// hello done unless `hello` is false.
    static func session(hello: Bool = true, policy: String = TestSupport.policyPath("qemu-xen.policy"),
                        extraArguments: [String] = []) throws -> (BrokerUnderTest, HostilePeer) {
        let broker = try BrokerUnderTest(policy: policy, extraArguments: extraArguments)
        let peer = HostilePeer(try broker.rawConnection())
        if hello { try peer.hello() }
        return (broker, peer)
    }

    /// The documented end of a --socket-fd broker: 79 after PROTOCOL_ERROR,
    /// 0 after a hang-up or a refused hello.
    static func expectExit(_ broker: BrokerUnderTest, _ code: Int32, sourceLocation: SourceLocation = #_sourceLocation) {
        let status = broker.waitForExit()
        #expect(BrokerUnderTest.exitCode(status) == code,
                "exit status \(status.map(Spawn.describe) ?? "none (still running)"), expected \(code); audit log:\n\(broker.auditLog)",
                sourceLocation: sourceLocation)
    }

    /// What reached the simulated hypervisor: exactly these ops, all for the
    /// broker's domid, none refused by privcmd for the domid.
    static func expectRecord(_ broker: BrokerUnderTest, ops: [Int], sourceLocation: SourceLocation = #_sourceLocation) {
        let records = broker.records
        #expect(records.map(\.op) == ops, "record: \(broker.recordLines)", sourceLocation: sourceLocation)
        #expect(records.allSatisfy { $0.domid == 5 && $0.rc != -Int(EPERM) }, "record: \(broker.recordLines)",
                sourceLocation: sourceLocation)
        #expect(broker.recordLines.count == records.count, "unparsed record lines", sourceLocation: sourceLocation)
    }

    /// VmRSS of a process in KiB, from /proc/PID/status.
    static func residentKiB(_ pid: pid_t) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return nil }
        return Int(line.split(separator: " ").dropFirst().first ?? "")
    }

    /// How many of the process's fds are listening Unix sockets: its
    /// socket inodes from /proc/PID/fd, looked up in /proc/net/unix, whose
    /// flags have __SO_ACCEPTCON (<linux/net.h>: 1 << 16, the kernel's mark
    /// of a listener; /proc/net/unix prints those flags in hex).
    static func listeningSockets(of pid: pid_t) -> Int? {
        // /proc/net/unix is read in pages while other tests open and close
        // sockets, so one read can miss a line: the most of a few reads.
        (0..<4).compactMap { _ in listeningSocketsOnce(of: pid) }.max()
    }

    private static func listeningSocketsOnce(of pid: pid_t) -> Int? {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd"),
              // Read to EOF: Foundation's String(contentsOfFile:) stops after the
              // first page of a /proc file, which misses sockets once the
              // machine has more than about 60.
              let bytes = try? Files.read("/proc/net/unix") else { return nil }
        let table = String(decoding: bytes, as: UTF8.self)
        let inodes = Set(names.compactMap { name -> String? in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(name)"),
                  target.hasPrefix("socket:[") else { return nil }
            return String(target.dropFirst("socket:[".count).dropLast())
        })
        return table.split(separator: "\n").dropFirst().filter { line in
            let fields = line.split(separator: " ")
            guard fields.count >= 7, let flags = UInt32(fields[3], radix: 16) else { return false }
            return inodes.contains(String(fields[6])) && flags & (1 << 16) != 0
        }.count
    }

    /// A pipe-like pair of connected stream sockets, close-on-exec from
    /// their first moment (socketpair with SOCK_CLOEXEC; pipe + fcntl would
    /// leave a window in which a broker spawned by a parallel test inherits
    /// an end and keeps it open).
    static func pipe() throws -> PipeEnds {
        var ends: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0 else {
            throw SystemError("socketpair")
        }
        return PipeEnds(read: FileDescriptor(owning: ends[0]), write: FileDescriptor(owning: ends[1]))
    }

    /// The two ends of `pipe()`. A class, so a test can keep many (an
    /// array) and close a write end while it keeps the read end.
    final class PipeEnds {
        private let readEnd: FileDescriptor
        private var writeEnd: FileDescriptor?
        /// The ends' descriptors; the write end's is -1 once closed.
        var read: Int32 { readEnd.rawValue }
        var write: Int32 { writeEnd.rawValue }

        init(read: consuming FileDescriptor, write: consuming FileDescriptor) {
            readEnd = read
            writeEnd = Optional(write)
        }

        func closeWrite() { writeEnd = nil }
    }

    /// True when the last copy of the write end is gone: read gives EOF
    /// within the timeout (nothing is ever written to these pairs).
    static func writeEndClosed(_ readEnd: Int32, timeoutMs: Int32 = 5000) -> Bool {
        var poller = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, timeoutMs) == 1 else { return false }
        var byte: UInt8 = 0
        return read(readEnd, &byte, 1) == 0
    }
}
