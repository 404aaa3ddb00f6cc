// SPDX-License-Identifier: MIT
// dmop-bench: what a brokered DMOP costs against the bare socket
// round trip, the decision alone, broker start-up, and broker memory; in
// one run, as a table with median and p99. The last line is the headline:
//   ratio brokered/echo median=X p99=Y
// for set_pci_intx_level through the C library (the Swift client when the
// library is not built), both processes pinned to one CPU.
import DMOPPosix
import DMOPTooling
import Glibc

let arguments = CommandLine.arguments
if arguments.count >= 2 && arguments[1] == "echo-server" {
    EchoMode.run(arguments.dropFirst(2))
}
if arguments.count >= 2 && arguments[1] == "load" {
    LoadMode.run(arguments.dropFirst(2))
}
if arguments.count >= 2 && arguments[1] == "soak" {
    SoakMode.run(arguments.dropFirst(2))
}
if arguments.count >= 2 && arguments[1] == "serve-unconfined" {
    UnconfinedServeMode.run(arguments.dropFirst(2))
}

struct BenchConfig {
    var quick = false
    var check = false
    var broker: String
    var policy = "policy/qemu-xen.policy"
    var library: String
    var iterations = 100_000
    var startupRuns = 30
    var memoryCheckpoints = [100_000, 1_000_000]
    var decisions = 1_000_000
    var cpu: Int?
    /// SCHED_FIFO for the round trips (when permitted).
    var realtime = true
    /// Where the brokers' stderr (the audit log) goes; default a file in a
    /// private temporary directory, as a toolstack logs to a file.
    var auditLog: String?
    /// One part only (roundtrip, decision, startup, memory): for profiling.
    var only: String?
    /// The regime of the last line: one-cpu, two-cpus or unpinned.
    var headline = "one-cpu"
    /// Where to write every round trip's start and duration, per regime
    /// and row: to find what the slow ones have in common.
    var samplesDirectory: String?

    static let usage = """
        usage: dmop-bench [--quick] [--check] [--broker PATH] [--policy PATH] [--xendevicemodel PATH]
                          [--iterations N] [--startup-runs N] [--cpu N] [--no-realtime] [--audit-log PATH]
                          [--only roundtrip|decision|startup|memory] [--headline one-cpu|two-cpus|unpinned]
                          [--samples DIR]
               dmop-bench load --socket PATH [--requests N] [--op intx|vram|mix]
                 (drive a broker started by hand, e.g. under perf record)
               dmop-bench hostile-audit [--seconds N] [--policy PATH] [--audit-log PATH]
                 (one hostile client for N s (default 60): the audit's growth in bytes per second;
                  an --audit-log PATH is replaced, and kept)
               dmop-bench soak [--days N] [--broker PATH] [--policy PATH] [--logrotate-config PATH]
                 (one confined broker, N days (default 90) of aggregated audit lines in minutes, rotated
                  daily by logrotate; ends on "soak days=D rss_growth_kb=N private_dirty_growth_kb=N lost=N refused=N")
               dmop-bench serve-unconfined --listen PATH [--policy PATH]
                 (the broker's request loop in-process without seccomp, for valgrind --tool=callgrind)
          --quick            short run for CI: figures printed, no targets enforced
          --check            exit 2 when a target is missed (never with --quick)
          --broker PATH      broker to measure (default: dmop-bench-broker, next to dmop-bench)
          --policy PATH      policy the brokers serve (default: policy/qemu-xen.policy)
          --xendevicemodel PATH  the drop-in libxendevicemodel (default: libdmop-xendevicemodel.so next to dmop-bench)
          --iterations N     round trips per row and pinning regime (default 100000; quick 3000)
          --startup-runs N   broker start-ups to time (default 30; quick 5)
          --cpu N            the CPU of the one-CPU regime (default: the last one allowed)
          --audit-log PATH   the brokers' stderr (audit log) to PATH, e.g. /dev/null to see its cost
                             (default: a file in a private directory under /tmp)
          --headline REGIME  the pinning regime of the last line (default one-cpu)
          --only PART        run one part (no ratio line unless PART is roundtrip); for profiling
          --samples DIR      write each round trip (CLOCK_MONOTONIC start and duration in ns) to
                             DIR/REGIME-ROW.txt, one file per pinning regime and row
          --no-realtime      measure round trips at normal priority (default: SCHED_FIFO 1 for the
                             bench, echo and broker processes alike, when permitted)
        """

