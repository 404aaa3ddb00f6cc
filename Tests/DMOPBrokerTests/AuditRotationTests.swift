// SPDX-License-Identifier: MIT
import DMOPClient
import DMOPCore
import DMOPTooling
import Foundation
import Glibc
import Testing

/// How logrotate rotates the audit file in one test.
enum RotationKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    /// The shipped /etc/logrotate.d/dmop-broker: rename, create, SIGHUP.
    case renameAndCreate
    /// copytruncate, as a configuration for /var/log/xen/*.log would do it.
    case copytruncate
    /// The shipped configuration with a rotate count of 2: the rotated file
    /// is compressed one rotation later and the oldest deleted.
    case compressAndDelete

    var testDescription: String { rawValue }
}

/// A confined broker (--user 65534:65534, under a 512 KiB RLIMIT_FSIZE)
/// writes its audit file while a client keeps it busy, and Debian's own
/// logrotate rotates the file four times, each time it holds 150 KiB: more
/// than the limit goes through, every forward and refusal line must be in
/// exactly one file, and no forward refused.
@Suite("audit file rotation with Debian's logrotate", .serialized)
struct AuditRotationTests {
    static let logrotate = "/usr/sbin/logrotate"
    static let rotations = 4
    static let fileSizeLimit = 512 << 10

    /// The shipped file with its paths pointed at the test's directory and
    /// broker: what logrotate runs is the package's configuration itself.
    static func configuration(_ kind: RotationKind, directory: String) throws -> String {
        switch kind {
        case .copytruncate:
            return "\(directory)/*.log {\n\tcopytruncate\n\trotate 10\n\tmissingok\n}\n"
        case .renameAndCreate, .compressAndDelete:
            var text = try String(contentsOf: TestSupport.packageRoot.appendingPathComponent("etc/logrotate.d/dmop-broker"),
                                  encoding: .utf8)
            #expect(text.contains("/var/log/dmop-broker/*.log {") && text.contains("/usr/sbin/dmop-broker serve"))
            text = text.replacingOccurrences(of: "/var/log/dmop-broker/", with: directory + "/")
            text = text.replacingOccurrences(of: "/usr/sbin/dmop-broker", with: TestSupport.brokerPath)
            if kind == .compressAndDelete {
                #expect(text.contains("\trotate 14\n"))
                text = text.replacingOccurrences(of: "\trotate 14\n", with: "\trotate 2\n")
            }
            return text
        }
    }

