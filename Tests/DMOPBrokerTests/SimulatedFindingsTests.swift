// SPDX-License-Identifier: MIT
import CXen
import DMOPTrusted
import DMOPSimulation
import Glibc
import Testing

/// The simulated privcmd + Xen against the errno table observed on real Xen
/// 4.17 + Linux 6.1 (the table scripts/xen-test's fixture records,
/// Tests/xen/domain-fixture.c), row by row. "Reached
/// Xen" is checked through the model's hypercall counter, so a row answered
/// by privcmd is told apart from the same errno coming from Xen.
@Suite("Simulated hypervisor vs the errno table of real Xen 4.17 + Linux 6.1")
struct SimulatedFindingsTests {
    /// Part 1: domid 1 does not exist (the one guest is elsewhere).
    static func part1() throws -> (SimulatedXen, SimulatedHypervisor) {
        let xen = SimulatedXen(.init(guestDomid: 7))
        return (xen, try SimulatedHypervisor(xen: xen))
    }

    static let create = DMOP.op(XEN_DMOP_create_ioreq_server)

    /// A DM_OP with `count` buffers of `size` bytes, buffer 0 holding create_ioreq_server.
    static func dmOp(_ hypervisor: SimulatedHypervisor, domid: UInt16, count: Int, size: Int = DMOP.opSize) -> Int32 {
        let header = withUnsafeBytes(of: create) { Array($0) }
        return DMOP.withBuffers(sizes: Array(repeating: size, count: count), fill: [header]) {
            hypervisor.dmOp(domid: domid, buffers: $0)
        }
    }

    @Test("row 1: HYPERCALL xen_version on an unrestricted fd gives 0x40011")
    func row1() throws {
        let (_, fd) = try Self.part1()
        var call = privcmd_hypercall_t()
        call.op = UInt64(__HYPERVISOR_xen_version)
        call.arg.0 = UInt64(XENVER_version)
        #expect(fd.ioctlHypercall(call) == 0x40011)
        #expect(fd.xenVersion == 0x40011)
    }

    @Test("row 2: DM_OP num=0 gives 0 without a hypercall")
    func row2() throws {
        let (xen, fd) = try Self.part1()
        #expect(Self.dmOp(fd, domid: 1, count: 0) == 0)
        #expect(xen.hypercalls == 0)
    }

    @Test("row 3: DM_OP for a domain that does not exist gives ESRCH from Xen")
    func row3() throws {
        let (xen, fd) = try Self.part1()
        #expect(Self.dmOp(fd, domid: 1, count: 1) == -ESRCH)
        #expect(xen.hypercalls == 1)
    }

    @Test("row 4: DM_OP for dom0 (the caller itself) gives EPERM from Xen")
    func row4() throws {
        let (xen, fd) = try Self.part1()
        #expect(Self.dmOp(fd, domid: 0, count: 1) == -EPERM)
        #expect(xen.hypercalls == 1)
    }

    @Test("rows 5 and 6: 3 and 16 buffers pass privcmd and Xen says E2BIG", arguments: [3, 16])
    func rows5and6(count: Int) throws {
        let (xen, fd) = try Self.part1()
        #expect(Self.dmOp(fd, domid: 1, count: count) == -E2BIG)
        #expect(xen.hypercalls == 1)
    }

    @Test("row 7: 17 buffers: privcmd says E2BIG")
    func row7() throws {
        let (xen, fd) = try Self.part1()
        #expect(Self.dmOp(fd, domid: 1, count: 17) == -E2BIG)
        #expect(xen.hypercalls == 0)
    }

    @Test("row 8: a 4096-byte buffer passes privcmd (Xen: ESRCH)")
    func row8() throws {
        let (xen, fd) = try Self.part1()
        #expect(Self.dmOp(fd, domid: 1, count: 1, size: 4096) == -ESRCH)
        #expect(xen.hypercalls == 1)
    }

