// SPDX-License-Identifier: MIT
import Glibc

/// The rlimits of a confined broker. Soft and hard limits are set equal, so
/// an unprivileged broker cannot raise them again.
public struct ResourceLimits: Equatable, Sendable, CustomStringConvertible {
    /// RLIMIT_AS default: 64 MiB. Measured (Swift 6.3.1, Debian 12, dynamic
    /// Swift runtime): a confined `serve` through a whole QEMU-like session
    /// peaks at VmPeak 26.2 MiB (debug build) and 24.5 MiB (release), nearly
    /// all of it shared libraries mapped before confinement; the request loop
    /// adds nothing measurable. 64 MiB is about 2.5 times the peak.
    public static let defaultAddressSpace: UInt64 = 64 << 20
    /// Address space that must still be free under the cap at confinement,
    /// or start-up fails: the loop's buffers (under 70 KiB per request) and
    /// malloc's growth, many times over.
    public static let requiredHeadroom: UInt64 = 16 << 20
    /// RLIMIT_FSIZE growth allowed to a kept regular file: 1 GiB.
    public static let defaultFileGrowth: UInt64 = 1 << 30
    /// Extra fd numbers above the highest kept one: accept4 returns the
    /// lowest free number before dup3 moves it onto the fixed client fd.
    public static let descriptorMargin: UInt64 = 2

    public let openFiles: UInt64
    public let processes: UInt64
    public let fileSize: UInt64
    public let coreSize: UInt64
    public let addressSpace: UInt64

    public var description: String {
        "NOFILE \(openFiles), NPROC \(processes), FSIZE \(fileSize), CORE \(coreSize), AS \(addressSpace >> 20) MiB"
    }

    /// The limits for a set of fds. NOFILE bounds fd *numbers*, so it is one
    /// more than the highest number the broker will use (kept fds and the
    /// fixed client fd) plus the margin. FSIZE is 0 unless a kept fd the
    /// broker writes (stdout, stderr, the record file) is a regular file:
    /// then the largest such file's current size plus `fileGrowth`.
    public static func plan(descriptors: SandboxDescriptors, addressSpace: UInt64, fileGrowth: UInt64) -> ResourceLimits {
        let highest = max(descriptors.kept.max() ?? 2, descriptors.client.clientFd)
        var fileSize: UInt64 = 0
        var written: [Int32] = [1, 2]
        if let record = descriptors.record { written.append(record) }
        if case .file(let audit, _) = descriptors.audit { written.append(audit) }
        for fd in written {
            var status = stat()
            if fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG {
                fileSize = max(fileSize, UInt64(max(status.st_size, 0)) + fileGrowth)
            }
        }
        return ResourceLimits(openFiles: UInt64(highest) + 1 + descriptorMargin, processes: 0,
                              fileSize: fileSize, coreSize: 0, addressSpace: addressSpace)
    }

    /// Applies the limits. Fails when the process already uses so much
    /// address space that the cap would leave less than `requiredHeadroom`:
    /// better a clear start-up error than ENOMEM in the middle of a session.
    public func apply() throws(SandboxError) {
        if let status = ProcSelf.read("/proc/self/status"), let size = ProcSelf.memoryField("VmSize", in: status),
           size + Self.requiredHeadroom > addressSpace {
            throw SandboxError(.rlimit, errno: ENOMEM,
                               "address space is \(size >> 20) MiB already; RLIMIT_AS \(addressSpace >> 20) MiB leaves less than \(Self.requiredHeadroom >> 20) MiB")
        }
        if fileSize > 0 {
            // Past the cap a write fails with EFBIG (and the broker says so)
            // instead of SIGXFSZ killing it silently.
            signal(SIGXFSZ, SIG_IGN)
        }
        try set(RLIMIT_NOFILE, openFiles, "RLIMIT_NOFILE")
        try set(__RLIMIT_NPROC, processes, "RLIMIT_NPROC")
        try set(RLIMIT_FSIZE, fileSize, "RLIMIT_FSIZE")
        try set(RLIMIT_CORE, coreSize, "RLIMIT_CORE")
        try set(RLIMIT_AS, addressSpace, "RLIMIT_AS")
    }

    private func set(_ resource: __rlimit_resource, _ value: UInt64, _ name: String) throws(SandboxError) {
        var limit = rlimit(rlim_cur: rlim_t(value), rlim_max: rlim_t(value))
        var current = rlimit()
        // Never raise: if a limit is already lower (the toolstack's), keep it.
        if getrlimit(__rlimit_resource_t(resource.rawValue), &current) == 0, current.rlim_max < limit.rlim_max {
            limit = rlimit(rlim_cur: min(current.rlim_cur, current.rlim_max), rlim_max: current.rlim_max)
        }
        guard setrlimit(__rlimit_resource_t(resource.rawValue), &limit) == 0 else {
            throw SandboxError.call(.rlimit, "setrlimit(\(name), \(value))")
        }
    }
}
