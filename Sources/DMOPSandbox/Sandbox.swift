// SPDX-License-Identifier: MIT
import CSandbox
import DMOPPosix
import Glibc

/// What `Sandbox.confine` applied, for the start-up log line.
public struct Confinement: Sendable, CustomStringConvertible {
    public let ids: ProcessIDs
    public let keptDescriptors: [Int32]
    public let limits: ResourceLimits
    public let mode: SeccompMode
    public let ruleCount: Int

    public var description: String {
        "confined: \(ids); fds \(keptDescriptors); \(limits); seccomp \(mode.rawValue), \(ruleCount) rules"
    }
}

public enum Sandbox {
    /// The whole confinement, in order: build the filter (no effect yet),
    /// drop privileges, close every other fd, set rlimits, load the filter.
    /// Call after privcmd is restricted and the socket exists, before the
    /// first byte from a client is read; then `signalReady`. Any error is
    /// fatal: the process is then partly confined and must exit.
    @discardableResult
    public static func confine(_ config: SandboxConfig) throws(SandboxError) -> Confinement {
        // Built first: a bad profile fails before anything irreversible.
        let filter = try SeccompFilter(SeccompProfile(descriptors: config.descriptors, mode: config.seccompMode))
        try PrivilegeDrop.apply(user: config.user, allowRoot: config.allowRoot)
        let keep = config.descriptors.kept
        try DescriptorHygiene.apply(keep: keep, mustBeOpen: config.descriptors.mustBeOpen)
        let limits = ResourceLimits.plan(descriptors: config.descriptors, addressSpace: config.addressSpaceLimit,
                                         fileGrowth: config.fileGrowthLimit)
        try limits.apply()
        // Everything the report needs is gathered before the filter forbids it.
        let confinement = Confinement(ids: ProcessIDs.current(), keptDescriptors: keep.sorted(), limits: limits,
                                      mode: config.seccompMode, ruleCount: filter.profile.allowed.count)
        try loadFilter(filter, trapExitCode: config.trapExitCode)
        return confinement
    }

    /// Loads `filter` after preparing the signal side: the Swift runtime's
    /// crash handlers go (they would make forbidden calls and turn a crash
    /// into SIGSYS), and in trap mode the SIGSYS reporter comes in, with its
    /// name table resolved now, since the handler may not allocate.
    public static func loadFilter(_ filter: SeccompFilter, trapExitCode: Int32) throws(SandboxError) {
        guard csandbox_reset_crash_handlers() == 0 else {
            throw SandboxError.call(.crashHandlers, "sigaction(SIG_DFL) for crash signals")
        }
        if filter.profile.mode == .trap {
            let (names, count) = SyscallNameTable.prepare()
            guard csandbox_install_sigsys_reporter(names, count, trapExitCode) == 0 else {
                throw SandboxError.call(.trapHandler, "sigaction(SIGSYS)")
            }
        }
        try filter.load()
    }

    /// Writes `ready\n` to the toolstack's ready fd and closes it: the
    /// broker is confined and serving. Allowed by the filter (write on that
    /// fd number only).
    public static func signalReady(fd: Int32) throws(SandboxError) {
        let line: [UInt8] = Array("ready\n".utf8)
        // SAFETY: the view lives for the write, which copies the bytes.
        let failure: SystemError? = line.withUnsafeBytes { raw in
            do throws(SystemError) { try Syscall.writeAll(fd, raw) } catch { return error }
            return nil
        }
        if let failure { throw SandboxError.call(.readyFd, "write(ready fd \(fd))", errno: failure.errno) }
        _ = close(fd)
    }
}
