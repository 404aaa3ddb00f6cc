// SPDX-License-Identifier: MIT
// libFuzzer target (b): the whole request path of a real BrokerServer.
//
// Each input is a session: datagrams written into a SOCK_SEQPACKET
// socketpair, then BrokerServer.serve(connection:) runs on the other end,
// exactly as in `dmop-broker serve --socket-fd` (receive, decode, hello,
// decide, ownership, rate limits, the hypervisor, reply encode, audit log),
// with a SimulatedHypervisor restricted to the broker's domid behind a
// recorder. Afterwards the replies are decoded with the client's decoder and
// checked against an independent model of the session; every call that
// reached the hypervisor is checked against the policy. A broken invariant
// aborts, which libFuzzer reports as a crash.
//
// Input format (scripts/fuzz's seeds: `dmop-fuzz-request --write-seeds`):
//   byte 0      flags: bit 0 send a valid HELLO first; bit 1 allow-all policy
//               (else policy/qemu-xen.policy); bit 2 attach an fd (SCM_RIGHTS)
//               to the last datagram; bit 3 --peer-uid set to another uid
//   then        repeated: u16 LE length, that many bytes (fewer at the end)
import DMOPClient
import DMOPCore
import DMOPTrusted
import DMOPPosix
import DMOPServer
import DMOPSimulation
import DMOPTooling
import Glibc
import Logging

let brokerDomid: UInt16 = 5
/// Replay mode with -v: one summary line per input.
// SAFETY: set by main before any input runs; inputs run on one thread.
nonisolated(unsafe) var replayVerbose = false
/// Most datagrams per input: enough for a QEMU boot sequence's interesting
/// part, few enough that both socket directions always fit their buffers.
let maxDatagrams = 64

func invariant(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() {
        printError("dmop-fuzz-request: invariant broken: \(message())")
        abort()
    }
}

/// What the target needs once per process.
struct Fixture {
    let policies: [Policy]
    /// The audit log goes to /dev/null: it is formatted and written as in
    /// the broker, so its code runs too.
    let audit: Logger

    static let shared = Fixture()

    init() {
        let root = Fixture.packageRoot()
        let path = getenv("DMOP_FUZZ_POLICY").map { String(cString: $0) } ?? root + "/policy/qemu-xen.policy"
        guard let text = (try? Files.read(path, limit: 1 << 26)).map({ String(decoding: $0, as: UTF8.self) }) else {
            printError("dmop-fuzz-request: cannot read policy \(path) (set DMOP_FUZZ_POLICY)")
            exit(66)
        }
        do {
            let shipped = try Policy.parse(text, file: path)
            // Every op, so forwarded requests reach every part of the model;
            // two limits, so rate limiting is reachable within one input.
            // relocate_memory is bounded so that most calls run the model's
            // walk (see RecordingHypervisor.relocateFramesModelled). Two ops
            // may be posted; none with a limit, so that what a posted request
            // met (no REPLY says) follows from the input alone.
            let extras = ["inject_msi": " rate 1000/s burst 3",
                          "set_pci_intx_level": " if level <= 1 rate 1/s burst 2",
                          "relocate_memory": " if size <= 256",
                          "set_isa_irq_level": " posted", "set_irq_level": " posted"]
            let all = Catalogue.ops.map { op in "allow \(op.name)" + (extras[op.name] ?? "") }
            let allowAll = try Policy.parse(all.joined(separator: "\n"), file: "allow-all.policy")
            policies = [shipped, allowAll]
        } catch {
            printError("dmop-fuzz-request: \(error)")
            exit(65)
        }
        let devNull = open("/dev/null", O_WRONLY | O_CLOEXEC)
        audit = Logger(label: "dmop-fuzz") { AuditLogHandler(label: $0, sink: .writing(to: devNull)) }
    }

    private static func packageRoot() -> String {
        var path = #filePath
        for _ in 0..<3 {
            guard let slash = path.lastIndex(of: "/") else { break }
            path = String(path[..<slash])
        }
        return path
    }
}

