// SPDX-License-Identifier: MIT
import Foundation
import Glibc
import Testing

/// dmop-qemu-wrapper's checks of the users QEMU and the broker run as, its
/// pass-through of probes, and guest names read as QEMU reads -name (see
/// dmop-qemu-wrapper(8)), with the stand-in QEMU of Tests/clib/fake_qemu.c.
extension ClientLibraryTests {
    /// libxl's dm_restrict=1 argv without its -runas.
    static var argumentsWithoutUser: [String] {
        var arguments = libxlArguments
        let at = arguments.firstIndex(of: "-runas")!
        arguments.removeSubrange(at...(at + 1))
        return arguments
    }

    /// /etc/passwd with a second uid-0 account and libxl's QEMU users, to be
    /// bind-mounted over /etc/passwd in a mount namespace of the wrapper's own.
    static func passwdWithLibxlUsers(in dir: URL, rangeBase: Bool = true, shared: Bool = true,
                                     extra more: [String] = [], file: String = "passwd") throws -> String {
        let path = dir.appendingPathComponent(file).path
        let system = try String(contentsOfFile: "/etc/passwd", encoding: .utf8)
            .split(separator: "\n").filter { !$0.hasPrefix("toor:") && !$0.hasPrefix("xen-qemuuser-") }
        let extra = ["toor:x:0:0:root by another name:/root:/bin/sh"]
            + (rangeBase ? ["xen-qemuuser-range-base:x:300000:300000::/nonexistent:/usr/sbin/nologin"] : [])
            + (shared ? ["xen-qemuuser-shared:x:400000:400000::/nonexistent:/usr/sbin/nologin"] : []) + more
        try ((system.map(String.init) + extra).joined(separator: "\n") + "\n")
            .write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// The wrapper with the stand-in QEMU; with `passwd`, in a mount
    /// namespace where that file is /etc/passwd.
    func runWrapper(_ fixture: ClientLibraryFixture, broker: String, config: String? = nil,
                    options: [String] = [], qemu: [String], passwd: String? = nil,
                    environment: [String: String] = [:]) throws -> ProcessRun.Outcome {
        let wrapper = (config.map { ["--config", $0] } ?? []) + wrapperArguments(fixture, broker: broker)
            + options + ["--"] + qemu
        var env = ["FAKE_QEMU_LIBDIR": fixture.libraryDirectory.path]
        for (key, value) in environment { env[key] = value }
        guard let passwd else {
            return try ProcessRun.run(ClientLibraryFixture.wrapperPath, wrapper, environment: env)
        }
        return try ProcessRun.run("/usr/bin/unshare",
                                  ["-m", "/bin/sh", "-c", "mount --bind \"$0\" /etc/passwd && exec \"$@\"",
                                   passwd, ClientLibraryFixture.wrapperPath] + wrapper,
                                  environment: env)
    }

    /// Waits for an audit file's session end (the broker writes it once the
    /// stand-in QEMU has exited).
    func auditText(_ path: String) -> String {
        var text = ""
        for _ in 0..<100 {
            text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            if text.contains(" session end: ") { break }
            usleep(50_000)
        }
        return text
    }

    // MARK: - QEMU never runs as root

    /// Every form in which QEMU's arguments name its user, as QEMU reads them
    /// (os_set_runas: a name first, else UID:GID; -run-with's user= among
    /// other keys): root in any spelling, an unknown user and no user at all
    /// are refused with one line, before any broker starts, whatever
    /// allow-unrestricted says; a non-root user in each form runs.
    @Test(.enabled(if: geteuid() == 0)) func wrapperRefusesQEMUAsRootInEveryForm() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("rootqemu")
        let passwd = try Self.passwdWithLibxlUsers(in: dir)
        let shim = try brokerShim(in: dir, exec: broker)
        let base = Self.argumentsWithoutUser
        let refused: [([String], String)] = [
            ([], "name no user to run as"),
            (["-runas", "root"], "-runas root is root (uid 0, gid 0)"),
            (["-runas", "toor"], "-runas toor is root (uid 0, gid 0)"),
            (["-runas", "0:0"], "is root"),
            (["-runas", "0:65534"], "-runas 0:65534 is root (uid 0, gid 65534)"),
            (["-runas", "65534:0"], "-runas 65534:0 is root (uid 65534, gid 0)"),
            (["-runas", "0x0:1"], "is root (uid 0, gid 1)"),
            (["-runas", "00:1"], "is root (uid 0, gid 1)"),
            (["-run-with", "user=root"], "-run-with user=root is root"),
            (["-run-with", "chroot=/var/empty,user=0:0"], "-run-with user=0:0 is root"),
            (["-run-with", "async-teardown=on,user=toor,chroot=/var/empty"], "-run-with user=toor is root"),
            (["-run-with", "user=nobody,user=root"], "-run-with user=root is root"),
            (["-runas", "nobody", "-run-with", "user=root"], "-run-with user=root is root"),
            (["-run-with", "user=root", "-runas", "nobody"], "-run-with user=root is root"),
            (["-runas", "no-such-user"], "-runas no-such-user: no such user"),
            (["-runas", "65534"], "-runas 65534: no such user, and not UID:GID"),
            (["-runas", " 1:1"], "no such user"),
            (["-runas", "-1:1"], "no such user"),
            (["-run-with", "user"], "-run-with user=on: no such user"),
            (["-run-with", "user=nobody,,x"], "-run-with user=nobody,x: no such user"),
        ]
        for (user, message) in refused {
            let run = try runWrapper(fixture, broker: shim.script, qemu: base + user, passwd: passwd)
            #expect(run.status == 64, "\(user): \(run)")
            #expect(run.output.contains(message), "\(user): want \"\(message)\": \(run)")
            #expect(run.output.split(separator: "\n").count == 1, "\(user): not one line: \(run)")
            #expect(!run.output.contains("fake-qemu"), "\(user): QEMU ran:\n\(run)")
        }
        #expect(pid(from: shim.pidFile) == nil, "a broker was started for a refused QEMU")

        // allow-unrestricted lifts the -xen-domid-restrict requirement only.
        let config = dir.appendingPathComponent("wrapper.conf").path
        try "allow-unrestricted = yes\n".write(toFile: config, atomically: true, encoding: .utf8)
        let unrestricted = try runWrapper(fixture, broker: shim.script, config: config,
                                          qemu: base.filter { $0 != "-xen-domid-restrict" }, passwd: passwd,
                                          environment: ["FAKE_QEMU_UNRESTRICTED": "1"])
        #expect(unrestricted.status == 64 && unrestricted.output.contains("name no user"), "\(unrestricted)")

        let accepted: [[String]] = [
            ["-runas", "nobody"],
            ["-runas", "65534:65534"],
            ["-runas", "0x10000:0x10000"],
            ["-runas", "xen-qemuuser-shared"],                       // libxl 4.17 without a range
            ["-chroot", "/var/empty", "-runas", "300005:300000"],    // libxl 4.17 with one
            ["-run-with", "user=nobody"],
            ["-run-with", "chroot=/var/empty", "-run-with", "user=300005:300000"],  // libxl 4.20
            ["-run-with", "async-teardown=on,user=65534:65534,chroot=/var/empty"],
        ]
        for user in accepted {
            let run = try runWrapper(fixture, broker: broker, qemu: base + user, passwd: passwd)
            #expect(run.status == 0, "\(user): \(run)")
            #expect(ProcessRun.counts(run.output, program: "fake-qemu")?.failed == 0, "\(user): \(run)")
        }
    }

