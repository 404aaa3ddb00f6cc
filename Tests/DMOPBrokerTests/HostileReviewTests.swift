// SPDX-License-Identifier: MIT
import DMOPClient
import DMOPCore
import DMOPPosix
import DMOPTooling
import Foundation
import Glibc
import Testing

/// The findings of a hostile review in the layers around the
/// decision (reconnect floods, lost signals, held slots, orphaned ioreq
/// servers), each against a real broker process.
@Suite("Hostile review: reconnections, signals, handshake, ioreq servers", .serialized)
struct HostileReviewTests {
    static let intx = Hostile.header("set_pci_intx_level", ["device": 3, "intx": 0, "level": 1])

    @Test("rate limits and the audit throttle hold across reconnections (--listen): no fresh bucket per session")
    func rateLimitAcrossReconnections() throws {
        let directory = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let policy = directory.appendingPathComponent("rate.policy").path
        try "allow set_pci_intx_level rate 1/s burst 4\nallow set_isa_irq_level\n"
            .write(toFile: policy, atomically: true, encoding: .utf8)
        let broker = try BrokerUnderTest(mode: .listen, policy: policy)
        var admitted = 0, limited = 0
        let started = Date()
        let sessions = 60
        for index in 0..<sessions {
            let peer = HostilePeer(try broker.rawConnection())
            try peer.hello()
            try peer.request(id: UInt32(index), [Self.intx])
            guard case .message(.reply(let reply)) = peer.receive() else { throw TestFailure("no reply in session \(index)") }
            if reply.result == 0 && reply.origin == .hypervisor { admitted += 1 }
            if reply.reason == .rateLimited && reply.result == -EAGAIN { limited += 1 }
            peer.close()
        }
        let seconds = Date().timeIntervalSince(started)
        #expect(admitted + limited == sessions)
        #expect(admitted >= 4 && Double(admitted) <= 4 + (seconds + 1), "\(admitted) admitted in \(seconds) s over \(sessions) sessions")
        kill(broker.pid, SIGTERM)
        Hostile.expectExit(broker, 0)
        let intxOp = Int(TestSupport.op("set_pci_intx_level").number)
        #expect(broker.records.filter { $0.op == intxOp }.count == admitted)
        // Session lines are bounded per interval too, and the rest counted.
        let log = broker.auditLog.split(separator: "\n")
        let starts = log.filter { $0.contains("session start:") }.count
        #expect(starts <= AuditLimits.sessionLinesPerSecond * (Int(seconds) + 2), "\(starts) session start lines")
        let suppressed = log.compactMap { line -> Int? in
            guard let range = line.range(of: "suppressed the start and end lines of ") else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }.reduce(0, +)
        #expect(starts + suppressed == sessions, "\(starts) logged + \(suppressed) counted")
        let rateCounted = log.compactMap { line -> Int? in
            guard line.contains("rate limit: op=set_pci_intx_level"), let range = line.range(of: "refused=") else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }.reduce(0, +)
        #expect(rateCounted == limited)
    }

    @Test("SIGTERM right after a reply, many times: the broker always exits at once")
    func stopSignalNeverLost() throws {
        let deadline = Date().addingTimeInterval(20)
        var tries = 0, late = 0
        while tries < 40, Date() < deadline {
            tries += 1
            let (broker, peer) = try Hostile.session()
            try peer.request(id: 1, [Hostile.isaIrq(1)])
            _ = peer.receive()
            // The broker is between its reply and its next wait: the window
            // in which a flag check followed by a blocking call loses it.
            if tries % 2 == 0 { usleep(UInt32(tries % 7) * 20) }
            kill(broker.pid, SIGTERM)
            let status = broker.waitForExit(timeout: 2)
            if BrokerUnderTest.exitCode(status) != 0 { late += 1 }
        }
        #expect(late == 0, "\(late) of \(tries) brokers not gone 2 s after SIGTERM")
    }

