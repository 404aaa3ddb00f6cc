// SPDX-License-Identifier: MIT
/// What became of one REQUEST, for the server's audit line and counters.
public enum RequestOutcome {
    /// Refused by the broker; nothing reached the hypervisor.
    case refused(ReasonCode, String)
    /// Forwarded under `rule`; `rc` is the hypervisor's answer.
    case forwarded(PolicyRule, rc: Int32)
}

/// One REQUEST from decision to reply: decide (the policy, the session's
/// ioreq servers, the rate limit, the audit log's state), forward what is
/// allowed, and encode the REPLY. The socket loop around it lives in
/// DMOPServer; this is the part the trust argument rests on.
public final class RequestHandler {
    public let domid: UInt16
    public let policy: Policy
    public let hypervisor: any Hypervisor
    /// Per broker, not per session: reconnecting gets no fresh tokens.
    let limiter: RateLimiter

    /// `domid` is the one the hypervisor is restricted to: a request for
    /// any other is refused, and the call goes out for this one.
    public init(policy: Policy, hypervisor: RestrictedHypervisor, now: UInt64) {
        domid = hypervisor.domid
        self.policy = policy
        self.hypervisor = hypervisor.hypervisor
        limiter = RateLimiter(policy: policy, now: now)
    }

    /// Handles `frame`, whose buffers are ranges of `datagram` (the hypervisor
    /// writes results there in place), and writes the REPLY into `reply`
    /// (Wire.maxReplySize bytes). `owned` follows a successful create or
    /// destroy. `auditBlocked` is the errno of an audit log that can take no
    /// more forward lines (nil when it can): then forwards are refused.
    /// A posted frame gets no REPLY (length 0); a synchronous one carries
    /// `postedFailure` in its trailer.
    public func handle(_ frame: RequestFrame, in datagram: UnsafeMutableRawBufferPointer,
                                owned: inout OwnedIoreqServers, now: UInt64, auditBlocked: Int32?,
                                reply: UnsafeMutableRawBufferPointer, postedFailure: PostedFailure? = nil)
        -> (outcome: RequestOutcome, opNumber: UInt32?, replyLength: Int) {
        // The views live on the stack, for this request only.
        // SAFETY: `views` and the request made of it stay inside the closure (the
        // result holds no pointer); each of its frame.buffers.count slots is set below.
        return withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: frame.buffers.count) { views in
            // SAFETY: the decoder made every range lie inside the datagram, a
            // non-empty buffer (it holds at least a REQUEST header).
            for (index, range) in frame.buffers.enumerated() { views.initializeElement(at: index, to: UnsafeRawBufferPointer(start: datagram.baseAddress! + range.lowerBound, count: range.count)) }
            let request = DMOPRequest(domid: frame.domid, buffers: UnsafeBufferPointer(views), posted: frame.posted)
            let decision = admitRequest(restrictedDomid: domid, policy: policy, request: request, owned: owned,
                                        limiter: limiter, now: now, auditBlocked: auditBlocked)
            switch decision {
            case .refuse(let reason, let detail):
                let length = frame.posted ? 0
                    : Wire.encodeReply(into: reply, domid: frame.domid, requestID: frame.requestID,
                                       result: -reason.errno, refusal: reason, returned: EmptyCollection(), postedFailure: postedFailure)
                return (.refused(reason, detail), request.opNumber, length)

            case .forward(let allowed):
                let rc = hypervisor.dmOp(allowed)
                let op = allowed.rule.op
                if rc == 0 { owned.update(after: op, header: views[0]) }
                // Only what the op writes back, and only on success: Xen copies
                // nothing back on failure. A plain map, not a lazy one, whose
                // closure context would be allocated on every request.
                let returned = (rc == 0 ? op.replyBuffers : []).map { (index: $0, bytes: views[$0]) }
                let length = frame.posted ? 0
                    : Wire.encodeReply(into: reply, domid: frame.domid, requestID: frame.requestID,
                                       result: rc, refusal: nil, returned: returned, postedFailure: postedFailure)
                return (.forwarded(allowed.rule, rc: rc), request.opNumber, length)
            }
        }
    }
}
