// SPDX-License-Identifier: MIT
import CXen
import Glibc

/// IOCTL_PRIVCMD_DM_OP, the one call the broker makes on privcmd while it
/// serves (the sandbox's seccomp rule is pinned to this fd and ioctl).
public enum PrivcmdDMOp {
    /// privcmd's dm_op_max_nr_bufs default: more descriptors than this never
    /// reach the kernel (it would answer E2BIG), so the descriptor array has
    /// a fixed bound.
    public static let maxBuffers = 16

    /// Issues the ioctl on `fd` for `domid`; 0 or a negative errno.
    public static func call(fd: Int32, domid: UInt16, buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>,
                            zeroLength: ZeroLengthBacking) -> Int32 {
        let count = buffers.count
        guard count <= maxBuffers else { return -E2BIG }
        // The descriptor array lives on the stack (at most 16 x 16 bytes).
        return withUnsafeTemporaryAllocation(of: privcmd_dm_op_buf_t.self, capacity: maxBuffers) { descriptors in
            guard let first = descriptors.baseAddress else { return -ENOMEM }
            for i in 0..<count {
                let buffer = buffers[i]
                // SAFETY: i < count <= maxBuffers, the capacity of `descriptors`.
                (first + i).initialize(to: privcmd_dm_op_buf_t(uptr: zeroLength.pointer(for: buffer), size: buffer.count))
            }
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