    // MARK: - probes

    /// -help, -version and other questions that name no guest reach the real
    /// QEMU with their arguments unchanged, confined as libxl's probe is,
    /// without a broker or a policy; QEMU's output and exit status are all
    /// there is.
    @Test func wrapperPassesProbesToQEMUUnchanged() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("probes")
        let shim = try brokerShim(in: dir, exec: broker)
        let probes: [[String]] = [
            ["-version"], ["-help"], ["-h"], ["--version"], ["-machine", "help"], ["-M", "?"],
            ["-device", "help"], ["-device", "e1000,help"], ["-cpu", "help"],
            ["-nodefaults", "-S", "-display", "none", "-version"],
        ]
        for (index, probe) in probes.enumerated() {
            let status = Int32(index % 3)
            let run = try ProcessRun.run(ClientLibraryFixture.wrapperPath,
                                         ["--qemu", fixture.fakeQEMU, "--broker", shim.script, "--"] + probe,
                                         environment: ["FAKE_QEMU_PROBE": "1", "FAKE_QEMU_EXIT": "\(status)"])
            #expect(run.status == status, "\(probe): \(run)")
            let argv = "fake-qemu probe: argv" + probe.map { " [\($0)]" }.joined()
            let lines = run.output.split(separator: "\n").map(String.init).sorted()
            #expect(lines == [argv, "fake-qemu probe: a line on stderr",
                              "fake-qemu probe: broker_fd=unset ld_library_path=unset no_new_privs=1 seccomp=2 uid=\(getuid())"]
                        .sorted(), "\(probe): \(run)")
        }
        #expect(pid(from: shim.pidFile) == nil, "a broker was started for a probe")

        // A guest's argv with -xen-domid is no probe, and an argv that names
        // neither a guest nor a question is still refused.
        let other = try ProcessRun.run(ClientLibraryFixture.wrapperPath,
                                       ["--qemu", fixture.fakeQEMU, "-nodefaults", "-machine", "pc", "-name", "help"],
                                       environment: ["FAKE_QEMU_PROBE": "1"])
        #expect(other.status == 64 && other.output.contains("no -xen-domid"), "\(other)")
    }

    // MARK: - guest names

    /// -name as QEMU reads it: ",," is a comma of the name, guest= may come
    /// with other keys; a bare name followed by keys (what libxl passes for a
    /// domain named with a comma) and a key QEMU does not know are refused.
    @Test(.enabled(if: geteuid() == 0)) func wrapperReadsGuestNamesAsQEMUDoes() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("names")
        let headless = TestSupport.policyPath("qemu-xen-headless.policy")
        let config = dir.appendingPathComponent("wrapper.conf").path
        try """
        audit = \(dir.path)/%n.log
        policy.a,b = \(headless)
        policy.trusted-vm = \(headless)

        """.write(toFile: config, atomically: true, encoding: .utf8)
        let base = Self.argumentsWithoutUser.filter { $0 != "-name" && $0 != "guest" } + ["-runas", "nobody"]
        for name in ["guest=a,,b,debug-threads=on", "a,,b", "debug-threads=off,guest=a,,b", "guest=x,guest=a,,b"] {
            try? FileManager.default.removeItem(atPath: "\(dir.path)/a,b.log")
            let run = try runWrapper(fixture, broker: broker, config: config, qemu: base + ["-name", name])
            #expect(run.status == 0, "\(name): \(run)")
            let audit = auditText("\(dir.path)/a,b.log")
            #expect(audit.contains("policy=\(headless)") && audit.contains("guest=a,b"), "\(name): \(audit)")
        }
        for (name, message) in [("trusted-vm,debug-threads=on", "is ambiguous"),
                                ("trusted-vm,x", "is ambiguous"),
                                ("guest=trusted-vm,tenant=x", "no setting 'tenant'")] {
            let run = try runWrapper(fixture, broker: broker, config: config, qemu: base + ["-name", name])
            #expect(run.status == 64 && run.output.contains(message), "\(name): \(run)")
            #expect(run.output.split(separator: "\n").count == 1 && !run.output.contains("fake-qemu"), "\(run)")
        }
    }

    /// Domid rules are written #N; a guest named with digits is never taken
    /// for a domid, and the old bare-number spelling is refused, not
    /// silently turned into a name pattern.
    @Test(.enabled(if: geteuid() == 0)) func wrapperDomidRulesHaveTheirOwnSyntax() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("domidrules")
        let headless = TestSupport.policyPath("qemu-xen-headless.policy")
        let base = Self.argumentsWithoutUser.filter { $0 != "-name" && $0 != "guest" } + ["-runas", "nobody"]
        let audit = "\(dir.path)/audit-%d.log"

        let old = dir.appendingPathComponent("old.conf").path
        try "policy.7 = \(headless)\n".write(toFile: old, atomically: true, encoding: .utf8)
        let refused = try runWrapper(fixture, broker: broker, config: old, qemu: base + ["-name", "7"])
        #expect(refused.status == 78 && refused.output.contains("old.conf:1: policy.7: a domid is written #N"),
                "\(refused)")

        // Domain 5, named "7": domain 7's rule does not apply, domain 5's does.
        let byDomid = dir.appendingPathComponent("domid.conf").path
        try "audit = \(audit)\npolicy.#7 = /nonexistent/7.policy\npolicy.#5 = \(headless)\n"
            .write(toFile: byDomid, atomically: true, encoding: .utf8)
        var run = try runWrapper(fixture, broker: broker, config: byDomid, qemu: base + ["-name", "7"])
        #expect(run.status == 0, "\(run)")
        var text = auditText("\(dir.path)/audit-5.log")
        #expect(text.contains("policy=\(headless)") && text.contains("guest=7"), "\(text)")

        // A name of digits, by a pattern.
        try FileManager.default.removeItem(atPath: "\(dir.path)/audit-5.log")
        let byName = dir.appendingPathComponent("name.conf").path
        try "audit = \(audit)\npolicy.[7] = \(headless)\n".write(toFile: byName, atomically: true, encoding: .utf8)
        run = try runWrapper(fixture, broker: broker, config: byName, qemu: base + ["-name", "7"])
        #expect(run.status == 0, "\(run)")
        text = auditText("\(dir.path)/audit-5.log")
        #expect(text.contains("policy=\(headless)"), "\(text)")

        for bad in ["policy.# = x", "policy.#0 = x", "policy.#32752 = x", "user.#5x = x"] {
            let file = dir.appendingPathComponent("bad.conf").path
            try "\(bad)\n".write(toFile: file, atomically: true, encoding: .utf8)
            let run = try runWrapper(fixture, broker: broker, config: file, qemu: base)
            #expect(run.status == 78 && run.output.contains("#N must name a guest domain id"), "\(bad): \(run)")
        }
    }

    /// Audit file names from %n: one file per name (no two names share one),
    /// never outside their directory, within NAME_MAX with a hash suffix for
    /// long names; a name that starts with '-' reaches the broker as a name.
    @Test(.enabled(if: geteuid() == 0)) func wrapperAuditFileNamesStayInTheirDirectory() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("auditnames")
        let base = Self.argumentsWithoutUser.filter { $0 != "-name" && $0 != "guest" } + ["-runas", "nobody"]
        let sub = dir.appendingPathComponent("sub").path
        try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
        let config = dir.appendingPathComponent("wrapper.conf").path
        try "audit = \(sub)/dmop-broker-%n.log\n".write(toFile: config, atomically: true, encoding: .utf8)

        func sha256Hex(_ text: String) throws -> String {
            let file = dir.appendingPathComponent("name.txt").path
            try text.write(toFile: file, atomically: true, encoding: .utf8)
            let out = try ProcessRun.run("/usr/bin/sha256sum", [file]).output
            return String(out.prefix(32))
        }
        let long = String(repeating: "x", count: 300)
        let cases: [(name: String, file: String)] = [
            ("a/b", "dmop-broker-a%2Fb.log"),
            ("a_b", "dmop-broker-a_b.log"),
            ("../../x", "dmop-broker-%2E.%2F..%2Fx.log"),
            ("-x", "dmop-broker--x.log"),
            ("domain-9", "dmop-broker-domain%2D9.log"),
            ("50%", "dmop-broker-50%25.log"),
            (long, "dmop-broker-" + String(repeating: "x", count: 255 - 12 - 4 - 33) + "~" + (try sha256Hex(long)) + ".log"),
            (long + "y", "dmop-broker-" + String(repeating: "x", count: 255 - 12 - 4 - 33) + "~" + (try sha256Hex(long + "y")) + ".log"),
        ]
        for (name, file) in cases {
            let escaped = name.replacingOccurrences(of: ",", with: ",,")
            let run = try runWrapper(fixture, broker: broker, config: config, qemu: base + ["-name", "guest=" + escaped])
            #expect(run.status == 0, "\(name): \(run)")
            #expect(file.utf8.count <= 255)
            let audit = auditText("\(sub)/\(file)")
            #expect(audit.contains(" session end: "), "\(name): no \(file): \(run)")
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: sub)
        #expect(Set(files) == Set(cases.map(\.file)), "\(files.sorted())")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["name.txt", "sub", "wrapper.conf"])

        // %n as the whole file name: ".." is a file of the directory.
        let dotConfig = dir.appendingPathComponent("dot.conf").path
        try "audit = \(sub)/%n\n".write(toFile: dotConfig, atomically: true, encoding: .utf8)
        let dots = try runWrapper(fixture, broker: broker, config: dotConfig, qemu: base + ["-name", ".."])
        #expect(dots.status == 0, "\(dots)")
        #expect(auditText("\(sub)/%2E.").contains(" session end: "), "\(dots)")

        // No room for a name at all: refused in one line, before the broker.
        let tight = dir.appendingPathComponent("tight.conf").path
        try "audit = \(sub)/\(String(repeating: "a", count: 240))%n.log\n".write(toFile: tight, atomically: true, encoding: .utf8)
        let refused = try runWrapper(fixture, broker: broker, config: tight, qemu: base + ["-name", "a-name-longer-than-eleven"])
        #expect(refused.status == 78 && refused.output.contains("no room for the guest's name"), "\(refused)")
        #expect(refused.output.split(separator: "\n").count == 1, "\(refused)")
    }

    // MARK: - the broker's uid is not QEMU's

    /// A broker whose uid is QEMU's, or one of libxl's QEMU uids
    /// (xen-qemuuser-range-base + any domid, xen-qemuuser-shared), could be
    /// stopped or killed by a QEMU: refused with one line, before it starts.
    @Test(.enabled(if: geteuid() == 0)) func wrapperRefusesABrokerSharingAQEMUUid() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("brokeruid")
        let passwd = try Self.passwdWithLibxlUsers(in: dir)
        let shim = try brokerShim(in: dir, exec: broker)
        let base = Self.argumentsWithoutUser
        func conf(_ name: String, _ text: String) throws -> String {
            let path = dir.appendingPathComponent(name).path
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        let ranged = try conf("range.conf", "user-range-base = 20000\n")
        let inLibxls = try conf("libxl.conf", "user-range-base = 300000\n")
        let refused: [(config: String?, options: [String], qemu: [String], message: String)] = [
            (nil, ["--user", "nobody"], ["-runas", "nobody"], "the user QEMU runs as (-runas nobody)"),
            (nil, ["--user", "65534:65534"], ["-run-with", "user=nobody"], "is uid 65534, the user QEMU runs as"),
            (ranged, [], ["-runas", "20005:20005"], "the broker's user 20005:20005 is uid 20005, the user QEMU"),
            (inLibxls, [], ["-runas", "nobody"], "uid 300005, in libxl's range of QEMU uids"),
            (nil, ["--user", "300100:300100"], ["-runas", "nobody"], "it is the QEMU uid of domain 100"),
            (nil, ["--user", "xen-qemuuser-shared"], ["-runas", "nobody"], "the uid of libxl's xen-qemuuser-shared"),
        ]
        for (config, options, qemu, message) in refused {
            let run = try runWrapper(fixture, broker: shim.script, config: config, options: options,
                                     qemu: base + qemu, passwd: passwd)
            #expect(run.status == 78 && run.output.contains(message), "\(options) \(qemu): \(run)")
            #expect(run.output.split(separator: "\n").count == 1 && !run.output.contains("fake-qemu"), "\(run)")
        }
        #expect(pid(from: shim.pidFile) == nil, "a broker was started")

        // Apart: QEMU in libxl's range, the broker in the wrapper's own.
        let run = try runWrapper(fixture, broker: broker, config: ranged, qemu: base + ["-runas", "300005:300000"],
                                 passwd: passwd)
        #expect(run.status == 0 && ProcessRun.counts(run.output, program: "fake-qemu")?.failed == 0, "\(run)")
    }

    // MARK: - restrict = self

    /// restrict = self (per guest): for a toolstack that does not restrict
    /// QEMU, the wrapper adds what libxl's dm_restrict would, in the form
    /// the QEMU in use takes (by its -version), makes the empty per-domid
    /// chroot as libxl does, and gives QEMU its own mount and IPC namespaces
    /// (not the broker's) and libxl's rlimits; the stand-in QEMU reports
    /// its argv and its state.
    @Test(.enabled(if: geteuid() == 0)) func wrapperRestrictsQEMUItselfAsLibxlWould() throws {
        let fixture = try ClientLibraryFixture.get()
        let dir = try fixture.scratch("selfrestrict")
        let runDir = dir.appendingPathComponent("run").path
        try FileManager.default.createDirectory(atPath: runDir, withIntermediateDirectories: true)
        let chroot = "\(runDir)/qemu-root-5"
        let config = dir.appendingPathComponent("wrapper.conf").path
        try "restrict.self-* = self\nrun-dir = \(runDir)\n".write(toFile: config, atomically: true, encoding: .utf8)
        let nsFile = dir.appendingPathComponent("broker-ns").path
        let shim = dir.appendingPathComponent("broker-ns.sh").path
        try "#!/bin/sh\n{ readlink /proc/self/ns/mnt; readlink /proc/self/ns/ipc; } > '\(nsFile)'\nexec \(broker) \"$@\"\n"
            .write(toFile: shim, atomically: true, encoding: .utf8)
        chmod(shim, 0o755)
        // What libxl passes with dm_restrict = 0: no restriction, no user.
        let argv = ["-xen-domid", "5", "-no-shutdown", "-name", "self-1", "-nodefaults", "-no-user-config",
                    "-machine", "xenfv", "-m", "32"]
        let ranged = try Self.passwdWithLibxlUsers(in: dir)
        let sharedOnly = try Self.passwdWithLibxlUsers(in: dir, rangeBase: false, file: "passwd-shared")
        let cases: [(version: String, passwd: String, added: [String])] = [
            ("7.2.19 (Debian 1:7.2+dfsg-7+deb12u13)", ranged,
             ["-xen-domid-restrict", "-chroot", chroot, "-runas", "300005:300000"]),
            ("8.2.2", ranged, ["-xen-domid-restrict", "-run-with", "chroot=\(chroot)", "-runas", "300005:300000"]),
            ("10.0.2 (Debian 1:10.0.2+ds-1)", ranged,
             ["-xen-domid-restrict", "-run-with", "chroot=\(chroot)", "-run-with", "user=300005:300000"]),
            ("10.0.2", sharedOnly,
             ["-xen-domid-restrict", "-run-with", "chroot=\(chroot)", "-run-with", "user=xen-qemuuser-shared"]),
        ]
        for (version, passwd, added) in cases {
            // A chroot left from an earlier start (empty) is made again, 0000.
            mkdir(chroot, 0o755)
            try? FileManager.default.removeItem(atPath: nsFile)
            let run = try runWrapper(fixture, broker: shim, config: config, qemu: argv, passwd: passwd,
                                     environment: ["FAKE_QEMU_VERSION": version])
            #expect(run.status == 0 && ProcessRun.counts(run.output, program: "fake-qemu")?.failed == 0,
                    "\(version): \(run)")
            let lines = run.output.split(separator: "\n").map(String.init)
            #expect(lines.contains("fake-qemu argv:" + (argv + added).map { " [\($0)]" }.joined()), "\(version): \(run)")
            let state = lines.first { $0.hasPrefix("fake-qemu state: ") }?.split(separator: " ").map(String.init) ?? []
            let brokerNS = ((try? String(contentsOfFile: nsFile, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            #expect(state.count == 9 && brokerNS.count == 2, "\(run)\nbroker: \(brokerNS)")
            if state.count == 9 && brokerNS.count == 2 {
                #expect(state[2].hasPrefix("mnt:[") && state[2] != brokerNS[0], "QEMU shares the broker's mount namespace: \(state)")
                #expect(state[3].hasPrefix("ipc:[") && state[3] != brokerNS[1], "QEMU shares the broker's IPC namespace: \(state)")
                #expect(Array(state[4...]) == ["0:0", "0:0", "0:0", "0:0", "1228800:1228800"],
                        "core, msgqueue, locks, memlock, fsize: \(state)")
            }
            var st = stat()
            #expect(stat(chroot, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR && st.st_mode & 0o7777 == 0 && st.st_uid == 0)
            #expect((try? FileManager.default.contentsOfDirectory(atPath: chroot))?.isEmpty == true)
        }

        // Refused, in one line, and QEMU never runs.
        let clash = try Self.passwdWithLibxlUsers(in: dir, extra: ["clash:x:300005:300005::/:/bin/sh"], file: "passwd-clash")
        let none = try Self.passwdWithLibxlUsers(in: dir, rangeBase: false, shared: false, file: "passwd-none")
        let other = argv.map { $0 == "self-1" ? "other" : $0 }
        let refused: [(qemu: [String], passwd: String, message: String)] = [
            (argv, clash, "QEMU's uid would be 300005 (xen-qemuuser-range-base + 5), but that is user clash"),
            (argv, none, "neither xen-qemuuser-range-base nor xen-qemuuser-shared exists"),
            (argv + ["-xen-domid-restrict"], ranged, "already have -xen-domid-restrict"),
            (argv + ["-runas", "nobody"], ranged, "already have -runas"),
            (argv + ["-run-with", "async-teardown=on"], ranged, "already have -run-with"),
            (other, ranged, "lack -xen-domid-restrict"),    // restrict = toolstack for it
        ]
        for (qemu, passwd, message) in refused {
            let run = try runWrapper(fixture, broker: shim, config: config, qemu: qemu, passwd: passwd)
            #expect(run.status == 64 || run.status == 78, "\(qemu): \(run)")
            #expect(run.output.contains(message) && run.output.split(separator: "\n").count == 1, "\(qemu): \(run)")
        }
        try "left behind".write(toFile: "\(chroot)/file", atomically: true, encoding: .utf8)
        let stale = try runWrapper(fixture, broker: shim, config: config, qemu: argv, passwd: ranged)
        #expect(stale.status == 71 && stale.output.contains("cannot remove the old chroot \(chroot)"), "\(stale)")
        #expect(!stale.output.contains("fake-qemu: "), "\(stale)")
    }
}
