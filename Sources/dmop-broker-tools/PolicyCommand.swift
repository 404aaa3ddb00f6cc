// SPDX-License-Identifier: MIT
import ArgumentParser
import DMOPCore
import DMOPTrusted
import DMOPPolicyLearning
import DMOPPosix
import DMOPServe
import DMOPSimulation
import DMOPTooling
import Glibc

struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Check policy files and explain decisions.",
        subcommands: [Check.self, Explain.self, Learn.self]
    )

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Parse policy files; print file:line:column for the first error of each.")

        @Argument(help: "Policy files.")
        var files: [String]

        @Flag(help: "Print each policy as parsed: one canonical rule a line, with op numbers and field offsets.")
        var print = false

        func run() throws {
            var failed = false
            for file in files {
                do {
                    let bytes = try Files.read(file)
                    let policy = try Policy.parse(String(decoding: bytes, as: UTF8.self), file: file)
                    if self.print {
                        Swift.print(PolicyText.render(policy), terminator: "")
                    } else {
                        Swift.print("\(file): ok, \(policy.rules.count) op(s) allowed: \(policy.rules.map(\.op.name).joined(separator: " "))")
                    }
                    if policy.rules.isEmpty {
                        printError("\(file): warning: this policy allows no op; a broker serving it refuses every request")
                    }
                    for warning in PolicyCostWarnings.warnings(policy) { printError(warning) }
                } catch let error as PolicyError {
                    printError("\(error)")
                    failed = true
                } catch {
                    printError("\(file): \(error)")
                    failed = true
                }
            }
            if failed { throw ExitCode(ExitStatus.policy.rawValue) }
        }
    }

    struct Explain: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show what the broker would decide for one request.",
            discussion: "Example: dmop-broker policy explain --policy policy/qemu-xen.policy --domid 5 set_isa_irq_level isa_irq=4 level=1")

        @Option(help: "Policy file.")
        var policy: String

        @Option(parsing: .unconditional, help: "The broker's (restricted) domid.", transform: Domid.parse)
        var domid: Domid

        @Option(help: "Target domid of the request (default: the broker's).")
        var target: UInt16?

        @Argument(help: "Op name, as in dm_op.h without XEN_DMOP_.")
        var op: String

        @Argument(help: "Payload fields as name=value (decimal or 0x hex).")
        var fields: [String] = []

        @Option(help: "Size of buffer 1 in bytes (track_dirty_vram, modified_memory).")
        var extraSize: Int?

        func run() throws {
            let policy = loadPolicy(self.policy)
            guard let spec = Catalogue.op(named: op) else {
                throw ValidationError("unknown op '\(op)'; known: \(Catalogue.ops.map(\.name).joined(separator: ", "))")
            }
            var values: [String: UInt64] = [:]
            for field in fields {
                let parts = field.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2, spec.field(named: parts[0]) != nil else {
                    throw ValidationError("'\(field)': expected name=value with a field of \(op): \(spec.fields.map(\.name).joined(separator: ", "))")
                }
                let text = parts[1]
                guard let value = text.hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : UInt64(text) else {
                    throw ValidationError("'\(text)' is not a number")
                }
                values[parts[0]] = value
            }
            var buffers = [spec.encodeHeader(values)]
            if spec.bufferCount == 2 {
                let size: Int
                switch spec.extraBuffer {
                case .dirtyBitmap: size = extraSize ?? Int(((values["nr"] ?? 0) + 7) / 8)
                case .extents(_, let extentSize, _): size = extraSize ?? Int(values["nr_extents"] ?? 0) * extentSize
                case .none: size = 0
                }
                buffers.append([UInt8](repeating: 0, count: min(size, DMOPABI.maxBufferSize)))
            }
            // The answer leaves the closures as plain values: a forward's
            // AllowedDMOP holds views of `buffers` that end with them.
            enum Answer { case forward(PolicyRule), refuse(ReasonCode, String) }
            let answer: Answer = withViews(buffers) { views in
                // SAFETY: the request's buffer views are used only inside
                // this closure, which `views` outlives.
                views.withUnsafeBufferPointer { pointer in
                    switch decide(restrictedDomid: domid.value, policy: policy,
                                  request: DMOPRequest(domid: target ?? domid.value, buffers: pointer)) {
                    case .forward(let allowed): .forward(allowed.rule)
                    case .refuse(let reason, let detail): .refuse(reason, detail)
                    }
                }
            }
            switch answer {
            case .forward(let rule):
                let conditions = rule.conditions.isEmpty ? "" : " if " + rule.conditions.map(\.description).joined(separator: " and ")
                print("forward: allowed by \(rule.location): allow \(rule.op.name)\(conditions)")
            case .refuse(let reason, let detail):
                print("refuse: \(reason.name) (errno \(Errno.name(reason.errno))): \(detail)")
                // As grep: 1 for "no", so scripts can test the answer.
                throw ExitCode(ExitStatus.explainRefused.rawValue)
            }
        }
    }
}

