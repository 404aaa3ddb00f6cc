// SPDX-License-Identifier: MIT

/// A DMOP as the decision sees it: the target domid and the buffers, as
/// sent. The buffers are views, in storage the caller keeps for as long as
/// the request and its AllowedDMOP are used; the decision never writes.
public struct DMOPRequest {
    public var domid: UInt16
    public var buffers: UnsafeBufferPointer<UnsafeRawBufferPointer>
    /// Sent posted (protocol version 2): allowed only when its rule says so.
    public var posted: Bool

    public init(domid: UInt16, buffers: UnsafeBufferPointer<UnsafeRawBufferPointer>, posted: Bool = false) {
        self.domid = domid
        self.buffers = buffers
        self.posted = posted
    }

    /// The op number in buffer 0, when buffer 0 holds one.
    public var opNumber: UInt32? {
        guard let first = buffers.first else { return nil }
        return ClientBytes(first).le32(at: DMOPABI.opOffset)
    }
}

/// A DMOP the decision allowed: the only thing a hypervisor backend takes.
/// Its initializer is private to this file, so nothing but `decide`,
/// `admitRequest` and the session-end clean-up below can make one.
public struct AllowedDMOP: Equatable {
    /// The rule that allowed it.
    public let rule: PolicyRule
    /// The broker's own restricted domid (the request named the same one).
    public let domid: UInt16
    /// The request's buffers, as sent, in the received datagram.
    public let buffers: UnsafeBufferPointer<UnsafeRawBufferPointer>

    fileprivate init(rule: PolicyRule, domid: UInt16, buffers: UnsafeBufferPointer<UnsafeRawBufferPointer>) {
        self.rule = rule
        self.domid = domid
        self.buffers = buffers
    }

    /// Writable views of the buffers, for the hypervisor to write its
    /// results into: the same views, read as mutable ones (no copy).
    public func withWritableBuffers(_ body: (UnsafeBufferPointer<UnsafeMutableRawBufferPointer>) -> Int32) -> Int32 {
        // SAFETY: the buffers view the broker's own writable memory (its
        // receive buffer, or the clean-up's header), and a read-only and a
        // mutable raw buffer pointer have the same layout (start, end).
        buffers.withMemoryRebound(to: UnsafeMutableRawBufferPointer.self) { body($0) }
    }

    public static func == (lhs: AllowedDMOP, rhs: AllowedDMOP) -> Bool {
        lhs.rule == rhs.rule && lhs.domid == rhs.domid
            && lhs.buffers.elementsEqual(rhs.buffers) { $0.baseAddress == $1.baseAddress && $0.count == $1.count }
    }
}

public enum Decision: Equatable {
    /// May reach the hypervisor, as this.
    case forward(AllowedDMOP)
    /// Must not; why.
    case refuse(ReasonCode, String)
}

/// The gate of the request path, the one that spends: the checks of
/// `decide`, then the rule's rate limit, then the audit log's state
/// (`auditBlocked`: the errno of an audit log that can take no more forward
/// lines, nil when it can). A forward uses up a rate-limit token; `decide`,
/// which the tools use to explain a decision, never does.
public func admitRequest(restrictedDomid: UInt16, policy: Policy, request: DMOPRequest, owned: OwnedIoreqServers,
                         limiter: RateLimiter, now: UInt64, auditBlocked: Int32?) -> Decision {
    switch evaluate(restrictedDomid: restrictedDomid, policy: policy, request: request, owned: owned) {
    case .refuse(let reason, let detail):
        return .refuse(reason, detail)
    case .allow(let rule):
        if rule.rateLimit != nil, !limiter.admit(op: rule.op.number, now: now) {
            return .refuse(.rateLimited, "\(rule.op.name): over \(rule.location)'s limit")
        }
        if let error = auditBlocked {
            return .refuse(.auditUnavailable, "the audit log cannot take more forward lines (\(errnoName(error)))")
        }
        return .forward(AllowedDMOP(rule: rule, domid: restrictedDomid, buffers: request.buffers))
    }
}

/// The broker's own clean-up when a session ends: destroy_ioreq_server for
/// a server that session created, whatever the policy says (Xen keeps a
/// server until the domain dies). Writes the call into `header`, a zeroed
/// buffer of `DMOPABI.opStructSize` bytes, and runs `body` with it; nil when
/// `id` is not the session's or the catalogue lacks the op.
public func allowSessionEndDestroy<R>(restrictedDomid: UInt16, id: UInt16, owned: OwnedIoreqServers,
                                      header: UnsafeMutableRawBufferPointer, _ body: (AllowedDMOP) -> R) -> R? {
    guard owned.contains(id), header.count == DMOPABI.opStructSize,
          let op = Catalogue.op(named: "destroy_ioreq_server"), case .destroys(let idField) = op.ioreqServer else {
        return nil
    }
    header.putLE32(op.number, at: DMOPABI.opOffset)
    header.putLE16(id, at: idField.offset)
    let rule = PolicyRule(op: op, line: 0, conditions: [], location: "session end")
    // SAFETY: the one-view list lives for `body`; `header` is the caller's,
    // alive for this call.
    return [UnsafeRawBufferPointer(header)].withUnsafeBufferPointer { body(AllowedDMOP(rule: rule, domid: restrictedDomid, buffers: $0)) }
}

