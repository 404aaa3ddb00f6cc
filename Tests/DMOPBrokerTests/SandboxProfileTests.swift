// SPDX-License-Identifier: MIT
import CXen
import DMOPSandbox
import Glibc
import Testing

@Suite("seccomp profile and sandbox configuration (no confinement)")
struct SandboxProfileTests {
    static let listening = SandboxDescriptors(privcmd: 3, client: .listening(listener: 4, clientFd: 10), ready: 5, record: 6)
    static let inherited = SandboxDescriptors(privcmd: 3, client: .inherited(fd: 4))
    static let simulated = SandboxDescriptors(privcmd: nil, client: .inherited(fd: 4))

    @Test("ioctl is allowed only on the privcmd fd with IOCTL_PRIVCMD_DM_OP from the headers")
    func ioctlRule() throws {
        let profile = try SeccompProfile(descriptors: Self.inherited, mode: .enforce)
        let ioctls = profile.allowed.filter { $0.name == "ioctl" }
        #expect(ioctls.count == 1)
        #expect(ioctls.first?.conditions.map(\.comparison) == [.equal(3), .equal(UInt64(cxen_ioctl_privcmd_dm_op()))])
        #expect(ioctls.first?.conditions.map(\.index) == [0, 1])
    }

    @Test("with the simulated hypervisor no ioctl is allowed at all")
    func simulatedNoIoctl() throws {
        let profile = try SeccompProfile(descriptors: Self.simulated, mode: .enforce)
        #expect(!profile.allowedNames.contains("ioctl"))
        #expect(!profile.neverAllowed.contains { $0.name == "ioctl" })
    }

    @Test("nothing that opens, creates processes, executes or attaches is on the list")
    func forbiddenAbsent() throws {
        let forbidden = ["open", "openat", "openat2", "creat", "socket", "socketpair", "connect", "bind", "listen",
                         "execve", "execveat", "fork", "vfork", "clone", "clone3", "ptrace", "kill", "tgkill", "tkill",
                         "process_vm_readv", "process_vm_writev", "pkey_mprotect", "setuid", "setresuid", "setgid",
                         "prctl", "seccomp", "bpf", "mount", "chroot", "unlink", "rename", "memfd_create", "sendto",
                         "recvfrom", "read", "pread64", "readv", "writev", "pwrite64", "fcntl", "dup", "dup2",
                         "userfaultfd", "perf_event_open", "io_uring_setup", "keyctl", "add_key"]
        for descriptors in [Self.listening, Self.inherited, Self.simulated] {
            let names = try SeccompProfile(descriptors: descriptors, mode: .enforce).allowedNames
            for name in forbidden {
                #expect(!names.contains(name), "\(name) is allowed")
            }
        }
    }

    @Test("fd-bound rules name exactly the configured fds")
    func fdBinding() throws {
        let profile = try SeccompProfile(descriptors: Self.listening, mode: .enforce)
        func firstArgs(_ name: String) -> [ArgumentCondition.Comparison] {
            profile.allowed.filter { $0.name == name }.compactMap { $0.conditions.first { $0.index == 0 }?.comparison }
        }
        #expect(firstArgs("recvmsg") == [.equal(10)])
        #expect(firstArgs("sendmsg") == [.equal(10)])
        #expect(firstArgs("getsockopt") == [.equal(10)])
        #expect(firstArgs("shutdown") == [.equal(10)])
        #expect(firstArgs("accept4") == [.equal(4)])
        #expect(Set(firstArgs("write")) == [.equal(2), .equal(5), .equal(6)])
        let dup3 = profile.allowed.first { $0.name == "dup3" }
        #expect(dup3?.conditions.map(\.comparison) == [.equal(10)] && dup3?.conditions.first?.index == 1)
        let inherited = try SeccompProfile(descriptors: Self.inherited, mode: .enforce)
        #expect(!inherited.allowedNames.contains("accept4") && !inherited.allowedNames.contains("dup3"))
    }

    @Test("mmap and mprotect never allow PROT_EXEC")
    func noExec() throws {
        let profile = try SeccompProfile(descriptors: Self.inherited, mode: .enforce)
        for name in ["mmap", "mprotect"] {
            let rules = profile.allowed.filter { $0.name == name }
            #expect(rules.count == 1)
            #expect(rules.first?.conditions.map(\.comparison) == [.maskedEqual(mask: UInt64(PROT_EXEC), value: 0)])
            #expect(rules.first?.conditions.first?.index == 2)
        }
    }

