// SPDX-License-Identifier: MIT
import DMOPTrusted
import DMOPSandbox
import DMOPServer
import Glibc
import Logging

/// Options of the confinement step of `serve` (dmop-broker(8), SECURITY).
public struct ConfinementOptions {
    public var user: String?
    public var allowRoot = false
    public var seccomp: SeccompMode = .enforce

    public init() {}

    /// Resolves --user and refuses what confinement would refuse (root
    /// without --user, an unknown user): before the first side effect, so
    /// that a refused start leaves nothing behind.
    func resolveUser() -> UserSpec? {
        let userSpec: UserSpec?
        do {
            userSpec = try user.map { try UserSpec.resolve($0) }
        } catch {
            fail(.usage, "\(error)")
        }
        do {
            try PrivilegeDrop.check(user: userSpec, allowRoot: allowRoot)
        } catch {
            fail(error.category == .rootRefused ? .rootRefused : .privilegeDrop, "\(error)")
        }
        return userSpec
    }

    /// Drops privileges, closes every other fd, sets rlimits and loads the
    /// seccomp filter, in that order. Any failure is fatal: the process is
    /// then half-confined and must not serve.
    func confine(user userSpec: UserSpec?, hypervisor: any Hypervisor, record: Int32?, endpoint: ServeOptions.Endpoint, readyFd: Int32?,
                 auditSink: AuditSink, audit: Logger) {
        let auditDescriptors: AuditDescriptors? = switch auditSink.channel {
        case .stderr: nil
        case .file: .file(fd: auditSink.fd, directory: auditSink.directoryFd)
        case .journal, .syslog: .socket(fd: auditSink.fd)
        }
        let client: ClientSocket
        switch endpoint {
        case .connected(let fd): client = .inherited(fd: fd)
        case .listening(let listener, let slot): client = .listening(listener: listener, clientFd: slot)
        }
        let descriptors = SandboxDescriptors(
            privcmd: (hypervisor as? PrivcmdHypervisor)?.fileDescriptor,
            client: client,
            ready: readyFd,
            record: record,
            audit: auditDescriptors)
        // The file-size limit the broker runs under is the smaller of the
        // inherited one and its own: the audit file keeps its reserve below it.
        var inherited = rlimit()
        let inheritedLimit = getrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &inherited) == 0 ? UInt64(inherited.rlim_cur) : UInt64.max
        let config = SandboxConfig(user: userSpec, allowRoot: allowRoot, descriptors: descriptors,
                                   seccompMode: seccomp, trapExitCode: ExitStatus.seccompViolation.rawValue)
        do {
            let confinement = try Sandbox.confine(config)
            auditSink.limitFileSize(to: min(inheritedLimit, confinement.limits.fileSize))
            audit.info("\(confinement)")
        } catch {
            let status: ExitStatus = switch error.category {
            case .usage: .usage
            case .rootRefused: .rootRefused
            case .privilegeDrop: .privilegeDrop
            case .resourceLimits: .resourceLimits
            case .seccomp: .seccomp
            case .readyFd: .readyFd
            }
            fail(status, "\(error)")
        }
    }
}