/// The one question of the trusted core: may this request reach the
/// hypervisor? Pure: the same inputs always give the same answer, and it
/// touches nothing but its arguments. `owned` is the ioreq servers the
/// client's own session created (the only ones it may name).
///
/// The checks run cheapest and most fundamental first: the target domain,
/// then the op and the policy, then the buffers' shape, then must-be-zero
/// fields, then the policy's argument conditions, then ownership.
/// (Rate limits are time, not input: the gate above applies them after.)
public func decide(restrictedDomid: UInt16, policy: Policy, request: DMOPRequest,
                   owned: OwnedIoreqServers = OwnedIoreqServers()) -> Decision {
    switch evaluate(restrictedDomid: restrictedDomid, policy: policy, request: request, owned: owned) {
    case .refuse(let reason, let detail): .refuse(reason, detail)
    case .allow(let rule): .forward(AllowedDMOP(rule: rule, domid: restrictedDomid, buffers: request.buffers))
    }
}

/// What the checks found, before the AllowedDMOP is made.
private enum Verdict {
    case allow(PolicyRule)
    case refuse(ReasonCode, String)
}

private func evaluate(restrictedDomid: UInt16, policy: Policy, request: DMOPRequest,
                      owned: OwnedIoreqServers) -> Verdict {
    // Reserved domids (DOMID_SELF, DOMID_INVALID...) are never a guest: the
    // kernel would not see DOMID_INVALID as a mismatch on an unrestricted fd.
    guard request.domid < DMOPABI.firstReservedDomid else {
        return .refuse(.domidReserved, "domid \(request.domid) is reserved (>= \(DMOPABI.firstReservedDomid))")
    }
    guard request.domid == restrictedDomid else {
        return .refuse(.domidMismatch, "domid \(request.domid), this broker serves \(restrictedDomid)")
    }
    guard let header = request.buffers.first else {
        return .refuse(.badBufferCount, "no buffers: buffer 0 must hold the op")
    }
    guard let opNumber = request.opNumber else {
        return .refuse(.badBufferSize, "buffer 0 has \(header.count) bytes, too short for the op header")
    }
    // A rule's op is the catalogue's row for its number: the catalogue is
    // asked only when no rule names the op.
    guard let rule = policy.rule(forOp: opNumber) else {
        guard let op = Catalogue.op(number: opNumber) else { return .refuse(.opUnknown, "op \(opNumber) is not in dm_op.h") }
        return .refuse(.opNotAllowed, "op \(op.name) is not allowed by \(policy.source)")
    }
    let op = rule.op
    guard !request.posted || rule.mayPost else {
        return .refuse(.postingNotAllowed, "op \(op.name) may not be posted (\(rule.location) does not say 'posted')")
    }
    guard request.buffers.count == op.bufferCount else {
        return .refuse(.badBufferCount, "\(op.name) takes \(op.bufferCount) buffer(s), got \(request.buffers.count)")
    }
    guard header.count >= op.minimumHeaderBufferSize, header.count <= DMOPABI.opStructSize else {
        return .refuse(.badBufferSize,
                       "\(op.name) buffer 0 has \(header.count) bytes, must be \(op.minimumHeaderBufferSize)...\(DMOPABI.opStructSize)")
    }
    if DMOPABI.headerPad.value(in: header) != 0 {
        return .refuse(.payloadFieldNonzero, "\(op.name): xen_dm_op.pad is not zero")
    }
    for field in op.mustBeZeroFields where field.value(in: header) != 0 {
        return .refuse(.payloadFieldNonzero, "\(op.name): \(field.name) is not zero")
    }
    if let refusal = checkExtraBuffer(op, header: header, request: request) {
        return refusal
    }
    for condition in rule.conditions where !condition.holds(in: header) {
        return .refuse(.conditionFailed, "\(op.name): condition '\(condition)' of \(rule.location) fails")
    }
    if let idField = op.ioreqServerField {
        guard let id = idField.value(in: header) else { return shortHeader(op, idField, header) }
        guard owned.contains(UInt16(truncatingIfNeeded: id)) else {
            return .refuse(.notOwner, "\(op.name): ioreq server \(id) was not created by this session")
        }
    }
    return .allow(rule)
}

/// A field the buffer cannot hold: unreachable after the size check above,
/// and a refusal, never a skipped check, should that ever change.
private func shortHeader(_ op: OpSpec, _ field: FieldSpec, _ header: UnsafeRawBufferPointer) -> Verdict {
    .refuse(.badBufferSize, "\(op.name): buffer 0 of \(header.count) bytes does not hold \(field.name)")
}

private func checkExtraBuffer(_ op: OpSpec, header: UnsafeRawBufferPointer, request: DMOPRequest) -> Verdict? {
    switch op.extraBuffer {
    case .none:
        return nil
    case .dirtyBitmap(let pageCount):
        guard let pages = pageCount.value(in: header) else { return shortHeader(op, pageCount, header) }
        let needed = (pages + 7) / 8
        guard UInt64(request.buffers[1].count) >= needed else {
            return .refuse(.badBufferSize, "\(op.name): bitmap of \(request.buffers[1].count) bytes, \(pages) pages need \(needed)")
        }
        return nil
    case .extents(let countField, let extentSize, let pad):
        guard let count = countField.value(in: header) else { return shortHeader(op, countField, header) }
        let extents = request.buffers[1]
        guard UInt64(extents.count) == count * UInt64(extentSize) else {
            return .refuse(.badBufferSize, "\(op.name): \(count) extents need \(count * UInt64(extentSize)) bytes, buffer 1 has \(extents.count)")
        }
        for index in 0..<Int(count) {
            // SAFETY: (index + 1) * extentSize <= count * extentSize, which
            // equals buffer 1's size (checked above).
            let extent = UnsafeRawBufferPointer(rebasing: extents[(index * extentSize)..<((index + 1) * extentSize)])
            guard let value = pad.value(in: extent) else { return shortHeader(op, pad, extent) }
            if value != 0 {
                return .refuse(.payloadFieldNonzero, "\(op.name): extent \(index) pad is not zero")
            }
        }
        return nil
    }
}
