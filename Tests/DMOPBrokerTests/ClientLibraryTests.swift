// SPDX-License-Identifier: MIT
import DMOPServer
import Foundation
import Glibc
import Testing

/// The drop-in libxendevicemodel.so.1 (Sources/xendevicemodel) and
/// dmop-qemu-wrapper, tested through C programs compiled against the system
/// <xendevicemodel.h> (Tests/clib).
@Suite("libxendevicemodel replacement and dmop-qemu-wrapper")
struct ClientLibraryTests {
    let broker = TestSupport.brokerPath
    var rootArguments: [String] { geteuid() == 0 ? ["--allow-root"] : [] }

    // MARK: - ABI

    /// Every function of Xen 4.17's library, with the same symbol versions,
    /// under the same soname, and no Swift runtime pulled into QEMU.
    @Test func exportsXensSymbolsAndVersions() throws {
        func versioned(_ path: String) throws -> Set<String> {
            let nm = try ProcessRun.run("/usr/bin/nm", ["-D", "--defined-only", "--with-symbol-versions", path])
            #expect(nm.status == 0, "\(nm)")
            return Set(nm.output.split(separator: "\n").compactMap { line -> String? in
                let fields = line.split(separator: " ")
                guard fields.count == 3, fields[1] == "T" else { return nil }
                return String(fields[2])
            })
        }
        let ours = try versioned(ClientLibraryFixture.libraryPath)
        let xens = try versioned("/usr/lib/x86_64-linux-gnu/libxendevicemodel.so.1")
        #expect(xens.count == 26, "Debian's library exports \(xens.count) functions")
        #expect(ours == xens, "only ours: \(ours.subtracting(xens).sorted()); only Xen's: \(xens.subtracting(ours).sorted())")
        #expect(ours.contains("xendevicemodel_nr_vcpus@@VERS_1.4"))

        let dynamic = try ProcessRun.run("/usr/bin/readelf", ["-d", ClientLibraryFixture.libraryPath])
        #expect(dynamic.output.contains("Library soname: [libxendevicemodel.so.1]"), "\(dynamic.output)")
        #expect(!dynamic.output.contains("libswift"), "the library needs the Swift runtime:\n\(dynamic.output)")
        let wrapper = try ProcessRun.run("/usr/bin/readelf", ["-d", ClientLibraryFixture.wrapperPath])
        #expect(!wrapper.output.contains("libswift"), "the wrapper needs the Swift runtime:\n\(wrapper.output)")
    }

    // MARK: - Against Xen's own library

    /// The same calls through Debian's libxendevicemodel (on a fake privcmd)
    /// and through ours (on a mock broker) give identical transcripts: the
    /// same buffers byte for byte, the same local rejections, results,
    /// errnos and outputs.
    @Test func buffersAndResultsMatchXensLibrary() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("golden")
        let realTranscript = dir.appendingPathComponent("real.txt").path
        let oursTranscript = dir.appendingPathComponent("ours.txt").path

        let real = try ProcessRun.run(fixture.golden, ["real", realTranscript])
        #expect(real.status == 0, "\(real)")
        let ours = try ProcessRun.run(fixture.golden, ["ours", oursTranscript], environment: fixture.ourLibraryEnvironment)
        #expect(ours.status == 0, "\(ours)")