    @Test("row 9: a 4097-byte buffer: privcmd says E2BIG")
    func row9() throws {
        let (xen, fd) = try Self.part1()
        #expect(Self.dmOp(fd, domid: 1, count: 1, size: 4097) == -E2BIG)
        #expect(xen.hypercalls == 0)
    }

    /// Part 1 continued: the fd restricted to the absent domid 1.
    static func restrictedToOne() throws -> (SimulatedXen, SimulatedHypervisor) {
        let (xen, fd) = try part1()
        #expect(fd.ioctlRestrict(1) == 0)  // row 10
        return (xen, fd)
    }

    @Test("row 10: RESTRICT dom1 gives 0")
    func row10() throws {
        let (_, fd) = try Self.part1()
        #expect(fd.ioctlRestrict(1) == 0)
        #expect(fd.isRestricted)
        #expect(fd.restriction == 1)
    }

    @Test("row 11: restricted(1): DM_OP dom1 reaches Xen (ESRCH)")
    func row11() throws {
        let (xen, fd) = try Self.restrictedToOne()
        #expect(Self.dmOp(fd, domid: 1, count: 1) == -ESRCH)
        #expect(xen.hypercalls == 1)
    }

    @Test("row 12: restricted(1): DM_OP dom2 gives EPERM from privcmd")
    func row12() throws {
        let (xen, fd) = try Self.restrictedToOne()
        #expect(Self.dmOp(fd, domid: 2, count: 1) == -EPERM)
        #expect(xen.hypercalls == 0)
    }

    @Test("row 13: restricted(1): DM_OP dom2 with num=0 gives EPERM (domid check first)")
    func row13() throws {
        let (xen, fd) = try Self.restrictedToOne()
        #expect(Self.dmOp(fd, domid: 2, count: 0) == -EPERM)
        #expect(xen.hypercalls == 0)
    }

    @Test("row 14: restricted(1): DM_OP dom2 with 17 buffers gives EPERM (before the count)")
    func row14() throws {
        let (xen, fd) = try Self.restrictedToOne()
        #expect(Self.dmOp(fd, domid: 2, count: 17) == -EPERM)
        #expect(xen.hypercalls == 0)
    }

    @Test("row 15: restricted(1): HYPERCALL gives EPERM")
    func row15() throws {
        let (_, fd) = try Self.restrictedToOne()
        var call = privcmd_hypercall_t()
        call.op = UInt64(__HYPERVISOR_xen_version)
        #expect(fd.ioctlHypercall(call) == -Int64(EPERM))
        #expect(fd.ioctlHypercall(nil) == -Int64(EPERM))
    }

    @Test("row 16: restricted(1): RESTRICT dom1 again gives 0")
    func row16() throws {
        let (_, fd) = try Self.restrictedToOne()
        #expect(fd.ioctlRestrict(1) == 0)
        #expect(fd.restriction == 1)
    }

    @Test("row 17: restricted(1): RESTRICT dom2 gives EINVAL and changes nothing")
    func row17() throws {
        let (_, fd) = try Self.restrictedToOne()
        #expect(fd.ioctlRestrict(2) == -EINVAL)
        #expect(fd.restriction == 1)
    }

    @Test("row 18: restricted(1): DM_OP dom1 with 17 buffers gives E2BIG from privcmd")
    func row18() throws {
        let (xen, fd) = try Self.restrictedToOne()
        #expect(Self.dmOp(fd, domid: 1, count: 17) == -E2BIG)
        #expect(xen.hypercalls == 0)
    }

    @Test("row 19: restricted(1): buffers of 4097 and 8192 bytes give E2BIG from privcmd", arguments: [4097, 8192])
    func row19(size: Int) throws {
        let (xen, fd) = try Self.restrictedToOne()
        #expect(Self.dmOp(fd, domid: 1, count: 1, size: size) == -E2BIG)
        #expect(xen.hypercalls == 0)
    }