    /// Every line of every file in `directory` (.gz files through gzip -dc),
    /// by file name.
    static func snapshot(_ directory: String) throws -> [String: [String]] {
        var files: [String: [String]] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: directory) {
            let path = directory + "/" + name
            let text: String
            if name.hasSuffix(".gz") {
                let result = try TestSupport.run("/usr/bin/gzip", ["-dc", path])
                guard result.status == 0 else { throw TestFailure("gzip -dc \(path): \(result.output)") }
                text = result.output
            } else {
                text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            }
            files[name] = text.split(separator: "\n").map(String.init)
        }
        return files
    }

    /// Waits until the file at `path` holds `bytes` (rotation by size, so a
    /// loaded machine only makes the run longer); false after 120 s.
    static func grown(_ path: String, to bytes: Int) -> Bool {
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            var status = stat()
            if stat(path, &status) == 0 && Int(status.st_size) >= bytes { return true }
            usleep(20_000)
        }
        return false
    }

    @Test("a busy confined broker through four rotations by the real logrotate: each line in exactly one file, nothing refused",
          .enabled(if: geteuid() == 0), arguments: RotationKind.allCases)
    func rotation(kind: RotationKind) throws {
        guard access(Self.logrotate, X_OK) == 0 else {
            throw TestFailure("\(Self.logrotate) is missing: scripts/install-deps installs Debian's logrotate")
        }
        let logs = TestSupport.temporaryDirectory()
        let scratch = TestSupport.temporaryDirectory()
        defer {
            try? FileManager.default.removeItem(at: logs)
            try? FileManager.default.removeItem(at: scratch)
        }
        let audit = logs.appendingPathComponent("guest.log").path
        let config = scratch.appendingPathComponent("logrotate.conf").path
        let state = scratch.appendingPathComponent("logrotate.state").path
        try Self.configuration(kind, directory: logs.path).write(toFile: config, atomically: true, encoding: .utf8)
        // Both spellings the shipped postrotate must find: the wrapper's
        // --audit-log=FILE, and --audit-log FILE as written by hand.
        let channel = kind == .compressAndDelete ? ["--audit-log=" + audit] : ["--audit-log", audit]
        let broker = try BrokerUnderTest(extraArguments: ["--user", "65534:65534", "--peer-uid", "0"] + channel
                                                          + ["--audit-forwards", "each"],
                                         launcher: ["/usr/bin/prlimit", "--fsize=\(Self.fileSizeLimit)", "--"])
        var status = stat()
        #expect(stat(audit, &status) == 0 && status.st_uid == 65534, "the audit file is not the broker user's")

        // logrotate in a thread of its own, the client here.
        let logsPath = logs.path
        let snapshots = Shared<[[String: [String]]]>([])
        let outcomes = Shared<[String]>([])
        let windows = Shared<[(start: Date, end: Date)]>([])
        let done = Shared(false)
        let rotator = Thread {
            for _ in 0..<Self.rotations {
                guard Self.grown(audit, to: 150 << 10) else {
                    outcomes.set(outcomes.get() + ["the audit file did not reach 150 KiB in 120 s"])
                    break
                }
                do {
                    let before = try Self.snapshot(logsPath)
                    snapshots.set(snapshots.get() + [before])
                    let start = Date()
                    let result = try TestSupport.run(Self.logrotate, ["-f", "-s", state, config])
                    windows.set(windows.get() + [(start, Date())])
                    if result.status != 0 { outcomes.set(outcomes.get() + ["logrotate exit \(result.status): \(result.output)"]) }
                } catch {
                    outcomes.set(outcomes.get() + ["\(error)"])
                }
            }
            if !Self.grown(audit, to: 100 << 10) { outcomes.set(outcomes.get() + ["the last file did not reach 100 KiB in 120 s"]) }
            done.set(true)
        }
        rotator.start()
        let client = try broker.connect()
        var forwarded = 0
        var refused = 0
        var unavailable = 0
        var request = 0
        var forwardTimes: [Date] = []
        while !done.get() {
            request += 1
            // One refusal in 50 requests: under the one-by-one budget of
            // refusal lines, so each has its own line.
            let reply = request % 50 == 0 ? try client.invoke("nr_vcpus")
                : try client.invoke("set_isa_irq_level", ["isa_irq": UInt64(request % 16), "level": 1])
            if reply.reason == .auditUnavailable { unavailable += 1 }
            if request % 50 == 0 {
                refused += 1
            } else if reply.origin == .hypervisor && reply.result == 0 {
                forwarded += 1
                forwardTimes.append(Date())
            }
            usleep(1_000)
        }
        client.close()
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 0, "\(broker.auditLog)")
        #expect(outcomes.get().isEmpty, "\(outcomes.get())")
        let all = snapshots.get() + [try Self.snapshot(logs.path)]
        #expect(unavailable == 0, "\(unavailable) forwards refused with AUDIT_UNAVAILABLE")
        #expect(forwarded + refused == request, "forwarded \(forwarded) + refused \(refused) of \(request)")

        // No line twice at any moment; every line ever seen, once.
        var seen = Set<String>()
        for files in all {
            var here = Set<String>()
            for (name, lines) in files {
                for line in lines {
                    #expect(here.insert(line).inserted, "in two files (or twice) at once, second in \(name): \(line)")
                    seen.insert(line)
                }
            }
        }
        let forwardLines = seen.filter { $0.contains(" verdict=forward ") && !$0.contains(" forwards: ") }
        let refusalLines = seen.filter { $0.contains(" op=nr_vcpus verdict=refuse reason=OP_NOT_ALLOWED ") }
        let suppressed = seen.compactMap { line -> Int? in
            guard let range = line.range(of: " suppressed ") else { return nil }
            return Int(line[range.upperBound...].prefix(while: \.isNumber))
        }.reduce(0, +)
        let reopened = seen.filter { $0.contains(" SIGHUP: reopened ") }.count
        let final = try #require(parsedAuditLines(all.last?["guest.log"]?.joined(separator: "\n") ?? "")
            .last { $0.line.contains(" session end: ") }, "no session end line in \(all.last?.keys.sorted() ?? [])")
        #expect(value("audit_lost", final.pairs) == "0", "\(final.line)")
        #expect(value("forwarded", final.pairs) == String(forwarded), "\(final.line)")
        #expect(!seen.contains { $0.contains(" audit lines lost: ") })
        let bytes = seen.reduce(0) { $0 + $1.utf8.count + 1 }
        print("rotation \(kind.rawValue): \(request) requests, \(forwardLines.count) forward and \(refusalLines.count) refusal lines, \(bytes) bytes through \(Self.rotations) rotations, \(reopened) reopens; files at the end: \(all.last?.keys.sorted() ?? [])")
        // More than the file size limit went through: a count that never
        // shrinks would have refused forwards.
        #expect(bytes > Self.fileSizeLimit, "only \(bytes) bytes written; the test did not pass the size limit")

        switch kind {
        case .renameAndCreate, .compressAndDelete:
            #expect(forwardLines.count == forwarded, "forward lines \(forwardLines.count), forwards \(forwarded)")
            #expect(refusalLines.count + suppressed == refused, "refusal lines \(refusalLines.count) + suppressed \(suppressed), refusals \(refused)")
            #expect(reopened == Self.rotations, "\(reopened) reopens for \(Self.rotations) rotations")
            #expect(all.contains { $0.keys.contains { $0.hasSuffix(".gz") } }, "no compressed file seen")
            if kind == .compressAndDelete {
                #expect(all.last?.count == 3, "rotate 2 keeps the live file and two old ones: \(all.last?.keys.sorted() ?? [])")
            }
        case .copytruncate:
            // logrotate's copytruncate documents "a very small time slice
            // between copying the file and truncating it" in which lines are
            // lost. Only lines of forwards made while logrotate ran, or in
            // the batch's time bound (0.5 s, plus a receive tick) before,
            // may be missing.
            #expect(reopened == 0)
            let missingForwards = forwarded - forwardLines.count
            let runs = windows.get()
            let duringRotation = forwardTimes.filter { time in
                runs.contains { time >= $0.start.addingTimeInterval(-0.75) && time <= $0.end }
            }.count
            #expect(missingForwards >= 0 && missingForwards <= duringRotation,
                    "\(missingForwards) forward lines missing; \(duringRotation) forwards made during or just before a logrotate run")
            // A refusal line is written before the reply: one at most per run.
            #expect(refusalLines.count + suppressed >= refused - Self.rotations, "refusal lines \(refusalLines.count), refusals \(refused)")
            let lastOld = all.flatMap { $0.filter { $0.key != "guest.log" }.values.joined() }
            #expect(!lastOld.isEmpty, "no rotated copy")
            if missingForwards > 0 {
                print("copytruncate: \(missingForwards) forward line(s) lost in logrotate's copy-truncate window, as logrotate(8) warns (\(duringRotation) forwards made during or just before its runs)")
            }
        }
    }

    /// stderr may be a regular file too (QEMU's log under the wrapper with
    /// audit = stderr), but only the FILE channel's fd has an fstat rule:
    /// its room stays the broker's count, and a full file must not end the
    /// broker with SIGSYS.
    @Test("stderr a file at its size limit: forwards refused with AUDIT_UNAVAILABLE, the confined broker alive to the session end")
    func stderrFileAtItsLimit() throws {
        let broker = try BrokerUnderTest(extraArguments: ["--audit-forwards", "each"],
                                         launcher: ["/usr/bin/prlimit", "--fsize=262144", "--"])
        let client = try broker.connect()
        var unavailable = 0
        for i in 0..<3000 {
            let reply = try client.invoke("set_isa_irq_level", ["isa_irq": UInt64(i % 16), "level": 1])
            if reply.reason == .auditUnavailable { unavailable += 1 }
        }
        client.close()
        let status = broker.waitForExit()
        #expect(BrokerUnderTest.exitCode(status) == 0, "\(status.map { Spawn.describe(status: $0) } ?? "still running")")
        #expect(unavailable > 500, "\(unavailable) refused")
        #expect(broker.auditLog.contains(" session end: "))
    }

    @Test("a deleted audit file that cannot be made again: forwards refused, lines counted lost; back once the file is",
          .enabled(if: geteuid() == 0))
    func deletedFile() throws {
        let logs = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: logs) }
        let audit = logs.appendingPathComponent("guest.log").path
        let broker = try BrokerUnderTest(extraArguments: ["--user", "65534:65534", "--peer-uid", "0", "--audit-log", audit,
                                                          "--audit-forwards", "each"])
        let client = try broker.connect()
        #expect(try client.invoke("set_isa_irq_level", ["isa_irq": 4, "level": 1]).result == 0)
        // The directory is root's: the confined broker cannot create the file
        // again. The forward's line, batched, is written within the batch's
        // time bound: to the deleted file, which the broker then sees.
        #expect(unlink(audit) == 0)
        usleep(1_000_000)
        // On a loaded machine the batch may go out a little later: a forward
        // or two may still pass (their lines are counted lost), then none.
        var refusedForAudit = 0
        var firstRefused: Int?
        for i in 0..<20 {
            let reply = try client.invoke("set_isa_irq_level", ["isa_irq": UInt64(i % 16), "level": 1])
            if reply.reason == .auditUnavailable {
                refusedForAudit += 1
                firstRefused = firstRefused ?? i
            }
        }
        let first = try #require(firstRefused, "forwards went on into a deleted file: none of 20 refused")
        #expect(first <= 2 && refusedForAudit == 20 - first, "forwards went on into a deleted file: \(refusedForAudit) refused of 20, the first at \(first)")
        // The file is back, the broker's own (as logrotate's create makes it):
        // the next line reopens it by itself.
        #expect(FileManager.default.createFile(atPath: audit, contents: nil) && chown(audit, 65534, 65534) == 0)
        var back = false
        for i in 0..<20 where !back {
            back = try client.invoke("set_isa_irq_level", ["isa_irq": UInt64(i % 16), "level": 1]).reason != .auditUnavailable
        }
        #expect(back, "forwards still refused after the file was made again")
        client.close()
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 0, "\(broker.auditLog)")
        let log = try String(contentsOfFile: audit, encoding: .utf8)
        let lost = try #require(parsedAuditLines(log).first { $0.line.contains(" audit lines lost: ") }, "\(log)")
        #expect((Int(value("lost", lost.pairs) ?? "") ?? 0) >= 1 && value("error", lost.pairs) == "EACCES", "\(lost.line)")
        let end = try #require(parsedAuditLines(log).last { $0.line.contains(" session end: ") }, "\(log)")
        #expect((Int(value("audit_lost", end.pairs) ?? "") ?? 0) >= 1, "\(end.line)")
    }
}