/// Sits between the server and the simulated hypervisor and keeps a copy of
/// every call: the bytes that went in and the bytes the hypervisor left.
final class RecordingHypervisor: Hypervisor {
    struct Call {
        let domid: UInt16
        let input: [[UInt8]]
        let output: [[UInt8]]
        let rc: Int32
        /// False when the recorder answered in the model's place (below).
        let reachedModel: Bool
    }

    /// The model walks relocate_memory frame by frame as Xen does (with
    /// continuations); a chain such as dst = src + 1 keeps finding RAM and
    /// walks all `size` frames, up to 2^32, minutes per call under ASan. Past
    /// this size the recorder answers -EINVAL itself: the call still went
    /// through the broker's whole path, only the model's walk is skipped.
    static let relocateFramesModelled: UInt64 = 4096
    static let relocateOp = Catalogue.op(named: "relocate_memory")

    let inner: SimulatedHypervisor
    private(set) var calls: [Call] = []

    init(_ inner: SimulatedHypervisor) { self.inner = inner }

    var kind: String { inner.kind }
    var xenVersion: UInt32 { inner.xenVersion }
    func restrict(to domid: UInt16) throws(HypervisorError) { try inner.restrict(to: domid) }
    func verifyRestricted() throws(HypervisorError) { try inner.verifyRestricted() }

    func dmOp(_ allowed: AllowedDMOP) -> Int32 {
        let buffers = allowed.buffers
        let input = buffers.map { Array($0) }
        if let op = Self.relocateOp, let header = buffers.first, header.count >= DMOPABI.opOffset + DMOPABI.opWidth,
           header.le32(at: DMOPABI.opOffset) == op.number,
           let size = op.field(named: "size")?.value(in: header), size > Self.relocateFramesModelled {
            calls.append(Call(domid: allowed.domid, input: input, output: input, rc: -EINVAL, reachedModel: false))
            return -EINVAL
        }
        let rc = inner.dmOp(allowed)
        calls.append(Call(domid: allowed.domid, input: input, output: buffers.map { Array($0) }, rc: rc,
                          reachedModel: true))
        return rc
    }
}

/// The decision's verdict without the request's views, which an
/// AllowedDMOP holds: it may outlive the buffers they point into.
enum ExpectedDecision {
    case refuse(ReasonCode)
    case forward(PolicyRule)

    init(_ decision: Decision) {
        switch decision {
        case .refuse(let reason, _): self = .refuse(reason)
        case .forward(let allowed): self = .forward(allowed.rule)
        }
    }
}

struct Session {
    var autoHello = false
    var policyIndex = 0
    var attachFD = false
    var wrongPeer = false
    var datagrams: [[UInt8]] = []

    /// Parses the input; datagrams past the socket budget are dropped, so
    /// neither direction can fill up (the target is single-threaded).
    init(_ input: UnsafeRawBufferPointer, budget: Int) {
        guard let flags = input.first else { return }
        autoHello = flags & 1 != 0
        policyIndex = Int(flags >> 1) & 1
        attachFD = flags & 4 != 0
        wrongPeer = flags & 8 != 0
        if autoHello { datagrams.append(Wire.encodeHello(Hello())) }
        var cursor = 1
        var spent = 0
        while cursor < input.count, datagrams.count < maxDatagrams {
            var length = Int(input[cursor])
            if cursor + 1 < input.count { length |= Int(input[cursor + 1]) << 8 }
            cursor = min(cursor + 2, input.count)
            let end = min(cursor + length, input.count)
            // An skb costs at most twice its data plus its header; the reply
            // is at most the request's buffers plus its header and descriptors.
            spent += 2 * (end - cursor + 600) + 1024
            if spent > budget { break }
            datagrams.append(Array(input[cursor..<end]))
            cursor = end
        }
    }
}

