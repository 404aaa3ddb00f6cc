// SPDX-License-Identifier: MIT
import CXen
import DMOPTrusted
import DMOPPosix
import DMOPSimulation
import Glibc
import Testing

/// One error path of Xen's dm_op, as the simulated hypervisor must give it:
/// a fresh guest, some calls that must succeed first, then the call under test.
struct XenErrorCase: CustomTestStringConvertible, @unchecked Sendable {
    let name: String
    var configuration = SimulatedXen.Configuration()
    var setup: [(op: xen_dm_op, extra: [UInt8]?)] = []
    let op: xen_dm_op
    var size0 = DMOP.opSize
    var extra: [UInt8]?
    let expected: Int32

    var testDescription: String { "\(name) -> \(Errno.name(-expected))" }
}

@Suite("Simulated Xen: every dm_op error path")
struct SimulatedXenErrorTests {
    typealias Op = xen_dm_op

    static func op(_ number: Int32, _ fill: (inout Op) -> Void = { _ in }) -> Op { DMOP.op(number, fill) }
    static let createServer = op(XEN_DMOP_create_ioreq_server)
    static func unmap(id: UInt16 = 0, type: Int32 = XEN_DMOP_IO_RANGE_PORT, _ start: UInt64, _ end: UInt64, pad: UInt16 = 0) -> Op {
        range(op: XEN_DMOP_unmap_io_range_from_ioreq_server, id: id, type: type, start, end, pad: pad)
    }
    static func range(op number: Int32 = XEN_DMOP_map_io_range_to_ioreq_server, id: UInt16 = 0, type: Int32 = XEN_DMOP_IO_RANGE_PORT,
                      _ start: UInt64, _ end: UInt64, pad: UInt16 = 0) -> Op {
        op(number) {
            $0.u.map_io_range_to_ioreq_server.id = id
            $0.u.map_io_range_to_ioreq_server.pad = pad
            $0.u.map_io_range_to_ioreq_server.type = UInt32(bitPattern: type)
            $0.u.map_io_range_to_ioreq_server.start = start
            $0.u.map_io_range_to_ioreq_server.end = end
        }
    }
    static func vram(nr: UInt32, pad: UInt32 = 0, first: UInt64 = 0x100) -> Op {
        op(XEN_DMOP_track_dirty_vram) {
            $0.u.track_dirty_vram.nr = nr
            $0.u.track_dirty_vram.pad = pad
            $0.u.track_dirty_vram.first_pfn = first
        }
    }
    static func memType(_ type: UInt32, nr: UInt32 = 1, first: UInt64 = 0x10, pad: UInt16 = 0) -> Op {
        op(XEN_DMOP_set_mem_type) {
            $0.u.set_mem_type.mem_type = UInt16(type)
            $0.u.set_mem_type.nr = nr
            $0.u.set_mem_type.first_pfn = first
            $0.u.set_mem_type.pad = pad
        }
    }
    static func modified(nr: UInt32, opaque: UInt32 = 0) -> Op {
        op(XEN_DMOP_modified_memory) {
            $0.u.modified_memory.nr_extents = nr
            $0.u.modified_memory.opaque = opaque
        }
    }
    static func claim(id: UInt16 = 0, type: UInt32 = HVMMEM_ioreq_server.rawValue, flags: UInt32 = UInt32(XEN_DMOP_IOREQ_MEM_ACCESS_WRITE)) -> Op {
        op(XEN_DMOP_map_mem_type_to_ioreq_server) {
            $0.u.map_mem_type_to_ioreq_server.id = id
            $0.u.map_mem_type_to_ioreq_server.type = UInt16(type)
            $0.u.map_mem_type_to_ioreq_server.flags = flags
        }
    }
    static func pin(_ start: UInt64, _ end: UInt64, type: UInt32 = UInt32(XEN_DMOP_MEM_CACHEATTR_WB), pad: UInt32 = 0) -> Op {
        op(XEN_DMOP_pin_memory_cacheattr) {
            $0.u.pin_memory_cacheattr.start = start
            $0.u.pin_memory_cacheattr.end = end
            $0.u.pin_memory_cacheattr.type = type
            $0.u.pin_memory_cacheattr.pad = pad
        }
    }
    static func event(vcpu: UInt32 = 0, pad0: UInt8 = 0, pad1: UInt32 = 0) -> Op {
        op(XEN_DMOP_inject_event) {
            $0.u.inject_event.vcpuid = vcpu
            $0.u.inject_event.vector = 14
            $0.u.inject_event.type = UInt8(XEN_DMOP_EVENT_hw_exc)
            $0.u.inject_event.pad0 = pad0
            $0.u.inject_event.pad1 = pad1
            $0.u.inject_event.error_code = ~0
        }
    }
    static func msi(address: UInt64 = 0xfee0_0000, data: UInt32 = 0x41, pad: UInt32 = 0) -> Op {
        op(XEN_DMOP_inject_msi) {
            $0.u.inject_msi.addr = address
            $0.u.inject_msi.data = data
            $0.u.inject_msi.pad = pad
        }
    }
    static let logDirty = SimulatedXen.Configuration(logDirty: true)
    static let noHAP = SimulatedXen.Configuration(hap: false)

