// SPDX-License-Identifier: MIT
import CPosix
import DMOPCore
import DMOPPosix
import Glibc
import Logging

/// Where the audit trail goes (`serve --audit-log`).
public enum AuditChannel: Equatable, Sendable, CustomStringConvertible {
    /// fd 2 as inherited (the default; under libxl that is QEMU's log too).
    case stderr
    /// journald's native protocol on its socket.
    case journal(socket: String)
    /// RFC 5424 datagrams on a syslog socket.
    case syslog(socket: String)
    /// A file of its own, opened (O_APPEND) before confinement.
    case file(String)

    public static let journalSocket = "/run/systemd/journal/socket"
    public static let syslogSocket = "/dev/log"

    /// "stderr", "journal", "syslog", "syslog:SOCKET" (a daemon listening
    /// elsewhere than /dev/log), or a file path (with a slash).
    public init?(argument: String) {
        switch argument {
        case "stderr": self = .stderr
        case "journal": self = .journal(socket: Self.journalSocket)
        case "syslog": self = .syslog(socket: Self.syslogSocket)
        default:
            if argument.hasPrefix("syslog:"), argument.count > 7 {
                self = .syslog(socket: String(argument.dropFirst(7)))
            } else if argument.contains("/") {
                self = .file(argument)
            } else {
                return nil
            }
        }
    }

    public var description: String {
        switch self {
        case .stderr: "stderr"
        case .journal: "journal"
        case .syslog(let socket): socket == Self.syslogSocket ? "syslog" : "syslog:\(socket)"
        case .file(let path): path
        }
    }
}

/// How much a line matters when room runs out. A file channel keeps a
/// reserve below its size limit: forwards stop first, refusals next, and the
/// session, confinement and lost-line lines still fit at the end.
public enum AuditImportance: Int, Sendable {
    /// Forwards (one by one or aggregated) and stats.
    case bulk
    /// Refusals, protocol errors, summaries of suppressed lines.
    case refusal
    /// Start, confinement, session start and end, lost lines, errors.
    case essential
}

/// The channel's descriptor and what is known of its health: the lines it
/// lost and whether the last write failed. The broker is single-threaded;
/// the Logger handler holds this class, hence @unchecked Sendable.
// SAFETY: each sink is used by one thread only: the broker's single
// request loop, or the one test, tool or benchmark that made it (the shared
// `standardError` only in single-threaded programs); no state is shared.
public final class AuditSink: @unchecked Sendable {
    public let channel: AuditChannel
    /// The descriptor the lines are written to (fixed number, for seccomp).
    public private(set) var fd: Int32
    /// FILE: the directory, for reopening on SIGHUP (openat pinned to it).
    public let directoryFd: Int32
    let fileName: String
    /// syslog/journal: the daemon's address, built once.
    private let address: UnsafeMutablePointer<sockaddr_un>?
    private let pid = getpid()
    /// journald and syslog identifier.
    public static let identifier = "dmop-broker"
    /// The guest's name when the toolstack gave it (journal field).
    public var guestName: String?

    /// Regular file: bytes it may hold (RLIMIT_FSIZE) and its size now.
    private var sizeLimit: UInt64?
    private var size: UInt64 = 0
    /// Room kept below sizeLimit: bulk lines stop at `bulkReserve` before
    /// it, refusals at `refusalReserve`.
    static let bulkReserve: UInt64 = 64 << 10
    static let refusalReserve: UInt64 = 8 << 10

    public private(set) var lost: UInt64 = 0
    /// Lost since the last line that said so.
    public private(set) var unreportedLost: UInt64 = 0
    public private(set) var lastError: Int32 = 0
    /// The last attempt failed (or the file has no room for bulk lines).
    public var failing: Bool { lastFailed }
    /// Stored privately, read through `failing`: every request asks, and
    /// state no other module can reach needs no dynamic exclusivity check.
    private var lastFailed = false

    private init(channel: AuditChannel, fd: Int32, directoryFd: Int32 = -1, fileName: String = "",
                 address: UnsafeMutablePointer<sockaddr_un>? = nil) {
        self.channel = channel
        self.fd = fd
        self.directoryFd = directoryFd
        self.fileName = fileName
        self.address = address
        if fd >= 0 { noteFileSize() }
    }