enum ExpectedEnd: Equatable {
    case hangUp
    case violation(ReasonCode)
    case helloRefused(ReasonCode)
    case peerRefused
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let fixture = Fixture.shared
    var pair: [Int32] = [-1, -1]
    invariant(socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0,
              "socketpair: \(errno)")
    let client = FileDescriptor(owning: pair[0])
    let server = FileDescriptor(owning: pair[1])
    var budget = 1 << 22
    for fd in pair {
        // Root may force a larger buffer than wmem_max; either way, read back
        // what the kernel granted and stay within it.
        if setsockopt(fd, SOL_SOCKET, 32 /* SO_SNDBUFFORCE */, &budget, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &budget, socklen_t(MemoryLayout<Int32>.size))
        }
    }
    var granted: Int32 = 0
    var length = socklen_t(MemoryLayout<Int32>.size)
    invariant(getsockopt(pair[0], SOL_SOCKET, SO_SNDBUF, &granted, &length) == 0, "getsockopt")
    // SAFETY: libFuzzer's input, valid for this call; Session copies the
    // datagrams it keeps.
    let session = Session(UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size), budget: Int(granted) / 2)

    // The client side: everything is sent before the broker runs.
    let devNull = session.attachFD ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -1
    defer { if devNull >= 0 { close(devNull) } }
    for (index, datagram) in session.datagrams.enumerated() {
        let passing = index == session.datagrams.count - 1 ? devNull : -1
        do { try SeqPacket.send(client.rawValue, datagram, passing: passing) } catch {
            invariant(false, "sending datagram \(index) of \(datagram.count) bytes: \(error)")
        }
    }
    shutdown(client.rawValue, Int32(SHUT_WR))

    let policy = fixture.policies[session.policyIndex]
    let simulated: SimulatedHypervisor
    do {
        // 1 MiB of guest RAM (the harness's guests have 32): relocate_memory
        // walks it page by page, and a smaller guest keeps executions fast.
        simulated = try SimulatedHypervisor(xen: SimulatedXen(.init(guestDomid: brokerDomid, vcpus: 2, ramFrames: 0x100)))
    } catch {
        invariant(false, "simulated hypervisor: \(error)")
        return 0
    }
    let hypervisor = RecordingHypervisor(simulated)
    let restricted: RestrictedHypervisor
    do {
        restricted = try RestrictedHypervisor.restrictAndVerify(hypervisor, to: brokerDomid)
    } catch {
        invariant(false, "simulated hypervisor: \(error)")
        return 0
    }
    let broker = BrokerServer(policy: policy, hypervisor: restricted,
                              peerUID: session.wrongPeer ? getuid() &+ 1 : nil, audit: fixture.audit)
    let started = Double(monotonicSeconds())
    let end = broker.serve(connection: server.rawValue)
    let elapsed = Double(monotonicSeconds()) - started
    server.close()

    // What the broker sent, decoded as a client decodes it.
    var replies: [BrokerMessage] = []
    // SAFETY: freed by the defer; the messages decoded from it copy what they keep.
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Wire.maxRequestSize + 1, alignment: 16)
    defer { buffer.deallocate() }
    var resets = 0
    receiving: while true {
        let received: SeqPacket.Received
        do { received = try SeqPacket.receive(client.rawValue, into: buffer) } catch {
            // Closing the broker's end with datagrams still unread sets
            // ECONNRESET on ours once, ahead of the queued messages.
            if error.errno == ECONNRESET && resets == 0 { resets += 1; continue }
            invariant(false, "receiving the broker's messages: \(error)")
            return 0
        }
        switch received {
        case .hangUp: break receiving
        case .truncated: invariant(false, "the broker sent a datagram over \(buffer.count) bytes")
        case .fdsAttached: invariant(false, "the broker sent file descriptors")
        case .datagram(let n):
            // SAFETY: n <= buffer.count: a larger datagram is .truncated.
            let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
            do {
                let message = try Wire.decodeBrokerMessage(bytes)
                switch message {
                case .reply: invariant(n <= Wire.maxReplySize, "REPLY of \(n) bytes")
                case .welcome: invariant(n == Wire.welcomeSize, "WELCOME of \(n) bytes")
                case .refused: invariant(n <= Wire.refusedHeaderSize + Wire.maxTextLength, "REFUSED of \(n) bytes")
                case .protocolError: invariant(n <= Wire.protocolErrorHeaderSize + Wire.maxTextLength, "PROTOCOL_ERROR of \(n) bytes")
                }
                replies.append(message)
            } catch {
                invariant(false, "the broker sent a message the client cannot decode: \(error)")
            }
        }
    }

    let model = Model(policy: policy, replies: replies, calls: hypervisor.calls, elapsed: elapsed)
    let expected = model.run(session)

    switch (expected, end) {
    case (.hangUp, .hangUp), (.peerRefused, .peerRefused): break
    case (.violation(let reason), .protocolViolation(let v)):
        invariant(v.reason == reason, "session ended with \(v.reason.name), model says \(reason.name)")
    case (.helloRefused(let reason), .helloRefused(let v)):
        invariant(v.reason == reason, "hello refused with \(v.reason.name), model says \(reason.name)")
    default:
        invariant(false, "session ended \(end), model says \(expected)")
    }
    if replayVerbose {
        let forwarded = hypervisor.calls.count
        let ok = hypervisor.calls.filter { $0.rc == 0 }.count
        print("  \(session.datagrams.count) datagram(s), \(replies.count) message(s) back, \(forwarded) reached the hypervisor (\(ok) rc 0), end \(end)")
    }
    let modelled = hypervisor.calls.filter(\.reachedModel).count
    invariant(simulated.dmOpCalls == modelled,
              "\(simulated.dmOpCalls) calls reached the simulated hypervisor, \(modelled) through the broker's")
    return 0
}

