// SPDX-License-Identifier: MIT
import DMOPPosix
import Glibc

public enum Spawn {
    /// Starts `path` with `arguments` (argv[0] included). `fds` maps a parent
    /// fd to the child's fd number; every other fd is closed by CLOEXEC.
    /// `stderrPath`, when given, receives the child's stderr.
    public static func start(_ path: String, _ arguments: [String], fds: [(parent: Int32, child: Int32)] = [],
                             stderrPath: String? = nil, environment: [String]? = nil) throws(SystemError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (parent, child) in fds {
            // dup2 onto itself keeps CLOEXEC; go through a spare number then.
            posix_spawn_file_actions_adddup2(&actions, parent, child)
        }
        if let stderrPath {
            posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        }
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var envp: [UnsafeMutablePointer<CChar>?]? = environment.map { $0.map { strdup($0) } + [nil] }
        defer { envp?.forEach { free($0) } }
        // The child starts with no blocked signals and default handlers,
        // whatever this (perhaps multi-threaded) process has set.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var defaults = sigset_t()
        sigfillset(&defaults)
        sigdelset(&defaults, SIGKILL)
        sigdelset(&defaults, SIGSTOP)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let rc: Int32
        if var envp {
            rc = posix_spawn(&pid, path, &actions, &attributes, &argv, &envp)
        } else {
            rc = posix_spawn(&pid, path, &actions, &attributes, &argv, environ)
        }
        guard rc == 0 else { throw SystemError("posix_spawn \(path)", errno: rc) }
        return pid
    }

    /// waitpid, retrying EINTR. Returns the raw status.
    public static func wait(_ pid: pid_t) throws(SystemError) -> Int32 {
        var status: Int32 = 0
        _ = try Syscall.retrying("waitpid", { waitpid(pid, &status, 0) })
        return status
    }

    /// "exit 0", "signal 9": for messages.
    public static func describe(status: Int32) -> String {
        let signal = status & 0x7f
        if signal == 0 { return "exit \((status >> 8) & 0xff)" }
        return "signal \(signal)"
    }
}
