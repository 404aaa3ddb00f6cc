// SPDX-License-Identifier: MIT
import ArgumentParser
import DMOPCore
import DMOPPosix
import DMOPServe
import DMOPServer
import DMOPTooling
import Glibc

/// `dmop-broker status`: every running broker on the host, from /proc
/// (pid, ids, confinement, uptime, its command line) and from the broker
/// itself: a SIGUSR1 makes it write a `stats:` line to its own audit channel,
/// which is read back from there. No new channel into the broker: SIGUSR1
/// is what an operator could send anyway. QEMUs with -xen-domid that no
/// broker serves are listed too.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "List the running brokers with their confinement and counters, and the device models without one.")

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text, json, prometheus
    }

    @Option(help: "text (a table), json, or prometheus (node_exporter's textfile collector format).")
    var format: Format = .text

    @Option(help: "How long to wait for each broker's stats line after its SIGUSR1, in milliseconds.")
    var timeoutMs: UInt32 = 2000

    @Option(help: ArgumentHelp("Only this broker (repeatable): no other is signalled.", valueName: "pid"))
    var pid: [Int32] = []

    func run() throws {
        let brokers = BrokerScan.brokers().filter { pid.isEmpty || pid.contains($0.pid) }
            .map { BrokerScan.withCounters($0, timeoutMs: timeoutMs) }
        let qemus = BrokerScan.deviceModels()
        var rows = brokers
        for index in rows.indices {
            rows[index].qemuPid = qemus.first { $0.domid == rows[index].domid }?.pid
        }
        let unbrokered = qemus.filter { qemu in !brokers.contains { $0.domid == qemu.domid } }
        switch format {
        case .text: print(StatusOutput.text(rows, unbrokered), terminator: "")
        case .json: print(StatusOutput.json(rows, unbrokered))
        case .prometheus: print(StatusOutput.prometheus(rows, unbrokered), terminator: "")
        }
    }
}

/// One broker as /proc and its stats line show it.
struct BrokerStatus {
    let pid: Int32
    let domid: Int
    let guest: String?
    let uid: String
    let gid: String
    let seccomp: String
    let noNewPrivs: String
    let policy: String
    let audit: String
    let uptimeSeconds: Int
    /// From the stats line; nil when the broker's channel cannot be read
    /// back (syslog, stderr that is not a file) or it did not answer.
    var counters: [String: UInt64]?
    var qemuPid: Int32?
}

struct DeviceModel {
    let pid: Int32
    let domid: Int
}

enum BrokerScan {
    static func read(_ path: String) -> String? {
        (try? Files.read(path, limit: 1 << 20)).map { String(decoding: $0, as: UTF8.self) }
    }

    static func pids() -> [Int32] {
        Files.expandDirectory("/proc").compactMap { Int32($0.dropFirst("/proc/".count)) }
    }

    static func arguments(_ pid: Int32) -> [String] {
        guard let bytes = try? Files.read("/proc/\(pid)/cmdline", limit: 1 << 20) else { return [] }
        return bytes.split(separator: 0, omittingEmptySubsequences: false).dropLast().map { String(decoding: $0, as: UTF8.self) }
    }

    static func statusField(_ status: String, _ key: String) -> String {
        for line in status.split(separator: "\n") where line.hasPrefix(key + ":") {
            return line.dropFirst(key.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).first.map(String.init) ?? "?"
        }
        return "?"
    }

    /// Processes named dmop-broker running `serve` (any other command runs
    /// as dmop-broker-tools).
    static func brokers() -> [BrokerStatus] {
        var found: [BrokerStatus] = []
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let uptime = read("/proc/uptime").flatMap { Double($0.split(separator: " ").first ?? "") } ?? 0
        for pid in pids() {
            guard read("/proc/\(pid)/comm") == "dmop-broker\n" else { continue }
            let argv = arguments(pid)
            guard argv.count > 2, argv[1] == "serve", let options = ServeArguments.parse(argv[2...]),
                  let status = read("/proc/\(pid)/status"), let stat = read("/proc/\(pid)/stat") else { continue }
            // Field 22 (starttime), counted after the command name's ")".
            let fields = stat[(stat.lastIndex(of: ")") ?? stat.startIndex)...].split(separator: " ")
            let started = fields.count > 20 ? (Double(fields[20]) ?? 0) / ticks : 0
            found.append(BrokerStatus(
                pid: pid, domid: Int(options.domid.value), guest: options.guestName,
                uid: statusField(status, "Uid"), gid: statusField(status, "Gid"),
                seccomp: statusField(status, "Seccomp"), noNewPrivs: statusField(status, "NoNewPrivs"),
                policy: options.policy, audit: options.auditLog.description,
                uptimeSeconds: max(0, Int(uptime - started)), counters: nil, qemuPid: nil))
        }
        return found.sorted { ($0.domid, $0.pid) < ($1.domid, $1.pid) }
    }

