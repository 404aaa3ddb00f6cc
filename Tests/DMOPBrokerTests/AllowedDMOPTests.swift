// SPDX-License-Identifier: MIT
import CXen
import DMOPClient
import DMOPCore
import DMOPTrusted
import DMOPSimulation
import Glibc
import Testing

/// A forward only the decision can make, carried out only on the
/// backend's own restricted domid, behind one gate with the rate limit.
@Suite("The forward the decision makes")
struct AllowedDMOPTests {
    static let policy: Policy = {
        do {
            return try Policy.parse("allow nr_vcpus rate 1/s burst 1\nallow set_isa_irq_level\n", file: "a.policy")
        } catch {
            fatalError("test policy: \(error)")
        }
    }()

    /// The decision's answer for `op` (buffer 0 only) with `body`.
    func withDecision<R>(restricted: UInt16 = 5, domid: UInt16 = 5, _ op: String,
                         _ body: (Decision, UnsafeMutableRawBufferPointer) -> R) -> R {
        var header = TestSupport.op(op).encodeHeader()
        return header.withUnsafeMutableBytes { bytes in
            [UnsafeRawBufferPointer(bytes)].withUnsafeBufferPointer { views in
                body(decide(restrictedDomid: restricted, policy: Self.policy, request: DMOPRequest(domid: domid, buffers: views)),
                     bytes)
            }
        }
    }

    @Test("a forward carries the rule, the restricted domid and the request's buffers")
    func carries() {
        withDecision("nr_vcpus") { decision, bytes in
            guard case .forward(let allowed) = decision else { Issue.record("refused: \(decision)"); return }
            #expect(allowed.rule.location == "a.policy:1")
            #expect(allowed.domid == 5)
            #expect(allowed.buffers.map(\.baseAddress) == [UnsafeRawPointer(bytes.baseAddress)])
            #expect(allowed.buffers.map(\.count) == [bytes.count])
        }
    }

    @Test("the gate: a rate-limited rule's second forward is RATE_LIMITED, a full audit log AUDIT_UNAVAILABLE")
    func gate() {
        let limiter = RateLimiter(policy: Self.policy, now: 1)
        var header = TestSupport.op("nr_vcpus").encodeHeader()
        let reasons: [ReasonCode?] = header.withUnsafeMutableBytes { bytes in [UnsafeRawBufferPointer(bytes)].withUnsafeBufferPointer { views in
            let request = DMOPRequest(domid: 5, buffers: views)
            return [nil, nil].map { (_: Int?) -> ReasonCode? in
                let decision = admitRequest(restrictedDomid: 5, policy: Self.policy, request: request, owned: OwnedIoreqServers(),
                                            limiter: limiter, now: 2, auditBlocked: nil)
                if case .refuse(let reason, _) = decision { return reason }
                return nil
            }
        } }
        #expect(reasons == [nil, .rateLimited])
        var irq = TestSupport.op("set_isa_irq_level").encodeHeader()
        let blocked = irq.withUnsafeMutableBytes { bytes in
            [UnsafeRawBufferPointer(bytes)].withUnsafeBufferPointer { views in
                admitRequest(restrictedDomid: 5, policy: Self.policy, request: DMOPRequest(domid: 5, buffers: views),
                             owned: OwnedIoreqServers(), limiter: limiter, now: 2, auditBlocked: ENOSPC)
            }
        }
        #expect(blocked == .refuse(.auditUnavailable, "the audit log cannot take more forward lines (ENOSPC)"))
    }

    @Test("privcmd: an allowed DMOP on an unrestricted fd is EPERM before any ioctl (not ENOTTY)")
    func privcmdUnrestricted() throws {
        let hv = try PrivcmdHypervisor(path: "/dev/null")
        let rc = withDecision("nr_vcpus") { decision, _ -> Int32 in
            guard case .forward(let allowed) = decision else { return 0 }
            return hv.dmOp(allowed)
        }
        #expect(rc == -EPERM)
    }

    @Test("simulated: a forward for another domid than the restriction never reaches the model")
    func simulatedOtherDomid() throws {
        let restricted = try RestrictedHypervisor.restrictAndVerify(SimulatedHypervisor(guestDomid: 5, vcpus: 1), to: 5)
        let simulated = try #require(restricted.hypervisor as? SimulatedHypervisor)
        let (same, other) = (withDecision(restricted: 5, domid: 5, "nr_vcpus") { decision, _ -> Int32 in
            guard case .forward(let allowed) = decision else { return 1 }
            return restricted.hypervisor.dmOp(allowed)
        }, withDecision(restricted: 6, domid: 6, "nr_vcpus") { decision, _ -> Int32 in
            guard case .forward(let allowed) = decision else { return 1 }
            return restricted.hypervisor.dmOp(allowed)
        })
        #expect(same == 0)
        #expect(other == -EPERM)
        #expect(simulated.dmOpCalls == 1)
    }

    @Test("an unverified restriction is not a restricted hypervisor: verify fails on an unrestricted fd")
    func verifyStep() throws {
        let fd = try SimulatedHypervisor(guestDomid: 5, vcpus: 1)
        let unverified = try RestrictedHypervisor.restrict(fd, to: 5)
        #expect(try unverified.verify().domid == 5)
        #expect(throws: HypervisorError.self) {
            _ = try PrivcmdHypervisor(path: "/dev/null").verifyRestricted()
        }
    }

    @Test("the session-end destroy: only for a server the session owns, written as destroy_ioreq_server(id)")
    func sessionEndDestroy() throws {
        var header = [UInt8](repeating: 0, count: DMOPABI.opStructSize)
        let (owned, notOwned) = header.withUnsafeMutableBytes { bytes in
            (allowSessionEndDestroy(restrictedDomid: 5, id: 3, owned: OwnedIoreqServers([3]), header: bytes) {
                ($0.rule.op.name, $0.domid, $0.buffers.map(\.baseAddress) == [UnsafeRawPointer(bytes.baseAddress)])
             },
             allowSessionEndDestroy(restrictedDomid: 5, id: 4, owned: OwnedIoreqServers([3]), header: bytes) { _ in true })
        }
        #expect(notOwned == nil)
        let allowed = try #require(owned)
        #expect(allowed.0 == "destroy_ioreq_server" && allowed.1 == 5 && allowed.2)
        #expect(header == TestSupport.op("destroy_ioreq_server").encodeHeader(["id": 3]))
    }
}
