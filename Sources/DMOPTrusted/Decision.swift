// SPDX-License-Identifier: MIT
/// A DMOP as the decision sees it: the target domid and the buffers, as
/// sent. The buffers are views; the decision never writes.
public struct DMOPRequest {
    public var domid: UInt16
    public var buffers: [UnsafeRawBufferPointer]

    public init(domid: UInt16, buffers: [UnsafeRawBufferPointer]) {
        self.domid = domid
        self.buffers = buffers
    }

    /// The op number in buffer 0, when buffer 0 holds one.
    public var opNumber: UInt32? {
        guard let first = buffers.first, first.count >= DMOPABI.opOffset + DMOPABI.opWidth else { return nil }
        return first.le32(at: DMOPABI.opOffset)
    }
}

public enum Decision: Equatable {
    /// May reach the hypervisor; the rule that allowed it.
    case forward(PolicyRule)
    /// Must not; why.
    case refuse(ReasonCode, String)

    public var isForward: Bool {
        if case .forward = self { return true }
        return false
    }
}

/// The one question of the trusted core: may this request reach the
/// hypervisor? Pure: the same inputs always give the same answer, and it
/// touches nothing but its arguments. `owned` is the ioreq servers the
/// client's own session created (the only ones it may name).
///
/// The checks run cheapest and most fundamental first: the target domain,
/// then the op and the policy, then the buffers' shape, then must-be-zero
/// fields, then the policy's argument conditions, then ownership.
/// (Rate limits are time, not input: the server applies them after.)
public func decide(restrictedDomid: UInt16, policy: Policy, request: DMOPRequest,
                   owned: OwnedIoreqServers = OwnedIoreqServers()) -> Decision {
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
    guard let op = Catalogue.op(number: opNumber) else {
        return .refuse(.opUnknown, "op \(opNumber) is not in dm_op.h")
    }
    guard let rule = policy.rule(forOp: opNumber) else {
        return .refuse(.opNotAllowed, "op \(op.name) is not allowed by \(policy.source)")
    }
    guard request.buffers.count == op.bufferCount else {
        return .refuse(.badBufferCount, "\(op.name) takes \(op.bufferCount) buffer(s), got \(request.buffers.count)")
    }
    guard header.count >= op.minimumHeaderBufferSize, header.count <= DMOPABI.opStructSize else {
        return .refuse(.badBufferSize,
                       "\(op.name) buffer 0 has \(header.count) bytes, must be \(op.minimumHeaderBufferSize)...\(DMOPABI.opStructSize)")
    }
    if DMOPABI.headerPad.value(in: header) != 0 {
        return .refuse(.nonzeroReserved, "\(op.name): xen_dm_op.pad is not zero")
    }
    for field in op.mustBeZeroFields where field.value(in: header) != 0 {
        return .refuse(.nonzeroReserved, "\(op.name): \(field.name) is not zero")
    }
    if let refusal = checkExtraBuffer(op, header: header, request: request) {
        return refusal
    }
    for condition in rule.conditions where !condition.holds(in: header) {
        return .refuse(.conditionFailed, "\(op.name): condition '\(condition)' of \(rule.location) fails")
    }
    if let idField = op.ioreqServerField, let id = idField.value(in: header), !owned.contains(UInt16(truncatingIfNeeded: id)) {
        return .refuse(.notOwner, "\(op.name): ioreq server \(id) was not created by this session")
    }
    return .forward(rule)
}

private func checkExtraBuffer(_ op: OpSpec, header: UnsafeRawBufferPointer, request: DMOPRequest) -> Decision? {
    switch op.extraBuffer {
    case .none:
        return nil
    case .dirtyBitmap:
        guard let pages = op.extraBufferCountField?.value(in: header) else { return nil }
        let needed = (pages + 7) / 8
        guard UInt64(request.buffers[1].count) >= needed else {
            return .refuse(.badBufferSize, "\(op.name): bitmap of \(request.buffers[1].count) bytes, \(pages) pages need \(needed)")
        }
        return nil
    case .extents(_, let extentSize, let padOffset, let padWidth):
        guard let count = op.extraBufferCountField?.value(in: header) else { return nil }
        let extents = request.buffers[1]
        guard UInt64(extents.count) == count * UInt64(extentSize) else {
            return .refuse(.badBufferSize, "\(op.name): \(count) extents need \(count * UInt64(extentSize)) bytes, buffer 1 has \(extents.count)")
        }
        let pad = FieldSpec(name: "pad", offset: padOffset, width: padWidth, role: .mustBeZero)
        for index in 0..<Int(count) {
            let extent = UnsafeRawBufferPointer(rebasing: extents[(index * extentSize)..<((index + 1) * extentSize)])
            if pad.value(in: extent) != 0 {
                return .refuse(.nonzeroReserved, "\(op.name): extent \(index) pad is not zero")
            }
        }
        return nil
    }
}