    @Test("SIGTERM while the reply cannot be sent (a client that never reads): the broker exits at once")
    func stopSignalWhileSendBlocked() throws {
        let (broker, peer) = try Hostile.session()
        // Fill the socket: requests whose replies nobody reads.
        for id in 0..<4000 {
            var bytes = Wire.encodeRequest(domid: 5, requestID: UInt32(id), buffers: [Hostile.isaIrq(1)])
            let sent = bytes.withUnsafeMutableBytes { Glibc.send(peer.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
            if sent < 0 { break }
        }
        usleep(300_000)
        kill(broker.pid, SIGTERM)
        #expect(BrokerUnderTest.exitCode(broker.waitForExit(timeout: 3)) == 0, "audit log:\n\(broker.auditLog)")
    }

    @Test("SIGTERM while a client always has the next request queued: the broker still stops")
    func stopSignalUnderPipelinedFlood() throws {
        let (broker, peer) = try Hostile.session()
        var next: UInt32 = 0
        for _ in 0..<50 {
            try peer.request(id: next, [Hostile.isaIrq(1)])
            next += 1
        }
        let deadline = Date().addingTimeInterval(5)
        var signalled = false
        while Date() < deadline {
            guard case .message(.reply) = peer.receive(timeoutMs: 2_000) else { break }
            if next == 200 && !signalled {
                kill(broker.pid, SIGTERM)
                signalled = true
            }
            // Stays 50 ahead, so the broker never finds its socket empty.
            do { try peer.request(id: next, [Hostile.isaIrq(1)]) } catch { break }
            next += 1
        }
        #expect(signalled)
        #expect(BrokerUnderTest.exitCode(broker.waitForExit(timeout: 3)) == 0, "\(next) requests sent; audit log:\n\(broker.auditLog)")
    }

    @Test("SIGTERM while a client sends a request every 0.2 s: the broker stops within seconds")
    func stopSignalUnderSlowDrip() throws {
        let (broker, peer) = try Hostile.session()
        var signalledAt: Date?
        var id: UInt32 = 0
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            do { try peer.request(id: id, [Hostile.isaIrq(1)]) } catch { break }
            guard case .message(.reply) = peer.receive(timeoutMs: 2_000) else { break }
            id += 1
            if id == 3 {
                kill(broker.pid, SIGTERM)
                signalledAt = Date()
            }
            usleep(200_000)
        }
        let stopped = signalledAt.map { Date().timeIntervalSince($0) } ?? -1
        #expect(BrokerUnderTest.exitCode(broker.waitForExit(timeout: 3)) == 0)
        #expect(signalledAt != nil && stopped < 4, "stopped \(stopped) s after SIGTERM, \(id) requests served")
    }

    @Test("--listen: a connection that sends no HELLO is dropped after --hello-timeout, audited, and the next client is served")
    func helloTimeout() throws {
        let broker = try BrokerUnderTest(mode: .listen, extraArguments: ["--hello-timeout", "1"])
        let silent = HostilePeer(try broker.rawConnection())
        let started = Date()
        #expect(silent.receive(timeoutMs: 5_000) == .hangUp)
        let waited = Date().timeIntervalSince(started)
        #expect(waited >= 0.9 && waited < 4, "dropped after \(waited) s")
        #expect(broker.auditLog.contains("hello timeout: peer_pid="))
        #expect(broker.auditLog.contains("reason=hello-timeout"))
        let next = try broker.connect()
        #expect(try next.invoke("set_isa_irq_level", ["isa_irq": 1]).result == 0)
        // After the HELLO an idle client keeps its session.
        usleep(1_500_000)
        #expect(try next.invoke("set_isa_irq_level", ["isa_irq": 2]).result == 0)
        next.close()
        kill(broker.pid, SIGTERM)
        Hostile.expectExit(broker, 0)
    }

    @Test("the servers a session created are destroyed at its end, each audited (--socket-fd)")
    func ioreqServersDestroyedAtSessionEnd() throws {
        let broker = try BrokerUnderTest()
        let client = try broker.connect()
        var ids: [UInt16] = []
        for _ in 0..<3 { ids.append(try client.createIoreqServer()) }
        _ = try client.perform("destroy_ioreq_server", ["id": UInt64(ids[1])])
        client.close()
        Hostile.expectExit(broker, 0)
        // create x3, the client's destroy, then the broker's two.
        #expect(broker.records.map(\.op) == [1, 1, 1, 6, 6, 6])
        #expect(broker.records.allSatisfy { $0.rc == 0 })
        let lines = broker.auditLog.split(separator: "\n").filter { $0.contains("ioreq server destroyed at session end") }
        #expect(lines.count == 2)
        #expect(lines.contains { $0.contains("id=\(ids[0]) rc=0") } && lines.contains { $0.contains("id=\(ids[2]) rc=0") })
    }

    @Test("--listen: ten sessions that each create a server and hang up never exhaust Xen's 8 servers")
    func crashedSessionsLeaveNoServers() throws {
        let broker = try BrokerUnderTest(mode: .listen)
        for index in 0..<10 {
            let client = try broker.connect()
            let reply = try client.invoke("create_ioreq_server")
            #expect(reply.result == 0, "session \(index): create_ioreq_server \(reply.result)")
            client.close()
        }
        kill(broker.pid, SIGTERM)
        Hostile.expectExit(broker, 0)
        #expect(broker.records.filter { $0.op == 1 }.allSatisfy { $0.rc == 0 })
    }
}

/// Hostile review, finding 5: refusals come before side effects.
@Suite("Hostile review: a refused start leaves nothing behind")
struct RefusedStartTests {
    func serve(in directory: URL, _ extra: [String]) throws -> (status: Int32, output: String, left: [String]) {
        let run = try runBroker(["serve", "--hypervisor", "simulated", "--domid", "5",
                                 "--policy", TestSupport.policyPath("qemu-xen.policy"),
                                 "--listen", directory.appendingPathComponent("broker.sock").path,
                                 "--simulated-record", directory.appendingPathComponent("record.jsonl").path] + extra)
        let left = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        return (run.status, run.output, left)
    }