func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// The session as the protocol page and the policy say it must go, walked
/// datagram by datagram against what the broker sent and what reached the
/// hypervisor.
final class Model {
    let policy: Policy
    let replies: [BrokerMessage]
    let calls: [RecordingHypervisor.Call]
    let elapsed: Double
    var nextReply = 0
    var nextCall = 0
    var owned = OwnedIoreqServers()
    /// Calls forwarded per op, for the rate-limit bound.
    var admitted: [UInt32: UInt64] = [:]
    /// The version WELCOME chose.
    var version: UInt16 = 1
    /// The posted failure the next synchronous REPLY must carry.
    var postedFailure: PostedFailure?

    init(policy: Policy, replies: [BrokerMessage], calls: [RecordingHypervisor.Call], elapsed: Double) {
        self.policy = policy
        self.replies = replies
        self.calls = calls
        self.elapsed = elapsed
    }

    func takeReply(_ what: String) -> BrokerMessage {
        invariant(nextReply < replies.count, "no message from the broker for \(what)")
        defer { nextReply += 1 }
        return replies[nextReply]
    }

    func expectProtocolError(_ reason: ReasonCode, requestID: UInt32, _ what: String) {
        guard case .protocolError(let error) = takeReply(what) else {
            invariant(false, "\(what): expected PROTOCOL_ERROR \(reason.name), got \(replies[nextReply - 1])")
            return
        }
        invariant(error.reason == reason && error.requestID == requestID,
                  "\(what): PROTOCOL_ERROR \(error.reason.name)/\(error.requestID), expected \(reason.name)/\(requestID)")
    }

    func run(_ session: Session) -> ExpectedEnd {
        let end = walk(session)
        // At session end the broker destroys the servers the session created.
        for id in owned.ids where end != .peerRefused {
            invariant(nextCall < calls.count, "ioreq server \(id) was not destroyed at session end")
            guard nextCall < calls.count else { break }
            let call = calls[nextCall]
            nextCall += 1
            let destroy = Catalogue.op(named: "destroy_ioreq_server")?.encodeHeader(["id": UInt64(id)])
            invariant(call.input.count == 1 && call.input[0] == destroy,
                      "the call after the session is not the destroy of ioreq server \(id)")
        }
        invariant(nextReply == replies.count, "the broker sent \(replies.count - nextReply) message(s) more than the protocol allows")
        invariant(nextCall == calls.count, "\(calls.count - nextCall) call(s) reached the hypervisor that no request explains")
        return end
    }

