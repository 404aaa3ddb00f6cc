// SPDX-License-Identifier: MIT
import CPosix
import DMOPCore
import DMOPTrusted
import DMOPPosix
import Glibc
import Logging

/// How one client session ended.
public enum SessionEnd: Equatable {
    /// The client hung up.
    case hangUp
    /// SIGTERM or SIGINT arrived.
    case stopped
    /// The client broke the protocol; it was told why and disconnected.
    case protocolViolation(ProtocolViolation)
    /// The hello named no version or interface in common.
    case helloRefused(ProtocolViolation)
    /// SO_PEERCRED showed a uid that --peer-uid does not allow.
    case peerRefused(uid: UInt32)
    /// No HELLO within the handshake timeout; disconnected.
    case helloTimeout
    /// A socket error other than a hang-up.
    case ioError(SystemError)
}

/// The request loop: one client at a time, one datagram at a time, answered
/// in order. Synchronous and single-threaded on purpose: the seccomp filter
/// stays small and nothing races.
public final class BrokerServer {
    public let domid: UInt16
    public let policy: Policy
    public let hypervisor: any Hypervisor
    public let peerUID: UInt32?
    /// How long a new connection may take to send its HELLO (nil: no limit).
    public let helloTimeoutNanoseconds: UInt64?
    /// Set when the client socket is blocking and a SIGALRM comes every
    /// `receiveTickNanoseconds` (serve --socket-fd): a client waiting for
    /// replies is then waited for in recvmsg itself, one system call instead
    /// of ppoll and recvmsg. When a tick interrupts it, the loop goes back to
    /// ppoll, where the stop signals and the audit's time bound are taken.
    public var blockingReceive = false
    public static let receiveTickNanoseconds: Int64 = 125_000_000
    /// How long a stop signal may wait while the client idles or keeps the
    /// broker busy: two ticks, since one that lands just before recvmsg
    /// sleeps interrupts nothing.
    public static let stopCheckNanoseconds: UInt64 = 2 * UInt64(receiveTickNanoseconds)
    let audit: Logger
    /// The per-request lines without String building (nil: through `audit`).
    let auditLines: AuditLineWriter?
    let auditOptions: AuditOptions
    /// Forwards of the interval and totals since start (stats).
    let counters = RequestCounters(now: cposix_monotonic_ns())

    /// One receive and one reply buffer for the life of the process: a
    /// request never allocates from a length the client chose.
    private let receiveBuffer: UnsafeMutableRawBufferPointer
    private let replyBuffer: UnsafeMutableRawBufferPointer
    private let bufferMemory: (receive: ZeroedBuffer, reply: ZeroedBuffer)

    /// Decision, forward and reply of each request (the trusted core).
    let handler: RequestHandler
    /// Per broker, not per session: reconnecting gets no fresh allowance of
    /// audit lines.
    let throttle: Unchecked<AuditThrottle>

    public init(policy: Policy, hypervisor: RestrictedHypervisor, peerUID: UInt32?, audit: Logger,
                auditOptions: AuditOptions = AuditOptions(), helloTimeoutNanoseconds: UInt64? = nil) {
        domid = hypervisor.domid
        self.policy = policy
        self.hypervisor = hypervisor.hypervisor
        self.peerUID = peerUID
        self.helloTimeoutNanoseconds = helloTimeoutNanoseconds
        self.audit = audit
        auditLines = AuditLineWriter.of(audit)
        self.auditOptions = auditOptions
        let now = cposix_monotonic_ns()
        handler = RequestHandler(policy: policy, hypervisor: hypervisor, now: now)
        throttle = Unchecked(AuditThrottle(now: now))
        bufferMemory = (ZeroedBuffer(byteCount: Wire.maxRequestSize), ZeroedBuffer(byteCount: Wire.maxReplySize))
        receiveBuffer = bufferMemory.receive.bytes
        replyBuffer = bufferMemory.reply.bytes
    }

    deinit {
        // SAFETY: the buffers are freed once, with the server: the views of
        // them (receiveBuffer, replyBuffer) are private and only lent to
        // calls that end before serve returns.
        bufferMemory.receive.deallocate()
        bufferMemory.reply.deallocate()
    }

