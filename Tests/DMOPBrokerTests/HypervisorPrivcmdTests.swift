// SPDX-License-Identifier: MIT
import Foundation
import CXen
@testable import DMOPTrusted
import Glibc
import Testing

/// PrivcmdHypervisor without Xen: what can be checked against files that are
/// not privcmd. (The real driver is exercised by the QEMU/Xen harness.)
@Suite("privcmd hypervisor (no Xen on this machine)")
struct HypervisorPrivcmdTests {
    @Test("a missing device is an open error naming the path and errno")
    func missingDevice() {
        do {
            _ = try PrivcmdHypervisor(path: "/nonexistent/xen/privcmd")
            Issue.record("opened a missing path")
        } catch {
            #expect(error.step == .open)
            #expect(error.errno == ENOENT)
            #expect(error.detail == "cannot open /nonexistent/xen/privcmd: ENOENT (No such file or directory)")
        }
    }

    @Test("a directory cannot be opened read-write")
    func directory() {
        #expect(throws: HypervisorError(step: .open, errno: EISDIR,
                                        detail: "cannot open /tmp: EISDIR (Is a directory)")) {
            _ = try PrivcmdHypervisor(path: "/tmp")
        }
    }

    @Test("on /dev/null: opens O_CLOEXEC, version query fails to 0, every ioctl is ENOTTY")
    func devNull() throws {
        let hv = try PrivcmdHypervisor(path: "/dev/null")
        #expect(hv.kind == "privcmd")
        #expect(hv.fileDescriptor > 2)
        #expect(fcntl(hv.fileDescriptor, F_GETFD) & FD_CLOEXEC != 0)
        #expect(fcntl(hv.fileDescriptor, F_GETFL) & O_ACCMODE == O_RDWR)
        #expect(hv.xenVersion == 0)

        do {
            try hv.restrict(to: 5)
            Issue.record("RESTRICT on /dev/null succeeded")
        } catch {
            #expect(error.step == .notPrivcmd)
            #expect(error.errno == ENOTTY)
            #expect(error.detail == "/dev/null is not a privcmd device (it does not know IOCTL_PRIVCMD_RESTRICT)")
        }
        #expect(hv.restrictedDomid == nil)

        do {
            try hv.verifyRestricted()
            Issue.record("verifyRestricted passed on /dev/null")
        } catch {
            #expect(error.step == .verifyRestriction)
            #expect(error.errno == ENOTTY)
        }

        let header = withUnsafeBytes(of: DMOP.op(XEN_DMOP_nr_vcpus)) { Array($0) }
        let rc = DMOP.withBuffers(sizes: [DMOP.opSize, 0], fill: [header]) { hv.ioctlDMOp(domid: 5, buffers: $0) }
        #expect(rc == -ENOTTY)
    }

    @Test("reserved domids are refused before any ioctl")
    func reserved() throws {
        let hv = try PrivcmdHypervisor(path: "/dev/null")
        for domid in [cxen_domid_first_reserved(), cxen_domid_invalid(), UInt16.max] {
            do {
                try hv.restrict(to: domid)
                Issue.record("restricted to \(domid)")
            } catch {
                // Not ENOTTY: the kernel was never asked.
                #expect(error.step == .reservedDomid)
                #expect(error.errno == EINVAL)
            }
        }
    }

    @Test("more than 16 buffers never reach the kernel (E2BIG, not ENOTTY)")
    func tooManyBuffers() throws {
        let hv = try PrivcmdHypervisor(path: "/dev/null")
        #expect(DMOP.withBuffers(sizes: Array(repeating: 32, count: 17)) { hv.ioctlDMOp(domid: 5, buffers: $0) } == -E2BIG)
        #expect(DMOP.withBuffers(sizes: Array(repeating: 32, count: 16)) { hv.ioctlDMOp(domid: 5, buffers: $0) } == -ENOTTY)
        #expect(DMOP.withBuffers(sizes: []) { hv.ioctlDMOp(domid: 5, buffers: $0) } == -ENOTTY)
    }

    @Test("a regular file is refused at open as not a privcmd device, and its fd is closed")
    func regularFile() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("not-privcmd")
        let created = open(path, O_CREAT | O_WRONLY, 0o600)
        try #require(created >= 0)
        close(created)
        #expect(throws: HypervisorError(step: .notPrivcmd, errno: ENOTTY,
                                        detail: "\(path) is not a privcmd device (a regular file)")) {
            _ = try PrivcmdHypervisor(path: path)
        }
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        let leaked = open.filter { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)")) == path }
        #expect(leaked.isEmpty, "the refused fd stays open: \(leaked)")
    }
}