    private func walk(_ session: Session) -> ExpectedEnd {
        if session.wrongPeer { return .peerRefused }
        var helloDone = false
        for (index, datagram) in session.datagrams.enumerated() {
            let what = "datagram \(index)"
            if session.attachFD && index == session.datagrams.count - 1 {
                expectProtocolError(.fdsAttached, requestID: 0, what)
                return .violation(.fdsAttached)
            }
            // recvmsg returns 0 for an empty datagram as for end of file: the
            // broker cannot tell them apart and ends the session.
            if datagram.isEmpty { return .hangUp }
            // SAFETY: the view lives for the decode; the message holds ranges, no pointer.
            let decoded = datagram.withUnsafeBytes { raw in
                Result { () throws(ProtocolViolation) in try Wire.decodeClientMessage(raw) }
            }
            let message: ClientMessage
            switch decoded {
            case .failure(let violation):
                expectProtocolError(violation.reason, requestID: violation.requestID, what)
                return .violation(violation.reason)
            case .success(let m):
                message = m
            }
            switch message {
            case .hello(let hello):
                if helloDone {
                    expectProtocolError(.duplicateHello, requestID: 0, what)
                    return .violation(.duplicateHello)
                }
                switch Wire.negotiate(hello) {
                case .failure(let refusal):
                    guard case .refused(let refused) = takeReply(what) else {
                        invariant(false, "\(what): expected REFUSED"); return .hangUp
                    }
                    invariant(refused.reason == refusal.reason, "\(what): REFUSED \(refused.reason.name), expected \(refusal.reason.name)")
                    return .helloRefused(refusal.reason)
                case .success(let version):
                    guard case .welcome(let welcome) = takeReply(what) else {
                        invariant(false, "\(what): expected WELCOME"); return .hangUp
                    }
                    invariant(welcome.version == version && welcome.domid == brokerDomid
                              && welcome.allowedOps == policy.allowedOpsMask
                              && welcome.postedOps == (version >= Wire.postingVersion ? policy.postedOpsMask : 0)
                              && welcome.maxBuffers == UInt16(DMOPABI.maxBuffers)
                              && welcome.maxBufferSize == UInt32(DMOPABI.maxBufferSize)
                              && welcome.dmopABI == DMOPABI.identifier,
                              "\(what): WELCOME \(welcome)")
                    helloDone = true
                    self.version = version
                }
            case .request(let frame):
                guard helloDone else {
                    expectProtocolError(.helloRequired, requestID: frame.requestID, what)
                    return .violation(.helloRequired)
                }
                if frame.posted && version < Wire.postingVersion {
                    expectProtocolError(.headerReservedNonzero, requestID: frame.requestID, what)
                    return .violation(.headerReservedNonzero)
                }
                request(frame, datagram, what)
            }
        }
        return .hangUp
    }

