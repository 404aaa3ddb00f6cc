// SPDX-License-Identifier: MIT
import Glibc

/// The account `--user` names: `NAME` (its uid and primary gid from the
/// password database) or `UID:GID`.
public struct UserSpec: Equatable, Sendable, CustomStringConvertible {
    public let uid: UInt32
    public let gid: UInt32
    /// The name given, when the user was given by name.
    public let name: String?

    public init(uid: UInt32, gid: UInt32, name: String? = nil) {
        self.uid = uid
        self.gid = gid
        self.name = name
    }

    public var description: String {
        if let name { return "\(name) (\(uid):\(gid))" }
        return "\(uid):\(gid)"
    }

    /// Parses `NAME` or `UID:GID`. Looks names up with getpwnam_r, which may
    /// read /etc/passwd or ask NSS: call it before confinement.
    public static func resolve(_ text: String) throws(SandboxError) -> UserSpec {
        if let colon = text.firstIndex(of: ":") {
            let uidText = text[..<colon]
            let gidText = text[text.index(after: colon)...]
            guard let uid = parseID(uidText), let gid = parseID(gidText) else {
                throw SandboxError(.resolveUser, "--user '\(text)': UID:GID must be two decimal ids below 4294967295")
            }
            return UserSpec(uid: uid, gid: gid)
        }
        guard !text.isEmpty, !text.utf8.contains(0) else {
            throw SandboxError(.resolveUser, "--user '\(text)': give a user name or UID:GID")
        }
        var capacity = 1024
        while capacity <= 1 << 20 {
            var entry = passwd()
            var result: UnsafeMutablePointer<passwd>?
            var buffer = [CChar](repeating: 0, count: capacity)
            let rc = getpwnam_r(text, &entry, &buffer, capacity, &result)
            if rc == ERANGE {
                capacity *= 4
                continue
            }
            guard rc == 0 else {
                throw SandboxError(.resolveUser, errno: rc, "--user '\(text)': getpwnam_r: \(String(cString: strerror(rc)))")
            }
            guard result != nil else {
                throw SandboxError(.resolveUser, "--user '\(text)': no such user")
            }
            // (uid_t)-1 means "leave unchanged" to setresuid: never a target.
            guard entry.pw_uid != UInt32.max, entry.pw_gid != UInt32.max else {
                throw SandboxError(.resolveUser, "--user '\(text)': uid or gid is -1")
            }
            return UserSpec(uid: entry.pw_uid, gid: entry.pw_gid, name: text)
        }
        throw SandboxError(.resolveUser, "--user '\(text)': password entry too large")
    }

    /// A decimal id; UInt32.max is refused since setres*id reads it as -1.
    static func parseID(_ text: Substring) -> UInt32? {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              let value = UInt32(text), value != UInt32.max else { return nil }
        return value
    }
}