        let expected = try String(contentsOfFile: realTranscript, encoding: .utf8)
        let actual = try String(contentsOfFile: oursTranscript, encoding: .utf8)
        let requests = expected.split(separator: "\n").filter { $0.hasPrefix("  REQ ") }.count
        #expect(requests >= 40, "Xen's library issued only \(requests) DM_OPs: the fake privcmd did not engage")
        let a = expected.split(separator: "\n", omittingEmptySubsequences: false)
        let b = actual.split(separator: "\n", omittingEmptySubsequences: false)
        if let first = zip(a, b).enumerated().first(where: { $0.element.0 != $0.element.1 }) {
            Issue.record("transcripts differ at line \(first.offset + 1):\n Xen's: \(first.element.0)\n ours:  \(first.element.1)")
        }
        #expect(a.count == b.count, "Xen's transcript has \(a.count) lines, ours \(b.count)")
    }

    /// Eight threads share one handle; the mock broker answers batches of
    /// requests newest first; every reply still reaches its own caller.
    @Test func concurrentCallsGetTheirOwnReplies() throws {
        let fixture = try ClientLibraryFixture.get()
        let run = try ProcessRun.run(fixture.golden, ["pipeline"], environment: fixture.ourLibraryEnvironment)
        #expect(run.status == 0, "\(run)")
        let counts = ProcessRun.counts(run.output, program: "golden pipeline")
        #expect(counts?.failed == 0 && (counts?.passed ?? 0) > 9000, "\(run)")
        #expect(run.output.contains("batches answered newest first"), "\(run)")
    }

    // MARK: - Against the broker

    /// Every function against dmop-broker on the simulated hypervisor:
    /// outputs, errnos, refusals, restrict, threads, the broker's exit when
    /// its client goes away, DMOP_BROKER_SOCKET, open failures and skew.
    @Test func endToEndWithTheBroker() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("e2e")
        let policy = ClientLibraryFixture.clibSources.appendingPathComponent("e2e.policy").path
        let run = try ProcessRun.run(fixture.e2e, [broker, policy, dir.path],
                                     environment: fixture.ourLibraryEnvironment, timeout: 180)
        #expect(run.status == 0, "\(run)")
        let counts = ProcessRun.counts(run.output, program: "e2e")
        #expect(counts?.failed == 0 && (counts?.passed ?? 0) > 1000, "\(run)")
        // The reasons a failed open logs (no logger given: stderr).
        for message in ["neither DMOP_BROKER_FD nor DMOP_BROKER_SOCKET is set",
                        "is not a socket", "not SOCK_SEQPACKET",
                        "reason 43 VERSION_UNSUPPORTED",
                        "dmop-broker was built for DMOP ABI 0x00040f00",
                        "lost the dmop-broker session",
                        "a REPLY to request 1001, which is not waiting"] {
            #expect(run.output.contains(message), "no \"\(message)\" in:\n\(run.output)")
        }
        // The broker saw the refusals as refusals.
        #expect(run.output.contains("reason=OP_NOT_ALLOWED"))
        #expect(run.output.contains("reason=DOMID_MISMATCH"))
        #expect(run.output.contains("reason=CONDITION_FAILED"))
        #expect(run.output.contains("reason=NOT_OWNER"))
    }

    /// Posting (protocol 2): interrupt calls from several threads posted
    /// between synchronous ones reach the hypervisor in order; a refused
    /// posted call is logged and the next call that waits returns its own
    /// result; DMOP_POSTED=0.
    @Test func postedInterruptsThroughTheLibrary() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("posted")
        let policy = ClientLibraryFixture.clibSources.appendingPathComponent("posted.policy").path
        let run = try ProcessRun.run(fixture.posted, [broker, policy, dir.path],
                                     environment: fixture.ourLibraryEnvironment, timeout: 180)
        #expect(run.status == 0, "\(run)")
        let counts = ProcessRun.counts(run.output, program: "posted")
        #expect(counts?.failed == 0 && (counts?.passed ?? 0) > 6000, "\(run)")
        // The library's log line for the delivered failure (no logger: stderr).
        #expect(run.output.contains("was refused by dmop-broker: reason 8 CONDITION_FAILED; 0 later posted request(s) failed too"),
                "\(run)")
        #expect(run.output.contains("reason=CONDITION_FAILED"), "the broker's audit of the refusal: \(run)")
        #expect(run.output.contains("posted failure delivered:"), "\(run)")
    }

    /// Each call returns its own result: refused and Xen-failed posted
    /// MSIs, INTx and ISA levels, each followed by every kind of call that
    /// waits; every waiting call's return value and errno are what the
    /// simulated hypervisor's record says that call got, never the posted
    /// request's failure (which the library logs, with a running count).
    @Test func postedFailureNeverBecomesAnotherCallsResult() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("posted-results")
        let policy = ClientLibraryFixture.clibSources.appendingPathComponent("posted_results.policy").path
        let run = try ProcessRun.run(fixture.postedResults, [broker, policy, dir.path],
                                     environment: fixture.ourLibraryEnvironment, timeout: 120)
        #expect(run.status == 0, "\(run)")
        let counts = ProcessRun.counts(run.output, program: "posted_results")
        // 6 failing posts x 16 waiting calls, 5 or 6 checks each.
        #expect(counts?.failed == 0 && (counts?.passed ?? 0) >= 480, "\(run)")
        // Both kinds were delivered and logged, and counted.
        #expect(run.output.contains("was refused by dmop-broker: reason 8 CONDITION_FAILED"), "\(run)")
        #expect(run.output.contains("failed in the hypervisor; 0 later posted request(s) failed too"), "\(run)")
        #expect(run.output.contains("; 96 posted request(s) of this process failed so far"), "\(run)")
    }

    // MARK: - dmop-qemu-wrapper

    /// A broker stand-in script that records its pid, then runs the real one.
    func brokerShim(in dir: URL, exec target: String) throws -> (script: String, pidFile: String) {
        let pidFile = dir.appendingPathComponent("broker.pid").path
        let script = dir.appendingPathComponent("broker.sh").path
        try "#!/bin/sh\necho $$ > '\(pidFile)'\nexec \(target) \"$@\"\n"
            .write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        return (script, pidFile)
    }

    func wrapperArguments(_ fixture: ClientLibraryFixture, broker: String,
                                  policy: String = TestSupport.policyPath("qemu-xen.policy"),
                                  extra: [String] = []) -> [String] {
        ["--qemu", fixture.fakeQEMU, "--broker", broker, "--policy", policy,
         "--library-dir", fixture.libraryDirectory.path, "--ready-timeout", "20",
         "--broker-arg=--hypervisor", "--broker-arg", "simulated"]
            + rootArguments.map { "--broker-arg=\($0)" } + extra
    }

    func pid(from file: String) -> pid_t? {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        return pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// QEMU's argv as libxl builds it with dm_restrict=1.
    static let libxlArguments = ["-xen-domid", "5", "-no-shutdown", "-chardev",
                                 "socket,id=libxl-cmd,path=/tmp/qmp,server=on,wait=off", "-S",
                                 "-mon", "chardev=libxl-cmd,mode=control", "-nodefaults",
                                 "-no-user-config", "-name", "guest", "-machine", "xenfv",
                                 "-m", "32", "-xen-domid-restrict", "-runas", "nobody"]

    /// The stand-in QEMU finds the broker on DMOP_BROKER_FD, cannot issue
    /// DM_OP, IRQFD or IOEVENTFD ioctls itself, gets its DMOPs through the
    /// library; the broker exits once the stand-in has exited.
    @Test func wrapperRunsQEMUConfinedWithItsBroker() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("wrapper")
        let shim = try brokerShim(in: dir, exec: broker)
        // The broker's lines in a file of their own: the session end comes
        // after the stand-in's exit, once the broker sees the hang-up.
        let auditPath = dir.appendingPathComponent("audit.log").path
        let run = try ProcessRun.run(ClientLibraryFixture.wrapperPath,
                                     wrapperArguments(fixture, broker: shim.script, extra: ["--audit", auditPath])
                                         + ["--"] + Self.libxlArguments,
                                     environment: ["FAKE_QEMU_LIBDIR": fixture.libraryDirectory.path])
        #expect(run.status == 0, "\(run)")
        let counts = ProcessRun.counts(run.output, program: "fake-qemu")
        #expect(counts?.failed == 0 && (counts?.passed ?? 0) >= 30, "\(run)")
        #expect(run.output.contains("dmop-broker pid"), "\(run)")
        let brokerPID = try #require(pid(from: shim.pidFile), "the broker never started:\n\(run)")
        #expect(ProcessRun.waitForExit(brokerPID, timeout: 10),
                "broker \(brokerPID) still running after the stand-in QEMU exited")
        let audit = (try? String(contentsOfFile: auditPath, encoding: .utf8)) ?? ""
        #expect(audit.contains(" session end: "), "\(run)\naudit: \(audit)")
    }

    /// wrapper.conf: an audit file of its own (%n, %d), a policy chosen by
    /// the guest's name, the broker's uid from user-range-base; the file is
    /// not on QEMU's stderr, belongs to the broker's user, and another
    /// unprivileged process (QEMU after -runas) can neither write nor
    /// truncate it.
    @Test(.enabled(if: geteuid() == 0)) func wrapperPerGuestPolicyUserAndAuditFile() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("perguest")
        let headless = TestSupport.policyPath("qemu-xen-headless.policy")
        let config = dir.appendingPathComponent("wrapper.conf").path
        try """
        audit = \(dir.path)/dmop-broker-%n-%d.log
        policy.web-* = /nonexistent/web.policy
        policy.gu?st = \(headless)
        user-range-base = 20000

        """.write(toFile: config, atomically: true, encoding: .utf8)
        let run = try ProcessRun.run(ClientLibraryFixture.wrapperPath,
                                     ["--config", config] + wrapperArguments(fixture, broker: broker) + ["--"] + Self.libxlArguments,
                                     environment: ["FAKE_QEMU_LIBDIR": fixture.libraryDirectory.path])
        let auditPath = dir.appendingPathComponent("dmop-broker-guest-5.log").path
        var audit = ""
        for _ in 0..<100 {
            audit = (try? String(contentsOfFile: auditPath, encoding: .utf8)) ?? ""
            if audit.contains(" session end: ") { break }
            usleep(50_000)
        }
        #expect(audit.contains(" session end: "), "\(run)\naudit: \(audit)")
        #expect(audit.contains("policy=\(headless)") && audit.contains("guest=guest"), "\(audit)")
        #expect(audit.contains("confined: uid 20005/20005/20005 gid 20005/20005/20005"), "\(audit)")
        #expect(!run.output.contains("session start:") && !run.output.contains("confined:"),
                "audit lines on QEMU's stderr: \(run.output)")
        var status = stat()
        // The broker's own user's (it reopens the file after rotation), not QEMU's.
        #expect(stat(auditPath, &status) == 0 && status.st_mode & 0o777 == 0o640 && status.st_uid == 20005 && status.st_gid == 20005)
        let size = status.st_size
        for attempt in ["echo forged >> '\(auditPath)'", ": > '\(auditPath)'"] {
            let tried = try TestSupport.run("/usr/bin/setpriv", ["--reuid", "65534", "--regid", "65534", "--clear-groups",
                                                                 "/bin/sh", "-c", attempt])
            #expect(tried.status != 0, "\(attempt) worked")
        }
        #expect(stat(auditPath, &status) == 0 && status.st_size == size)
    }

    /// No audit setting: the journal where journald listens; else a file in
    /// /var/log/dmop-broker when the package made it; else, stderr a file
    /// (libxl's qemu-dm-NAME.log), dmop-broker-NAME.log next to it. Never
    /// QEMU's log.
    @Test func wrapperDefaultAudit() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("defaultaudit")
        let qemuLog = dir.appendingPathComponent("qemu-dm-guest.log").path
        // A shim that records the broker's arguments.
        let argumentsFile = dir.appendingPathComponent("broker.args").path
        let shim = dir.appendingPathComponent("broker.sh").path
        try "#!/bin/sh\nprintf '%s\\n' \"$@\" > '\(argumentsFile)'\nexec \(broker) \"$@\"\n"
            .write(toFile: shim, atomically: true, encoding: .utf8)
        chmod(shim, 0o755)
        let argv = [ClientLibraryFixture.wrapperPath] + wrapperArguments(fixture, broker: shim) + ["--"] + Self.libxlArguments
        let quoted = argv.map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
        let journald = AuditSink.daemonListens(at: AuditChannel.journalSocket)
        var isDirectory: ObjCBool = false
        let packageDirectory = FileManager.default.fileExists(atPath: "/var/log/dmop-broker", isDirectory: &isDirectory)
            && isDirectory.boolValue
        let expected = journald ? "journal"
            : packageDirectory ? "/var/log/dmop-broker/guest.log" : dir.appendingPathComponent("dmop-broker-guest.log").path
        let run = try ProcessRun.run("/bin/sh", ["-c", "exec \(quoted) 2>>'\(qemuLog)'"],
                                     environment: ["FAKE_QEMU_LIBDIR": fixture.libraryDirectory.path])
        #expect(run.status == 0, "\(run)")
        let arguments = ((try? String(contentsOfFile: argumentsFile, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        // The wrapper passes --audit-log=VALUE (a value may start with '-').
        let channel = arguments.first { $0.hasPrefix("--audit-log=") }.map { String($0.dropFirst("--audit-log=".count)) }
        #expect(channel == expected, "broker arguments: \(arguments)")
        if !journald {
            var audit = ""
            for _ in 0..<100 {
                audit = (try? String(contentsOfFile: expected, encoding: .utf8)) ?? ""
                if audit.contains(" session end: ") { break }
                usleep(50_000)
            }
            #expect(audit.contains(" confined: ") && audit.contains(" session end: "), "audit: \(audit)")
            if packageDirectory { try? FileManager.default.removeItem(atPath: expected) }
        }
        let log = (try? String(contentsOfFile: qemuLog, encoding: .utf8)) ?? ""
        #expect(log.contains("dmop-qemu-wrapper: "), "\(log)")
        #expect(!log.contains("session start:"), "audit lines in QEMU's log: \(log)")
    }

    /// A policy given by name (no '/') is looked up in /etc/dmop-broker, then
    /// /usr/share/dmop-broker; one in neither is a configuration error that
    /// names both places, before any broker starts.
    @Test func wrapperLooksUpAPolicyNameInBothPlaces() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("policyname")
        let shim = try brokerShim(in: dir, exec: broker)
        let name = "no-such-dmop-test-\(getpid()).policy"
        let run = try ProcessRun.run(ClientLibraryFixture.wrapperPath,
                                     wrapperArguments(fixture, broker: shim.script, policy: name) + Self.libxlArguments,
                                     environment: ["FAKE_QEMU_LIBDIR": fixture.libraryDirectory.path])
        #expect(run.status == 78, "\(run)")   // EX_CONFIG
        #expect(run.output.contains("/etc/dmop-broker/\(name)") && run.output.contains("/usr/share/dmop-broker/\(name)"),
                "\(run)")
        #expect(pid(from: shim.pidFile) == nil, "a broker was started without a policy")
    }

    @Test func wrapperRefusesQEMUWithoutItsOwnRestriction() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("norestrict")
        let shim = try brokerShim(in: dir, exec: broker)
        let argv = Self.libxlArguments.filter { $0 != "-xen-domid-restrict" }
        let run = try ProcessRun.run(ClientLibraryFixture.wrapperPath,
                                     wrapperArguments(fixture, broker: shim.script) + argv,
                                     environment: ["FAKE_QEMU_LIBDIR": fixture.libraryDirectory.path])
        #expect(run.status == 64, "\(run)")   // EX_USAGE
        #expect(run.output.contains("-xen-domid-restrict"), "\(run)")
        #expect(!run.output.contains("fake-qemu"), "QEMU ran:\n\(run)")
        #expect(pid(from: shim.pidFile) == nil, "a broker was started for a refused QEMU")

        // A guest named like the option does not count as the option.
        let sneaky = ["-xen-domid", "5", "-name", "-xen-domid-restrict"]
        let run2 = try ProcessRun.run(ClientLibraryFixture.wrapperPath,
                                      wrapperArguments(fixture, broker: shim.script) + sneaky)
        #expect(run2.status == 64, "\(run2)")
    }

    /// allow-unrestricted in the configuration file runs QEMU anyway, and
    /// says so.
    @Test func wrapperOverrideIsExplicitAndLogged() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("override")
        let config = dir.appendingPathComponent("wrapper.conf").path
        try "# test\nallow-unrestricted = yes\n".write(toFile: config, atomically: true, encoding: .utf8)
        let argv = ["-xen-domid", "7", "-nodefaults", "-runas", "nobody"]
        let run = try ProcessRun.run(ClientLibraryFixture.wrapperPath,
                                     ["--config", config] + wrapperArguments(fixture, broker: broker) + argv,
                                     environment: ["FAKE_QEMU_LIBDIR": fixture.libraryDirectory.path,
                                                   "FAKE_QEMU_UNRESTRICTED": "1"])
        #expect(run.status == 0, "\(run)")
        #expect(run.output.contains("WARNING: running QEMU without -xen-domid-restrict"), "\(run)")
        #expect(ProcessRun.counts(run.output, program: "fake-qemu")?.failed == 0, "\(run)")
    }

    /// An i386 syscall (int 0x80: ioctl, which the filter's x86_64 rules
    /// cannot see) from a second thread of the wrapped program kills the
    /// whole process with SIGSYS, not only that thread.
    @Test func wrapperForeignArchitectureSyscallKillsTheProcess() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("badarch")
        let source = dir.appendingPathComponent("badarch.c").path
        let program = dir.appendingPathComponent("badarch").path
        try """
        #include <pthread.h>
        #include <stdio.h>
        static void *run(void *arg) {
            long ret;
            (void)arg;
            /* i386 ioctl (54) of fd 0, TCGETS */
            __asm__ volatile("int $0x80" : "=a"(ret) : "a"(54L), "b"(0L), "c"(0x5401L), "d"(0L)
                             : "memory", "r8", "r9", "r10", "r11");
            printf("thread: int 0x80 returned %ld\\n", ret);
            fflush(stdout);
            return NULL;
        }
        int main(void) {
            pthread_t thread;
            pthread_create(&thread, NULL, run, NULL);
            pthread_join(thread, NULL);
            printf("process survived\\n");
            fflush(stdout);
            return 0;
        }
        """.write(toFile: source, atomically: true, encoding: .utf8)
        let compile = try ProcessRun.run("/usr/bin/cc", ["-std=gnu11", "-pthread", "-o", program, source])
        try #require(compile.status == 0, "\(compile)")
        // Unconfined, the 32-bit call runs and the process lives on.
        let plain = try ProcessRun.run(program, [])
        try #require(plain.status == 0 && plain.output.contains("returned"), "\(plain)")

        let config = dir.appendingPathComponent("wrapper.conf").path
        try "allow-unrestricted = yes\n".write(toFile: config, atomically: true, encoding: .utf8)
        let run = try ProcessRun.run(ClientLibraryFixture.wrapperPath,
                                     ["--config", config] + wrapperArguments(fixture, broker: broker)
                                         .map { $0 == fixture.fakeQEMU ? program : $0 }
                                         + ["-xen-domid", "7", "-nodefaults", "-runas", "nobody"])
        #expect(run.status == SIGSYS, "\(run)")
        #expect(!run.output.contains("returned"), "\(run)")
        #expect(!run.output.contains("process survived"), "\(run)")
    }

    /// libxl's option probe (Xen 4.20): `-machine none` and no -xen-domid.
    /// QEMU runs confined without a broker, gets libxl's QMP connection as
    /// a connected socket (not the listener), and so cannot unlink the
    /// socket path libxl reuses for the real start. A C program plays
    /// libxl (listening socket on fd 9, connect, read the greeting) and a
    /// stand-in plays QEMU, doing on exit what QEMU does: unlink the path
    /// of a listening Unix socket it holds.
    @Test func wrapperRunsLibxlsProbeConfinedWithoutABroker() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("probe")
        let qemu = dir.appendingPathComponent("probe-qemu").path
        let libxl = dir.appendingPathComponent("probe-libxl").path
        try """
        #define _GNU_SOURCE
        #include <errno.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        #include <sys/ioctl.h>
        #include <sys/socket.h>
        #include <sys/un.h>
        #include <fcntl.h>
        #include <unistd.h>
        #include <stdint.h>
        #include <xen/xen.h>
        #include <xen/sys/privcmd.h>
        int main(int argc, char **argv) {
            int fd = -1, listening = 1;
            socklen_t len = sizeof listening;
            for (int i = 1; i + 1 < argc; i++)
                if (!strcmp(argv[i], "-chardev")) {
                    printf("chardev %s\\n", argv[i + 1]);
                    const char *f = strstr(argv[i + 1], "fd=");
                    if (f) fd = atoi(f + 3);
                }
            if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0) {
                printf("no chardev fd\\n"); return 1;
            }
            printf("listening=%d broker_fd=%s ld_library_path=%s\\n", listening,
                   getenv("DMOP_BROKER_FD") ? "set" : "unset", getenv("LD_LIBRARY_PATH") ? "set" : "unset");
            int null = open("/dev/null", O_RDONLY);
            errno = 0;
            int rc = ioctl(null, IOCTL_PRIVCMD_DM_OP, NULL);
            int error = errno;
            printf("dm_op=%d errno=%d\\n", rc, error);
            char line[256];
            FILE *st = fopen("/proc/self/status", "r");
            while (st && fgets(line, sizeof line, st))
                if (!strncmp(line, "Seccomp:", 8) || !strncmp(line, "NoNewPrivs:", 11)) fputs(line, stdout);
            int conn = listening ? accept(fd, NULL, NULL) : fd;
            if (write(conn, "{\\"QMP\\": {}}\\r\\n", 14) != 14) return 1;
            if (listening) { /* QEMU's socket_listen_cleanup */
                struct sockaddr_un a; socklen_t al = sizeof a;
                if (getsockname(fd, (struct sockaddr *)&a, &al) == 0 && a.sun_path[0]) unlink(a.sun_path);
            }
            return 0;
        }
        """.write(toFile: qemu + ".c", atomically: true, encoding: .utf8)
        try """
        #define _GNU_SOURCE
        #include <stdio.h>
        #include <string.h>
        #include <sys/socket.h>
        #include <sys/stat.h>
        #include <sys/un.h>
        #include <sys/wait.h>
        #include <unistd.h>
        int main(int argc, char **argv) {
            struct sockaddr_un a = { .sun_family = AF_UNIX };
            snprintf(a.sun_path, sizeof a.sun_path, "%s", argv[1]);
            unlink(a.sun_path);
            int l = socket(AF_UNIX, SOCK_STREAM, 0);
            if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1)) { perror("listen"); return 2; }
            pid_t pid = fork();
            if (pid == 0) { dup2(l, 9); execv(argv[2], argv + 2); _exit(127); }
            close(l);
            int c = socket(AF_UNIX, SOCK_STREAM, 0);
            if (connect(c, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 2; }
            char buf[64] = { 0 };
            ssize_t n = read(c, buf, sizeof buf - 1);
            int status = 0;
            waitpid(pid, &status, 0);
            struct stat st;
            printf("libxl: greeting=%s wrapper-status=%d path-after-exit=%s\\n", n > 0 && strstr(buf, "QMP") ? "yes" : "no",
                   WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
                   stat(a.sun_path, &st) == 0 ? "present" : "gone");
            return 0;
        }
        """.write(toFile: libxl + ".c", atomically: true, encoding: .utf8)
        for (out, source) in [(qemu, qemu + ".c"), (libxl, libxl + ".c")] {
            let compile = try ProcessRun.run("/usr/bin/cc", ["-std=gnu11", "-Wall", "-o", out, source])
            try #require(compile.status == 0, "\(compile)")
        }
        let probeArguments = ["-S", "-no-user-config", "-nodefaults", "-nographic", "-machine", "none,accel=xen",
                              "-chardev", "socket,id=libxl-cmd,fd=9,server=on,wait=off",
                              "-mon", "chardev=libxl-cmd,mode=control"]
        let socketPath = dir.appendingPathComponent("qmp-libxl-7").path
        // No policy, no broker: the probe needs neither.
        let run = try ProcessRun.run(libxl, [socketPath, ClientLibraryFixture.wrapperPath, "--qemu", qemu,
                                             "--ready-timeout", "10"] + probeArguments, timeout: 60)
        #expect(run.output.contains("libxl: greeting=yes wrapper-status=0 path-after-exit=present"), "\(run)")
        #expect(run.output.contains("chardev socket,id=libxl-cmd,fd="), "\(run)")
        #expect(!run.output.contains("server=on"), "QEMU was handed the listener:\n\(run)")
        #expect(run.output.contains("listening=0 broker_fd=unset ld_library_path=unset"), "\(run)")
        #expect(run.output.contains("dm_op=-1 errno=1"), "\(run)")
        #expect(run.output.contains("Seccomp:\t2") && run.output.contains("NoNewPrivs:\t1"), "\(run)")
        #expect(run.output.contains("libxl's option probe"), "\(run)")
        #expect(!run.output.contains("dmop-broker pid"), "a broker was started for the probe:\n\(run)")

        // Without the wrapper the same stand-in unlinks libxl's path: the race.
        let bare = try ProcessRun.run(libxl, [socketPath, qemu] + probeArguments, timeout: 60)
        #expect(bare.output.contains("path-after-exit=gone"), "\(bare)")

        // Any other argv without -xen-domid is still refused.
        let other = try ProcessRun.run(ClientLibraryFixture.wrapperPath, ["--qemu", qemu, "-nodefaults", "-machine", "pc"])
        #expect(other.status == 64, "\(other)")
        #expect(other.output.contains("no -xen-domid"), "\(other)")
    }

    /// QEMU gets the RLIMIT_FSIZE its largest display surface needs: the
    /// 640x480 placeholder without a display device, 8 bytes per byte of
    /// VRAM with one; never unlimited, whatever the wrapper inherited.
    /// libxl gives a restricted device model RLIMIT_FSIZE 256 KiB; the broker
    /// must not inherit it (its audit file would fill and stop the guest's
    /// DMOPs after about a thousand lines): it runs with no inherited limit
    /// and sets its own when it confines itself. Only the soft limit is set
    /// here: raising a hard limit needs CAP_SYS_RESOURCE, which root in this
    /// test sandbox lacks (on a Xen host the wrapper, as root, has it).
    @Test(.enabled(if: geteuid() == 0)) func wrapperLiftsLibxlsFileSizeLimitForTheBroker() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("brokerfsize")
        let seen = dir.appendingPathComponent("broker-fsize").path
        let script = dir.appendingPathComponent("broker.sh").path
        try "#!/bin/sh\nulimit -f > '\(seen)'\nexec \(broker) \"$@\"\n"
            .write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        let run = try ProcessRun.run("/usr/bin/prlimit",
                                     ["--fsize=262144:unlimited", "--", ClientLibraryFixture.wrapperPath]
                                         + wrapperArguments(fixture, broker: script) + Self.libxlArguments,
                                     environment: ["FAKE_QEMU_LIBDIR": fixture.libraryDirectory.path])
        #expect(run.status == 0, "\(run)")
        let limit = (try? String(contentsOfFile: seen, encoding: .utf8)) ?? ""
        #expect(limit.trimmingCharacters(in: .whitespacesAndNewlines) == "unlimited",
                "the broker started with RLIMIT_FSIZE \(limit) (libxl's 256 KiB)")
    }

    @Test func wrapperSetsTheDisplaySurfaceFileSizeLimit() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("fsize")
        let program = dir.appendingPathComponent("fsize").path
        try """
        #include <stdio.h>
        #include <sys/resource.h>
        int main(void) {
            struct rlimit rl;
            getrlimit(RLIMIT_FSIZE, &rl);
            printf("fsize cur=%llu max=%llu\\n", (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
            return 0;
        }
        """.write(toFile: program + ".c", atomically: true, encoding: .utf8)
        let compile = try ProcessRun.run("/usr/bin/cc", ["-std=gnu11", "-o", program, program + ".c"])
        try #require(compile.status == 0, "\(compile)")
        let config = dir.appendingPathComponent("wrapper.conf").path
        try "allow-unrestricted = yes\n".write(toFile: config, atomically: true, encoding: .utf8)
        func limit(_ qemuArguments: [String]) throws -> String {
            let run = try ProcessRun.run(ClientLibraryFixture.wrapperPath,
                                         ["--config", config] + wrapperArguments(fixture, broker: broker)
                                             .map { $0 == fixture.fakeQEMU ? program : $0 }
                                             + ["-xen-domid", "7", "-nodefaults", "-runas", "nobody"] + qemuArguments)
            #expect(run.status == 0, "\(run)")
            return run.output.split(separator: "\n").first { $0.hasPrefix("fsize ") }.map(String.init) ?? run.output
        }
        #expect(try limit([]) == "fsize cur=1228800 max=1228800")
        #expect(try limit(["-device", "VGA,vgamem_mb=16"]) == "fsize cur=134217728 max=134217728")
        #expect(try limit(["-device", "cirrus-vga,vgamem_mb=8"]) == "fsize cur=67108864 max=67108864")
        #expect(try limit(["-vga", "std"]) == "fsize cur=134217728 max=134217728")
        #expect(try limit(["-vga", "none", "-device", "e1000"]) == "fsize cur=1228800 max=1228800")
        let bad = try ProcessRun.run(ClientLibraryFixture.wrapperPath,
                                     ["--config", config] + wrapperArguments(fixture, broker: broker)
                                         .map { $0 == fixture.fakeQEMU ? program : $0 }
                                         + ["-xen-domid", "7", "-runas", "nobody", "-device", "VGA,vgamem_mb=lots"])
        #expect(bad.status == 64, "\(bad)")
    }

    /// A broker that never becomes ready: the wrapper gives up at its
    /// timeout, kills it and never runs QEMU.
    @Test func wrapperFailsClosedWhenTheBrokerIsNotReady() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("notready")
        let shim = try brokerShim(in: dir, exec: "/bin/sleep 60 #")
        let run = try ProcessRun.run(ClientLibraryFixture.wrapperPath,
                                     wrapperArguments(fixture, broker: shim.script)
                                         + ["--ready-timeout", "1"] + Self.libxlArguments,
                                     timeout: 30)
        #expect(run.status == 69, "\(run)")   // EX_UNAVAILABLE
        #expect(run.output.contains("not ready within 1000 ms"), "\(run)")
        #expect(run.seconds < 10, "\(run)")
        #expect(!run.output.contains("fake-qemu"), "QEMU ran:\n\(run)")
        let sleeper = try #require(pid(from: shim.pidFile))
        #expect(ProcessRun.waitForExit(sleeper, timeout: 5), "the stuck broker \(sleeper) was not killed")
    }

    /// A broker that exits at once (its policy file does not exist).
    @Test func wrapperFailsClosedWhenTheBrokerExits() throws {
        let fixture = try ClientLibraryFixture.get()
        let run = try ProcessRun.run(ClientLibraryFixture.wrapperPath,
                                     wrapperArguments(fixture, broker: broker, policy: "/nonexistent.policy")
                                         + Self.libxlArguments)
        #expect(run.status == 69, "\(run)")
        #expect(run.output.contains("before it was ready"), "\(run)")
        #expect(!run.output.contains("fake-qemu"), "QEMU ran:\n\(run)")
    }

    @Test func wrapperRejectsBadConfiguration() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("config")

        // No library where the wrapper is told to find it.
        let empty = dir.appendingPathComponent("empty").path
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        var run = try ProcessRun.run(ClientLibraryFixture.wrapperPath,
                                     wrapperArguments(fixture, broker: broker, extra: ["--library-dir", empty])
                                         + Self.libxlArguments)
        #expect(run.status == 78 && run.output.contains("libxendevicemodel.so.1 is missing"), "\(run)")

        // No -xen-domid: not a Xen device model.
        run = try ProcessRun.run(ClientLibraryFixture.wrapperPath,
                                 wrapperArguments(fixture, broker: broker) + ["-xen-domid-restrict", "-m", "32"])
        #expect(run.status == 64 && run.output.contains("no -xen-domid"), "\(run)")

        // A reserved domid.
        run = try ProcessRun.run(ClientLibraryFixture.wrapperPath,
                                 wrapperArguments(fixture, broker: broker) + ["-xen-domid", "32752", "-xen-domid-restrict"])
        #expect(run.status == 64 && run.output.contains("not a guest domain id"), "\(run)")

        // An unknown setting names its file and line.
        let config = dir.appendingPathComponent("bad.conf").path
        try "qemu = /bin/true\n\npolcy = x\n".write(toFile: config, atomically: true, encoding: .utf8)
        run = try ProcessRun.run(ClientLibraryFixture.wrapperPath, ["--config", config] + Self.libxlArguments)
        #expect(run.status == 78 && run.output.contains("bad.conf:3: polcy: unknown setting"), "\(run)")

        // No policy anywhere.
        let noPolicy = dir.appendingPathComponent("nopolicy.conf").path
        try "library-dir = \(fixture.libraryDirectory.path)\n".write(toFile: noPolicy, atomically: true, encoding: .utf8)
        run = try ProcessRun.run(ClientLibraryFixture.wrapperPath, ["--config", noPolicy] + Self.libxlArguments)
        #expect(run.status == 78 && run.output.contains("no policy"), "\(run)")
    }
}