    /// The WELCOME this broker sends.
    public var welcome: Welcome {
        Welcome(version: Wire.protocolVersion, dmopABI: DMOPABI.identifier,
                xenVersion: hypervisor.xenVersion, domid: domid, maxBuffers: UInt16(DMOPABI.maxBuffers),
                maxBufferSize: UInt32(DMOPABI.maxBufferSize), allowedOps: policy.allowedOpsMask,
                postedOps: policy.postedOpsMask)
    }

    /// Serves the connected client on `fd` until the session ends. The fd
    /// stays open; the caller closes it.
    public func serve(connection fd: Int32) -> SessionEnd {
        let peer: SeqPacket.Credentials
        do {
            peer = try SeqPacket.peerCredentials(fd)
        } catch {
            return .ioError(error)
        }
        let started = cposix_monotonic_ns()
        writeSummaries(now: started)
        // Lines of a flood of reconnections are counted, not written.
        let logged = throttle.value.admitSessionLine(now: started)
        if let allowed = peerUID, peer.uid != allowed {
            if logged { audit.warning("peer refused: peer_pid=\(peer.pid) peer_uid=\(peer.uid) allowed_uid=\(allowed)") }
            return .peerRefused(uid: peer.uid)
        }
        counters.sessions += 1
        if logged {
            audit.info("session start: peer_pid=\(peer.pid) peer_uid=\(peer.uid) domid=\(domid) policy=\(Logfmt.quote(policy.source)) hypervisor=\(hypervisor.kind)")
        }
        var session = Session(peer: peer, started: started)
        session.logged = logged
        let end = loop(fd: fd, session: &session)
        flushForwardCounts(peer, now: cposix_monotonic_ns(), force: true)
        // Before the session end line counts what was lost.
        auditLines?.writeBatch()
        destroyOwnedServers(session)
        writeSummaries(now: cposix_monotonic_ns())
        if logged {
            audit.info("session end: peer_pid=\(peer.pid) reason=\(Logfmt.quote(describe(end))) requests=\(session.requests) forwarded=\(session.forwarded) refused=\(session.refused) audit_lost=\(auditLines?.sink.lost ?? 0)\(postedSummary(session))")
        }
        return end
    }

    /// The summary lines still owed (rate-limit counts, suppressed lines),
    /// whatever the interval: before the broker exits.
    public func finish() {
        for line in throttle.value.summaries(now: cposix_monotonic_ns(), force: true) { audit.notice("\(line)") }
    }

    private func writeSummaries(now: UInt64) {
        for line in throttle.value.summaries(now: now) { audit.notice("\(line)") }
    }

    struct Session {
        let peer: SeqPacket.Credentials
        let started: UInt64
        var helloDone = false
        /// Whether the session's lines (start, end, a protocol error, a
        /// refused or late hello) are written: its share of the session
        /// budget. A flood of reconnections is counted instead.
        var logged = true
        var requests = 0
        var forwarded = 0
        var refused = 0
        /// The ioreq servers this session created: the only ones it may name.
        var owned = OwnedIoreqServers()
        /// The version WELCOME chose.
        var version: UInt16 = 1
        var posted = 0
        var postedFailed = 0
        /// The first posted failure since the last synchronous REPLY.
        var postedFailure: PostedFailure?

        init(peer: SeqPacket.Credentials, started: UInt64) {
            self.peer = peer
            self.started = started
        }
    }

    /// Xen keeps an ioreq server until the domain dies and allows only a
    /// few per domain: the servers a session created go with it.
    private func destroyOwnedServers(_ session: Session) {
        for id in session.owned.ids {
            var header = [UInt8](repeating: 0, count: DMOPABI.opStructSize)
            // SAFETY: the header's view and the AllowedDMOP made of it are used
            // only inside the closure (dmOp returns an rc, no pointer).
            let rc = header.withUnsafeMutableBytes { bytes in
                allowSessionEndDestroy(restrictedDomid: domid, id: id, owned: session.owned, header: bytes) {
                    hypervisor.dmOp($0)
                } ?? -EINVAL
            }
            audit.notice("ioreq server destroyed at session end: peer_pid=\(session.peer.pid) domid=\(domid) id=\(id) rc=\(rc)")
        }
    }

