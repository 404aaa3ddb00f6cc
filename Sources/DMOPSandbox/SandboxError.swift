// SPDX-License-Identifier: MIT
import Glibc

/// A confinement step that failed. Every failure is fatal to the broker;
/// `step` names what failed so the CLI can print one clear line and map it
/// to its exit status (`category`).
public struct SandboxError: Error, Equatable, CustomStringConvertible {
    public enum Step: String, Sendable, CaseIterable {
        /// The configuration itself is wrong (a negative or repeated fd, ...).
        case configuration
        /// `--user` did not parse or names no user.
        case resolveUser
        /// Running as root without `--user`, or `--user` is uid 0, without `--allow-root`.
        case rootRefused
        case setgroups, setresgid, setresuid
        /// The ids after the drop are not the requested ones, or uid 0 can be regained.
        case verifyDrop
        /// Permitted, effective or ambient capabilities left after the drop.
        case capabilities
        case noNewPrivs, dumpable
        case closeFds
        /// An fd that should be open is not, or one that should be closed is not.
        case verifyFds
        case cloexec
        case rlimit
        case crashHandlers
        case seccompBuild
        case seccompLoad
        case trapHandler
        case readyFd
    }

    /// Which of the broker's exit statuses a failure belongs to.
    public enum Category: Sendable, Equatable {
        case usage, rootRefused, privilegeDrop, resourceLimits, seccomp, readyFd
    }

    public let step: Step
    /// errno of the failed system call, or 0 when no call failed.
    public let errno: Int32
    public let detail: String

    public init(_ step: Step, errno: Int32 = 0, _ detail: String) {
        self.step = step
        self.errno = errno
        self.detail = detail
    }

    /// A failed system call: `call` and the current (or given) errno.
    static func call(_ step: Step, _ call: String, errno: Int32 = Glibc.errno) -> SandboxError {
        SandboxError(step, errno: errno, "\(call): \(String(cString: strerror(errno)))")
    }

    public var category: Category {
        switch step {
        case .configuration, .resolveUser: .usage
        case .rootRefused: .rootRefused
        case .setgroups, .setresgid, .setresuid, .verifyDrop, .capabilities, .noNewPrivs, .dumpable: .privilegeDrop
        case .closeFds, .verifyFds, .cloexec, .rlimit: .resourceLimits
        case .crashHandlers, .seccompBuild, .seccompLoad, .trapHandler: .seccomp
        case .readyFd: .readyFd
        }
    }

    public var description: String { "sandbox: \(step.rawValue): \(detail)" }
}