    static let cases: [XenErrorCase] = {
        var c: [XenErrorCase] = []
        // Generic order (dm_op() in xen/arch/x86/hvm/dm.c).
        c.append(.init(name: "target is a PV domain", configuration: .init(isHVM: false), op: op(XEN_DMOP_nr_vcpus), expected: -EINVAL))
        c.append(.init(name: "buffer 0 shorter than the header", op: op(XEN_DMOP_nr_vcpus), size0: 7, expected: -EFAULT))
        c.append(.init(name: "buffer 0 empty", op: op(XEN_DMOP_nr_vcpus), size0: 0, expected: -EFAULT))
        c.append(.init(name: "op 21 (past the table)", op: op(21), expected: -EOPNOTSUPP))
        c.append(.init(name: "op 21 with a non-zero header pad (op is checked first)", op: op(21) { $0.pad = 1 }, expected: -EOPNOTSUPP))
        c.append(.init(name: "op 0", op: op(0), expected: -EOPNOTSUPP))
        c.append(.init(name: "op 19 set_irq_level (Arm only)", op: op(XEN_DMOP_set_irq_level), expected: -EOPNOTSUPP))
        c.append(.init(name: "op 19 with header pad (size 0, pad checked before the fall-through)",
                       op: op(XEN_DMOP_set_irq_level) { $0.pad = 1 }, size0: 8, expected: -EINVAL))
        c.append(.init(name: "buffer 0 one byte short of the payload", op: createServer,
                       size0: 8 + MemoryLayout<xen_dm_op_create_ioreq_server>.size - 1, expected: -EFAULT))
        c.append(.init(name: "header pad non-zero", op: op(XEN_DMOP_nr_vcpus) { $0.pad = 1 }, expected: -EINVAL))
        // create_ioreq_server
        c.append(.init(name: "create: pad[1] non-zero", op: op(XEN_DMOP_create_ioreq_server) { $0.u.create_ioreq_server.pad.1 = 1 }, expected: -EINVAL))
        c.append(.init(name: "create: handle_bufioreq 3",
                       op: op(XEN_DMOP_create_ioreq_server) { $0.u.create_ioreq_server.handle_bufioreq = UInt8(HVM_IOREQSRV_BUFIOREQ_ATOMIC) + 1 }, expected: -EINVAL))
        c.append(.init(name: "create: a ninth server", setup: Array(repeating: (createServer, nil), count: 8), op: createServer, expected: -ENOSPC))
        // get_ioreq_server_info
        c.append(.init(name: "get_info: unknown flag", setup: [(createServer, nil)],
                       op: op(XEN_DMOP_get_ioreq_server_info) { $0.u.get_ioreq_server_info.flags = 2 }, expected: -EINVAL))
        c.append(.init(name: "get_info: no such server", op: op(XEN_DMOP_get_ioreq_server_info), expected: -ENOENT))
        c.append(.init(name: "get_info: id past the slots", setup: [(createServer, nil)],
                       op: op(XEN_DMOP_get_ioreq_server_info) { $0.u.get_ioreq_server_info.id = 8 }, expected: -ENOENT))
        // map_io_range_to_ioreq_server
        c.append(.init(name: "map: pad", setup: [(createServer, nil)], op: range(0x10, 0x1f, pad: 1), expected: -EINVAL))
        c.append(.init(name: "map: start > end", setup: [(createServer, nil)], op: range(0x20, 0x1f), expected: -EINVAL))
        c.append(.init(name: "map: start > end before the id lookup", op: range(0x20, 0x1f), expected: -EINVAL))
        c.append(.init(name: "map: no such server", op: range(0x10, 0x1f), expected: -ENOENT))
        c.append(.init(name: "map: type 3", setup: [(createServer, nil)], op: range(type: 3, 0x10, 0x1f), expected: -EINVAL))
        c.append(.init(name: "map: overlaps a mapped range", setup: [(createServer, nil), (range(0x10, 0x1f), nil)],
                       op: range(0x18, 0x27), expected: -EEXIST))
        c.append(.init(name: "map: a 257th separate range",
                       setup: [(createServer, nil)] + (0..<256).map { (range(UInt64($0) * 4, UInt64($0) * 4 + 1), nil) },
                       op: range(0x1000, 0x1001), expected: -ENOMEM))
        // unmap_io_range_from_ioreq_server
        var unmapBase = [(op: createServer, extra: [UInt8]?.none), (op: range(0x10, 0x1f), extra: [UInt8]?.none)]
        c.append(.init(name: "unmap: pad", setup: unmapBase, op: unmap(0x10, 0x1f, pad: 1), expected: -EINVAL))
        c.append(.init(name: "unmap: start > end", setup: unmapBase, op: unmap(0x1f, 0x10), expected: -EINVAL))
        c.append(.init(name: "unmap: no such server", setup: unmapBase, op: unmap(id: 1, 0x10, 0x1f), expected: -ENOENT))
        c.append(.init(name: "unmap: type 3", setup: unmapBase, op: unmap(type: 3, 0x10, 0x1f), expected: -EINVAL))
        c.append(.init(name: "unmap: range not mapped", setup: unmapBase, op: unmap(0x18, 0x27), expected: -ENOENT))
        c.append(.init(name: "unmap: wrong range type", setup: unmapBase,
                       op: unmap(type: XEN_DMOP_IO_RANGE_MEMORY, 0x10, 0x1f), expected: -ENOENT))
        unmapBase = [(createServer, nil)] + (0..<256).map { (range(UInt64($0) * 4, UInt64($0) * 4 + 2), nil) }
        c.append(.init(name: "unmap: splitting a range at the limit", setup: unmapBase,
                       op: unmap(1, 1), expected: -ENOMEM))
        // set_ioreq_server_state, destroy_ioreq_server
        c.append(.init(name: "state: pad", setup: [(createServer, nil)],
                       op: op(XEN_DMOP_set_ioreq_server_state) { $0.u.set_ioreq_server_state.pad = 1 }, expected: -EINVAL))
        c.append(.init(name: "state: no such server", op: op(XEN_DMOP_set_ioreq_server_state), expected: -ENOENT))
        c.append(.init(name: "destroy: pad", setup: [(createServer, nil)],
                       op: op(XEN_DMOP_destroy_ioreq_server) { $0.u.destroy_ioreq_server.pad = 1 }, expected: -EINVAL))
        c.append(.init(name: "destroy: no such server", op: op(XEN_DMOP_destroy_ioreq_server), expected: -ENOENT))
        // track_dirty_vram
        c.append(.init(name: "vram: pad", op: vram(nr: 8, pad: 1), extra: [0], expected: -EINVAL))
        c.append(.init(name: "vram: only one buffer", op: vram(nr: 8), expected: -EINVAL))
        c.append(.init(name: "vram: only one buffer, nr 0", op: vram(nr: 0), expected: -EINVAL))
        c.append(.init(name: "vram: nr over 1 GiB of frames", op: vram(nr: 262_145), extra: [UInt8](repeating: 0, count: 1), expected: -EINVAL))
        c.append(.init(name: "vram: bitmap one byte short", op: vram(nr: 17), extra: [0, 0], expected: -EINVAL))
        c.append(.init(name: "vram: a domain without vcpus", configuration: .init(vcpus: 0), op: vram(nr: 8), extra: [0], expected: -EINVAL))
        // set_pci_intx_level
        for (name, fill) in [("domain 1", { (o: inout Op) in o.u.set_pci_intx_level.domain = 1 }),
                             ("bus 1", { (o: inout Op) in o.u.set_pci_intx_level.bus = 1 }),
                             ("device 32", { (o: inout Op) in o.u.set_pci_intx_level.device = 32 }),
                             ("intx 4", { (o: inout Op) in o.u.set_pci_intx_level.intx = 4 }),
                             ("level 2", { (o: inout Op) in o.u.set_pci_intx_level.level = 2 })] {
            c.append(.init(name: "pci_intx: \(name)", op: op(XEN_DMOP_set_pci_intx_level, fill), expected: -EINVAL))
        }
        c.append(.init(name: "isa_irq: irq 16", op: op(XEN_DMOP_set_isa_irq_level) { $0.u.set_isa_irq_level.isa_irq = 16 }, expected: -EINVAL))
        c.append(.init(name: "isa_irq: level 2", op: op(XEN_DMOP_set_isa_irq_level) { $0.u.set_isa_irq_level.level = 2 }, expected: -EINVAL))
        c.append(.init(name: "link_route: link 4", op: op(XEN_DMOP_set_pci_link_route) { $0.u.set_pci_link_route.link = 4 }, expected: -EINVAL))
        c.append(.init(name: "link_route: irq 16", op: op(XEN_DMOP_set_pci_link_route) { $0.u.set_pci_link_route.isa_irq = 16 }, expected: -EINVAL))
        // modified_memory
        c.append(.init(name: "modified_memory: one buffer (XSA-506)", op: modified(nr: 1), expected: -EINVAL))
        c.append(.init(name: "modified_memory: one buffer, nr 0 (XSA-506)", op: modified(nr: 0), expected: -EINVAL))
        c.append(.init(name: "modified_memory (log-dirty): extents buffer too small", configuration: logDirty,
                       op: modified(nr: 2), extra: DMOP.extents([(1, 0, 0x10)]), expected: -EINVAL))
        c.append(.init(name: "modified_memory (log-dirty): extent pad", configuration: logDirty,
                       op: modified(nr: 1), extra: DMOP.extents([(1, 1, 0x10)]), expected: -EINVAL))
        c.append(.init(name: "modified_memory (log-dirty): opaque >= nr", configuration: logDirty,
                       op: modified(nr: 1, opaque: 4), extra: DMOP.extents([(4, 0, 0x10)]), expected: -EINVAL))
        c.append(.init(name: "modified_memory (log-dirty): extent of 0 frames", configuration: logDirty,
                       op: modified(nr: 1), extra: DMOP.extents([(0, 0, 0x10)]), expected: -EINVAL))
        c.append(.init(name: "modified_memory (log-dirty): extent past the last mapped frame", configuration: logDirty,
                       op: modified(nr: 1), extra: DMOP.extents([(2, 0, 0xfefff)]), expected: -EINVAL))
        c.append(.init(name: "modified_memory (log-dirty): the last extent is checked first", configuration: logDirty,
                       op: modified(nr: 2), extra: DMOP.extents([(1, 0, 0x10), (1, 7, 0x10)]), expected: -EINVAL))
        // set_mem_type
        c.append(.init(name: "set_mem_type: pad", op: memType(HVMMEM_ram_ro.rawValue, pad: 1), expected: -EINVAL))
        c.append(.init(name: "set_mem_type: HVMMEM_unused", op: memType(HVMMEM_unused.rawValue), expected: -EINVAL))
        c.append(.init(name: "set_mem_type: type 5", op: memType(HVMMEM_ioreq_server.rawValue + 1), expected: -EINVAL))
        c.append(.init(name: "set_mem_type: nr 0", op: memType(HVMMEM_ram_ro.rawValue, nr: 0), expected: -EINVAL))
        c.append(.init(name: "set_mem_type: past the last mapped frame", op: memType(HVMMEM_ram_ro.rawValue, nr: 2, first: 0xfefff), expected: -EINVAL))
        c.append(.init(name: "set_mem_type: ioreq_server with no server claiming it", op: memType(HVMMEM_ioreq_server.rawValue), expected: -EINVAL))
        c.append(.init(name: "set_mem_type: ioreq_server without HAP", configuration: noHAP, op: memType(HVMMEM_ioreq_server.rawValue), expected: -EOPNOTSUPP))
        c.append(.init(name: "set_mem_type: a hole cannot become RAM", op: memType(HVMMEM_ram_rw.rawValue, first: 0x10000), expected: -EINVAL))
        c.append(.init(name: "set_mem_type: mmio_dm cannot become ioreq_server",
                       setup: [(createServer, nil), (claim(), nil), (memType(HVMMEM_mmio_dm.rawValue), nil)],
                       op: memType(HVMMEM_ioreq_server.rawValue), expected: -EINVAL))
        // inject_event
        c.append(.init(name: "inject_event: pad0", op: event(pad0: 1), expected: -EINVAL))
        c.append(.init(name: "inject_event: pad1", op: event(pad1: 1), expected: -EINVAL))
        c.append(.init(name: "inject_event: vcpu 1 of 1", op: event(vcpu: 1), expected: -EINVAL))
        c.append(.init(name: "inject_event: one already pending", setup: [(event(), nil)], op: event(), expected: -EBUSY))
        // inject_msi
        c.append(.init(name: "inject_msi: pad", op: msi(pad: 1), expected: -EINVAL))
        c.append(.init(name: "inject_msi: vector 0 and pirq 0", op: msi(data: 0), expected: -ERANGE))
        c.append(.init(name: "inject_msi: vector 0 and a pirq past nr_pirqs", op: msi(address: 0xfee0_0000 | 200 << 12, data: 0), expected: -EINVAL))
        c.append(.init(name: "inject_msi: SMI delivery mode", op: msi(data: 0x41 | 2 << 8), expected: -EINVAL))
        // map_mem_type_to_ioreq_server
        c.append(.init(name: "map_mem_type: without HAP", configuration: noHAP, setup: [(createServer, nil)], op: claim(), expected: -EOPNOTSUPP))
        c.append(.init(name: "map_mem_type: type ram_rw", setup: [(createServer, nil)], op: claim(type: HVMMEM_ram_rw.rawValue), expected: -EINVAL))
        c.append(.init(name: "map_mem_type: READ access", setup: [(createServer, nil)],
                       op: claim(flags: UInt32(XEN_DMOP_IOREQ_MEM_ACCESS_READ)), expected: -EINVAL))
        c.append(.init(name: "map_mem_type: no such server", op: claim(), expected: -ENOENT))
        c.append(.init(name: "map_mem_type: already claimed", setup: [(createServer, nil), (createServer, nil), (claim(), nil)],
                       op: claim(id: 1), expected: -EBUSY))
        c.append(.init(name: "map_mem_type: unmap by a server that did not claim it",
                       setup: [(createServer, nil), (createServer, nil), (claim(), nil)], op: claim(id: 1, flags: 0), expected: -EINVAL))
        // relocate_memory
        c.append(.init(name: "relocate: pad", op: op(XEN_DMOP_relocate_memory) { $0.u.relocate_memory.pad = 1 }, expected: -EINVAL))
        c.append(.init(name: "relocate: source is a hole", op: op(XEN_DMOP_relocate_memory) {
            $0.u.relocate_memory.size = 1
            $0.u.relocate_memory.src_gfn = 0x10000
            $0.u.relocate_memory.dst_gfn = 0x20000
        }, expected: -EINVAL))
        // pin_memory_cacheattr
        c.append(.init(name: "pin: pad", op: pin(0x10, 0x1f, pad: 1), expected: -EINVAL))
        c.append(.init(name: "pin: start > end", op: pin(0x20, 0x1f), expected: -EINVAL))
        c.append(.init(name: "pin: gfn beyond paddr_bits", op: pin(0x10, 1 << 48), expected: -EINVAL))
        c.append(.init(name: "pin: type 2 (not a cache type)", op: pin(0x10, 0x1f, type: 2), expected: -EINVAL))
        c.append(.init(name: "pin: type 8", op: pin(0x10, 0x1f, type: 8), expected: -EINVAL))
        c.append(.init(name: "pin: delete a range never pinned", op: pin(0x10, 0x1f, type: cxen_dmop_delete_mem_cacheattr()), expected: -ENOENT))
        c.append(.init(name: "pin: overlapping a different range", setup: [(pin(0x10, 0x1f), nil)], op: pin(0x18, 0x27), expected: -EBUSY))
        c.append(.init(name: "pin: a 65th range", setup: (0..<64).map { (pin(UInt64($0) * 16, UInt64($0) * 16 + 7), nil) },
                       op: pin(0x1000, 0x1007), expected: -ENOSPC))
        return c
    }()

    @Test("dm_op error path", arguments: cases)
    func errorPath(_ c: XenErrorCase) throws {
        let fd = try SimulatedHypervisor.restricted(c.configuration)
        for (index, step) in c.setup.enumerated() {
            let rc = DMOP.call(fd, domid: c.configuration.guestDomid, step.op, extra: step.extra).rc
            try #require(rc == 0, "setup step \(index) failed with \(rc)")
        }
        let before = fd.xen.hypercalls
        let result = DMOP.call(fd, domid: c.configuration.guestDomid, c.op, size0: c.size0, extra: c.extra)
        #expect(result.rc == c.expected, "\(c.name): got \(result.rc) (\(Errno.name(-result.rc)))")
        #expect(fd.xen.hypercalls == before + 1, "the call must reach Xen")
    }
}
