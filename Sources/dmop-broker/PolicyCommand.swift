// SPDX-License-Identifier: MIT
import ArgumentParser
import DMOPCore
import DMOPHypervisor
import DMOPPosix
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

        func run() throws {
            var failed = false
            for file in files {
                do {
                    let bytes = try Files.read(file)
                    let policy = try Policy.parse(String(decoding: bytes, as: UTF8.self), file: file)
                    print("\(file): ok, \(policy.rules.count) op(s) allowed: \(policy.rules.map(\.op.name).joined(separator: " "))")
                    if policy.rules.isEmpty {
                        printError("\(file): warning: this policy allows no op; a broker serving it refuses every request")
                    }
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

        @Option(help: "The broker's (restricted) domid.")
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
                case .extents(_, let extentSize, _, _): size = extraSize ?? Int(values["nr_extents"] ?? 0) * extentSize
                case .none: size = 0
                }
                buffers.append([UInt8](repeating: 0, count: min(size, DMOPABI.maxBufferSize)))
            }
            let decision = withViews(buffers) { views in
                decide(restrictedDomid: domid.value, policy: policy,
                       request: DMOPRequest(domid: target ?? domid.value, buffers: views))
            }
            switch decision {
            case .forward(let rule):
                let conditions = rule.conditions.isEmpty ? "" : " if " + rule.conditions.map(\.description).joined(separator: " and ")
                print("forward: allowed by \(rule.location): allow \(rule.op.name)\(conditions)")
            case .refuse(let reason, let detail):
                print("refuse: \(reason.name) (errno \(Errno.name(reason.errno))): \(detail)")
            }
        }
    }
}

extension PolicyCommand {
    struct Learn: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a minimal policy for what a session really did.",
            discussion: "Feed it the audit log (stderr) of a broker that ran the device model, or a --simulated-record file; review the result and add argument conditions before use.")

        @Option(help: "An audit log of dmop-broker serve (repeatable).")
        var audit: [String] = []

        @Option(help: "A --simulated-record file (repeatable).")
        var record: [String] = []

        func validate() throws {
            if audit.isEmpty && record.isEmpty { throw ValidationError("give at least one --audit or --record file") }
        }

        func run() throws {
            var learner = PolicyLearner()
            for path in audit {
                let bytes = try Files.read(path, limit: 1 << 30)
                learner.addSource(path)
                for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") { learner.noteAuditLine(line) }
            }
            for path in record {
                let bytes = try Files.read(path, limit: 1 << 30)
                learner.addSource(path)
                for entry in try SimulationRecord.parse(bytes) { learner.noteForwarded(opNumber: entry.op) }
            }
            print(learner.render(), terminator: "")
        }
    }
}

/// Runs `body` with raw views of the arrays, all valid at once.
func withViews<R>(_ buffers: [[UInt8]], _ body: ([UnsafeRawBufferPointer]) -> R) -> R {
    func recurse(_ index: Int, _ views: [UnsafeRawBufferPointer]) -> R {
        if index == buffers.count { return body(views) }
        return buffers[index].withUnsafeBytes { recurse(index + 1, views + [$0]) }
    }
    return recurse(0, [])
}

func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
