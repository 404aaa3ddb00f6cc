// SPDX-License-Identifier: MIT
import DMOPPosix
import DMOPTooling
import Glibc

/// Prints one line to stderr and exits 1: a benchmark that measured a
/// failing request would report nonsense, so any failure stops the run.
func fail(_ message: String) -> Never {
    fflush(nil)
    if let directory = temporaryDirectory { _ = rmdirAll(directory) }
    var line = "dmop-bench: \(message)\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }  // SAFETY: write copies the bytes inside the closure.
    exit(1)
}

/// The bench's private directory (audit logs), removed on every exit path.
/// Single-threaded program: set once at start.
// SAFETY: dmop-bench runs on one thread (its children are processes), so
// no two accesses can race.
nonisolated(unsafe) var temporaryDirectory: String?

// MARK: - CPU affinity

enum Affinity {
    /// sched_{get,set}affinity are behind _GNU_SOURCE, which Swift's Glibc
    /// module does not define; glibc exports them
    /// all the same, so take them from the loaded libc.
    typealias Call = @convention(c) (pid_t, Int, UnsafeMutablePointer<cpu_set_t>?) -> Int32
    static let getAffinity = libc("sched_getaffinity")
    static let setAffinity = libc("sched_setaffinity")

    static func libc(_ name: String) -> Call {
        // A nil handle is RTLD_DEFAULT: the symbol as the process resolves it.
        guard let address = dlsym(nil, name) else { fail("libc has no \(name)") }
        // SAFETY: a data pointer to a C function, both one machine word; Call
        // is glibc's prototype (int (pid_t, size_t, cpu_set_t *), size_t
        // being Int's size on the 64-bit targets the bench runs on).
        return unsafeBitCast(address, to: Call.self)
    }

    /// The CPUs this process may run on, in order.
    static func allowed() -> [Int] {
        var set = cpu_set_t()
        guard getAffinity(0, MemoryLayout<cpu_set_t>.size, &set) == 0 else {
            fail("sched_getaffinity: \(SystemError("sched_getaffinity"))")
        }
        var cpus: [Int] = []
        // SAFETY: reads within the set's own bytes (cpu / 8 < raw.count), inside the closure.
        withUnsafeBytes(of: &set) { raw in
            for cpu in 0..<(raw.count * 8) where raw[cpu / 8] & UInt8(1 << (cpu % 8)) != 0 { cpus.append(cpu) }
        }
        return cpus
    }

    /// Pins every thread of `pid` (0: this thread) to `cpus`. cpu_set_t is
    /// an array of unsigned long, so on little-endian x86-64 CPU n is bit
    /// n % 8 of byte n / 8; CPU_SET is a macro Swift cannot import.
    static func set(_ pid: pid_t, _ cpus: [Int]) {
        var set = cpu_set_t()
        // SAFETY: every cpu comes from allowed(), or is checked to be one of
        // them, so cpu / 8 < the set's size; written inside the closure.
        withUnsafeMutableBytes(of: &set) { raw in
            for cpu in cpus { raw[cpu / 8] |= UInt8(1 << (cpu % 8)) }
        }
        let threads = pid == 0 ? [0] : threadIDs(of: pid)
        for tid in threads {
            guard setAffinity(tid, MemoryLayout<cpu_set_t>.size, &set) == 0 else {
                fail("sched_setaffinity(\(tid), \(cpus)): \(SystemError("sched_setaffinity"))")
            }
        }
    }

    static func threadIDs(of pid: pid_t) -> [pid_t] {
        guard let directory = opendir("/proc/\(pid)/task") else { return [pid] }
        defer { closedir(directory) }
        var tids: [pid_t] = []
        while let entry = readdir(directory) {
            // SAFETY: a copy of d_name, read within its bytes up to the NUL.
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if let tid = pid_t(name) { tids.append(tid) }
        }
        return tids.isEmpty ? [pid] : tids
    }
}

// MARK: - Scheduling class

enum Scheduling {
    /// SCHED_FIFO priority 1 for every thread of `pid` (0: this thread), or
    /// back to SCHED_OTHER. The bench's round trips run this way so that
    /// other work on the machine (builds, other tenants) cannot preempt the
    /// measured processes mid-round-trip; echo and broker alike.
    static func set(_ pid: pid_t, realtime: Bool) -> Bool {
        var parameter = sched_param()
        parameter.sched_priority = realtime ? 1 : 0
        let policy = realtime ? SCHED_FIFO : SCHED_OTHER
        for tid in pid == 0 ? [0] : Affinity.threadIDs(of: pid) {
            if sched_setscheduler(tid, policy, &parameter) != 0 { return false }
        }
        return true
    }
}

// MARK: - Child processes

