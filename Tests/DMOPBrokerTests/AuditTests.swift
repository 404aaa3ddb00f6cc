// SPDX-License-Identifier: MIT
import DMOPClient
import DMOPCore
@testable import DMOPTrusted
@testable import DMOPPosix
import DMOPSandbox
@testable import DMOPServer
import DMOPSimulation
import DMOPTooling
import Foundation
import Glibc
import Logging
import Testing

@Suite("logfmt: quoting and the parser")
struct LogfmtTests {
    @Test("values with spaces, quotes, backslashes, = and control characters read back as written")
    func roundTrip() throws {
        let values = ["plain", "/etc/dmop broker/web.policy:3", "say \"no\"", #"back\slash"#, "a=b", "",
                      "line\nbreak\ttab\r", "bell\u{07}", "ünïcode wörds"]
        for value in values {
            let line = "event: key=\(Logfmt.quote(value)) next=1"
            let pairs = try Logfmt.parse(line)
            #expect(pairs == [.init("event:", nil), .init("key", value), .init("next", "1")], "\(line)")
        }
        #expect(Logfmt.quote("plain") == "plain")
        #expect(Logfmt.quote("a b") == #""a b""#)
        #expect(Logfmt.quote(#"x"y\z"#) == #""x\"y\\z""#)
    }

    @Test("a broken quote, an unknown escape or a quote inside a bare value is an error")
    func strict() {
        #expect(throws: Logfmt.ParseError.self) { try Logfmt.parse(#"a="open"#) }
        #expect(throws: Logfmt.ParseError.self) { try Logfmt.parse(#"a="bad \q escape""#) }
        #expect(throws: Logfmt.ParseError.self) { try Logfmt.parse(#"a=x"y"#) }
        #expect(throws: Logfmt.ParseError.self) { try Logfmt.parse(#"a="x"y"#) }
    }
}

/// The lines of an audit file, each parsed; fails the test on any line that
/// is not logfmt.
func parsedAuditLines(_ text: String) -> [(line: String, pairs: [Logfmt.Pair])] {
    text.split(separator: "\n").map(String.init).compactMap { line in
        do {
            return (line, try Logfmt.parse(line))
        } catch {
            Issue.record("not logfmt (\(error)): \(line)")
            return nil
        }
    }
}

func value(_ key: String, _ pairs: [Logfmt.Pair]) -> String? { pairs.first { $0.key == key }?.value ?? nil }

