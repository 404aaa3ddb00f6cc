// SPDX-License-Identifier: MIT
import DMOPClient
import DMOPCore
import Foundation
import Glibc
import Testing

@Suite("Xen releases: the table, the start-up check, --accept-xen")
struct XenReleaseTests {
    static let release499 = XenRelease(major: 4, minor: 99)

    @Test("X.Y parses; anything else does not")
    func parsing() {
        #expect(XenRelease(parsing: "4.20") == XenRelease(major: 4, minor: 20))
        #expect(XenRelease(parsing: "4.20")?.xenVersion == 0x0004_0014)
        for bad in ["", "4", "4.", ".20", "4.20.1", "4.x", "-4.20", "4.65536", "4 .20", "٤.٢٠", "+4.20"] {
            #expect(XenRelease(parsing: bad) == nil, "\(bad) parsed")
        }
        #expect(XenRelease(xenVersion: 0) == nil)
        #expect(XenRelease(xenVersion: 0x0004_0011)?.description == "4.17")
    }

    @Test("this build's DMOP ABI is the one the table was checked with, so 4.17 to 4.22 are trusted")
    func tableAppliesToThisBuild() {
        // Fails when built against a dm_op.h whose layout differs from the
        // one checked at every tag: the table must then be checked again.
        #expect(DMOPABI.identifier == XenReleases.abiIdentifier)
        #expect(XenReleases.compatible.map(\.description) == ["4.17", "4.18", "4.19", "4.20", "4.21", "4.22"])
        #expect(XenReleases.compatibleText == "4.17 to 4.22")
    }

    @Test("verdicts: known, refused, accepted only for the named release, unknown version")
    func verdicts() {
        let v420 = XenRelease(major: 4, minor: 20).xenVersion
        #expect(XenReleases.verdict(xenVersion: v420, accepted: []) == .known(XenRelease(major: 4, minor: 20)))
        #expect(XenReleases.verdict(xenVersion: Self.release499.xenVersion, accepted: []) == .refused(Self.release499))
        #expect(XenReleases.verdict(xenVersion: Self.release499.xenVersion, accepted: [XenRelease(major: 4, minor: 98)])
            == .refused(Self.release499))
        #expect(XenReleases.verdict(xenVersion: Self.release499.xenVersion, accepted: [Self.release499])
            == .accepted(Self.release499))
        #expect(XenReleases.verdict(xenVersion: 0x0004_0010, accepted: []) == .refused(XenRelease(major: 4, minor: 16)))
        #expect(XenReleases.verdict(xenVersion: 0, accepted: [Self.release499]) == .refused(nil))
        if case .accepted = XenReleases.verdict(xenVersion: 0, accepted: [], acceptUnknown: true) {} else {
            Issue.record("--accept-xen unknown did not accept a failed version query")
        }
    }

    @Test("serve on a simulated Xen 4.99 refuses to start: one line, exit status 82, nothing served")
    func refusesUncheckedRelease() throws {
        let dir = TestSupport.temporaryDirectory()
        let socket = dir.appendingPathComponent("b.sock").path
        var arguments = ["serve", "--hypervisor", "simulated", "--simulated-xen-version", "4.99", "--domid", "5",
                         "--listen", socket, "--policy", TestSupport.policyPath("qemu-xen.policy")]
        if geteuid() == 0 { arguments.append("--allow-root") }
        let run = try runBroker(arguments)
        #expect(run.status == 82, "\(run)")
        let lines = run.output.split(separator: "\n")
        #expect(lines.count == 1, "\(run.output)")
        #expect(run.output.hasPrefix("dmop-broker: Xen 4.99 is not a release whose DMOP ABI this build was checked against (4.17 to 4.22)"),
                "\(run.output)")
        #expect(run.output.contains("--accept-xen 4.99"))
        #expect(!FileManager.default.fileExists(atPath: socket), "the refused broker created its socket")
        // Accepting another release does not accept this one.
        let other = try runBroker(arguments + ["--accept-xen", "4.98"])
        #expect(other.status == 82, "\(other)")
    }

    @Test("serve with --accept-xen 4.99 starts, logs the risk, and serves")
    func acceptedReleaseServes() throws {
        let broker = try BrokerUnderTest(extraArguments: ["--simulated-xen-version", "4.99", "--accept-xen", "4.99"])
        let client = try broker.connect()
        #expect(client.welcome.xenVersion == Self.release499.xenVersion)
        #expect(broker.auditLog.contains("warning running on Xen 4.99, accepted with --accept-xen although its DMOP ABI was not checked for this build"),
                "\(broker.auditLog)")
    }

    @Test("a checked release is logged as such; the default simulated release is 4.17")
    func checkedReleaseLogged() throws {
        let broker = try BrokerUnderTest(extraArguments: ["--simulated-xen-version", "4.20"])
        let client = try broker.connect()
        #expect(client.welcome.xenVersion == 0x0004_0014)
        #expect(broker.auditLog.contains("info xen release 4.20: DMOP ABI checked for this build"), "\(broker.auditLog)")
        let plain = try BrokerUnderTest()
        #expect(try plain.connect().welcome.xenVersion == 0x0004_0011)
    }

    @Test("--simulated-xen-version needs the simulated hypervisor; bad values are usage errors")
    func usage() throws {
        let policy = TestSupport.policyPath("qemu-xen.policy")
        let real = try runBroker(["serve", "--domid", "5", "--listen", "/nonexistent/s", "--policy", policy,
                                  "--simulated-xen-version", "4.20"])
        #expect(real.status == 64, "\(real)")
        #expect(real.output.contains("--simulated-xen-version needs --hypervisor simulated"))
        let bad = try runBroker(["serve", "--hypervisor", "simulated", "--domid", "5", "--listen", "/nonexistent/s",
                                 "--policy", policy, "--accept-xen", "latest"])
        #expect(bad.status == 64, "\(bad)")
    }
}
