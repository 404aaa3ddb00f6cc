// SPDX-License-Identifier: MIT
import CXen
import DMOPPosix
import DMOPTrusted
import Glibc

/// The real thing: Linux's `/dev/xen/privcmd` and its ioctls.
///
/// The device is opened in `init`, which also asks Xen its version with a
/// plain hypercall while that is still allowed. After `restrict(to:)` and
/// `verifyRestricted()`, the only ioctl the broker issues is
/// IOCTL_PRIVCMD_DM_OP on `fileDescriptor` (which the sandbox's seccomp rule
/// is pinned to).
public final class PrivcmdHypervisor: Hypervisor {
    public static let defaultPath = "/dev/xen/privcmd"
    public static let maxBuffers = PrivcmdDMOp.maxBuffers

    public let kind = "privcmd"
    public let path: String
    public let xenVersion: UInt32
    /// The domid the fd is restricted to, once `restrict(to:)` succeeded.
    public private(set) var restrictedDomid: UInt16?

    private let descriptor: FileDescriptor
    private let zeroLength = ZeroLengthBacking()

    /// The open privcmd fd (O_CLOEXEC).
    /// errno of the XENVER_version query (ENOTTY: the device is not privcmd).
    public let versionQueryErrno: Int32

    public var fileDescriptor: Int32 { descriptor.rawValue }

    /// Opens `path` read-write and queries XENVER_version (0 when the query
    /// fails, e.g. on a device that is not privcmd).
    public init(path: String = PrivcmdHypervisor.defaultPath) throws(HypervisorError) {
        self.path = path
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            let error = errno
            throw HypervisorError(step: .open, errno: error,
                                  detail: "cannot open \(path): \(Errno.name(error)) (\(String(cString: strerror(error))))")
        }
        descriptor = FileDescriptor(owning: fd)
        // A regular file, /dev/null or another device would fail later with
        // ENOTTY; say what is wrong instead.
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFCHR else {
            throw HypervisorError(step: .notPrivcmd, errno: ENOTTY,
                                  detail: "\(path) is not a privcmd device (\(Self.kind(of: status)))")
        }
        var call = privcmd_hypercall_t()
        call.op = UInt64(__HYPERVISOR_xen_version)
        call.arg.0 = UInt64(XENVER_version)
        call.arg.1 = 0  // no argument buffer for XENVER_version
        let rc = withUnsafeMutablePointer(to: &call) {
            ioctl(fd, cxen_ioctl_privcmd_hypercall(), UnsafeMutableRawPointer($0))
        }
        xenVersion = rc > 0 ? UInt32(rc) : 0
        versionQueryErrno = rc < 0 ? errno : 0
    }

    static func kind(of status: stat) -> String {
        switch status.st_mode & S_IFMT {
        case S_IFREG: "a regular file"
        case S_IFDIR: "a directory"
        case S_IFCHR: "another character device"
        case S_IFBLK: "a block device"
        case S_IFIFO: "a pipe"
        case S_IFSOCK: "a socket"
        default: "not a device"
        }
    }

    public func restrict(to domid: UInt16) throws(HypervisorError) {
        let firstReserved = cxen_domid_first_reserved()
        guard domid < firstReserved else {
            throw HypervisorError(step: .reservedDomid, errno: EINVAL,
                                  detail: "domid \(domid) is reserved (>= \(firstReserved)); privcmd would not restrict to it")
        }
        var value: domid_t = domid
        let rc = withUnsafeMutablePointer(to: &value) {
            ioctl(descriptor.rawValue, cxen_ioctl_privcmd_restrict(), UnsafeMutableRawPointer($0))
        }
        guard rc == 0 else {
            let error = errno
            if error == ENOTTY || error == EINVAL && xenVersion == 0 {
                throw HypervisorError(step: .notPrivcmd, errno: error,
                                      detail: "\(path) is not a privcmd device (it does not know IOCTL_PRIVCMD_RESTRICT)")
            }
            throw HypervisorError(step: .restrict, errno: error,
                                  detail: "IOCTL_PRIVCMD_RESTRICT(\(domid)) on \(path): \(Errno.name(error)) (\(String(cString: strerror(error))))")
        }
        restrictedDomid = domid
    }

    public func verifyRestricted() throws(HypervisorError) {
        // HYPERCALL with a NULL argument: a restricted fd refuses it (EPERM)
        // before reading the argument; an unrestricted one faults on NULL.
        // The int overload passes a literal 0, which reaches the kernel as a
        // zero pointer.
        let rc = ioctl(descriptor.rawValue, cxen_ioctl_privcmd_hypercall(), CInt(0))
        let error = errno
        if rc == -1 && error == EPERM { return }
        let detail: String
        if rc >= 0 {
            detail = "privcmd restriction check on \(path): HYPERCALL(NULL) succeeded (\(rc)); the fd is not restricted"
        } else if error == EFAULT {
            detail = "privcmd restriction check on \(path): HYPERCALL(NULL) gave EFAULT, so the fd is NOT restricted"
        } else {
            detail = "privcmd restriction check on \(path): HYPERCALL(NULL) gave \(Errno.name(error)) (\(String(cString: strerror(error)))), expected EPERM"
        }
        throw HypervisorError(step: .verifyRestriction, errno: rc >= 0 ? 0 : error, detail: detail)
    }

    public func dmOp(_ allowed: AllowedDMOP) -> Int32 {
        guard let domid = restrictedDomid, domid == allowed.domid else { return -EPERM }
        return allowed.withWritableBuffers { ioctlDMOp(domid: domid, buffers: $0) }
    }

    /// IOCTL_PRIVCMD_DM_OP as given, with no check of its own: the kernel's
    /// answers for tests.
    public func ioctlDMOp(domid: UInt16, buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>) -> Int32 {
        PrivcmdDMOp.call(fd: descriptor.rawValue, domid: domid, buffers: buffers, zeroLength: zeroLength)
    }
}