@Suite("audit lines: one builder, golden bytes", .serialized)
struct AuditGoldenTests {
    /// A handler that is not an AuditLogHandler, so BrokerServer takes the
    /// Logger path; it hands lines to the same builder.
    struct OtherHandler: LogHandler {
        let writer: AuditLineWriter
        var logLevel: Logger.Level = .info
        var metadata: Logger.Metadata = [:]
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) { writer.log(event.level, event.message.description, metadata: metadata) }
    }

    static let peer = SeqPacket.Credentials(pid: 42, uid: 1000, gid: 1000)

    /// The bytes one server writes for a forward, a refusal and an
    /// aggregated forward line, through the fast path or the Logger.
    func lines(fastPath: Bool) throws -> String {
        let directory = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("audit").path
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        try #require(fd >= 0)
        let writer = AuditLineWriter(sink: .writing(to: fd), label: "dmop-broker[7]")
        writer.fixClock(seconds: 1_796_000_000, nanos: 123_456_000)
        let logger = fastPath ? Logger(label: "x") { _ in AuditLogHandler(writer: writer) }
                              : Logger(label: "x") { _ in OtherHandler(writer: writer) }
        let policy = try TestSupport.policy("allow set_isa_irq_level\n", file: "/etc/dmop broker/a \"b\".policy")
        let hypervisor = try RestrictedHypervisor.restrictAndVerify(
            SimulatedHypervisor(guestDomid: 5, vcpus: 1, recordPath: nil), to: 5)
        do {
            let each = BrokerServer(policy: policy, hypervisor: hypervisor, peerUID: nil, audit: logger,
                                    auditOptions: AuditOptions(forwards: .each))
            #expect((each.auditLines != nil) == fastPath)
            let op = try #require(Catalogue.op(named: "set_isa_irq_level"))
            each.auditForward(Self.peer, 5, op, policy.rules[0].location, 0, 17)
            each.auditRefusal(Self.peer, 6, "nr_vcpus", .opNotAllowed, -EPERM, 3, "nr_vcpus: not in \"a b\\c\"")
            each.auditLines?.flush()
            let aggregate = BrokerServer(policy: policy, hypervisor: hypervisor, peerUID: nil, audit: logger,
                                         auditOptions: AuditOptions(forwards: .aggregate))
            aggregate.auditForward(Self.peer, 5, op, policy.rules[0].location, 0, 5)
            aggregate.auditForward(Self.peer, 5, op, policy.rules[0].location, -22, 9)
            aggregate.flushForwardCounts(Self.peer, now: aggregate.counters.intervalStart + 2_000_000_000, force: true)
        }
        writer.flush()
        close(fd)
        return try String(contentsOfFile: path, encoding: .utf8)
    }

    @Test("the fast path and the Logger path write the same bytes, and those bytes are these")
    func golden() throws {
        let fast = try lines(fastPath: true)
        let logger = try lines(fastPath: false)
        #expect(fast == logger)
        let rule = #""/etc/dmop broker/a \"b\".policy:1""#
        let expected = """
        2026-11-30T00:53:20.123456Z dmop-broker[7] info peer_pid=42 peer_uid=1000 domid=5 op=set_isa_irq_level verdict=forward rule=\(rule) rc=0 latency_us=17
        2026-11-30T00:53:20.123456Z dmop-broker[7] notice peer_pid=42 peer_uid=1000 domid=6 op=nr_vcpus verdict=refuse reason=OP_NOT_ALLOWED rule=- rc=-1 latency_us=3 detail="nr_vcpus: not in \\"a b\\\\c\\""
        2026-11-30T00:53:20.123456Z dmop-broker[7] info forwards: peer_pid=42 peer_uid=1000 domid=5 op=set_isa_irq_level verdict=forward rule=\(rule) count=2 failed=1 latency_us_max=9 seconds=2.0

        """
        #expect(fast == expected)
        for (_, pairs) in parsedAuditLines(fast) {
            #expect(value("rule", pairs) == "-" || value("rule", pairs) == "/etc/dmop broker/a \"b\".policy:1")
        }
    }
}

@Suite("audit channels, failure handling, signals (broker processes)", .serialized)
struct AuditChannelTests {
    /// A policy in a directory and file whose names hold spaces.
    static func spacedPolicy(in directory: URL) throws -> String {
        let folder = directory.appendingPathComponent("my policies")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let path = folder.appendingPathComponent("qemu xen.policy").path
        try FileManager.default.copyItem(atPath: TestSupport.policyPath("qemu-xen.policy"), toPath: path)
        return path
    }

