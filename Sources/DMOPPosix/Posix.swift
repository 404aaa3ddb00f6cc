// SPDX-License-Identifier: MIT
import CPosix
import Glibc

/// A failed system call: which one, and errno.
public struct SystemError: Error, Equatable, CustomStringConvertible {
    public let call: String
    public let errno: Int32

    public init(_ call: String, errno: Int32 = Glibc.errno) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(Errno.name(errno)) (\(String(cString: strerror(errno))))" }
}

public enum Errno {
    /// Symbolic name of an errno value, for logs and test messages.
    public static func name(_ value: Int32) -> String {
        switch value {
        case EPERM: "EPERM"
        case ENOENT: "ENOENT"
        case ESRCH: "ESRCH"
        case EINTR: "EINTR"
        case EIO: "EIO"
        case E2BIG: "E2BIG"
        case EBADF: "EBADF"
        case EAGAIN: "EAGAIN"
        case ENOMEM: "ENOMEM"
        case EACCES: "EACCES"
        case EFAULT: "EFAULT"
        case EBUSY: "EBUSY"
        case EEXIST: "EEXIST"
        case ENOTDIR: "ENOTDIR"
        case EINVAL: "EINVAL"
        case ENOTTY: "ENOTTY"
        case ENOSPC: "ENOSPC"
        case EPIPE: "EPIPE"
        case ENODATA: "ENODATA"
        case EOPNOTSUPP: "EOPNOTSUPP"
        case EADDRINUSE: "EADDRINUSE"
        case ECONNRESET: "ECONNRESET"
        case ECONNREFUSED: "ECONNREFUSED"
        case ENOTSOCK: "ENOTSOCK"
        case EMSGSIZE: "EMSGSIZE"
        case EISDIR: "EISDIR"
        case ENXIO: "ENXIO"
        case ENODEV: "ENODEV"
        case EFBIG: "EFBIG"
        case EROFS: "EROFS"
        case ELOOP: "ELOOP"
        case ENAMETOOLONG: "ENAMETOOLONG"
        case ENOTSUP: "ENOTSUP"
        case ENOSYS: "ENOSYS"
        default: "errno \(value)"
        }
    }
}

/// An owned file descriptor: one owner (it cannot be copied), closed once,
/// by `close()` or when its owner lets it go, and never used after that
/// (both consume it). The broker's long-lived fds (privcmd, the socket) are
/// held this way so no path leaks or double-closes one.
public struct FileDescriptor: ~Copyable {
    public let rawValue: Int32

    public init(owning rawValue: Int32) {
        self.rawValue = rawValue
    }

    /// Gives up ownership without closing (e.g. before exec in a child).
    public consuming func release() -> Int32 {
        let value = rawValue
        discard self
        return value
    }

    public consuming func close() {
        if rawValue >= 0 { _ = Glibc.close(rawValue) }
        discard self
    }

    deinit {
        if rawValue >= 0 { _ = Glibc.close(rawValue) }
    }
}

extension Optional where Wrapped == FileDescriptor {
    /// The descriptor's number, or -1 when there is none (a borrow: the
    /// descriptor stays where it is).
    public var rawValue: Int32 {
        switch self {
        case .some(let descriptor): descriptor.rawValue
        case .none: -1
        }
    }
}

/// The two connected ends of a socketpair.
@frozen public struct SocketPair: ~Copyable {
    public var first: FileDescriptor
    public var second: FileDescriptor

    public init(first: consuming FileDescriptor, second: consuming FileDescriptor) {
        self.first = first
        self.second = second
    }
}

/// SOCK_SEQPACKET Unix sockets: one datagram per message.
public enum SeqPacket {
    public struct Credentials: Equatable, Sendable {
        public let pid: Int32
        public let uid: UInt32
        public let gid: UInt32
    }

    /// Outcome of one receive.
    public enum Received: Equatable {
        /// A datagram of this many bytes, whole, with no fds attached.
        case datagram(Int)
        /// The datagram did not fit the buffer (MSG_TRUNC); it is gone.
        case truncated
        /// File descriptors came with it; they have been closed.
        case fdsAttached(count: Int, bytes: Int)
        /// The peer hung up (0 bytes on SEQPACKET means EOF).
        case hangUp
    }

