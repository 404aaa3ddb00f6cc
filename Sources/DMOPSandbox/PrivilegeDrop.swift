// SPDX-License-Identifier: MIT
import CSandbox
import Glibc

/// The ids of this process.
public struct ProcessIDs: Equatable, Sendable, CustomStringConvertible {
    public let uid: (real: UInt32, effective: UInt32, saved: UInt32)
    public let gid: (real: UInt32, effective: UInt32, saved: UInt32)
    public let supplementaryGroups: Int

    public static func == (a: ProcessIDs, b: ProcessIDs) -> Bool {
        a.uid == b.uid && a.gid == b.gid && a.supplementaryGroups == b.supplementaryGroups
    }

    public static func current() -> ProcessIDs {
        var r: uid_t = 0, e: uid_t = 0, s: uid_t = 0
        var gr: gid_t = 0, ge: gid_t = 0, gs: gid_t = 0
        _ = csandbox_getresuid(&r, &e, &s)
        _ = csandbox_getresgid(&gr, &ge, &gs)
        return ProcessIDs(uid: (r, e, s), gid: (gr, ge, gs), supplementaryGroups: Int(getgroups(0, nil)))
    }

    public var anyRoot: Bool { uid.real == 0 || uid.effective == 0 || uid.saved == 0 }

    public func isExactly(_ user: UserSpec) -> Bool {
        uid == (user.uid, user.uid, user.uid) && gid == (user.gid, user.gid, user.gid)
    }

    public var description: String {
        "uid \(uid.real)/\(uid.effective)/\(uid.saved) gid \(gid.real)/\(gid.effective)/\(gid.saved), \(supplementaryGroups) supplementary groups"
    }
}

public enum PrivilegeDrop {
    /// Refuses root unless allowed, switches to `user` (groups, then gid,
    /// then uid: the reverse would lose the right to change gid), verifies
    /// that the switch is complete and cannot be undone, then sets
    /// no_new_privs and clears the dumpable flag.
    /// The refusals of `apply` that need no change to the process: checked
    /// at start-up, before the broker has opened, bound or created anything.
    public static func check(user: UserSpec?, allowRoot: Bool) throws(SandboxError) {
        let before = ProcessIDs.current()
        if let user {
            if user.uid == 0, !allowRoot {
                throw SandboxError(.rootRefused, "--user \(user) is root; refusing without --allow-root")
            }
            if !before.anyRoot, !before.isExactly(user) {
                throw SandboxError(.setresuid, errno: EPERM,
                                   "--user \(user) needs the broker to start as root (it runs as \(before))")
            }
        } else if before.anyRoot, !allowRoot {
            throw SandboxError(.rootRefused, "running as root; give --user NAME|UID:GID (or --allow-root for tests)")
        }
    }

    public static func apply(user: UserSpec?, allowRoot: Bool) throws(SandboxError) {
        try check(user: user, allowRoot: allowRoot)
        let before = ProcessIDs.current()
        if let user {
            if before.anyRoot {
                guard csandbox_drop_supplementary_groups() == 0 else { throw SandboxError.call(.setgroups, "setgroups(0)") }
                guard csandbox_setresgid(user.gid) == 0 else { throw SandboxError.call(.setresgid, "setresgid(\(user.gid))") }
                guard csandbox_setresuid(user.uid) == 0 else { throw SandboxError.call(.setresuid, "setresuid(\(user.uid))") }
            } else if !before.isExactly(user) {
                throw SandboxError(.setresuid, errno: EPERM,
                                   "--user \(user) needs the broker to start as root (it runs as \(before))")
            }
            let after = ProcessIDs.current()
            guard after.isExactly(user) else {
                throw SandboxError(.verifyDrop, "asked for \(user), have \(after)")
            }
            if before.anyRoot, after.supplementaryGroups != 0 {
                throw SandboxError(.verifyDrop, "supplementary groups remain: \(after.supplementaryGroups)")
            }
            if user.uid != 0 {
                // The drop is final only if root cannot be regained.
                if csandbox_setresuid(0) == 0 || (user.gid != 0 && csandbox_setresgid(0) == 0) {
                    throw SandboxError(.verifyDrop, "uid or gid 0 could be regained after the drop")
                }
                try verifyNoCapabilities()
            }
        } else if before.anyRoot, !allowRoot {
            throw SandboxError(.rootRefused, "running as root; give --user NAME|UID:GID (or --allow-root for tests)")
        }
        guard csandbox_set_no_new_privs() == 0 else { throw SandboxError.call(.noNewPrivs, "prctl(PR_SET_NO_NEW_PRIVS)") }
        guard csandbox_get_no_new_privs() == 1 else { throw SandboxError(.noNewPrivs, "PR_GET_NO_NEW_PRIVS is not 1") }
        // Not dumpable: no core, no ptrace attach by the same uid, /proc/PID
        // owned by root so another process of the user cannot read its memory.
        guard csandbox_set_dumpable(0) == 0 else { throw SandboxError.call(.dumpable, "prctl(PR_SET_DUMPABLE, 0)") }
        guard csandbox_get_dumpable() == 0 else { throw SandboxError(.dumpable, "PR_GET_DUMPABLE is not 0") }
    }

    /// CapPrm, CapEff and CapAmb must be empty (they are, after setresuid
    /// from root to non-root, unless SECBIT_KEEP_CAPS was set by someone).
    static func verifyNoCapabilities() throws(SandboxError) {
        guard let status = ProcSelf.read("/proc/self/status") else {
            throw SandboxError(.capabilities, "cannot read /proc/self/status to check capabilities")
        }
        for key in ["CapPrm", "CapEff", "CapAmb"] {
            guard let value = ProcSelf.statusField(key, in: status) else {
                if key == "CapAmb" { continue } // kernels before 4.3
                throw SandboxError(.capabilities, "/proc/self/status has no \(key)")
            }
            guard let bits = UInt64(value, radix: 16), bits == 0 else {
                throw SandboxError(.capabilities, "\(key) is \(value) after the drop")
            }
        }
    }
}