    @Test("every kind of line the broker writes parses as logfmt; paths with spaces come back whole")
    func everyLineKindParses() throws {
        let scratch = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: scratch) }
        let policy = try Self.spacedPolicy(in: scratch)
        for forwards in ["each", "aggregate"] {
            let broker = try BrokerUnderTest(mode: .listen, policy: policy,
                                             extraArguments: ["--audit-forwards", forwards, "--guest-name", "web 1"])
            let client = try broker.connect()
            _ = try client.invoke("set_isa_irq_level", ["isa_irq": 4, "level": 1])
            _ = try client.invoke("nr_vcpus")
            _ = try client.invoke("set_isa_irq_level", ["isa_irq": 99, "level": 1])
            for _ in 0..<6 { _ = try client.invoke("remote_shutdown", ["reason": 0]) }
            kill(broker.pid, SIGUSR1)
            // The signal is handled between requests: wait for its line, so
            // the next request is not counted in it on a loaded machine.
            for _ in 0..<500 where !broker.auditLog.contains(" stats: ") { usleep(10_000) }
            _ = try client.invoke("set_isa_irq_level", ["isa_irq": 4, "level": 0])
            client.close()
            // A protocol error: a datagram with a bad magic.
            let raw = try broker.rawConnection()
            try SeqPacket.send(raw.rawValue, [UInt8](repeating: 0xff, count: 16))
            var buffer = [UInt8](repeating: 0, count: 256)
            _ = buffer.withUnsafeMutableBytes { read(raw.rawValue, $0.baseAddress, $0.count) }
            raw.close()
            usleep(100_000)
            kill(broker.pid, SIGHUP)
            usleep(100_000)
            kill(broker.pid, SIGTERM)
            #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 0)
            let log = broker.auditLog
            let lines = parsedAuditLines(log)
            let kinds: [(String, (String) -> Bool)] = [
                ("restriction", { $0.contains(" restriction verified: ") }),
                ("starting", { $0.contains(" starting ") }),
                ("confined", { $0.contains(" confined: ") }),
                ("session start", { $0.contains(" session start: ") }),
                ("forward", { $0.contains("verdict=forward") }),
                ("refusal", { $0.contains("verdict=refuse reason=OP_NOT_ALLOWED") }),
                ("condition", { $0.contains("verdict=refuse reason=CONDITION_FAILED") }),
                ("rate limit", { $0.contains(" rate limit: ") }),
                ("stats", { $0.contains(" stats: ") }),
                ("protocol error", { $0.contains(" protocol error: ") }),
                ("session end", { $0.contains(" session end: ") }),
                ("SIGHUP", { $0.contains(" SIGHUP: ") }),
            ]
            for (kind, test) in kinds {
                #expect(lines.contains { test($0.line) }, "\(forwards): no \(kind) line in: \(log)")
            }
            let start = try #require(lines.first { $0.line.contains(" session start: ") })
            #expect(value("policy", start.pairs) == policy)
            #expect(lines.first { $0.line.contains(" starting ") }.map { value("guest", $0.pairs) } == "web 1")
            let forward = try #require(lines.first { $0.line.contains("verdict=forward") })
            #expect(value("rule", forward.pairs)?.hasPrefix(policy + ":") == true)
            if forwards == "aggregate" {
                let shutdowns = lines.first { $0.line.contains("op=remote_shutdown verdict=forward") }
                #expect(forward.line.contains(" forwards: ") && shutdowns.map { value("count", $0.pairs) } == "4", "\(log)")
            } else {
                #expect(value("latency_us", forward.pairs) != nil)
            }
            let stats = try #require(lines.first { $0.line.contains(" stats: ") })
            #expect(value("forwarded.set_isa_irq_level", stats.pairs) == "1")
            #expect(value("refused.nr_vcpus", stats.pairs) == "1")
            #expect(value("rate_limited", stats.pairs) == "2")
            #expect(broker.isAlive == false)
        }
    }

    @Test("--audit-log FILE: written instead of stderr; SIGHUP reopens it after a rename, under seccomp enforce")
    func fileChannelAndReopen() throws {
        let scratch = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: scratch) }
        let path = scratch.appendingPathComponent("audit.log").path
        let broker = try BrokerUnderTest(extraArguments: ["--audit-log", path, "--audit-forwards", "each"])
        let client = try broker.connect()
        #expect(try client.invoke("set_isa_irq_level", ["isa_irq": 4, "level": 1]).result == 0)
        try FileManager.default.moveItem(atPath: path, toPath: path + ".1")
        kill(broker.pid, SIGHUP)
        #expect(try client.invoke("set_isa_irq_level", ["isa_irq": 5, "level": 1]).result == 0)
        client.close()
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 0, "\(broker.auditLog)")
        let old = try String(contentsOfFile: path + ".1", encoding: .utf8)
        let fresh = try String(contentsOfFile: path, encoding: .utf8)
        #expect(old.contains(" confined: ") && old.contains(" session start: ") && old.contains("op=set_isa_irq_level verdict=forward"))
        #expect(fresh.contains("SIGHUP: reopened \(path)"), "\(fresh)")
        #expect(fresh.contains("verdict=forward") && fresh.contains(" session end: "), "\(fresh)")
        #expect(!broker.auditLog.contains("verdict=forward"), "stderr holds no audit line: \(broker.auditLog)")
        _ = parsedAuditLines(old + fresh)
    }

    /// The batched forward lines' time bound is 0.5 s (and the tick that ends
    /// a blocking receive comes every 0.125 s): the line must be in the file within 1 s of
    /// the reply; 2 s is the bound checked, with slack for a loaded machine.
    @Test("--audit-forwards each: a forward line reaches the file within 2 s while the client idles, before any hang-up",
          arguments: [BrokerUnderTest.Mode.socketPair, .listen])
    func batchedForwardFlushedWhenIdle(mode: BrokerUnderTest.Mode) throws {
        let scratch = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: scratch) }
        let path = scratch.appendingPathComponent("audit.log").path
        let broker = try BrokerUnderTest(mode: mode, extraArguments: ["--audit-log", path, "--audit-forwards", "each"])
        let client = try broker.connect()
        #expect(try client.invoke("set_isa_irq_level", ["isa_irq": 4, "level": 1]).result == 0)
        let replied = Date()
        var log = ""
        while !log.contains("op=set_isa_irq_level verdict=forward") && Date().timeIntervalSince(replied) < 2 {
            usleep(20_000)
            log = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        }
        #expect(log.contains("op=set_isa_irq_level verdict=forward"), "no forward line 2 s after the reply: \(log)")
        #expect(broker.isAlive)
        client.close()
        // A listening broker waits for the next client: stop it.
        if mode == .listen { kill(broker.pid, SIGTERM) }
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 0, "\(broker.auditLog)")
    }

    /// A flood of forwards into a FILE under a 256 KiB RLIMIT_FSIZE.
    func flood(failure: String) throws -> (replies: [Reply], log: String, size: Int) {
        let scratch = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: scratch) }
        let path = scratch.appendingPathComponent("audit.log").path
        let broker = try BrokerUnderTest(extraArguments: ["--audit-log", path, "--audit-forwards", "each",
                                                          "--audit-failure", failure],
                                         launcher: ["/usr/bin/prlimit", "--fsize=262144", "--"])
        let client = try broker.connect()
        var replies: [Reply] = []
        for i in 0..<3000 {
            replies.append(try client.invoke("set_isa_irq_level", ["isa_irq": UInt64(i % 16), "level": 1]))
        }
        client.close()
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 0, "\(broker.auditLog)")
        let log = try String(contentsOfFile: path, encoding: .utf8)
        let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        return (replies, log, size)
    }

    @Test("256 KiB file limit, refuse: forwards stop with AUDIT_UNAVAILABLE, refusals and the session end are in the log")
    func floodRefuse() throws {
        let (replies, log, size) = try flood(failure: "refuse")
        #expect(size <= 262_144)
        let forwarded = replies.filter { $0.origin == .hypervisor }.count
        let refused = replies.filter { $0.reason == .auditUnavailable }.count
        #expect(forwarded > 500 && refused > 500 && forwarded + refused == 3000, "forwarded \(forwarded), refused \(refused)")
        // Every forward that happened has its line.
        #expect(log.components(separatedBy: "verdict=forward").count - 1 == forwarded)
        #expect(log.contains("verdict=refuse reason=AUDIT_UNAVAILABLE"))
        let end = try #require(parsedAuditLines(log).last { $0.line.contains(" session end: ") }, "\(log.suffix(2000))")
        #expect(value("forwarded", end.pairs) == String(forwarded))
    }

    @Test("256 KiB file limit, continue: every forward goes through; lost lines are counted in the session end")
    func floodContinue() throws {
        let (replies, log, size) = try flood(failure: "continue")
        #expect(size <= 262_144)
        #expect(replies.allSatisfy { $0.origin == .hypervisor && $0.result == 0 })
        let end = try #require(parsedAuditLines(log).last { $0.line.contains(" session end: ") }, "\(log.suffix(2000))")
        let lost = Int(value("audit_lost", end.pairs) ?? "") ?? 0
        let written = log.components(separatedBy: "verdict=forward").count - 1
        #expect(lost > 0 && lost + written == 3000, "lost \(lost), written \(written)")
    }

    static var journalRunning: Bool { AuditSink.daemonListens(at: AuditChannel.journalSocket) }

    @Test("--audit-log journal: the real journald stores the entries with their fields and kernel-attested _PID",
          .enabled(if: journalRunning || ProcessInfo.processInfo.environment["CI"] != nil))
    func journal() throws {
        try #require(Self.journalRunning, "journald is not running (.ci/run starts it)")
        let broker = try BrokerUnderTest(extraArguments: ["--audit-log", "journal", "--audit-forwards", "each",
                                                          "--guest-name", "guest-\(getpid())"])
        let client = try broker.connect()
        _ = try client.invoke("set_isa_irq_level", ["isa_irq": 4, "level": 1])
        _ = try client.invoke("nr_vcpus")
        func entries(until done: ([[String: Any]]) -> Bool) throws -> [[String: Any]] {
            var entries: [[String: Any]] = []
            for _ in 0..<50 {
                let out = try TestSupport.run("/usr/bin/journalctl", ["-o", "json", "--no-pager", "_PID=\(broker.pid)",
                                                                    "SYSLOG_IDENTIFIER=dmop-broker"]).output
                entries = out.split(separator: "\n").compactMap {
                    try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
                }
                if done(entries) { break }
                usleep(100_000)
            }
            return entries
        }
        // journald reads _COMM from /proc when an entry arrives: only the
        // entries of a live process have it. Forwards are flushed within a
        // second of an idle broker, so wait for them before hanging up.
        let whileAlive = try entries { $0.contains { $0["DMOP_VERDICT"] as? String == "forward" } }
        let forward = try #require(whileAlive.first { $0["DMOP_VERDICT"] as? String == "forward" }, "\(whileAlive)")
        client.close()
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 0)
        let entries = try entries { $0.contains { ($0["MESSAGE"] as? String)?.hasPrefix("session end:") == true } }
        #expect(entries.contains { ($0["MESSAGE"] as? String)?.hasPrefix("session end:") == true }, "\(entries)")
        #expect(forward["DMOP_OP"] as? String == "set_isa_irq_level")
        #expect(forward["DMOP_DOMID"] as? String == "5" && forward["DMOP_RC"] as? String == "0")
        #expect(forward["PRIORITY"] as? String == "6" && forward["_COMM"] as? String == "dmop-broker")
        #expect(forward["DMOP_GUEST"] as? String == "guest-\(getpid())")
        let refusal = try #require(entries.first { $0["DMOP_VERDICT"] as? String == "refuse" })
        #expect(refusal["DMOP_REASON"] as? String == "OP_NOT_ALLOWED" && refusal["PRIORITY"] as? String == "5")
        // A session end's reason has a field of its own.
        let end = try #require(entries.first { ($0["MESSAGE"] as? String)?.hasPrefix("session end:") == true })
        #expect(end["DMOP_END_REASON"] as? String == "hang-up" && end["DMOP_REASON"] == nil, "\(end)")
        #expect(!broker.auditLog.contains("verdict="), "stderr holds no audit line")
    }
}