    @Test("row 20: a fresh fd is unrestricted: DM_OP dom2 reaches Xen (ESRCH)")
    func row20() throws {
        let (xen, _) = try Self.restrictedToOne()
        let fresh = try SimulatedHypervisor(xen: xen)
        #expect(!fresh.isRestricted)
        #expect(Self.dmOp(fresh, domid: 2, count: 1) == -ESRCH)
        #expect(xen.hypercalls == 1)
    }

    @Test("row 21: RESTRICT(DOMID_INVALID) gives 0 and leaves the fd unrestricted")
    func row21() throws {
        let (_, fd) = try Self.part1()
        #expect(fd.ioctlRestrict(cxen_domid_invalid()) == 0)
        #expect(!fd.isRestricted)
        var call = privcmd_hypercall_t()
        call.op = UInt64(__HYPERVISOR_xen_version)
        #expect(fd.ioctlHypercall(call) == 0x40011)
        // And through the Hypervisor interface it is refused outright.
        #expect(throws: HypervisorError.self) { try fd.restrict(to: cxen_domid_invalid()) }
    }

    @Test("live part: the observed session on an empty HVM domain, in order")
    func livePart() throws {
        let xen = SimulatedXen(.init(guestDomid: 1, vcpus: 1))
        let fd = try SimulatedHypervisor(xen: xen)
        #expect(fd.ioctlRestrict(1) == 0)

        let vcpus = DMOP.call(fd, domid: 1, DMOP.op(XEN_DMOP_nr_vcpus))
        #expect(vcpus.rc == 0)
        #expect(vcpus.op.u.nr_vcpus.vcpus == 1)

        let created = DMOP.call(fd, domid: 1, DMOP.op(XEN_DMOP_create_ioreq_server) {
            $0.u.create_ioreq_server.handle_bufioreq = UInt8(HVM_IOREQSRV_BUFIOREQ_OFF)
        })
        #expect(created.rc == 0)
        #expect(created.op.u.create_ioreq_server.id == 0)

        let info = DMOP.call(fd, domid: 1, DMOP.op(XEN_DMOP_get_ioreq_server_info) {
            $0.u.get_ioreq_server_info.id = 0
            $0.u.get_ioreq_server_info.flags = UInt16(XEN_DMOP_no_gfns)
        })
        #expect(info.rc == 0)

        let serial = DMOP.op(XEN_DMOP_map_io_range_to_ioreq_server) {
            $0.u.map_io_range_to_ioreq_server.type = UInt32(XEN_DMOP_IO_RANGE_PORT)
            $0.u.map_io_range_to_ioreq_server.start = 0x3f8
            $0.u.map_io_range_to_ioreq_server.end = 0x3ff
        }
        #expect(DMOP.call(fd, domid: 1, serial).rc == 0)
        #expect(DMOP.call(fd, domid: 1, serial).rc == -EEXIST)

        for enabled: UInt8 in [1, 0] {
            #expect(DMOP.call(fd, domid: 1, DMOP.op(XEN_DMOP_set_ioreq_server_state) {
                $0.u.set_ioreq_server_state.enabled = enabled
            }).rc == 0)
        }
        #expect(DMOP.call(fd, domid: 2, DMOP.op(XEN_DMOP_nr_vcpus)).rc == -EPERM)
        #expect(fd.ioctlHypercall(privcmd_hypercall_t()) == -Int64(EPERM))

        var unmap = serial
        unmap.op = UInt32(XEN_DMOP_unmap_io_range_from_ioreq_server)
        #expect(DMOP.call(fd, domid: 1, unmap).rc == 0)

        let destroy = DMOP.op(XEN_DMOP_destroy_ioreq_server)
        #expect(DMOP.call(fd, domid: 1, destroy).rc == 0)
        #expect(DMOP.call(fd, domid: 1, destroy).rc == -ENOENT)

        var unknown = xen_dm_op()
        unknown.op = 9999
        #expect(DMOP.call(fd, domid: 1, unknown).rc == -EOPNOTSUPP)

        xen.destroyGuest()
        #expect(DMOP.call(fd, domid: 1, DMOP.op(XEN_DMOP_nr_vcpus)).rc == -ESRCH)
    }
}