    /// Waits for `events` on the client socket; nil when it is ready, else
    /// how the session ends (a stop signal, the hello deadline, an error).
    private func wait(_ fd: Int32, _ events: Int32, session: Session) -> SessionEnd? {
        while true {
            var timeout: Int64 = -1
            var helloDeadline = false
            if !session.helloDone, let limit = helloTimeoutNanoseconds {
                let elapsed = cposix_monotonic_ns() &- session.started
                timeout = elapsed >= limit ? 0 : Int64(limit - elapsed)
                helloDeadline = true
            }
            // Batched forward lines are due even while nothing arrives.
            if let due = auditLines?.batchDeadline {
                let now = cposix_monotonic_ns()
                let left = due > now ? Int64(due - now) : 0
                if timeout < 0 || left < timeout {
                    timeout = left
                    helloDeadline = false
                }
            }
            var revents: Int16 = 0
            let rc = cposix_wait(fd, Int16(events), timeout, &revents)
            // Due forward lines go out even when the client never lets the
            // socket go idle.
            if let due = auditLines?.batchDeadline, due <= cposix_monotonic_ns() { auditLines?.writeBatch() }
            if rc > 0 {
                // A signal that woke the wait as the fd became ready runs its
                // handler only on the way out: take it before the request.
                if cposix_stop_signal() != 0 { return .stopped }
                if cposix_runtime_signal_pending() != 0 { handleRuntimeSignals(session.peer) }
                return nil
            }
            if rc == 0 && !helloDeadline { continue }
            if rc == 0 {
                let seconds = Double(helloTimeoutNanoseconds ?? 0) / 1e9
                if session.logged { audit.warning("hello timeout: peer_pid=\(session.peer.pid) sent no HELLO within \(seconds) s; disconnecting") }
                return .helloTimeout
            }
            if errno == EINTR {
                if cposix_stop_signal() != 0 { return .stopped }
                if cposix_runtime_signal_pending() != 0 { handleRuntimeSignals(session.peer) }
                continue
            }
            return .ioError(SystemError("ppoll"))
        }
    }