    @Test("as root: no --user (70), an unknown user (64), a root --user (70): no socket, no record file",
          .enabled(if: geteuid() == 0))
    func refusalsLeaveNothing() throws {
        for (extra, status) in [([String](), Int32(70)), (["--user", "no-such-user-dmop"], 64), (["--user", "0:0"], 70)] {
            let directory = TestSupport.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let run = try serve(in: directory, extra)
            #expect(run.status == status, "\(extra): \(run.output)")
            #expect(run.left.isEmpty, "\(extra) left \(run.left) behind")
        }
    }

    @Test("a --simulated-record path that is a symlink is refused (exit 75, O_NOFOLLOW): its target untouched, nothing left",
          .enabled(if: geteuid() == 0))
    func recordSymlinkRefused() throws {
        let directory = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let target = directory.appendingPathComponent("target").path
        try "precious\n".write(toFile: target, atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: directory.appendingPathComponent("record.jsonl").path,
                                                   withDestinationPath: target)
        let run = try serve(in: directory, ["--allow-root"])
        #expect(run.status == 75, "\(run.output)")
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "precious\n")
        #expect(!run.left.contains("broker.sock"), "\(run.left)")
    }

    @Test("a listen socket bound before a refusal at confinement is removed", .enabled(if: geteuid() == 0))
    func socketRemovedOnConfinementFailure() throws {
        let directory = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        // A ready fd that is not open fails inside confinement, after bind.
        let run = try serve(in: directory, ["--allow-root", "--ready-fd", "57"])
        #expect(run.status != 0, "\(run.output)")
        #expect(!run.left.contains("broker.sock"), "\(run.left): \(run.output)")
    }
}

/// The audit bounds the tests rely on (AuditThrottle).
enum AuditLimits {
    static let sessionLinesPerSecond = 20
}

/// Hostile review, finding 1: nothing the broker does as root to its listen socket
/// follows a path another user can swap.
@Suite("Hostile review: the listen socket against a local attacker", .serialized)
struct ListenSocketRaceTests {
    static let attackerSource = """
    #define _GNU_SOURCE
    #include <errno.h>
    #include <grp.h>
    #include <stdio.h>
    #include <unistd.h>
    /* As uid 65534: swap the socket for a symlink to argv[2], forever. */
    int main(int argc, char **argv) {
        if (argc != 3 || setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0 || chdir(argv[1]) != 0) {
            perror("attacker set-up");
            return 2;
        }
        fprintf(stderr, "attacker ready\\n");
        for (;;) {
            if (unlink("broker.sock") == 0 || errno == ENOENT) (void)symlink(argv[2], "broker.sock");
        }
    }
    """

    /// The attacker binary, built once per test.
    func attacker(in directory: URL) throws -> String {
        let source = directory.appendingPathComponent("attacker.c").path
        let binary = directory.appendingPathComponent("attacker").path
        try Self.attackerSource.write(toFile: source, atomically: true, encoding: .utf8)
        let compile = try TestSupport.run("/usr/bin/cc", ["-std=gnu11", "-O1", "-o", binary, source])
        guard compile.status == 0 else { throw TestFailure("cc attacker.c: \(compile.output)") }
        return binary
    }