    /// QEMUs for Xen guests: a process whose arguments hold -xen-domid N.
    static func deviceModels() -> [DeviceModel] {
        pids().compactMap { pid in
            let argv = arguments(pid)
            guard argv.first.map({ !$0.hasSuffix("dmop-qemu-wrapper") }) ?? false,
                  let index = argv.firstIndex(of: "-xen-domid"), index + 1 < argv.count,
                  let domid = Int(argv[index + 1]) else { return nil }
            return DeviceModel(pid: pid, domid: domid)
        }
    }

    /// SIGUSR1, then the broker's `stats:` line read back from its audit
    /// channel: a file (or stderr that is one) from where it ended before
    /// the signal, the journal by the broker's pid.
    static func withCounters(_ broker: BrokerStatus, timeoutMs: UInt32) -> BrokerStatus {
        var broker = broker
        var file: String?
        // Read through the broker's own open file (/proc/PID/fd/N), never by
        // the path its command line names: any user can start a process that
        // calls itself dmop-broker and names a file only root may read.
        switch AuditChannel(argument: broker.audit) {
        case .file(let path): file = openFile(of: broker.pid, named: path)
        case .stderr: file = "/proc/\(broker.pid)/fd/2"
        case .journal, .syslog, nil: file = nil
        }
        if broker.audit == "journal" {
            let since = time(nil) - 1
            guard kill(broker.pid, SIGUSR1) == 0 else { return broker }
            for _ in 0..<max(1, Int(timeoutMs) / 50) {
                usleep(50_000)
                let text = journal(["_PID=\(broker.pid)", "SYSLOG_IDENTIFIER=\(AuditSink.identifier)", "--since=@\(since)"])
                if let line = text.split(separator: "\n").last(where: { $0.hasPrefix("stats: ") }) {
                    broker.counters = counters(line)
                    return broker
                }
            }
            return broker
        }
        guard let file else { return broker }
        var before = stat()
        guard stat(file, &before) == 0, before.st_mode & S_IFMT == S_IFREG else { return broker }
        guard kill(broker.pid, SIGUSR1) == 0 else { return broker }
        let label = "dmop-broker[\(broker.pid)] info stats: "
        for _ in 0..<max(1, Int(timeoutMs) / 20) {
            usleep(20_000)
            guard let bytes = tail(file, from: Int(before.st_size)) else { continue }
            let text = String(decoding: bytes, as: UTF8.self)
            if let line = text.split(separator: "\n").last(where: { $0.contains(label) }),
               let range = line.firstRange(of: "stats: ") {
                broker.counters = counters(line[range.lowerBound...])
                return broker
            }
        }
        return broker
    }

    /// /proc/PID/fd/N for the fd of `pid` open on `path`, if any.
    static func openFile(of pid: Int32, named path: String) -> String? {
        let directory = "/proc/\(pid)/fd"
        // A relative --audit-log names a file in the broker's working directory.
        let path = path.hasPrefix("/") ? path : (readlink("/proc/\(pid)/cwd") ?? "") + "/" + path
        guard let handle = opendir(directory) else { return nil }
        defer { closedir(handle) }
        while let entry = readdir(handle) {
            // SAFETY: d_name is a NUL-terminated array inside the entry, read
            // before the next readdir.
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.first?.isNumber == true else { continue }
            if readlink(directory + "/" + name) == path { return directory + "/" + name }
        }
        return nil
    }

    static func readlink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = Glibc.readlink(path, &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The bytes of `path` from `offset` (from 0 when the file is shorter
    /// now: it was rotated or truncated).
    static func tail(_ path: String, from offset: Int) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else { return nil }
        let start = Int(status.st_size) >= offset ? offset : 0
        guard lseek(fd, off_t(start), SEEK_SET) >= 0 else { return nil }
        return try? Syscall.readAll(fd, limit: 16 << 20, what: "read \(path)")
    }

    static func journal(_ matches: [String]) -> String {
        Journal.messages(matches)?.text ?? ""
    }

    /// The numbers of a `stats:` line.
    static func counters(_ line: Substring) -> [String: UInt64]? {
        guard let pairs = try? Logfmt.parse(line) else { return nil }
        var numbers: [String: UInt64] = [:]
        for pair in pairs {
            if let value = pair.value, let number = UInt64(value) { numbers[pair.key] = number }
        }
        return numbers
    }
}

enum StatusOutput {
    /// The counters every format shows, in order, with the stats line's key.
    static let counterKeys = [("requests", "requests"), ("forwarded", "forwarded"), ("refused", "refused"),
                              ("posted", "posted"), ("lost", "audit_lost")]

    static func value(_ broker: BrokerStatus, _ key: String) -> String {
        broker.counters?[key].map(String.init) ?? "-"
    }

