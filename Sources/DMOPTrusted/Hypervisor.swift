// SPDX-License-Identifier: MIT
/// The two operations a broker needs from the hypervisor, behind one
/// interface so the broker does not know which one it holds (the
/// `xenhost_t` idea): the real privcmd driver, or the simulated model.
///
/// Results follow the kernel's convention: 0 on success, a negative errno
/// (as privcmd or Xen returned it) on failure.
public protocol Hypervisor: AnyObject {
    /// Short name for logs: "privcmd" or "simulated".
    var kind: String { get }

    /// The running hypervisor's version, major << 16 | minor (XENVER_version),
    /// or 0 when it cannot be known. Queried before the restriction, since a
    /// restricted fd can no longer make plain hypercalls.
    var xenVersion: UInt32 { get }

    /// IOCTL_PRIVCMD_RESTRICT: from now on only DMOPs for `domid` may pass.
    /// Refuses domids >= DOMID_FIRST_RESERVED before asking the kernel
    /// (restricting to DOMID_INVALID would silently do nothing).
    func restrict(to domid: UInt16) throws(HypervisorError)

    /// Proves the restriction took: a plain hypercall must now fail with
    /// EPERM. Anything else is an error the broker must treat as fatal.
    func verifyRestricted() throws(HypervisorError)

    /// IOCTL_PRIVCMD_DM_OP for a DMOP the decision allowed, for the domid
    /// this backend is restricted to (never one a client sent): -EPERM
    /// without asking the kernel when it is not restricted, or restricted
    /// to another domid. The hypervisor writes results into the buffers in
    /// place (buf[0] payload, buf[1] of track_dirty_vram).
    func dmOp(_ allowed: AllowedDMOP) -> Int32
}

/// The second step of open -> restrict -> verify -> serve: restricted, not
/// yet proven. Made only by `RestrictedHypervisor.restrict`; it holds the
/// RestrictedHypervisor that only `verify` hands out.
public struct UnverifiedRestriction {
    private let pending: RestrictedHypervisor
    public var hypervisor: any Hypervisor { pending.hypervisor }
    public var domid: UInt16 { pending.domid }

    fileprivate init(_ pending: RestrictedHypervisor) { self.pending = pending }

    /// Proves the restriction (`verifyRestricted`): the last step before
    /// serving.
    public func verify() throws(HypervisorError) -> RestrictedHypervisor {
        try pending.hypervisor.verifyRestricted()
        return pending
    }
}

/// A hypervisor restricted to `domid`, the restriction proven: what a
/// broker serves with. Only `UnverifiedRestriction.verify` hands one out.
public struct RestrictedHypervisor {
    public let hypervisor: any Hypervisor
    public let domid: UInt16

    fileprivate init(hypervisor: any Hypervisor, domid: UInt16) {
        self.hypervisor = hypervisor
        self.domid = domid
    }

    /// Restricts `hypervisor` to `domid` (`restrict(to:)`).
    public static func restrict(_ hypervisor: any Hypervisor, to domid: UInt16) throws(HypervisorError) -> UnverifiedRestriction {
        try hypervisor.restrict(to: domid)
        return UnverifiedRestriction(RestrictedHypervisor(hypervisor: hypervisor, domid: domid))
    }
}

public struct HypervisorError: Error, Equatable, CustomStringConvertible {
    public enum Step: String, Sendable {
        case open, notPrivcmd, queryVersion, restrict, reservedDomid, verifyRestriction, recordFile
    }
    public let step: Step
    /// errno, when a system call failed; 0 otherwise.
    public let errno: Int32
    public let detail: String

    public init(step: Step, errno: Int32, detail: String) {
        self.step = step
        self.errno = errno
        self.detail = detail
    }

    public var description: String { detail }
}
