// SPDX-License-Identifier: MIT
import CSandbox
import CSeccomp
import Glibc

/// A libseccomp filter built from a `SeccompProfile`, not yet loaded.
/// Building has no effect on the process; `load()` does.
public final class SeccompFilter {
    public let profile: SeccompProfile
    private let context: scmp_filter_ctx

    /// libseccomp's SCMP_ACT_ERRNO(e) (a function-like macro).
    static func actErrno(_ e: Int32) -> UInt32 { 0x0005_0000 | (UInt32(e) & 0xffff) }

    public init(_ profile: SeccompProfile) throws(SandboxError) {
        self.profile = profile
        let defaultAction: UInt32 = switch profile.mode {
        case .enforce: SCMP_ACT_KILL_PROCESS
        case .log: SCMP_ACT_LOG
        case .trap: SCMP_ACT_TRAP
        }
        guard let context = seccomp_init(defaultAction) else {
            throw SandboxError(.seccompBuild, "seccomp_init failed")
        }
        self.context = context
        try attribute(SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS, "a foreign ABI kills")
        // Should a thread ever exist, it is confined too (or the load fails).
        try attribute(SCMP_FLTATR_CTL_TSYNC, 1, "TSYNC")
        // libseccomp sets PR_SET_NO_NEW_PRIVS itself before loading.
        try attribute(SCMP_FLTATR_CTL_NNP, 1, "NNP")
        if profile.mode == .log {
            // Log the EPERM refusals too, not only the default LOG action.
            try attribute(SCMP_FLTATR_CTL_LOG, 1, "CTL_LOG")
        }
        for rule in profile.allowed { try add(rule, action: SCMP_ACT_ALLOW) }
        if profile.mode == .log {
            for rule in profile.neverAllowed { try add(rule, action: Self.actErrno(EPERM)) }
        }
        for (rank, name) in SeccompProfile.testedFirst.enumerated() {
            guard let nr = SeccompProfile.number(of: name) else { continue }
            let rc = seccomp_syscall_priority(context, nr, UInt8(255 - rank))
            guard rc == 0 else { throw SandboxError(.seccompBuild, errno: -rc, "seccomp_syscall_priority(\(name)): \(String(cString: strerror(-rc)))") }
        }
    }

    deinit { seccomp_release(context) }

    private func attribute(_ attr: scmp_filter_attr, _ value: UInt32, _ what: String) throws(SandboxError) {
        let rc = seccomp_attr_set(context, attr, value)
        guard rc == 0 else { throw SandboxError(.seccompBuild, errno: -rc, "seccomp_attr_set(\(what)): \(String(cString: strerror(-rc)))") }
    }

    private func add(_ rule: SyscallRule, action: UInt32) throws(SandboxError) {
        guard let nr = SeccompProfile.number(of: rule.name) else {
            throw SandboxError(.seccompBuild, "system call '\(rule.name)' is unknown to libseccomp on this architecture")
        }
        let conditions = rule.conditions.map(\.libseccomp)
        // seccomp_rule_add_exact: the rule goes in as written or fails;
        // libseccomp must not rewrite it into something broader.
        // SAFETY: the array lives for the call; libseccomp copies the conditions.
        let rc = conditions.withUnsafeBufferPointer { buffer in
            seccomp_rule_add_exact_array(context, action, nr, UInt32(buffer.count), buffer.baseAddress)
        }
        guard rc == 0 else {
            let list = rule.conditions.map(\.description).joined(separator: " && ")
            throw SandboxError(.seccompBuild, errno: -rc, "seccomp rule \(rule.name) [\(list)]: \(String(cString: strerror(-rc)))")
        }
    }

    /// Loads the filter into the kernel. Irreversible.
    public func load() throws(SandboxError) {
        let rc = seccomp_load(context)
        guard rc == 0 else { throw SandboxError(.seccompLoad, errno: -rc, "seccomp_load: \(String(cString: strerror(-rc)))") }
    }

    /// libseccomp's pseudo-filter-code text of the filter, written to `fd`.
    public func exportPFC(to fd: Int32) throws(SandboxError) {
        let rc = seccomp_export_pfc(context, fd)
        guard rc == 0 else { throw SandboxError(.seccompBuild, errno: -rc, "seccomp_export_pfc: \(String(cString: strerror(-rc)))") }
    }

    /// The raw BPF program, written to `fd`.
    public func exportBPF(to fd: Int32) throws(SandboxError) {
        let rc = seccomp_export_bpf(context, fd)
        guard rc == 0 else { throw SandboxError(.seccompBuild, errno: -rc, "seccomp_export_bpf: \(String(cString: strerror(-rc)))") }
    }
}

/// The names the --seccomp trap handler prints, resolved before the filter
/// is loaded (resolution allocates; the handler may not).
enum SyscallNameTable {
    /// Covers every x86_64 number in use (about 460 in Linux 6.x) with room.
    static let count = 1024

    // SAFETY: set once by prepare(), on the broker's one thread before the filter
    // is loaded, and only read after.
    nonisolated(unsafe) private static var table: UnsafeMutablePointer<UnsafePointer<CChar>?>?

    /// Builds the table once; it lives as long as the process.
    static func prepare() -> (UnsafePointer<UnsafePointer<CChar>?>, Int) {
        // SAFETY: `count` slots, each set below before the table is published, and
        // never freed: the trap handler may read it until the process exits.
        if let table { return (UnsafePointer(table), count) }
        let names = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: count)
        for nr in 0..<count {
            // malloc'd by libseccomp, kept for the life of the process.
            names[nr] = UnsafePointer(seccomp_syscall_resolve_num_arch(UInt32(SCMP_ARCH_NATIVE), Int32(nr)))
        }
        table = names
        return (UnsafePointer(names), count)
    }
}
