// SPDX-License-Identifier: MIT
import CSandbox
import Glibc

/// fd hygiene: nothing stays open but what the broker uses.
public enum DescriptorHygiene {
    /// Closes every fd not in `keep` (with close_range over the gaps, so no
    /// /proc is needed), sets FD_CLOEXEC on the kept ones above stdio, and
    /// verifies through /proc/self/fd (when mounted) that exactly the kept
    /// set is open. Every fd in `mustBeOpen` must be open on entry.
    public static func apply(keep: Set<Int32>, mustBeOpen: [(role: String, fd: Int32)]) throws(SandboxError) {
        for (role, fd) in mustBeOpen where fcntl(fd, F_GETFD) < 0 {
            throw SandboxError(.verifyFds, errno: errno, "the \(role) (fd \(fd)) is not open")
        }
        var first: UInt32 = 0
        for fd in keep.sorted() {
            let kept = UInt32(fd)
            if kept > first, csandbox_close_range(first, kept - 1) != 0 {
                throw SandboxError.call(.closeFds, "close_range(\(first), \(kept - 1))")
            }
            first = kept + 1
        }
        if csandbox_close_range(first, UInt32.max) != 0 {
            throw SandboxError.call(.closeFds, "close_range(\(first), ~0)")
        }
        for fd in keep where fd > 2 {
            let flags = fcntl(fd, F_GETFD)
            guard flags >= 0 else { continue } // a kept number that is not open (stdio may be closed)
            if flags & FD_CLOEXEC == 0, fcntl(fd, F_SETFD, flags | FD_CLOEXEC) != 0 {
                throw SandboxError.call(.cloexec, "fcntl(\(fd), F_SETFD, FD_CLOEXEC)")
            }
        }
        if let open = ProcSelf.openDescriptors() {
            let stray = open.filter { !keep.contains($0) }
            guard stray.isEmpty else {
                throw SandboxError(.verifyFds, "fds still open after closing: \(stray)")
            }
        }
    }
}
