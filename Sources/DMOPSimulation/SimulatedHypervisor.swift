// SPDX-License-Identifier: MIT
import CXen
import DMOPCore
import DMOPTrusted
import DMOPPosix
import Glibc

/// One open file of a simulated `/dev/xen/privcmd` (Linux
/// drivers/xen/privcmd.c: privcmd_ioctl_restrict, privcmd_ioctl_dm_op) in
/// front of a `SimulatedXen`.
///
/// The restriction belongs to the open file, as in the kernel: two
/// `SimulatedHypervisor`s on the same `SimulatedXen` are two `open()`s, one
/// restricted and one not. The `ioctl*` methods are the kernel's view (no
/// broker-side checks); the `Hypervisor` methods add exactly what
/// `PrivcmdHypervisor` adds (reserved-domid refusal, restriction proof,
/// zero-length buffer backing), so the broker behaves the same on both.
public final class SimulatedHypervisor: Hypervisor {
    /// privcmd's module parameters (/sys/module/xen_privcmd/parameters).
    public struct Limits: Sendable, Equatable {
        /// dm_op_max_nr_bufs
        public var maxBuffers: Int
        /// dm_op_buf_max_size
        public var maxBufferSize: Int
        public static let kernelDefaults = Limits(maxBuffers: 16, maxBufferSize: 4096)
        public init(maxBuffers: Int, maxBufferSize: Int) {
            self.maxBuffers = maxBuffers
            self.maxBufferSize = maxBufferSize
        }
    }

    public let kind = "simulated"
    public let xen: SimulatedXen
    public let limits: Limits
    public let xenVersion: UInt32
    /// The file's domid: DOMID_INVALID while unrestricted (the kernel's own
    /// sentinel, hence RESTRICT(DOMID_INVALID) changing nothing).
    public var restriction: UInt16 { restrictedTo }
    public var isRestricted: Bool { restrictedTo != cxen_domid_invalid() }
    /// The record file's fd, or -1 without one.
    public var recordFileDescriptor: Int32 { record.rawValue }
    /// Calls made through `dmOp` / `ioctlDMOp`, and how many failed to be recorded.
    public var dmOpCalls: Int { calls }
    public var recordWriteFailures: Int { unrecordedCalls }

    // Stored privately, read through the getters above: state no other
    // module can reach needs no dynamic exclusivity check per call.
    private var restrictedTo: UInt16
    private var calls = 0
    private var unrecordedCalls = 0

    private let record: FileDescriptor?
    private let zeroLength = ZeroLengthBacking()
    private let pageSize = max(Int(sysconf(Int32(_SC_PAGESIZE))), 1)