/// A real rsyslogd on a private socket in a scratch directory, writing
/// what it parsed of each RFC 5424 message to a file.
final class Rsyslog {
    static let path = "/usr/sbin/rsyslogd"
    let directory = TestSupport.temporaryDirectory()
    var socket: String { directory.appendingPathComponent("log").path }
    var output: String { directory.appendingPathComponent("out.log").path }
    let pid: pid_t

    init() throws {
        let d = directory.path
        let conf = """
        global(workDirectory="\(d)")
        module(load="imuxsock" SysSock.Use="off")
        input(type="imuxsock" Socket="\(d)/log" UseSpecialParser="off" IgnoreTimestamp="off")
        template(name="fields" type="string" string="sev=%syslogseverity% facility=%syslogfacility% app=%app-name% procid=%procid% ts=%timereported:::date-rfc3339% msg=%msg%\\n")
        action(type="omfile" file="\(d)/out.log" template="fields")
        """
        try conf.write(toFile: d + "/rsyslog.conf", atomically: true, encoding: .utf8)
        pid = try Spawn.start(Self.path, [Self.path, "-n", "-f", d + "/rsyslog.conf", "-i", d + "/rsyslogd.pid"],
                              stderrPath: d + "/rsyslogd.err")
        for _ in 0..<100 where access(socket, F_OK) != 0 { usleep(50_000) }
        guard access(socket, F_OK) == 0 else { throw TestFailure("rsyslogd made no socket") }
    }