    @Test("the filter tests the request loop's calls first, recvmsg then sendmsg, in every mode and fd layout")
    func requestCallsFirst() throws {
        let expected = try SeccompProfile.testedFirst.map { try #require(SeccompProfile.number(of: $0)) }
        for descriptors in [Self.listening, Self.inherited, Self.simulated] {
            for mode in SeccompMode.allCases {
                let filter = try SeccompFilter(SeccompProfile(descriptors: descriptors, mode: mode))
                var ends: [Int32] = [-1, -1]
                try #require(pipe(&ends) == 0)
                try filter.exportPFC(to: ends[1])
                close(ends[1])
                var text = [UInt8]()
                var chunk = [UInt8](repeating: 0, count: 4096)
                while true {
                    let n = read(ends[0], &chunk, chunk.count)
                    if n <= 0 { break }
                    text += chunk[0..<n]
                }
                close(ends[0])
                // "if ($syscall == N)", in the order the program tests them.
                let tested = String(decoding: text, as: UTF8.self).split(separator: "\n").compactMap { line -> Int32? in
                    guard let range = line.range(of: "if ($syscall == ") else { return nil }
                    return Int32(line[range.upperBound...].prefix { $0.isNumber })
                }
                #expect(Array(tested.prefix(expected.count)) == expected, "\(mode) \(descriptors): \(tested)")
                // Reordered, not dropped: every allowed call is still tested.
                let allowed = Set(filter.profile.allowed.compactMap { SeccompProfile.number(of: $0.name) })
                #expect(allowed.isSubset(of: Set(tested)), "\(mode)")
            }
        }
    }

    @Test("every rule has a reason and resolves to a system call number")
    func reasonsAndNumbers() throws {
        let profile = try SeccompProfile(descriptors: Self.listening, mode: .log)
        for rule in profile.allowed + profile.neverAllowed {
            #expect(rule.reason.count > 10, "\(rule.name) has no real reason")
            #expect(SeccompProfile.number(of: rule.name) != nil, "\(rule.name)")
        }
        // And libseccomp accepts all of them, in every mode.
        for mode in SeccompMode.allCases {
            _ = try SeccompFilter(SeccompProfile(descriptors: Self.listening, mode: mode))
        }
    }

    @Test("an fd in two roles or a negative fd is refused")
    func badDescriptors() {
        #expect(throws: SandboxError.self) {
            try SeccompProfile(descriptors: SandboxDescriptors(privcmd: 4, client: .inherited(fd: 4)), mode: .enforce)
        }
        #expect(throws: SandboxError.self) {
            try SeccompProfile(descriptors: SandboxDescriptors(privcmd: -1, client: .inherited(fd: 4)), mode: .enforce)
        }
        #expect(throws: SandboxError.self) {
            try SeccompProfile(descriptors: SandboxDescriptors(privcmd: 3, client: .listening(listener: 4, clientFd: 4)),
                               mode: .enforce)
        }
        #expect(throws: SandboxError.self) {
            try SeccompProfile(descriptors: SandboxDescriptors(privcmd: 3, client: .inherited(fd: 4), ready: 3), mode: .enforce)
        }
    }

    @Test("the printed profile lists every rule with its number and reason")
    func rendering() throws {
        let profile = try SeccompProfile(descriptors: Self.listening, mode: .log)
        let text = profile.render()
        #expect(text.contains("ioctl") && text.contains("arg1 == 0x105005 (IOCTL_PRIVCMD_DM_OP)"))
        #expect(text.contains("refused with EPERM even in log mode"))
        for rule in profile.allowed {
            #expect(text.contains(rule.reason))
        }
    }

    @Test("--user parsing")
    func userSpec() throws {
        #expect(try UserSpec.resolve("65534:65534") == UserSpec(uid: 65534, gid: 65534))
        #expect(try UserSpec.resolve("root") == UserSpec(uid: 0, gid: 0, name: "root"))
        for bad in ["", ":", "1:", ":1", "a:1", "1:2:3", "4294967295:1", "1:4294967295", "-1:0", "no-such-user-dmop"] {
            #expect(throws: SandboxError.self, "\(bad)") { try UserSpec.resolve(bad) }
        }
    }

    @Test("rlimits: NOFILE covers the highest fd; FSIZE is 0 without a regular file to write")
    func limitsPlan() throws {
        // In a test run stderr may well be a regular file; use a profile whose
        // written fds are pipes by checking only NOFILE here.
        let plan = ResourceLimits.plan(descriptors: Self.listening, addressSpace: 1 << 30, fileGrowth: 1 << 20)
        #expect(plan.openFiles == 10 + 1 + ResourceLimits.descriptorMargin)
        #expect(plan.processes == 0 && plan.coreSize == 0)
    }
}

@Suite("dmop-broker seccomp-profile")
struct SeccompProfileCommandTests {
    @Test("prints every rule of the serve profile, and the PFC with --pfc")
    func command() throws {
        let result = try runBroker(["seccomp-profile", "--pfc"])
        #expect(result.status == 0, "\(result.output)")
        let profile = try SeccompProfile(descriptors: SandboxDescriptors(privcmd: 3, client: .listening(listener: 4, clientFd: 10)),
                                         mode: .enforce)
        #expect(result.output.hasPrefix(profile.render()), "\(result.output)")
        #expect(result.output.contains("# filter for arch x86_64"), "\(result.output)")
        let simulated = try runBroker(["seccomp-profile", "--hypervisor", "simulated", "--socket-fd", "3"])
        #expect(simulated.status == 0 && !simulated.output.contains("\n  ioctl "), "\(simulated.output)")
        #expect(simulated.output.contains("client=3 (inherited)"), "\(simulated.output)")
    }

    /// The allow-list is reviewed data: a change to it shows in the diff of
    /// these files, rule by rule with its reason.
    @Test("the allow-list of --listen and of the wrapper's --socket-fd line is what the golden files hold",
          arguments: [
              ([String](), "seccomp-profile.txt"),
              (["--socket-fd", "3", "--ready-fd", "4", "--privcmd-fd", "5"], "seccomp-profile-socket-fd.txt"),
          ])
    func golden(arguments: [String], file: String) throws {
        let golden = try String(contentsOfFile: TestSupport.packageRoot.appendingPathComponent("Tests/golden/\(file)").path,
                                encoding: .utf8)
        let result = try runBroker(["seccomp-profile"] + arguments)
        #expect(result.status == 0)
        #expect(result.output == golden,
                "regenerate with: dmop-broker seccomp-profile \(arguments.joined(separator: " ")) > Tests/golden/\(file)")
    }
}