    /// `recordPath`: append one JSON line per DMOP call to this file
    /// (created 0600 if missing), the `--simulated-record` format.
    public init(xen: SimulatedXen = SimulatedXen(), limits: Limits = .kernelDefaults,
                recordPath: String? = nil) throws(HypervisorError) {
        self.xen = xen
        self.limits = limits
        restrictedTo = cxen_domid_invalid()
        if let recordPath {
            // O_NOFOLLOW: a symlink planted at the path is refused, not
            // followed to a file of root's.
            let fd = open(recordPath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else {
                let error = errno
                throw HypervisorError(step: .recordFile, errno: error,
                                      detail: "cannot open simulation record \(recordPath): \(Errno.name(error)) (\(String(cString: strerror(error))))")
            }
            record = FileDescriptor(owning: fd)
        } else {
            record = nil
        }
        // Like PrivcmdHypervisor: the version is asked at open time.
        var call = privcmd_hypercall_t()
        call.op = UInt64(__HYPERVISOR_xen_version)
        call.arg.0 = UInt64(XENVER_version)
        let rc = Self.hypercall(xen: xen, call)
        xenVersion = rc > 0 ? UInt32(truncatingIfNeeded: rc) : 0
    }

    /// A guest `guestDomid` with `vcpus` vcpus and everything else default.
    /// Refuses what no HVM guest can be: a reserved domid, dom0, more than
    /// HVM_MAX_VCPUS vcpus, or none.
    public convenience init(guestDomid: UInt16, vcpus: UInt32 = 1, xenVersion: UInt32 = SimulatedXen.defaultRelease.xenVersion,
                            recordPath: String? = nil) throws(HypervisorError) {
        guard guestDomid != SimulatedXen.callerDomid, guestDomid < cxen_domid_first_reserved() else {
            throw HypervisorError(step: .open, errno: EINVAL,
                                  detail: "simulated guest domid \(guestDomid) is not a guest domid (1...\(cxen_domid_first_reserved() - 1))")
        }
        guard (1...SimulatedXen.Limits.vcpus).contains(vcpus) else {
            throw HypervisorError(step: .open, errno: EINVAL,
                                  detail: "simulated guest vcpus \(vcpus) out of range 1...\(SimulatedXen.Limits.vcpus)")
        }
        try self.init(xen: SimulatedXen(.init(guestDomid: guestDomid, vcpus: vcpus, xenVersion: xenVersion)),
                      recordPath: recordPath)
    }

    // MARK: Hypervisor

    public func restrict(to domid: UInt16) throws(HypervisorError) {
        let firstReserved = cxen_domid_first_reserved()
        guard domid < firstReserved else {
            throw HypervisorError(step: .reservedDomid, errno: EINVAL,
                                  detail: "domid \(domid) is reserved (>= \(firstReserved)); privcmd would not restrict to it")
        }
        let rc = ioctlRestrict(domid)
        guard rc == 0 else {
            throw HypervisorError(step: .restrict, errno: -rc,
                                  detail: "IOCTL_PRIVCMD_RESTRICT(\(domid)) (simulated): \(Errno.name(-rc))")
        }
    }

    public func verifyRestricted() throws(HypervisorError) {
        let rc = ioctlHypercall(nil)
        if rc == -Int64(EPERM) { return }
        let detail = rc == -Int64(EFAULT)
            ? "privcmd restriction check (simulated): HYPERCALL(NULL) gave EFAULT, so the fd is NOT restricted"
            : "privcmd restriction check (simulated): HYPERCALL(NULL) gave \(rc), expected EPERM"
        throw HypervisorError(step: .verifyRestriction, errno: rc < 0 ? Int32(truncatingIfNeeded: -rc) : 0, detail: detail)
    }

    public func dmOp(_ allowed: AllowedDMOP) -> Int32 {
        guard isRestricted, restrictedTo == allowed.domid else { return -EPERM }
        return allowed.withWritableBuffers { dmOp(domid: restrictedTo, buffers: $0) }
    }

    /// The call as a client of the kernel makes it, with the zero-length
    /// backing of `PrivcmdHypervisor` and no other check of its own.
    public func dmOp(domid: UInt16, buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>) -> Int32 {
        // The same substitution PrivcmdHypervisor makes before its ioctl.
        guard buffers.contains(where: { $0.count == 0 }) else { return ioctlDMOp(domid: domid, buffers: buffers) }
        // SAFETY: an empty view into the backing block `self` owns (nothing is
        // read or written through it); the list lives for the call.
        let substituted = buffers.map { buffer in
            buffer.count == 0 ? UnsafeMutableRawBufferPointer(start: zeroLength.address, count: 0) : buffer
        }
        return substituted.withUnsafeBufferPointer { ioctlDMOp(domid: domid, buffers: $0) }
    }

    // MARK: The kernel's side

    /// IOCTL_PRIVCMD_RESTRICT: 0 or -errno (privcmd_ioctl_restrict()).
    public func ioctlRestrict(_ domid: UInt16) -> Int32 {
        if restrictedTo == cxen_domid_invalid() {
            restrictedTo = domid  // RESTRICT(DOMID_INVALID) leaves it unrestricted
            return 0
        }
        return restrictedTo == domid ? 0 : -EINVAL
    }

    /// IOCTL_PRIVCMD_HYPERCALL; `nil` is a NULL argument. Returns the
    /// hypercall's result or -errno. Only xen_version is implemented behind
    /// it (-ENOSYS for anything else, as Xen for an unknown hypercall).
    public func ioctlHypercall(_ call: privcmd_hypercall_t?) -> Int64 {
        // Refused before the argument is read.
        if isRestricted { return -Int64(EPERM) }
        guard let call else { return -Int64(EFAULT) }
        return Self.hypercall(xen: xen, call)
    }

    private static func hypercall(xen: SimulatedXen, _ call: privcmd_hypercall_t) -> Int64 {
        guard call.op == UInt64(__HYPERVISOR_xen_version) else { return -Int64(ENOSYS) }
        guard call.arg.0 == UInt64(XENVER_version) else { return -Int64(ENOSYS) }
        return Int64(xen.configuration.xenVersion)
    }

    /// IOCTL_PRIVCMD_DM_OP in privcmd_ioctl_dm_op()'s order (Linux
    /// drivers/xen/privcmd.c), then Xen. Every call is appended to the record, whatever its rc.
    public func ioctlDMOp(domid: UInt16, buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>) -> Int32 {
        let rc = privcmdDMOp(domid: domid, buffers: buffers)
        calls += 1
        let recordFd = record.rawValue
        if recordFd >= 0 {
            let line = SimulationRecord.line(domid: domid, buffers: buffers, rc: rc)
            // SAFETY: the view lives for the write, which copies the bytes.
            let written = line.withUnsafeBytes { write(recordFd, $0.baseAddress, $0.count) }
            if written != line.count { unrecordedCalls += 1 }
        }
        return rc
    }

    private func privcmdDMOp(domid: UInt16, buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>) -> Int32 {
        // The domid check comes first (FINDINGS rows 13, 14).
        if isRestricted && domid != restrictedTo { return -EPERM }
        if buffers.isEmpty { return 0 }  // no hypercall: libxendevicemodel's probe
        if buffers.count > limits.maxBuffers { return -E2BIG }
        for buffer in buffers where buffer.count > limits.maxBufferSize { return -E2BIG }
        // pin_user_pages_fast() of zero pages fails: a zero-length buffer at a
        // page-aligned address (NULL included) is EFAULT.
        for buffer in buffers where buffer.count == 0 {
            if Int(bitPattern: buffer.baseAddress) % pageSize == 0 { return -EFAULT }
        }
        return xen.dmOp(domid: domid, buffers: buffers)
    }
}
