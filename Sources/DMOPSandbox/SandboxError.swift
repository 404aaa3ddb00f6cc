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

    /// The step in words, for the one line the CLI prints.
    public var stepInWords: String {
        switch self.step {
        case .configuration: "sandbox configuration"
        case .resolveUser: "user"
        case .rootRefused: "refusing to run as root"
        case .setgroups: "dropping supplementary groups"
        case .setresgid: "switching group"
        case .setresuid: "switching user"
        case .verifyDrop: "checking the new user and group"
        case .capabilities: "checking that no capability is left"
        case .noNewPrivs: "setting no-new-privileges"
        case .dumpable: "making the process undumpable"
        case .closeFds: "closing inherited file descriptors"
        case .verifyFds: "checking the open file descriptors"
        case .cloexec: "setting close-on-exec"
        case .rlimit: "setting resource limits"
        case .crashHandlers: "resetting the crash handlers"
        case .seccompBuild: "building the seccomp filter"
        case .seccompLoad: "loading the seccomp filter"
        case .trapHandler: "installing the seccomp trap handler"
        case .readyFd: "writing the ready line"
        }
    }

    /// One line of words: the user step's detail names the option already.
    public var description: String { step == .resolveUser ? detail : "\(stepInWords): \(detail)" }
}
