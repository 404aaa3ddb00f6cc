// SPDX-License-Identifier: MIT
import DMOPClient
import DMOPCore
import DMOPPosix
import DMOPTooling
import Foundation
import Glibc

/// A real `dmop-broker serve` process on the simulated hypervisor, for
/// end-to-end tests: spawned with a ready pipe, stderr (the audit log) and
/// the simulated record in a private directory.
final class BrokerUnderTest {
    enum Mode {
        /// --socket-fd: the test holds the other end of a socketpair.
        case socketPair
        /// --listen PATH in the private directory.
        case listen
    }

    struct Record: Equatable {
        let domid: Int
        let op: Int
        let nrBufs: Int
        let sizes: [Int]
        let rc: Int
    }

    let pid: pid_t
    let directory: URL
    let recordPath: String
    let auditPath: String
    let socketPath: String
    /// The test's end of the socketpair in .socketPair mode.
    private(set) var clientEnd: FileDescriptor?
    private var exitStatus: Int32?

    init(mode: Mode = .socketPair, domid: UInt16 = 5, policy: String = TestSupport.policyPath("qemu-xen.policy"),
         extraArguments: [String] = [], waitForReady: Bool = true, listenPath: String? = nil,
         brokerPath: String = TestSupport.brokerPath, launcher: [String] = []) throws {
        directory = TestSupport.temporaryDirectory()
        recordPath = directory.appendingPathComponent("record.jsonl").path
        auditPath = directory.appendingPathComponent("audit.log").path
        socketPath = listenPath ?? directory.appendingPathComponent("broker.sock").path

        var readyPipe: [Int32] = [-1, -1]
        guard pipe(&readyPipe) == 0 else { throw SystemError("pipe") }
        for fd in readyPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var arguments = [brokerPath, "serve", "--hypervisor", "simulated", "--domid", String(domid),
                         "--policy", policy, "--simulated-record", recordPath, "--ready-fd", "4"]
        var fds: [(parent: Int32, child: Int32)] = [(readyPipe[1], 4)]
        var brokerEnd: FileDescriptor?
        switch mode {
        case .socketPair:
            let pair = try SeqPacket.pair()
            fds.append((pair.first.rawValue, 3))
            brokerEnd = Optional(pair.first)
            clientEnd = Optional(pair.second)
            arguments += ["--socket-fd", "3"]
        case .listen:
            arguments += ["--listen", socketPath]
        }
        if geteuid() == 0 && !extraArguments.contains("--user") { arguments.append("--allow-root") }
        arguments += extraArguments
        // A launcher (prlimit ... --) execs the broker: the pid stays the broker's.
        pid = try Spawn.start(launcher.first ?? brokerPath, launcher + arguments, fds: fds, stderrPath: auditPath,
                              environment: ["SWIFT_BACKTRACE=enable=no", "PATH=/usr/bin:/bin"])
        brokerEnd = nil
        close(readyPipe[1])
        defer { close(readyPipe[0]) }
        if waitForReady {
            var pollfd = Glibc.pollfd(fd: readyPipe[0], events: Int16(POLLIN), revents: 0)
            guard poll(&pollfd, 1, 15_000) == 1 else {
                throw TestFailure("broker not ready in 15 s; audit log: \(auditLog)")
            }
            var buffer = [UInt8](repeating: 0, count: 16)
            let n = buffer.withUnsafeMutableBytes { read(readyPipe[0], $0.baseAddress, $0.count) }
            guard n == 6, String(decoding: buffer[0..<6], as: UTF8.self) == "ready\n" else {
                throw TestFailure("broker did not write ready (\(n) bytes); audit log: \(auditLog)")
            }
        }
    }

    deinit {
        if exitStatus == nil {
            kill(pid, SIGKILL)
            _ = try? Spawn.wait(pid)
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// The hello over the socketpair, or a fresh connection in listen mode.
    func connect(hello: Hello = Hello()) throws -> BrokerClient {
        if let end = clientEnd.take() {
            return try BrokerClient(connection: end, hello: hello)
        }
        return try BrokerClient.connect(path: socketPath, hello: hello)
    }

    /// A raw connected fd with no hello sent.
    func rawConnection() throws -> FileDescriptor {
        if let end = clientEnd.take() {
            return end
        }
        return try SeqPacket.connect(path: socketPath)
    }

    var auditLog: String {
        (try? String(contentsOfFile: auditPath, encoding: .utf8)) ?? ""
    }

    var records: [Record] {
        guard let text = try? String(contentsOfFile: recordPath, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let domid = object["domid"] as? Int, let op = object["op"] as? Int,
                  let nrBufs = object["nr_bufs"] as? Int, let sizes = object["sizes"] as? [Int],
                  let rc = object["rc"] as? Int else { return nil }
            return Record(domid: domid, op: op, nrBufs: nrBufs, sizes: sizes, rc: rc)
        }
    }

    /// Raw record lines, to check the exact JSON format.
    var recordLines: [String] {
        ((try? String(contentsOfFile: recordPath, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    /// Waits for the broker to exit; nil on timeout. Returns the raw status.
    func waitForExit(timeout: TimeInterval = 10) -> Int32? {
        if let exitStatus { return exitStatus }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            var status: Int32 = 0
            let rc = waitpid(pid, &status, WNOHANG)
            if rc == pid {
                exitStatus = status
                return status
            }
            usleep(10_000)
        }
        return nil
    }

    var isAlive: Bool {
        exitStatus == nil && waitpid(pid, nil, WNOHANG) == 0 && kill(pid, 0) == 0
    }

    static func exitCode(_ status: Int32?) -> Int32? {
        guard let status, status & 0x7f == 0 else { return nil }
        return (status >> 8) & 0xff
    }
}

/// Runs the broker binary to completion (policy check, bad arguments).
func runBroker(_ arguments: [String]) throws -> (status: Int32, output: String) {
    try TestSupport.run(TestSupport.brokerPath, arguments)
}