    deinit {
        kill(pid, SIGTERM)
        _ = try? Spawn.wait(pid)
        try? FileManager.default.removeItem(at: directory)
    }
}

@Suite("syslog channel against the real rsyslogd", .serialized)
struct SyslogChannelTests {
    static var rsyslogInstalled: Bool { access(Rsyslog.path, X_OK) == 0 }

    @Test("--audit-log syslog:SOCKET: RFC 5424 with the severity of each line, app dmop-broker, the broker's pid, the logfmt body",
          .enabled(if: rsyslogInstalled || ProcessInfo.processInfo.environment["CI"] != nil))
    func syslog() throws {
        try #require(Self.rsyslogInstalled, "rsyslog is not installed (scripts/log-daemons installs it)")
        let daemon = try Rsyslog()
        let broker = try BrokerUnderTest(extraArguments: ["--audit-log", "syslog:\(daemon.socket)", "--audit-forwards", "each"])
        let client = try broker.connect()
        _ = try client.invoke("set_isa_irq_level", ["isa_irq": 4, "level": 1])
        _ = try client.invoke("nr_vcpus")
        client.close()
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 0)
        var text = ""
        for _ in 0..<100 {
            text = (try? String(contentsOfFile: daemon.output, encoding: .utf8)) ?? ""
            if text.contains("msg=session end:") { break }
            usleep(50_000)
        }
        let lines = text.split(separator: "\n").map(String.init)
        let forward = try #require(lines.first { $0.contains("verdict=forward") }, "\(text)")
        #expect(forward.hasPrefix("sev=6 facility=3 app=dmop-broker procid=\(broker.pid) ts=20"), "\(forward)")
        let refusal = try #require(lines.first { $0.contains("verdict=refuse") })
        #expect(refusal.hasPrefix("sev=5 facility=3 app=dmop-broker procid=\(broker.pid) "))
        let body = String(refusal[refusal.range(of: "msg=")!.upperBound...])
        let pairs = try Logfmt.parse(body)
        #expect(value("op", pairs) == "nr_vcpus" && value("reason", pairs) == "OP_NOT_ALLOWED")
        #expect(!broker.auditLog.contains("verdict="), "stderr holds no audit line")
    }
}

