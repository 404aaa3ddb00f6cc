// SPDX-License-Identifier: MIT
import CXen
import Glibc

/// The real thing: Linux's `/dev/xen/privcmd` and its ioctls. All of
/// privcmd lives in this file of the trusted core: the fd, the restriction,
/// its proof, and the DM_OP call, which nothing outside the core can make
/// without an `AllowedDMOP` (`ioctlDMOp` is internal).
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

    /// The open privcmd fd (O_CLOEXEC), closed with this object.
    private let descriptor: Int32
    private let zeroLength = ZeroLengthBacking()

    /// errno of the XENVER_version query (ENOTTY: the device is not privcmd).
    public let versionQueryErrno: Int32

    /// The fd's number, for the sandbox's seccomp rule (pinned to it).
    public var fileDescriptor: Int32 { descriptor }

    /// Opens `path` read-write and queries XENVER_version (0 when the query
    /// fails, e.g. on a device that is not privcmd).
    public init(path: String = PrivcmdHypervisor.defaultPath) throws(HypervisorError) {
        self.path = path
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            let error = errno
            throw HypervisorError(step: .open, errno: error,
                                  detail: "cannot open \(path): \(errnoName(error)) (\(String(cString: strerror(error))))")
        }
        descriptor = fd
        // A regular file, /dev/null or another device would fail later with
        // ENOTTY; say what is wrong instead.
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFCHR else {
            close(fd)
            throw HypervisorError(step: .notPrivcmd, errno: ENOTTY,
                                  detail: "\(path) is not a privcmd device (\(Self.kind(of: status)))")
        }
        var call = privcmd_hypercall_t()
        call.op = UInt64(__HYPERVISOR_xen_version)
        call.arg.0 = UInt64(XENVER_version)
        call.arg.1 = 0  // no argument buffer for XENVER_version
        // SAFETY: `call` outlives the ioctl, which only copies the struct in
        // (Linux drivers/xen/privcmd.c, privcmd_ioctl_hypercall).
        let rc = withUnsafeMutablePointer(to: &call) {
            ioctl(fd, cxen_ioctl_privcmd_hypercall(), UnsafeMutableRawPointer($0))
        }
        xenVersion = rc > 0 ? UInt32(rc) : 0
        versionQueryErrno = rc < 0 ? errno : 0
    }

    deinit { close(descriptor) }

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
        // SAFETY: `value` outlives the ioctl, which copies the domid_t in.
        let rc = withUnsafeMutablePointer(to: &value) {
            ioctl(descriptor, cxen_ioctl_privcmd_restrict(), UnsafeMutableRawPointer($0))
        }
        guard rc == 0 else {
            let error = errno
            if error == ENOTTY || error == EINVAL && xenVersion == 0 {
                throw HypervisorError(step: .notPrivcmd, errno: error,
                                      detail: "\(path) is not a privcmd device (it does not know IOCTL_PRIVCMD_RESTRICT)")
            }
            throw HypervisorError(step: .restrict, errno: error,
                                  detail: "IOCTL_PRIVCMD_RESTRICT(\(domid)) on \(path): \(errnoName(error)) (\(String(cString: strerror(error))))")
        }
        restrictedDomid = domid
    }

    public func verifyRestricted() throws(HypervisorError) {
        // HYPERCALL with a NULL argument: a restricted fd refuses it (EPERM)
        // before reading the argument; an unrestricted one faults on NULL.
        // The int overload passes a literal 0, which reaches the kernel as a
        // zero pointer.
        let rc = ioctl(descriptor, cxen_ioctl_privcmd_hypercall(), CInt(0))
        let error = errno
        if rc == -1 && error == EPERM { return }
        let detail: String
        if rc >= 0 {
            detail = "privcmd restriction check on \(path): HYPERCALL(NULL) succeeded (\(rc)); the fd is not restricted"
        } else if error == EFAULT {
            detail = "privcmd restriction check on \(path): HYPERCALL(NULL) gave EFAULT, so the fd is NOT restricted"
        } else {
            detail = "privcmd restriction check on \(path): HYPERCALL(NULL) gave \(errnoName(error)) (\(String(cString: strerror(error)))), expected EPERM"
        }
        throw HypervisorError(step: .verifyRestriction, errno: rc >= 0 ? 0 : error, detail: detail)
    }

    public func dmOp(_ allowed: AllowedDMOP) -> Int32 {
        guard let domid = restrictedDomid, domid == allowed.domid else { return -EPERM }
        return allowed.withWritableBuffers { ioctlDMOp(domid: domid, buffers: $0) }
    }

    /// IOCTL_PRIVCMD_DM_OP as given, with no check of its own: internal, so
    /// only `dmOp` (and the tests, for the kernel's answers) reach it.
    func ioctlDMOp(domid: UInt16, buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>) -> Int32 {
        PrivcmdDMOp.call(fd: descriptor, domid: domid, buffers: buffers, zeroLength: zeroLength)
    }
}

/// IOCTL_PRIVCMD_DM_OP, the one call the broker makes on privcmd while it
/// serves (the sandbox's seccomp rule is pinned to this fd and ioctl).
enum PrivcmdDMOp {
    /// privcmd's dm_op_max_nr_bufs default: more descriptors than this never
    /// reach the kernel (it would answer E2BIG), so the descriptor array has
    /// a fixed bound.
    static let maxBuffers = 16

    /// Issues the ioctl on `fd` for `domid`; 0 or a negative errno.
    static func call(fd: Int32, domid: UInt16, buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>,
                            zeroLength: ZeroLengthBacking) -> Int32 {
        let count = buffers.count
        guard count <= maxBuffers else { return -E2BIG }
        // The descriptor array lives on the stack (at most 16 x 16 bytes).
        // SAFETY: `descriptors` is used only inside the closure; count <= maxBuffers,
        // its capacity (guarded above).
        return withUnsafeTemporaryAllocation(of: privcmd_dm_op_buf_t.self, capacity: maxBuffers) { descriptors in
            guard let first = descriptors.baseAddress else { return -ENOMEM }
            for i in 0..<count {
                let buffer = buffers[i]
                // SAFETY: i < count <= maxBuffers, the capacity of `descriptors`.
                (first + i).initialize(to: privcmd_dm_op_buf_t(uptr: zeroLength.pointer(for: buffer), size: buffer.count))
            }
            // SAFETY: the loop above initialized exactly the first `count`.
            defer { first.deinitialize(count: count) }
            // SAFETY: the kernel reads `count` initialized descriptors, each
            // naming a buffer the caller keeps alive for the call.
            var op = privcmd_dm_op_t(dom: domid, num: UInt16(count), ubufs: UnsafePointer(first))
            let rc = withUnsafeMutablePointer(to: &op) {
                ioctl(fd, cxen_ioctl_privcmd_dm_op(), UnsafeMutableRawPointer($0))
            }
            return rc < 0 ? -errno : rc
        }
    }
}

/// errno's symbolic name ("EPERM"), for the core's messages; glibc's table,
/// so the core needs no module of the project's for it.
func errnoName(_ value: Int32) -> String {
    cxen_errno_name(value).map { String(cString: $0) } ?? "errno \(value)"
}