    // SAFETY: the address is this sink's alone (handed over by open) and
    // freed once, here; sockaddr_un is trivial, so it needs no deinitialize.
    deinit { address?.deallocate() }

    /// fd 2, for tests and for the messages before a channel is chosen.
    public static let standardError = AuditSink(channel: .stderr, fd: 2)

    /// A sink writing to an fd the caller owns (tests, benchmarks).
    public static func writing(to fd: Int32) -> AuditSink { AuditSink(channel: .stderr, fd: fd) }

    /// Opens the channel. FILE is created 0640 if missing and appended to;
    /// the sockets are checked to exist. `owner`: the uid and gid the broker
    /// will drop to. A root broker hands its FILE to them, so that after the
    /// drop it can open the file logrotate's `create` makes in its place
    /// (logrotate gives the new file the old one's owner and mode); a file
    /// with other names (hard links) is never handed over.
    public static func open(_ channel: AuditChannel, owner: (uid: UInt32, gid: UInt32)? = nil) throws(SystemError) -> AuditSink {
        switch channel {
        case .stderr:
            return AuditSink(channel: channel, fd: 2)
        case .file(let path):
            let slash = path.lastIndex(of: "/")!
            let directory = slash == path.startIndex ? "/" : String(path[..<slash])
            let name = String(path[path.index(after: slash)...])
            guard !name.isEmpty else { throw SystemError("audit log \(path): not a file name", errno: EISDIR) }
            let directoryFd = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard directoryFd >= 0 else { throw SystemError("audit log directory \(directory)") }
            let fd = openat(directoryFd, name, fileFlags, 0o640)
            guard fd >= 0 else {
                let error = SystemError("audit log \(path)")
                Glibc.close(directoryFd)
                throw error
            }
            if let owner, geteuid() == 0 {
                var status = stat()
                if cposix_fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG,
                   status.st_uid != owner.uid || status.st_gid != owner.gid {
                    guard status.st_nlink == 1 else {
                        Glibc.close(fd)
                        Glibc.close(directoryFd)
                        throw SystemError("audit log \(path): the file has \(status.st_nlink) names (hard links); it is not handed to the broker's user", errno: EMLINK)
                    }
                    guard fchown(fd, owner.uid, owner.gid) == 0 else {
                        let error = SystemError("audit log \(path): fchown to the broker's user \(owner.uid):\(owner.gid)")
                        Glibc.close(fd)
                        Glibc.close(directoryFd)
                        throw error
                    }
                }
            }
            return AuditSink(channel: channel, fd: fd, directoryFd: directoryFd, fileName: name)
        case .journal(let socket), .syslog(let socket):
            var status = stat()
            guard stat(socket, &status) == 0 else { throw SystemError("\(channel) socket \(socket)") }
            guard status.st_mode & S_IFMT == S_IFSOCK else {
                throw SystemError("\(channel) socket \(socket): not a socket", errno: ENOTSOCK)
            }
            let fd = Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw SystemError("socket") }
            // SAFETY: one sockaddr_un, initialised (all zeros) at once; on
            // every error path below it is freed once, else it belongs to
            // the sink, whose deinit frees it.
            let address = UnsafeMutablePointer<sockaddr_un>.allocate(capacity: 1)
            address.initialize(to: sockaddr_un())
            address.pointee.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(socket.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: address.pointee.sun_path) else {
                address.deallocate()  // SAFETY: not yet handed to a sink; freed once.
                Glibc.close(fd)
                throw SystemError("\(channel) socket \(socket)", errno: ENAMETOOLONG)
            }
            // SAFETY: bytes.count < sun_path's size (checked above), so the
            // copy fits and the zeroed bytes after it end the path with a NUL.
            withUnsafeMutableBytes(of: &address.pointee.sun_path) { $0.copyBytes(from: bytes) }
            // A socket file outlives its daemon (a restored snapshot, a
            // crash): say so at start rather than refuse every request.
            guard let refusal = probe(address) else {
                return AuditSink(channel: channel, fd: fd, address: address)
            }
            address.deallocate()  // SAFETY: no sink took it; probe is done with it; freed once.
            Glibc.close(fd)
            throw SystemError("\(channel) socket \(socket): no daemon listens", errno: refusal)
        }
    }

    /// Whether a daemon receives on the datagram socket at `address`: nil
    /// when a throwaway socket connects, else the errno.
    private static func probe(_ address: UnsafeMutablePointer<sockaddr_un>) -> Int32? {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return errno }
        defer { Glibc.close(fd) }
        // SAFETY: the caller's sockaddr_un is initialised and larger than the
        // one sockaddr rebound; the kernel reads socklen bytes, all of the
        // sockaddr_un, only during the call.
        let connected = address.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
        return connected == 0 ? nil : errno
    }

    /// Whether a daemon receives on the datagram socket at `path`.
    public static func daemonListens(at path: String) -> Bool {
        (try? open(.syslog(socket: path))) != nil
    }

    /// The flags of every open of a FILE channel, first and on SIGHUP; the
    /// seccomp rule for openat names exactly these.
    public static let fileFlags: Int32 = O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW

    /// A regular file: remembers its size; the cap comes from
    /// `limitFileSize`. Anything else: no cap.
    private func noteFileSize() {
        var status = stat()
        if cposix_fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG {
            size = UInt64(max(status.st_size, 0))
            isRegularFile = true
        }
    }

    /// FILE: the file's size and whether it still has a name, from fstat,
    /// never from a count of what the broker wrote: copytruncate shrinks the
    /// file behind the broker's back, and rotation (compress, a rotate count
    /// reached, rm) may delete it.
    private func refreshFile() {
        // Only the FILE channel's fd has an fstat rule in the seccomp filter
        // (stderr may be a regular file too: its count stays the broker's).
        guard isRegularFile, case .file = channel else { return }
        var status = stat()
        guard cposix_fstat(fd, &status) == 0 else { return }
        size = UInt64(max(status.st_size, 0))
        fileGone = status.st_nlink == 0
    }

    /// The file the fd names was deleted and no reopen has worked since:
    /// what is written there is lost, so every line first tries a reopen.
    public private(set) var fileGone = false

    /// Whether the channel is a regular file (RLIMIT_FSIZE applies).
    public private(set) var isRegularFile = false

    /// Called before confinement with the RLIMIT_FSIZE the broker will run
    /// under (the smaller of the inherited limit and its own): past it a
    /// write fails with EFBIG, so the reserves are kept below it.
    public func limitFileSize(to limit: UInt64) {
        guard isRegularFile, limit > 0 else { return }
        sizeLimit = limit
    }

    /// Whether a line of `count` bytes of `importance` fits the file's room.
    /// When the known size says no, fstat says whether the file really is
    /// that large (after copytruncate it is not).
    func fits(_ count: Int, _ importance: AuditImportance) -> Bool {
        guard let sizeLimit else { return true }
        let reserve: UInt64 = switch importance {
        case .bulk: Self.bulkReserve
        case .refusal: Self.refusalReserve
        case .essential: 0
        }
        if size + UInt64(count) + reserve <= sizeLimit { return true }
        refreshFile()
        return size + UInt64(count) + reserve <= sizeLimit
    }

    /// Whether forwards can be audited now: the last write worked and a
    /// file has room for bulk lines.
    public var acceptsBulk: Bool { !lastFailed && fits(512, .bulk) }

    /// Writes one finished line (`line`, ending in "\n"; the message starts
    /// at `messageStart`, after timestamp, label and level). False when it
    /// was lost (counted).
    @discardableResult
    public func write(_ line: UnsafeBufferPointer<UInt8>, messageStart: Int, level: Logger.Level,
                      importance: AuditImportance, lines: Int = 1) -> Bool {
        guard fits(line.count, importance) else {
            if importance == .bulk { lastFailed = true }
            return lose(EFBIG, lines: lines)
        }
        // The daemons' senders slice the line from here: keep it inside the
        // line (unsafe buffer slices are not bounds-checked in release builds).
        let messageStart = min(max(messageStart, 0), line.count)
        let result: Int32
        switch channel {
        case .stderr: result = writeAll(line)
        case .file: result = isRegularFile ? writeFile(line) : writeAll(line)
        case .journal: result = sendJournal(line, messageStart: messageStart, level: level)
        case .syslog: result = sendSyslog(line, messageStart: messageStart, level: level)
        }
        guard result == 0 else { return lose(result, lines: lines) }
        lastFailed = false
        return true
    }

    /// stderr and files take several lines in one write; the daemons take
    /// one entry per datagram.
    public var isStream: Bool {
        switch channel {
        case .stderr, .file: true
        case .journal, .syslog: false
        }
    }

    private func lose(_ error: Int32, lines: Int = 1) -> Bool {
        lost += UInt64(lines)
        unreportedLost += UInt64(lines)
        lastError = error
        lastFailed = true
        return false
    }

    /// After a line saying how many were lost has been written.
    func lostReported() { unreportedLost = 0 }

    /// 0, or the errno of the write that failed; `size` counts what the
    /// file got either way. Out of line, so that the writers' per-request
    /// `flush`, which usually finds nothing to write, stays small enough to
    /// inline.
    @inline(never)
    private func writeAll(_ line: UnsafeBufferPointer<UInt8>) -> Int32 {
        var written = 0
        defer { size += UInt64(written) }
        do {
            // SAFETY: a raw view of the caller's line, which outlives the write.
            try Syscall.writeAll(fd, UnsafeRawBufferPointer(line), written: &written)
            return 0
        } catch {
            return error.errno
        }
    }

    /// A regular FILE: 0 once the line is in a file that has a name. A line
    /// that went to a deleted file is written again to the file reopened by
    /// name; when no reopen works, the errno (the caller counts it lost).
    @inline(never)
    private func writeFile(_ line: UnsafeBufferPointer<UInt8>) -> Int32 {
        if fileGone, let error = reopenFile() { return error }
        let result = writeAll(line)
        guard result == 0 else { return result }
        refreshFile()
        guard fileGone else { return 0 }
        if let error = reopenFile() { return error }
        return writeAll(line)
    }

    /// Opens the file again by name in its directory and moves it onto the
    /// audit fd number: nil, or the errno of the step that failed (the old
    /// file is then still the one written).
    private func reopenFile() -> Int32? {
        let fresh = openat(directoryFd, fileName, Self.fileFlags, 0o640)
        guard fresh >= 0 else { return errno }
        guard cposix_dup3_cloexec(fresh, fd) == fd else {
            let error = errno
            Glibc.close(fresh)
            return error
        }
        Glibc.close(fresh)
        // The file may be new (rotated) or the same one: fstat says its size.
        refreshFile()
        return nil
    }

    private func send(_ bytes: UnsafeRawBufferPointer) -> Int32 {
        guard let address else { return EBADF }
        // SAFETY: the sink's sockaddr_un (initialised in open, freed only in
        // deinit) is larger than the one sockaddr rebound; sendto reads it and
        // the caller's bytes only during the call.
        let sent = Syscall.valueOrErrno {
            address.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL), $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        switch sent {
        case .success: return 0
        case .failure(let error): return error.errno
        }
    }

    /// syslog(3) severities of the levels the broker uses.
    static func severity(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    /// The journal fields taken from a line's logfmt pairs.
    static let journalFields: [(key: String, field: String)] = [
        ("domid", "DMOP_DOMID"), ("op", "DMOP_OP"), ("verdict", "DMOP_VERDICT"), ("reason", "DMOP_REASON"),
        ("rule", "DMOP_RULE"), ("rc", "DMOP_RC"), ("count", "DMOP_COUNT"), ("failed", "DMOP_FAILED"),
        ("peer_pid", "DMOP_PEER_PID"), ("peer_uid", "DMOP_PEER_UID"),
    ]

    /// The DMOP_* fields of one message. A session end's reason (hang-up,
    /// signal, ...) is no refusal reason: it goes to DMOP_END_REASON, so
    /// DMOP_REASON only ever holds the reason names of dmop-broker(8).
    static func journalFieldPairs(_ message: String) -> [(field: String, value: String)] {
        guard let pairs = try? Logfmt.parse(message) else { return [] }
        let sessionEnd = message.hasPrefix("session end:")
        return journalFields.compactMap { key, field in
            guard let value = pairs.first(where: { $0.key == key })?.value else { return nil }
            return (sessionEnd && key == "reason" ? "DMOP_END_REASON" : field, value)
        }
    }

    /// One journald entry: MESSAGE (the line after its timestamp, label and
    /// level), PRIORITY, SYSLOG_IDENTIFIER, SYSLOG_PID, the DMOP_* fields
    /// of the line and DMOP_GUEST. journald adds _PID, _UID, _COMM itself,
    /// from the kernel.
    private func sendJournal(_ line: UnsafeBufferPointer<UInt8>, messageStart: Int, level: Logger.Level) -> Int32 {
        // SAFETY: messageStart is within the line (write clamps it), so the
        // slice, which drops the final newline, lies in the caller's line,
        // and String copies it.
        let message = String(decoding: UnsafeBufferPointer(rebasing: line[messageStart..<max(messageStart, line.count - 1)]),
                             as: UTF8.self)
        var entry: [UInt8] = []
        func field(_ name: String, _ value: String) {
            entry += Array(name.utf8)
            if value.utf8.contains(UInt8(ascii: "\n")) {
                // The binary form: name, newline, little-endian length, value.
                entry.append(UInt8(ascii: "\n"))
                withUnsafeBytes(of: UInt64(value.utf8.count).littleEndian) { entry += $0 }  // SAFETY: the 8 bytes are copied inside the closure.
            } else {
                entry.append(UInt8(ascii: "="))
            }
            entry += Array(value.utf8)
            entry.append(UInt8(ascii: "\n"))
        }
        field("MESSAGE", message)
        field("PRIORITY", String(Self.severity(level)))
        field("SYSLOG_IDENTIFIER", Self.identifier)
        field("SYSLOG_PID", String(pid))
        if let guestName { field("DMOP_GUEST", guestName) }
        for (name, value) in Self.journalFieldPairs(message) { field(name, value) }
        return entry.withUnsafeBytes { send($0) }  // SAFETY: the view is used only by sendto, inside the closure.
    }

    /// RFC 5424: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`, facility
    /// daemon; the host is left to the daemon ("-"), the timestamp is the
    /// line's own.
    private func sendSyslog(_ line: UnsafeBufferPointer<UInt8>, messageStart: Int, level: Logger.Level) -> Int32 {
        var datagram = Array("<\(3 * 8 + Self.severity(level))>1 ".utf8)
        // Both slices lie in the line: the first is cut to its length, the
        // second starts at messageStart, which write keeps within it.
        datagram += line[0..<min(AuditClock.timestampLength, line.count)]
        datagram += Array(" - \(Self.identifier) \(pid) - - ".utf8)
        datagram += line[messageStart..<max(messageStart, line.count - 1)]
        return datagram.withUnsafeBytes { send($0) }  // SAFETY: the view is used only by sendto, inside the closure.
    }

    /// SIGHUP: a FILE channel is opened again by name (after rotation) and
    /// moved onto the same fd number; other channels have nothing to
    /// reopen. Returns what happened, for the audit line.
    public func reopen() -> String {
        guard case .file(let path) = channel else { return "nothing to reopen (\(channel))" }
        if let error = reopenFile() {
            refreshFile()
            guard fileGone else { return "reopen \(path) failed: \(Errno.name(error)) (\(String(cString: strerror(error)))); still writing the old file" }
            // Nowhere to write: forwards are refused (--audit-failure
            // refuse) or their lines counted lost until a reopen works.
            lastFailed = true
            lastError = error
            return "reopen \(path) failed: \(Errno.name(error)) (\(String(cString: strerror(error)))); the old file is deleted, lines are lost until the file can be opened again"
        }
        lastFailed = false
        return "reopened \(path)"
    }
}
