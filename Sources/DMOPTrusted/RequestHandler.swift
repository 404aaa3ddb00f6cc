// SPDX-License-Identifier: MIT
import DMOPPosix

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
public struct RequestHandler {
    public let domid: UInt16
    public let policy: Policy
    public let hypervisor: any Hypervisor
    /// Per broker, not per session: reconnecting gets no fresh tokens.
    var limiter: RateLimiter

    public init(domid: UInt16, policy: Policy, hypervisor: any Hypervisor, now: UInt64) {
        self.domid = domid
        self.policy = policy
        self.hypervisor = hypervisor
        limiter = RateLimiter(policy: policy, now: now)
    }

    /// Handles `frame`, whose buffers are ranges of `datagram` (the hypervisor
    /// writes results there in place), and writes the REPLY into `reply`
    /// (Wire.maxReplySize bytes). `owned` follows a successful create or
    /// destroy. `auditBlocked` is the errno of an audit log that can take no
    /// more forward lines (nil when it can): then forwards are refused.
    public mutating func handle(_ frame: RequestFrame, in datagram: UnsafeMutableRawBufferPointer,
                                owned: inout OwnedIoreqServers, now: UInt64, auditBlocked: Int32?,
                                reply: UnsafeMutableRawBufferPointer) -> (outcome: RequestOutcome, opNumber: UInt32?, replyLength: Int) {
        let base = datagram.baseAddress!
        let views = frame.buffers.map { UnsafeRawBufferPointer(start: base + $0.lowerBound, count: $0.count) }
        let request = DMOPRequest(domid: frame.domid, buffers: views)
        var decision = decide(restrictedDomid: domid, policy: policy, request: request, owned: owned)
        if case .forward(let rule) = decision, rule.rateLimit != nil, !limiter.admit(op: rule.op.number, now: now) {
            decision = .refuse(.rateLimited, "\(rule.op.name): over \(rule.location)'s limit")
        }
        if case .forward = decision, let error = auditBlocked {
            decision = .refuse(.auditUnavailable, "the audit log cannot take more forward lines (\(Errno.name(error)))")
        }
        switch decision {
        case .refuse(let reason, let detail):
            let result = -reason.errno
            let length = Wire.encodeReply(into: reply, domid: frame.domid, requestID: frame.requestID,
                                          result: result, refusal: reason, returned: [])
            return (.refused(reason, detail), request.opNumber, length)

        case .forward(let rule):
            // The writable views on the stack: no heap allocation per request.
            let rc = withUnsafeTemporaryAllocation(of: UnsafeMutableRawBufferPointer.self,
                                                  capacity: frame.buffers.count) { mutable in
                for (index, range) in frame.buffers.enumerated() {
                    mutable.initializeElement(at: index, to: UnsafeMutableRawBufferPointer(start: base + range.lowerBound,
                                                                                           count: range.count))
                }
                return hypervisor.dmOp(domid: frame.domid, buffers: UnsafeBufferPointer(mutable))
            }
            var returned: [(index: Int, bytes: UnsafeRawBufferPointer)] = []
            if rc == 0 {
                owned.update(after: rule.op, header: views[0])
                // Only what the op writes back, and only on success: Xen copies
                // nothing back on failure.
                if rule.op.writesBackPayload { returned.append((0, views[0])) }
                if case .dirtyBitmap = rule.op.extraBuffer { returned.append((1, views[1])) }
            }
            let length = Wire.encodeReply(into: reply, domid: frame.domid, requestID: frame.requestID,
                                          result: rc, refusal: nil, returned: returned)
            return (.forwarded(rule, rc: rc), request.opNumber, length)
        }
    }
}