    private func request(_ frame: RequestFrame, _ datagram: [UInt8], _ what: String) {
        let buffers = frame.buffers.map { Array(datagram[$0]) }
        // SAFETY: the views live for `decide`; only the pointer-free expectation
        // leaves the closures (an AllowedDMOP would hold the views).
        let decision = datagram.withUnsafeBytes { raw in
            frame.buffers.map { UnsafeRawBufferPointer(rebasing: raw[$0]) }.withUnsafeBufferPointer { views in
                ExpectedDecision(decide(restrictedDomid: brokerDomid, policy: policy,
                                        request: DMOPRequest(domid: frame.domid, buffers: views, posted: frame.posted),
                                        owned: owned))
            }
        }
        if frame.posted {
            posted(frame, buffers, decision, what)
            return
        }
        guard case .reply(let reply) = takeReply(what) else {
            invariant(false, "\(what): expected REPLY, got \(replies[nextReply - 1])")
            return
        }
        invariant(reply.requestID == frame.requestID && reply.domid == frame.domid,
                  "\(what): REPLY for \(reply.requestID)/domid \(reply.domid), request was \(frame.requestID)/\(frame.domid)")
        invariant(reply.postedFailure == postedFailure,
                  "\(what): REPLY carries posted failure \(String(describing: reply.postedFailure)), expected \(String(describing: postedFailure))")
        postedFailure = nil
        switch decision {
        case .refuse(let reason):
            invariant(reply.origin == .broker && reply.reason == reason && reply.result == -reason.errno && reply.buffers.isEmpty,
                      "\(what): refused with \(reason.name) by the decision, the broker replied \(reply)")
        case .forward(let rule):
            if reply.origin == .broker {
                // The only refusal after a forward decision is the rate limit,
                // and only once the bucket's burst has been spent.
                invariant(reply.reason == .rateLimited && reply.result == -EAGAIN && reply.buffers.isEmpty,
                          "\(what): \(rule.op.name) allowed by the decision, refused with \(String(describing: reply.reason))")
                guard let limit = rule.rateLimit else {
                    invariant(false, "\(what): \(rule.op.name) has no rate limit but was RATE_LIMITED"); return
                }
                invariant(admitted[rule.op.number, default: 0] >= limit.burst,
                          "\(what): \(rule.op.name) RATE_LIMITED after \(admitted[rule.op.number, default: 0]) of burst \(limit.burst)")
                return
            }
            invariant(nextCall < calls.count, "\(what): the broker replied from the hypervisor, but no call reached it")
            let call = calls[nextCall]
            nextCall += 1
            checkCall(call, what)
            invariant(call.domid == frame.domid && call.input == buffers,
                      "\(what): the hypervisor got other bytes than the request's")
            invariant(reply.result == call.rc, "\(what): REPLY result \(reply.result), the hypervisor returned \(call.rc)")
            var expectedBuffers: [(Int, [UInt8])] = []
            if call.rc == 0 {
                if rule.op.writesBackPayload { expectedBuffers.append((0, call.output[0])) }
                if case .dirtyBitmap = rule.op.extraBuffer { expectedBuffers.append((1, call.output[1])) }
                // SAFETY: the view lives for update(after:), whose reads are range-checked.
                call.output[0].withUnsafeBytes { owned.update(after: rule.op, header: $0) }
            }
            invariant(reply.buffers.map(\.index) == expectedBuffers.map(\.0)
                      && reply.buffers.map(\.bytes) == expectedBuffers.map(\.1),
                      "\(what): REPLY returned buffers \(reply.buffers.map(\.index)), expected \(expectedBuffers.map(\.0)) with the hypervisor's bytes")
            admitted[rule.op.number, default: 0] += 1
            if let limit = rule.rateLimit {
                // Never more than the burst plus what the rate refilled.
                let most = limit.burst + UInt64((elapsed + 1) * Double(limit.perSecond))
                invariant(admitted[rule.op.number, default: 0] <= most,
                          "\(what): \(rule.op.name) admitted \(admitted[rule.op.number, default: 0]) times in \(elapsed) s, limit \(limit)")
            }
        }
    }

    /// A posted request: no REPLY; a failure is kept for the next one.
    private func posted(_ frame: RequestFrame, _ buffers: [[UInt8]], _ decision: ExpectedDecision, _ what: String) {
        // SAFETY: the view lives for the load, which is range-checked.
        let op = buffers.first.flatMap { $0.count >= 4 ? $0.withUnsafeBytes { $0.le32(at: DMOPABI.opOffset) } : nil }
        func failed(_ result: Int32, _ origin: ReplyOrigin, _ reason: ReasonCode?) {
            if postedFailure == nil {
                postedFailure = PostedFailure(requestID: frame.requestID, op: op ?? UInt32.max, result: result,
                                              origin: origin, reason: reason)
            } else if postedFailure!.laterFailures < UInt32.max {
                postedFailure!.laterFailures += 1
            }
        }
        switch decision {
        case .refuse(let reason):
            failed(-reason.errno, .broker, reason)
        case .forward(let rule):
            invariant(rule.mayPost && rule.rateLimit == nil, "\(what): posted \(rule.op.name) forwarded by the decision")
            invariant(nextCall < calls.count, "\(what): a posted \(rule.op.name) did not reach the hypervisor")
            guard nextCall < calls.count else { return }
            let call = calls[nextCall]
            nextCall += 1
            checkCall(call, what)
            invariant(call.domid == frame.domid && call.input == buffers,
                      "\(what): the hypervisor got other bytes than the posted request's")
            invariant(rule.op.replyBuffers.isEmpty, "\(what): a posted op that writes back")
            if call.rc != 0 { failed(call.rc, .hypervisor, nil) }
            admitted[rule.op.number, default: 0] += 1
        }
    }