extension PolicyCommand {
    struct Learn: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a minimal policy for what a session really did.",
            discussion: """
            Sources it trusts: a --simulated-record file; an audit file of serve --audit-log FILE (--audit); \
            journald entries of dmop-broker processes selected by the kernel-attested _UID or _PID (--journal). \
            A log the device model could write (stderr under libxl: QEMU's own log) can hold forged lines that \
            would teach the policy anything; it is read only with --trust-log. Review the result and add \
            argument conditions before use.
            """)

        @Option(help: "An audit file written by serve --audit-log FILE (repeatable).")
        var audit: [String] = []

        @Option(name: .customLong("trust-log"), help: "An audit log that others could write, such as the broker's stderr under libxl (repeatable). Its lines are believed as they are: a compromised device model can forge them.")
        var trustLog: [String] = []

        @Flag(help: "Read journald entries of dmop-broker (needs --journal-uid or --journal-pid).")
        var journal = false

        @Option(name: .customLong("journal-uid"), help: "--journal: only entries from processes running as this uid (_UID, set by the kernel).")
        var journalUid: UInt32?

        @Option(name: .customLong("journal-pid"), help: "--journal: only entries from this process (_PID, set by the kernel).")
        var journalPid: Int32?

        @Option(help: "A --simulated-record file (repeatable).")
        var record: [String] = []

        func validate() throws {
            if audit.isEmpty && record.isEmpty && trustLog.isEmpty && !journal {
                throw ValidationError("give at least one of --audit FILE, --record FILE, --journal or --trust-log FILE")
            }
            if journal && journalUid == nil && journalPid == nil {
                throw ValidationError("--journal needs --journal-uid UID or --journal-pid PID: the command name alone can be set by any process")
            }
            if !journal && (journalUid != nil || journalPid != nil) {
                throw ValidationError("--journal-uid and --journal-pid select journal entries: give --journal too")
            }
        }

        func run() throws {
            var learner = PolicyLearner()
            for path in audit {
                let text = readText(path)
                if let why = Self.untrustedReason(path: path, text: text) {
                    fail(.usage, "--audit \(path): \(why); a log the device model could write is read only with --trust-log (see dmop-broker(8))")
                }
                learner.addSource(path)
                for line in text.split(separator: "\n") { learner.noteAuditLine(line) }
            }
            for path in trustLog {
                learner.addSource("\(path) (trusted by --trust-log)")
                for line in readText(path).split(separator: "\n") { learner.noteAuditLine(line) }
            }
            if journal {
                var matches = ["_COMM=dmop-broker", "SYSLOG_IDENTIFIER=dmop-broker"]
                if let journalUid { matches.append("_UID=\(journalUid)") }
                if let journalPid { matches.append("_PID=\(journalPid)") }
                let messages = Self.journalMessages(matches)
                learner.addSource("journal \(matches.joined(separator: " "))")
                for line in messages.split(separator: "\n") { learner.noteAuditLine(line) }
            }
            for path in record {
                let bytes = readBytes(path)
                learner.addSource(path)
                do {
                    for entry in try SimulationRecord.parse(bytes) { learner.noteForwarded(opNumber: entry.op) }
                } catch {
                    fail(.usage, "--record \(path): \(error)")
                }
            }
            print(learner.render(), terminator: "")
        }

        func readBytes(_ path: String) -> [UInt8] {
            do { return try Files.read(path, limit: 1 << 30) } catch { fail(.usage, "\(path): \(error)") }
        }

        func readText(_ path: String) -> String { String(decoding: readBytes(path), as: UTF8.self) }

        /// Why a file given to --audit is not an audit file of its own: nil
        /// when it is. Its start lines must name a FILE channel, it must not
        /// be writable by group or others, and every line must be the
        /// broker's. This catches a stderr log given by mistake; it cannot
        /// prove who wrote a file (dmop-broker(8), policy learn).
        static func untrustedReason(path: String, text: String) -> String? {
            var status = stat()
            if stat(path, &status) == 0, status.st_mode & (S_IWGRP | S_IWOTH) != 0 {
                return "group or others may write it"
            }
            var sawStart = false
            for line in text.split(separator: "\n") {
                guard let pairs = try? Logfmt.parse(line), pairs.count > 3,
                      pairs[1].value == nil, pairs[1].key.hasPrefix("dmop-broker[") else {
                    return "it holds lines that are not the broker's (\(line.prefix(60))...)"
                }
                if pairs[3].key == "starting" {
                    let channel = pairs.first { $0.key == "audit_log" }?.value ?? "stderr"
                    guard channel.contains("/") else {
                        return "its broker wrote it as audit_log=\(channel), not as an --audit-log FILE"
                    }
                    sawStart = true
                }
                if pairs[3].key == "SIGHUP:" { sawStart = true }
            }
            return sawStart ? nil : "it has no start line of serve --audit-log FILE"
        }

        /// The MESSAGE of every journal entry matching all `matches`.
        static func journalMessages(_ matches: [String]) -> String {
            guard let (text, status) = Journal.messages(matches) else {
                fail(.usage, "--journal: cannot run journalctl: \(SystemError("popen"))")
            }
            guard status == 0 else { fail(.usage, "--journal: journalctl failed (status \(status >> 8))") }
            return text
        }
    }
}

/// Runs `body` with raw views of the arrays, all valid at once.
func withViews<R>(_ buffers: [[UInt8]], _ body: ([UnsafeRawBufferPointer]) -> R) -> R {
    func recurse(_ index: Int, _ views: [UnsafeRawBufferPointer]) -> R {
        if index == buffers.count { return body(views) }
        // SAFETY: body runs inside every enclosing withUnsafeBytes, so all the
        // views are valid for it; callers keep none past it.
        return buffers[index].withUnsafeBytes { recurse(index + 1, views + [$0]) }
    }
    return recurse(0, [])
}

func printError(_ line: String) {
    var text = line + "\n"
    // SAFETY: write reads $0.count bytes of the view within the closure.
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