    /// Sends one datagram, waiting (interruptibly) while a client that does
    /// not read keeps the socket full.
    private func send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, session: Session) -> SessionEnd? {
        while true {
            do {
                try SeqPacket.send(fd, bytes, wait: false)
                return nil
            } catch {
                if error.errno == EPIPE || error.errno == ECONNRESET { return .hangUp }
                guard error.errno == EAGAIN else { return .ioError(error) }
            }
            if let end = wait(fd, Int32(POLLOUT), session: session) { return end }
        }
    }

    /// Requests taken per wake-up before the wait runs again (its signal
    /// checks and the audit's time bound).
    static let drainLimit = 64

    private func loop(fd: Int32, session: inout Session) -> SessionEnd {
        // Everything queued is taken per wake-up: receives after the first
        // one run until EAGAIN, so a burst of posted requests costs one wait.
        var drained = Self.drainLimit
        // A tick interrupted the last blocking receive: the client is idle.
        var idle = false
        // When the last receive returned: the one clock read per request
        // (the request's start, the stop check and the audit's time bound).
        var received = cposix_monotonic_ns()
        var lastStopCheck = received
        while true {
            var blocking = false
            if drained >= Self.drainLimit {
                if blockingReceive && session.helloDone && !idle {
                    // A stop signal is blocked here: look for one once per
                    // two ticks, since a client whose requests come closer
                    // than a tick may never let one interrupt the receive.
                    if received &- lastStopCheck >= Self.stopCheckNanoseconds {
                        lastStopCheck = received
                        if cposix_take_pending_stop() != 0 { return .stopped }
                    }
                    if cposix_runtime_signal_pending() != 0 { handleRuntimeSignals(session.peer) }
                    blocking = true
                } else if let end = wait(fd, Int32(POLLIN), session: session) {
                    return end
                }
                drained = 0
            } else if cposix_runtime_signal_pending() != 0 {
                // SIGHUP and SIGUSR1 are delivered at any time: take them
                // between requests as the wait would.
                handleRuntimeSignals(session.peer)
            }
            drained += 1
            let outcome: Result<SeqPacket.Received, SystemError>
            do { outcome = .success(try SeqPacket.receive(fd, into: receiveBuffer, wait: blocking)) } catch { outcome = .failure(error) }
            received = cposix_monotonic_ns()
            // After a blocking receive, what a wait does on waking: SIGHUP and
            // SIGUSR1 (their handlers ran as recvmsg returned) before the
            // request, then the batched forward lines that are due.
            if blocking {
                if cposix_runtime_signal_pending() != 0 { handleRuntimeSignals(session.peer) }
                if let due = auditLines?.batchDeadline, due <= received { auditLines?.writeBatch() }
            }
            let datagram: SeqPacket.Received
            switch outcome {
            case .success(let got):
                datagram = got
                idle = false
            case .failure(let error):
                if error.errno == EAGAIN || (blocking && error.errno == EINTR) {
                    // A blocking receive that a signal interrupts (the tick,
                    // or SIGHUP/SIGUSR1, taken above): the client idles.
                    idle = blocking
                    drained = Self.drainLimit
                    continue
                }
                if error.errno == EINTR { continue }
                if error.errno == ECONNRESET { return .hangUp }
                return .ioError(error)
            }
            let length: Int
            switch datagram {
            case .hangUp:
                return .hangUp
            case .truncated:
                return violation(fd, ProtocolViolation(.oversized, "datagram longer than \(Wire.maxRequestSize) bytes"), session)
            case .fdsAttached(let count, _):
                return violation(fd, ProtocolViolation(.fdsAttached, "\(count) file descriptor(s) attached; closed"), session)
            case .datagram(let n):
                length = n
            }
            // SAFETY: recvmsg wrote `length` bytes, no more than the buffer
            // holds (a longer datagram is .truncated above); the view is read
            // before the next receive, and the buffer lives with the server.
            let bytes = UnsafeRawBufferPointer(rebasing: receiveBuffer[0..<length])
            let message: ClientMessage
            do {
                message = try Wire.decodeClientMessage(bytes)
            } catch {
                return violation(fd, error, session)
            }
            switch message {
            case .hello(let hello):
                guard !session.helloDone else {
                    return violation(fd, ProtocolViolation(.duplicateHello, "a second HELLO"), session)
                }
                switch Wire.negotiate(hello) {
                case .failure(let refusal):
                    if session.logged {
                        audit.warning("hello refused: peer_pid=\(session.peer.pid) reason=\(refusal.reason.name) detail=\(Logfmt.quote(refusal.detail))")
                    }
                    try? SeqPacket.send(fd, Wire.encodeRefused(refusal.reason, text: refusal.detail), wait: false)
                    return .helloRefused(refusal)
                case .success(let version):
                    var welcome = self.welcome
                    welcome.version = version
                    let encoded = Wire.encodeWelcome(welcome)
                    // SAFETY: the view is sent within the closure and not kept.
                    if let end = encoded.withUnsafeBytes({ send(fd, $0, session: session) }) { return end }
                    session.helloDone = true
                    session.version = version
                }
            case .request(let frame):
                guard session.helloDone else {
                    return violation(fd, ProtocolViolation(.helloRequired, requestID: frame.requestID,
                                                           "REQUEST before HELLO"), session)
                }
                if frame.posted && session.version < Wire.postingVersion {
                    return violation(fd, ProtocolViolation(.headerReservedNonzero, requestID: frame.requestID,
                                                           "REQUEST flags 0x1 (posted) in a version \(session.version) session"), session)
                }
                let replyLength = handle(frame, session: &session, received: received)
                // A refusal's line goes out once the reply is sent: before
                // the next read, never after any later line.
                defer { auditLines?.flush() }
                if frame.posted { continue }
                // SAFETY: encodeReply wrote replyLength bytes, within the
                // buffer's maxReplySize (its precondition); sent before the
                // next request reuses the buffer.
                if let end = send(fd, UnsafeRawBufferPointer(rebasing: replyBuffer[0..<replyLength]), session: session) {
                    return end
                }
                // A client that waited for this reply has sent nothing more
                // yet: wait (or receive blocking) rather than spend a
                // receive on EAGAIN.
                drained = Self.drainLimit
            }
        }
    }

    /// Runs the request through the trusted handler, then audits and
    /// counts what it did. Returns the reply's length (in replyBuffer).
    /// `received`: when its datagram arrived (monotonic ns).
    func handle(_ frame: RequestFrame, session: inout Session, received started: UInt64) -> Int {
        session.requests += 1
        if frame.posted {
            session.posted += 1
            counters.posted += 1
        }
        writeSummaries(now: started)
        flushForwardCounts(session.peer, now: started, force: false)
        let auditBlocked: Int32? = auditRefusesForwards ? (auditLines?.sink.lastError ?? 0) : nil
        // A synchronous REPLY carries the posted failure kept so far.
        let handled = handler.handle(frame, in: receiveBuffer, owned: &session.owned, now: started,
                                     auditBlocked: auditBlocked, reply: replyBuffer,
                                     postedFailure: frame.posted ? nil : takePostedFailure(&session, now: started))
        counters.requests += 1
        switch handled.outcome {
        case .refused(let reason, let detail):
            session.refused += 1
            counters.refused.value[RequestCounters.slot(handled.opNumber)] += 1
            let opName = handled.opNumber.map { Catalogue.op(number: $0)?.name ?? "op\($0)" } ?? "-"
            // Bounded under a flood: rate-limit refusals are only counted, other
            // refusals are logged up to a number per interval, then counted.
            if reason == .rateLimited {
                counters.rateLimited += 1
                throttle.value.countRateLimited(op: opName)
            } else if throttle.value.admitRefusalLine(reason, now: started) {
                auditRefusal(session.peer, frame.domid, opName, reason, -reason.errno, elapsedMicros(since: started), detail)
            }
            if frame.posted {
                notePostedFailure(frame, handled.opNumber, -reason.errno, .broker, reason, session: &session)
            }
        case .forwarded(let rule, let rc):
            session.forwarded += 1
            auditForward(session.peer, frame.domid, rule.op, rule.location, rc, elapsedMicros(since: started))
            if frame.posted && rc != 0 {
                notePostedFailure(frame, handled.opNumber, rc, .hypervisor, nil, session: &session)
            }
        }
        return handled.replyLength
    }

    /// Keeps the first failure of a posted request for the next synchronous
    /// REPLY; later ones are counted.
    private func notePostedFailure(_ frame: RequestFrame, _ op: UInt32?, _ result: Int32, _ origin: ReplyOrigin,
                                   _ reason: ReasonCode?, session: inout Session) {
        session.postedFailed += 1
        if session.postedFailure == nil {
            session.postedFailure = PostedFailure(requestID: frame.requestID, op: op ?? UInt32.max, result: result,
                                                  origin: origin, reason: reason)
        } else if let later = session.postedFailure?.laterFailures, later < UInt32.max {
            session.postedFailure?.laterFailures = later + 1
        }
    }

    /// The kept posted failure, for the REPLY being built; its delivery is
    /// audited, bounded under a flood by a budget of its own (a refusal was
    /// audited as a refusal already; a hypervisor failure is no refusal).
    private func takePostedFailure(_ session: inout Session, now: UInt64) -> PostedFailure? {
        guard let failure = session.postedFailure else { return nil }
        session.postedFailure = nil
        let kind: AuditThrottle.PostedFailureKind = failure.reason.map { .refused($0) } ?? .hypervisor
        if throttle.value.admitDeliveryLine(kind, now: now) {
            let opName = Catalogue.op(number: failure.op)?.name ?? (failure.op == UInt32.max ? "-" : "op\(failure.op)")
            audit.notice("posted failure delivered: peer_pid=\(session.peer.pid) domid=\(domid) request_id=\(failure.requestID) op=\(opName) rc=\(failure.result) reason=\(failure.reason?.name ?? "-") later_failures=\(failure.laterFailures)")
        }
        return failure
    }

    private func postedSummary(_ session: Session) -> String {
        session.version < Wire.postingVersion ? "" : " posted=\(session.posted) posted_failed=\(session.postedFailed)"
    }

    private func violation(_ fd: Int32, _ violation: ProtocolViolation, _ session: Session) -> SessionEnd {
        if session.logged { audit.warning("protocol error: reason=\(violation.reason.name) request_id=\(violation.requestID) detail=\(Logfmt.quote(violation.detail)) disconnecting") }
        try? SeqPacket.send(fd, Wire.encodeProtocolError(violation), wait: false)
        return .protocolViolation(violation)
    }

    private func elapsedMicros(since start: UInt64) -> UInt64 {
        (cposix_monotonic_ns() &- start) / 1000
    }

    private func describe(_ end: SessionEnd) -> String {
        switch end {
        case .hangUp: "hang-up"
        case .stopped: "signal"
        case .protocolViolation(let v): "protocol-error:\(v.reason.name)"
        case .helloRefused(let v): "hello-refused:\(v.reason.name)"
        case .peerRefused(let uid): "peer-refused:uid=\(uid)"
        case .helloTimeout: "hello-timeout"
        case .ioError(let e): "io-error:\(e)"
        }
    }
}