@Suite("seccomp rules of the audit channels")
struct AuditSeccompTests {
    @Test("FILE: write, openat, dup3 and fstat only on the audit fds, openat with exactly the audit flags")
    func fileRules() throws {
        let descriptors = SandboxDescriptors(privcmd: nil, client: .inherited(fd: 3),
                                             audit: .file(fd: 7, directory: 8))
        let profile = try SeccompProfile(descriptors: descriptors, mode: .enforce)
        let openat = try #require(profile.allowed.first { $0.name == "openat" })
        #expect(openat.conditions.map(\.comparison) == [.equal(8), .equal(UInt64(SeccompProfile.auditFileFlags))])
        #expect(SeccompProfile.auditFileFlags == AuditSink.fileFlags)
        #expect(profile.allowed.contains { $0.name == "write" && $0.conditions.map(\.comparison) == [.equal(7)] })
        #expect(profile.allowed.contains { $0.name == "dup3" && $0.conditions.first?.index == 1
                && $0.conditions.map(\.comparison) == [.equal(7)] })
        #expect(profile.allowed.contains { $0.name == "fstat" && $0.conditions.map(\.comparison) == [.equal(7)] })
        #expect(!profile.allowedNames.contains("lseek") && !profile.allowedNames.contains("newfstatat"))
        #expect(!profile.allowedNames.contains("sendto"))
    }

    @Test("journal/syslog: sendto only on the audit socket; stderr channel: none of these")
    func socketRules() throws {
        let socket = try SeccompProfile(descriptors: SandboxDescriptors(privcmd: nil, client: .inherited(fd: 3),
                                                                        audit: .socket(fd: 9)), mode: .enforce)
        let sendto = try #require(socket.allowed.first { $0.name == "sendto" })
        #expect(sendto.conditions.map(\.comparison) == [.equal(9)])
        #expect(!socket.allowedNames.contains("openat") && !socket.allowedNames.contains("fstat"))
        let plain = try SeccompProfile(descriptors: SandboxDescriptors(privcmd: nil, client: .inherited(fd: 3)), mode: .enforce)
        for name in ["sendto", "openat", "fstat", "dup3"] { #expect(!plain.allowedNames.contains(name)) }
    }
}