    /// What may reach the hypervisor at all, checked on the call itself
    /// rather than through the decision: the broker's domid only, an op the
    /// policy allows with its exact buffer shape, zero pads, and ioreq
    /// servers this session created.
    private func checkCall(_ call: RecordingHypervisor.Call, _ what: String) {
        invariant(call.domid == brokerDomid, "\(what): a call for domid \(call.domid) reached the hypervisor")
        invariant(call.input.count >= 1 && call.input.count <= DMOPABI.maxBuffers, "\(what): \(call.input.count) buffers")
        invariant(call.input.allSatisfy { $0.count <= DMOPABI.maxBufferSize }, "\(what): a buffer over the limit")
        let header = call.input[0]
        invariant(header.count >= DMOPABI.opOffset + DMOPABI.opWidth, "\(what): buffer 0 of \(header.count) bytes")
        // SAFETY: the views live for the checks, whose reads are range-checked.
        let number = header.withUnsafeBytes { $0.le32(at: DMOPABI.opOffset) }
        guard let op = Catalogue.op(number: number), let rule = policy.rule(forOp: number) else {
            invariant(false, "\(what): op \(number), which the policy does not allow, reached the hypervisor")
            return
        }
        invariant(call.input.count == op.bufferCount, "\(what): \(op.name) with \(call.input.count) buffers")
        invariant(header.count >= op.minimumHeaderBufferSize && header.count <= DMOPABI.opStructSize,
                  "\(what): \(op.name) buffer 0 of \(header.count) bytes")
        header.withUnsafeBytes { raw in
            invariant(DMOPABI.headerPad.value(in: raw) == 0, "\(what): \(op.name) with a non-zero pad")
            for field in op.mustBeZeroFields {
                invariant(field.value(in: raw) == 0, "\(what): \(op.name) with non-zero \(field.name)")
            }
            for condition in rule.conditions {
                invariant(condition.holds(in: raw), "\(what): \(op.name) breaks '\(condition)'")
            }
            if let idField = op.ioreqServerField, let id = idField.value(in: raw) {
                invariant(owned.contains(UInt16(truncatingIfNeeded: id)),
                          "\(what): \(op.name) names ioreq server \(id), which this session did not create")
            }
        }
    }
}

#if !DMOP_FUZZING
/// Replay (`dmop-fuzz-request FILE|DIR...`) or write the seed corpus
/// (`dmop-fuzz-request --write-seeds DIR`).
@main
struct ReplayRequest {
    static func main() {
        var arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "--write-seeds" {
            guard arguments.count == 2 else {
                printError("usage: dmop-fuzz-request --write-seeds DIR")
                exit(64)
            }
            exit(Seeds.write(to: arguments[1]))
        }
        guard !arguments.isEmpty else {
            printError("usage: dmop-fuzz-request [-v] FILE|DIR...  (replays inputs; scripts/fuzz builds the fuzzer)")
            exit(64)
        }
        var count = 0
        if arguments.first == "-v" {
            replayVerbose = true
            arguments.removeFirst()
        }
        arguments = arguments.flatMap(Files.expandDirectory)
        for file in arguments {
            if replayVerbose { print(file) }
            guard let bytes = try? Files.read(file, limit: 1 << 26) else {
                printError("dmop-fuzz-request: cannot read \(file)")
                exit(66)
            }
            // SAFETY: the array outlives the call, which copies what it keeps.
            _ = bytes.withUnsafeBufferPointer { fuzzRequestOneInput($0.baseAddress, $0.count) }
            count += 1
        }
        print("dmop-fuzz-request: \(count) input(s) replayed, all checks held")
    }
}
#endif

/// One line on stderr with a single write(2).
func printError(_ text: String) {
    var line = text + "\n"
    // SAFETY: the view lives for the write, which copies the bytes.
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