    /// Starts the broker `starts` times on `socketDirectory` while the
    /// attacker races; returns how many starts served and how many failed.
    func race(socketDirectory: URL, target: String, starts: Int, attackerBinary: String) throws -> (served: Int, refused: Int, log: String) {
        let attacker = try Spawn.start(attackerBinary, [attackerBinary, socketDirectory.path, target],
                                       stderrPath: socketDirectory.deletingLastPathComponent().appendingPathComponent("attacker.log").path,
                                       environment: ["PATH=/usr/bin:/bin"])
        defer {
            kill(attacker, SIGKILL)
            _ = try? Spawn.wait(attacker)
        }
        usleep(50_000)
        var served = 0, refused = 0, log = ""
        let deadline = Date().addingTimeInterval(20)
        for _ in 0..<starts where Date() < deadline {
            do {
                let broker = try BrokerUnderTest(mode: .listen, extraArguments: ["--peer-uid", "65534"],
                                                 listenPath: socketDirectory.appendingPathComponent("broker.sock").path)
                served += 1
                kill(broker.pid, SIGTERM)
                _ = broker.waitForExit(timeout: 5)
            } catch {
                refused += 1
                if log.isEmpty { log = "\(error)" }
            }
        }
        return (served, refused, log)
    }

    func makeTarget(in directory: URL) throws -> String {
        let target = directory.appendingPathComponent("root-secret").path
        try "secret\n".write(toFile: target, atomically: true, encoding: .utf8)
        chmod(target, 0o600)
        return target
    }

    func expectUntouched(_ target: String, sourceLocation: SourceLocation = #_sourceLocation) {
        var status = stat()
        #expect(stat(target, &status) == 0, sourceLocation: sourceLocation)
        #expect(status.st_uid == 0 && status.st_mode & 0o7777 == 0o600,
                "the target is now uid \(status.st_uid) mode \(String(status.st_mode & 0o7777, radix: 8))",
                sourceLocation: sourceLocation)
    }

    @Test("a socket directory writable by others without the sticky bit, or owned by another user, is refused (exit 69)",
          .enabled(if: geteuid() == 0))
    func unsafeDirectoriesRefused() throws {
        let base = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: base) }
        let open = base.appendingPathComponent("open")
        try FileManager.default.createDirectory(at: open, withIntermediateDirectories: true)
        chmod(open.path, 0o777)
        let theirs = base.appendingPathComponent("theirs")
        try FileManager.default.createDirectory(at: theirs, withIntermediateDirectories: true)
        chown(theirs.path, 65534, 65534)
        for (directory, words) in [(open, "writable by others without the sticky bit"), (theirs, "owned by uid 65534")] {
            let run = try runBroker(["serve", "--hypervisor", "simulated", "--domid", "5", "--allow-root",
                                     "--policy", TestSupport.policyPath("qemu-xen.policy"),
                                     "--listen", directory.appendingPathComponent("broker.sock").path])
            #expect(run.status == 69, "\(directory.lastPathComponent): \(run.output)")
            #expect(run.output.contains(words), "\(run.output)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).isEmpty)
        }
    }

    @Test("an attacker of another uid swapping the socket for a symlink, over many starts: root's file is never handed over",
          .enabled(if: geteuid() == 0), arguments: [0o777, 0o1777])
    func attackerRace(mode: Int) throws {
        let base = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: base) }
        chmod(base.path, 0o755)
        let secrets = base.appendingPathComponent("secrets")
        try FileManager.default.createDirectory(at: secrets, withIntermediateDirectories: true)
        chmod(secrets.path, 0o700)
        let target = try makeTarget(in: secrets)
        let binary = try attacker(in: base)
        let sockets = base.appendingPathComponent("sockets")
        try FileManager.default.createDirectory(at: sockets, withIntermediateDirectories: true)
        chmod(sockets.path, mode_t(mode))
        let outcome = try race(socketDirectory: sockets, target: target, starts: 40, attackerBinary: binary)
        expectUntouched(target)
        if mode == 0o777 {
            #expect(outcome.served == 0, "a broker served from a directory anyone can write")
        }
        #expect(outcome.served + outcome.refused > 0)
        // The attacker cannot remove a socket of root's in a sticky
        // directory: without the race a start there serves.
        if mode == 0o1777 {
            let attackerLog = (try? String(contentsOfFile: base.appendingPathComponent("attacker.log").path, encoding: .utf8)) ?? ""
            #expect(attackerLog.contains("attacker ready"), "\(attackerLog)")
        }
    }
}