    static func text(_ brokers: [BrokerStatus], _ unbrokered: [DeviceModel]) -> String {
        var rows = [["DOMID", "GUEST", "PID", "UID:GID", "SECCOMP", "NNP", "UPTIME", "REQUESTS", "FORWARDED", "REFUSED",
                     "POSTED", "LOST", "QEMU", "POLICY", "AUDIT"]]
        for broker in brokers {
            // In three typed parts: one sum of them is too much for Swift 6.2's type checker.
            let who: [String] = [String(broker.domid), broker.guest ?? "-", String(broker.pid), "\(broker.uid):\(broker.gid)",
                                 broker.seccomp, broker.noNewPrivs, "\(broker.uptimeSeconds)s"]
            let counters: [String] = counterKeys.map { value(broker, $0.1) }
            let rest: [String] = [broker.qemuPid.map(String.init) ?? "-", broker.policy, broker.audit]
            rows.append(who + counters + rest)
        }
        for qemu in unbrokered {
            rows.append([String(qemu.domid), "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", String(qemu.pid),
                         "(no broker: this device model is not brokered)", "-"])
        }
        var widths = [Int](repeating: 0, count: rows[0].count)
        for row in rows { for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) } }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[index] - cell.count)
            }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }

    static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    static func json(_ brokers: [BrokerStatus], _ unbrokered: [DeviceModel]) -> String {
        let entries = brokers.map { broker -> String in
            var fields = [
                "\"domid\": \(broker.domid)", "\"guest\": \(broker.guest.map(jsonString) ?? "null")",
                "\"pid\": \(broker.pid)", "\"uid\": \(jsonString(broker.uid))", "\"gid\": \(jsonString(broker.gid))",
                "\"seccomp\": \(jsonString(broker.seccomp))", "\"no_new_privs\": \(jsonString(broker.noNewPrivs))",
                "\"policy\": \(jsonString(broker.policy))", "\"audit\": \(jsonString(broker.audit))",
                "\"uptime_seconds\": \(broker.uptimeSeconds)",
                "\"qemu_pid\": \(broker.qemuPid.map(String.init) ?? "null")",
            ]
            for (name, key) in counterKeys {
                fields.append("\"\(name)\": \(broker.counters?[key].map(String.init) ?? "null")")
            }
            return "{" + fields.joined(separator: ", ") + "}"
        }
        let others = unbrokered.map { "{\"domid\": \($0.domid), \"qemu_pid\": \($0.pid)}" }
        return "{\"brokers\": [" + entries.joined(separator: ", ") + "], \"unbrokered_device_models\": ["
            + others.joined(separator: ", ") + "]}"
    }

    /// A label value in the exposition format: backslash, quote, newline escaped.
    static func label(_ text: String) -> String {
        "\"" + text.replacingAll("\\", with: "\\\\").replacingAll("\"", with: "\\\"").replacingAll("\n", with: "\\n") + "\""
    }

    static func prometheus(_ brokers: [BrokerStatus], _ unbrokered: [DeviceModel]) -> String {
        var out = ""
        func labels(_ broker: BrokerStatus) -> String {
            "{domid=\(label(String(broker.domid))),guest=\(label(broker.guest ?? "")),pid=\(label(String(broker.pid)))}"
        }
        out += "# HELP dmop_broker_up A dmop-broker serves this domain (1), with its seccomp mode and no_new_privs.\n"
        out += "# TYPE dmop_broker_up gauge\n"
        for broker in brokers {
            let labelled = labels(broker).dropLast() + ",seccomp=\(label(broker.seccomp)),no_new_privs=\(label(broker.noNewPrivs))}"
            out += "dmop_broker_up\(labelled) 1\n"
        }
        out += "# HELP dmop_broker_uptime_seconds Seconds since the broker started.\n# TYPE dmop_broker_uptime_seconds gauge\n"
        for broker in brokers { out += "dmop_broker_uptime_seconds\(labels(broker)) \(broker.uptimeSeconds)\n" }
        let help = ["requests": "Requests received", "forwarded": "Requests forwarded to Xen", "refused": "Requests refused",
                    "posted": "Posted (protocol 2) requests", "lost": "Audit lines lost"]
        for (name, key) in counterKeys {
            out += "# HELP dmop_broker_\(name)_total \(help[name] ?? name) since the broker started.\n"
            out += "# TYPE dmop_broker_\(name)_total counter\n"
            for broker in brokers {
                if let number = broker.counters?[key] { out += "dmop_broker_\(name)_total\(labels(broker)) \(number)\n" }
            }
        }
        out += "# HELP dmop_device_model_unbrokered A QEMU for this domain runs without a broker.\n"
        out += "# TYPE dmop_device_model_unbrokered gauge\n"
        for qemu in unbrokered {
            out += "dmop_device_model_unbrokered{domid=\(label(String(qemu.domid))),pid=\(label(String(qemu.pid)))} 1\n"
        }
        return out
    }
}