    public static func pair() throws(SystemError) -> SocketPair {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw SystemError("socketpair")
        }
        return SocketPair(first: FileDescriptor(owning: fds[0]), second: FileDescriptor(owning: fds[1]))
    }

    static func withAddress<R: ~Copyable>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) throws(SystemError) -> R {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else {
            throw SystemError("socket path '\(path)' (must be 1...\(capacity - 1) bytes)", errno: ENAMETOOLONG)
        }
        // SAFETY: bytes.count < capacity (checked above): the path and its NUL fit.
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        // SAFETY: bind and connect take any sockaddr kind by pointer and length;
        // sockaddr_un is one (family first), and `address` outlives `body`.
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                body($0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }

    public static func connect(path: String) throws(SystemError) -> FileDescriptor {
        let fd = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket") }
        let owned = FileDescriptor(owning: fd)
        let rc = try withAddress(path) { Glibc.connect(fd, $0, $1) }
        guard rc == 0 else { throw SystemError("connect \(path)") }
        return owned
    }

    /// Binds and listens on `path` with mode 0600, owned by `owner` when
    /// given. An existing path is only replaced when it is a stale socket
    /// (nobody accepts on it); anything else there (a file, a live socket) is
    /// an error, never clobbered.
    ///
    /// Nothing here changes the metadata of a path someone else could swap:
    /// the directory is opened once and checked (owned by root or by us, and
    /// not writable by others unless sticky, so no one else can rename or
    /// replace an entry of ours in it), every later step names the socket
    /// relative to that open directory, the mode comes from the umask at
    /// bind, and the owner from fchownat without following symlinks.
    public static func listen(path: String, backlog: Int32 = 1, owner: UInt32? = nil) throws(SystemError) -> FileDescriptor {
        let slash = path.lastIndex(of: "/")
        let directoryPath = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        guard !name.isEmpty, name != ".", name != ".." else {
            throw SystemError("socket path '\(path)' names no file", errno: EINVAL)
        }
        let directoryFd = open(directoryPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directoryFd >= 0 else { throw SystemError("open directory \(directoryPath)") }
        let directory = FileDescriptor(owning: directoryFd)
        var status = stat()
        guard fstat(directory.rawValue, &status) == 0 else { throw SystemError("fstat \(directoryPath)") }
        if status.st_uid != 0 && status.st_uid != geteuid() {
            throw SystemError("socket directory \(directoryPath) is owned by uid \(status.st_uid), who could swap the socket; use a directory of root's", errno: EPERM)
        }
        if status.st_mode & (S_IWGRP | S_IWOTH) != 0 && status.st_mode & S_ISVTX == 0 {
            throw SystemError("socket directory \(directoryPath) is writable by others without the sticky bit, so they could swap the socket; use a directory only root can write", errno: EPERM)
        }
        return try inDirectory(directory.rawValue, directoryPath) { () throws(SystemError) -> FileDescriptor in
            if fstatat(directory.rawValue, name, &status, AT_SYMLINK_NOFOLLOW) == 0 {
                guard (status.st_mode & S_IFMT) == S_IFSOCK else {
                    throw SystemError("\(path) exists and is not a socket; refusing to replace it", errno: EEXIST)
                }
                if let live = try? connect(path: name) {
                    live.close()
                    throw SystemError("\(path) is a live socket (another broker?)", errno: EADDRINUSE)
                }
                guard unlinkat(directory.rawValue, name, 0) == 0 else { throw SystemError("unlink stale socket \(path)") }
            }
            let fd = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw SystemError("socket") }
            let owned = FileDescriptor(owning: fd)
            // The umask makes the socket 0600 from its first moment: no
            // window in which another user could connect, and no chmod.
            let oldMask = umask(0o177)
            let rc = try withAddress(name) { bind(fd, $0, $1) }
            umask(oldMask)
            guard rc == 0 else { throw SystemError("bind \(path)") }
            if let owner, fchownat(directory.rawValue, name, owner, gid_t.max, AT_SYMLINK_NOFOLLOW) != 0 {
                let failure = SystemError("chown \(path) to uid \(owner)")
                unlinkat(directory.rawValue, name, 0)
                throw failure
            }
            guard Glibc.listen(fd, backlog) == 0 else { throw SystemError("listen \(path)") }
            return owned
        }
    }

    /// Runs `body` with the working directory set to the open `directory`
    /// (so that socket paths are relative to it), then restores it.
    static func inDirectory<R: ~Copyable>(_ directory: Int32, _ path: String,
                               _ body: () throws(SystemError) -> R) throws(SystemError) -> R {
        let saved = cposix_open_working_directory()
        guard saved >= 0 else { throw SystemError("open the working directory") }
        defer {
            _ = fchdir(saved)
            _ = Glibc.close(saved)
        }
        guard fchdir(directory) == 0 else { throw SystemError("fchdir \(path)") }
        return try body()
    }

    public static func accept(_ listener: Int32) throws(SystemError) -> FileDescriptor {
        // A stop signal, SIGHUP or SIGUSR1 goes back to the caller.
        let accepted = Syscall.valueOrErrno(retryingEINTRWhile: {
            cposix_stop_signal() == 0 && cposix_runtime_signal_pending() == 0
        }, { cposix_accept_cloexec(listener) })
        switch accepted {
        case .success(let fd): return FileDescriptor(owning: fd)
        case .failure(let error): throw SystemError("accept", errno: error.errno)
        }
    }

    public static func peerCredentials(_ fd: Int32) throws(SystemError) -> Credentials {
        var cred = cposix_peercred()
        guard cposix_peercred_get(fd, &cred) == 0 else { throw SystemError("getsockopt(SO_PEERCRED)") }
        return Credentials(pid: cred.pid, uid: cred.uid, gid: cred.gid)
    }

    /// Receives one datagram into `buffer`. EINTR is returned as an error
    /// so the broker can look at its signal flags. `wait: false` adds
    /// MSG_DONTWAIT: EAGAIN when nothing is queued, whatever the fd's own mode.
    public static func receive(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer,
                               wait: Bool = true) throws(SystemError) -> Received {
        var truncated: Int32 = 0
        var fds: Int32 = 0
        let n = cposix_recv_datagram_flags(fd, buffer.baseAddress, buffer.count, wait ? 0 : Int32(MSG_DONTWAIT),
                                           &truncated, &fds)
        if n < 0 { throw SystemError("recvmsg") }
        return received(n, truncated: truncated, fds: fds)
    }

    /// As `receive`, retrying EINTR: for a client, which acts on no signal.
    public static func receiveRetryingEINTR(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer)
        throws(SystemError) -> Received {
        var truncated: Int32 = 0
        var fds: Int32 = 0
        let n = try Syscall.retrying("recvmsg", { cposix_recv_datagram(fd, buffer.baseAddress, buffer.count, &truncated, &fds) })
        return received(n, truncated: truncated, fds: fds)
    }

    @inline(__always)
    private static func received(_ n: Int, truncated: Int32, fds: Int32) -> Received {
        if fds > 0 { return .fdsAttached(count: Int(fds), bytes: n) }
        if truncated != 0 { return .truncated }
        if n == 0 { return .hangUp }
        return .datagram(n)
    }

    /// Sends one datagram; EINTR is retried unless a stop signal is pending.
    /// `wait: false` adds MSG_DONTWAIT: EAGAIN when the peer's queue is full.
    public static func send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, passing fdToPass: Int32 = -1,
                            wait: Bool = true) throws(SystemError) {
        switch Syscall.valueOrErrno(retryingEINTRWhile: { cposix_stop_signal() == 0 }, {
            cposix_send_datagram_flags(fd, bytes.baseAddress, bytes.count, fdToPass, wait ? 0 : Int32(MSG_DONTWAIT))
        }) {
        case .success(let n) where n == bytes.count: return
        case .success(let n): throw SystemError("sendmsg (short: \(n) of \(bytes.count))", errno: EMSGSIZE)
        case .failure(let error): throw SystemError("sendmsg", errno: error.errno)
        }
    }

    public static func send(_ fd: Int32, _ bytes: [UInt8], passing fdToPass: Int32 = -1, wait: Bool = true) throws(SystemError) {
        var failure: SystemError?
        // SAFETY: the view lives for sendmsg, which copies the bytes.
        bytes.withUnsafeBytes { raw in
            do throws(SystemError) { try send(fd, raw, passing: fdToPass, wait: wait) } catch { failure = error }
        }
        if let failure { throw failure }
    }
}