    static func parse(_ arguments: [String]) -> BenchConfig {
        let directory: String
        if let executable = Files.selfExecutable(), let slash = executable.lastIndex(of: "/") {
            directory = String(executable[..<slash])
        } else {
            directory = "."
        }
        var config = BenchConfig(broker: directory + "/dmop-bench-broker",
                                 library: directory + "/libdmop-xendevicemodel.so")
        var iterations: Int?
        var startupRuns: Int?
        var rest = arguments[...]
        func value(_ flag: String) -> String {
            guard let value = rest.popFirst() else { fail("\(flag) needs a value\n\(usage)") }
            return value
        }
        func number(_ flag: String) -> Int {
            let text = value(flag)
            guard let n = Int(text), n > 0 else { fail("\(flag): '\(text)' is not a positive number") }
            return n
        }
        while let flag = rest.popFirst() {
            switch flag {
            case "--quick": config.quick = true
            case "--check": config.check = true
            case "--no-realtime": config.realtime = false
            case "--audit-log": config.auditLog = value(flag)
            case "--headline":
                let regime = value(flag)
                guard ["one-cpu", "two-cpus", "unpinned"].contains(regime) else {
                    fail("--headline: '\(regime)' is not one-cpu, two-cpus or unpinned")
                }
                config.headline = regime
            case "--only":
                let part = value(flag)
                guard ["roundtrip", "decision", "startup", "memory"].contains(part) else {
                    fail("--only: '\(part)' is not roundtrip, decision, startup or memory")
                }
                config.only = part
            case "--samples": config.samplesDirectory = value(flag)
            case "--broker": config.broker = value(flag)
            case "--policy": config.policy = value(flag)
            case "--xendevicemodel": config.library = value(flag)
            case "--iterations": iterations = number(flag)
            case "--startup-runs": startupRuns = number(flag)
            case "--cpu":
                let text = value(flag)
                guard let cpu = Int(text), cpu >= 0 else { fail("--cpu: '\(text)' is not a CPU number") }
                config.cpu = cpu
            case "-h", "--help":
                print(usage)
                exit(0)
            default: fail("unknown option \(flag)\n\(usage)")
            }
        }
        if config.quick {
            config.check = false
            config.iterations = 3_000
            config.startupRuns = 5
            config.memoryCheckpoints = [10_000, 50_000]
            config.decisions = 100_000
        }
        if let iterations { config.iterations = iterations }
        if let startupRuns { config.startupRuns = startupRuns }
        if let directory = config.samplesDirectory {
            guard mkdir(directory, 0o755) == 0 || errno == EEXIST, access(directory, W_OK) == 0 else {
                fail("--samples: cannot write into \(directory)")
            }
        }
        guard access(config.broker, X_OK) == 0 else { fail("no executable broker at \(config.broker) (build it, or give --broker)") }
        guard access(config.policy, R_OK) == 0 else { fail("no policy at \(config.policy) (run from the package root, or give --policy)") }
        return config
    }
}

if arguments.count >= 2 && arguments[1] == "hostile-audit" {
    let directory = Files.selfExecutable().map { String($0[..<($0.lastIndex(of: "/") ?? $0.endIndex)]) } ?? "."
    HostileAuditMode.run(arguments.dropFirst(2), broker: directory + "/dmop-broker", policy: "policy/qemu-xen.policy")
}

let config = BenchConfig.parse(Array(arguments.dropFirst()))
let bench = Bench(config)
bench.run()