enum Children {
    /// Moves `fd` to a number >= 10 (close-on-exec) so that posix_spawn's
    /// dup2 onto 3 or 4 in the child never meets the same number (dup2 onto
    /// itself would keep CLOEXEC and the child would not get the fd).
    static func high(_ fd: consuming FileDescriptor) -> FileDescriptor {
        let moved = fcntl(fd.rawValue, F_DUPFD_CLOEXEC, 10)
        guard moved >= 0 else { fail("fcntl(F_DUPFD_CLOEXEC): \(SystemError("fcntl"))") }
        fd.close()
        return FileDescriptor(owning: moved)
    }

    /// A SOCK_SEQPACKET socketpair with both ends at high numbers.
    static func seqpacketPair() -> SocketPair {
        do {
            let pair = try SeqPacket.pair()
            return SocketPair(first: high(pair.first), second: high(pair.second))
        } catch {
            fail("socketpair: \(error)")
        }
    }

    /// Waits for `pid` to exit, up to `seconds`; then SIGKILL (only our own
    /// child). Returns the raw wait status.
    @discardableResult
    static func reap(_ pid: pid_t, seconds: Int = 10) -> Int32 {
        var status: Int32 = 0
        for _ in 0..<(seconds * 100) {
            switch Syscall.valueOrErrno({ waitpid(pid, &status, WNOHANG) }) {
            case .success(pid): return status
            case .success: usleep(10_000)
            case .failure: return -1
            }
        }
        kill(pid, SIGKILL)
        return (try? Spawn.wait(pid)) ?? -1
    }
}

/// The echo child: `dmop-bench echo-server` on the other end of a socketpair.
final class EchoServer {
    let pid: pid_t
    /// Our end of the socketpair; nil once stopped.
    private(set) var connection: FileDescriptor?

    init(pid: pid_t, connection: consuming FileDescriptor) {
        self.pid = pid
        self.connection = Optional(connection)
    }

    static func start(executable: String, replySize: Int) -> EchoServer {
        let pair = Children.seqpacketPair()
        let mine = pair.first, theirs = pair.second
        let pid: pid_t
        do {
            pid = try Spawn.start(executable, [executable, "echo-server", "--fd", "3", "--reply-size", String(replySize)],
                                  fds: [(theirs.rawValue, 3)])
        } catch {
            fail("spawn echo server: \(error)")
        }
        theirs.close()
        return EchoServer(pid: pid, connection: mine)
    }

    func stop() {
        connection = nil
        let status = Children.reap(pid)
        if status != 0 { fail("echo server ended with \(Spawn.describe(status: status))") }
    }
}

/// A `dmop-broker serve --hypervisor simulated --socket-fd 3 --ready-fd 4`
/// child, as a toolstack starts one: stderr (the audit log) to a file.
final class BrokerProcess {
    let pid: pid_t
    /// Our end of the socketpair; nil once handed to a client.
    var connection: FileDescriptor?
    /// posix_spawn to "ready\n" read from the ready pipe.
    let startupNanoseconds: UInt64

    init(pid: pid_t, connection: consuming FileDescriptor, startupNanoseconds: UInt64) {
        self.pid = pid
        self.connection = Optional(connection)
        self.startupNanoseconds = startupNanoseconds
    }

    static let domid: UInt16 = 5

