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

    /// IOCTL_PRIVCMD_DM_OP with the given buffers. The buffers are writable
    /// memory owned by the caller; the hypervisor writes results into them
    /// in place (buf[0] payload, buf[1] of track_dirty_vram).
    func dmOp(domid: UInt16, buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>) -> Int32
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