    /// `arguments`: more broker options; `forwardsEach`: one audit line per
    /// forward instead of the default aggregation.
    static func start(_ config: BenchConfig, auditLog defaultLog: String, record: String? = nil,
                      arguments extra: [String] = [], forwardsEach: Bool = true) -> BrokerProcess {
        let auditLog = config.auditLog ?? defaultLog
        let pair = Children.seqpacketPair()
        let mine = pair.first, theirs = pair.second
        var pipeFDs: [Int32] = [-1, -1]
        guard pipe(&pipeFDs) == 0 else { fail("pipe: \(SystemError("pipe"))") }
        let readEnd = Children.high(FileDescriptor(owning: pipeFDs[0]))
        let writeEnd = Children.high(FileDescriptor(owning: pipeFDs[1]))
        var arguments = [config.broker, "serve", "--hypervisor", "simulated", "--domid", String(domid),
                         "--policy", config.policy, "--socket-fd", "3", "--ready-fd", "4"]
        // One line per request, the costlier audit mode, as the figures
        // before aggregation were measured.
        if forwardsEach { arguments += ["--audit-forwards", "each"] }
        arguments += extra
        if let record { arguments += ["--simulated-record", record] }
        if geteuid() == 0 { arguments.append("--allow-root") }
        // A toolstack's environment for its helpers: no backtracer, UTC, a fixed PATH.
        let environment = ["SWIFT_BACKTRACE=enable=no", "TZ=UTC", "PATH=/usr/bin:/bin"]

        let started = now()
        let pid: pid_t
        do {
            pid = try Spawn.start(config.broker, arguments, fds: [(theirs.rawValue, 3), (writeEnd.rawValue, 4)],
                                  stderrPath: auditLog, environment: environment)
        } catch {
            fail("spawn \(config.broker): \(error)")
        }
        writeEnd.close()
        var poller = pollfd(fd: readEnd.rawValue, events: Int16(POLLIN), revents: 0)
        var ready = [UInt8](repeating: 0, count: 8)
        var got = 0
        while got < 6 {
            guard case .success(1) = Syscall.valueOrErrno({ poll(&poller, 1, 15_000) }) else {
                fail("broker not ready within 15 s; audit log \(auditLog)")
            }
            // SAFETY: got < 6 < the buffer's 8 bytes, so read writes within
            // it, inside the closure; baseAddress is non-nil (not empty).
            let n = ready.withUnsafeMutableBytes { buffer in
                (try? Syscall.retrying("read", { read(readEnd.rawValue, buffer.baseAddress! + got, buffer.count - got) })) ?? -1
            }
            guard n > 0 else {
                fail("broker closed its ready fd without 'ready' (\(Spawn.describe(status: Children.reap(pid, seconds: 2)))); audit log \(auditLog)")
            }
            got += n
        }
        let elapsed = now() &- started
        guard ready[0..<6] == Array("ready\n".utf8)[...] else { fail("broker wrote \(ready[0..<got]) on its ready fd") }
        theirs.close()
        return BrokerProcess(pid: pid, connection: mine, startupNanoseconds: elapsed)
    }

    /// Closes our end if we still hold it; the broker sees the hang-up and
    /// must exit 0.
    func stop() {
        connection = nil
        let status = Children.reap(pid)
        if status != 0 { fail("broker \(pid) ended with \(Spawn.describe(status: status))") }
    }
}

// MARK: - CPU time

enum CPUTime {
    /// Nanoseconds on CPU so far (first field of schedstat), 0 if unknown.
    static func thisThread() -> UInt64 { read("/proc/thread-self/schedstat") }
    static func process(_ pid: pid_t) -> UInt64 { read("/proc/\(pid)/schedstat") }

    private static func read(_ path: String) -> UInt64 {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var buffer = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        // SAFETY: read fills at most the tuple's 64 contiguous bytes, and only
        // the n it wrote are parsed, inside the closure.
        return withUnsafeMutableBytes(of: &buffer) { raw -> UInt64 in
            let n = Glibc.read(fd, raw.baseAddress, raw.count)
            guard n > 0 else { return 0 }
            var value: UInt64 = 0
            for byte in raw.prefix(n) {
                guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { break }
                value = value &* 10 &+ UInt64(byte - UInt8(ascii: "0"))
            }
            return value
        }
    }
}

// MARK: - Memory

struct MemoryFigures {
    /// VmRSS of /proc/PID/status, kB.
    let rssKiB: Int
    /// Private_Dirty of /proc/PID/smaps_rollup, kB: what this one broker
    /// costs that no other broker can share.
    let privateDirtyKiB: Int

    static func of(_ pid: pid_t) -> MemoryFigures {
        MemoryFigures(rssKiB: field("VmRSS:", in: "/proc/\(pid)/status"),
                      privateDirtyKiB: field("Private_Dirty:", in: "/proc/\(pid)/smaps_rollup"))
    }

    private static func field(_ name: String, in path: String) -> Int {
        let bytes: [UInt8]
        do { bytes = try Files.read(path) } catch { fail("\(error)") }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix(name) {
            let digits = line.dropFirst(name.count).filter { $0.isNumber }
            if let value = Int(digits) { return value }
        }
        fail("no \(name) in \(path)")
    }
}

// MARK: - The machine

enum Machine {
    static func description() -> String {
        var cpu = "unknown CPU"
        if let bytes = try? Files.read("/proc/cpuinfo", limit: 4 << 20) {
            for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("model name") {
                if let colon = line.firstIndex(of: ":") {
                    cpu = String(line[line.index(after: colon)...].drop { $0 == " " })
                }
                break
            }
        }
        var names = utsname()
        uname(&names)
        // SAFETY: a copy of the release field, read within its bytes up to the NUL.
        let release = withUnsafeBytes(of: names.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let online = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        var hypervisor = ""
        if let bytes = try? Files.read("/proc/cpuinfo", limit: 4 << 20),
           String(decoding: bytes, as: UTF8.self).contains(" hypervisor") {
            hypervisor = ", virtual machine"
        }
        return "\(cpu), \(online) CPUs online\(hypervisor), Linux \(release)"
    }
}
