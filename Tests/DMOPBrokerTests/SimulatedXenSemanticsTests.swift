// SPDX-License-Identifier: MIT
import CXen
@testable import DMOPTrusted
@testable import DMOPSimulation
import Glibc
import Testing

/// What a client sees from the simulated Xen when calls succeed: outputs,
/// write-back rules and the guest state the calls change.
@Suite("Simulated Xen: per-op semantics")
struct SimulatedXenSemanticsTests {
    typealias E = SimulatedXenErrorTests
    let domid: UInt16 = 1

    func call(_ fd: SimulatedHypervisor, _ op: xen_dm_op, size0: Int = DMOP.opSize, extra: [UInt8]? = nil) -> DMOP.Result {
        DMOP.call(fd, domid: domid, op, size0: size0, extra: extra)
    }

    func create(_ fd: SimulatedHypervisor, bufioreq: Int32 = HVM_IOREQSRV_BUFIOREQ_OFF) -> DMOP.Result {
        call(fd, DMOP.op(XEN_DMOP_create_ioreq_server) { $0.u.create_ioreq_server.handle_bufioreq = UInt8(bufioreq) })
    }

    func info(_ fd: SimulatedHypervisor, id: UInt16, flags: UInt16 = 0, fill: UInt64 = 0) -> DMOP.Result {
        call(fd, DMOP.op(XEN_DMOP_get_ioreq_server_info) {
            $0.u.get_ioreq_server_info.id = id
            $0.u.get_ioreq_server_info.flags = flags
            $0.u.get_ioreq_server_info.bufioreq_port = UInt32(truncatingIfNeeded: fill)
            $0.u.get_ioreq_server_info.ioreq_gfn = fill
            $0.u.get_ioreq_server_info.bufioreq_gfn = fill
        })
    }

    @Test("ioreq server ids start at 0 and the lowest free id is reused")
    func serverIDs() throws {
        let fd = try SimulatedHypervisor.restricted()
        #expect((0..<3).map { _ in create(fd).op.u.create_ioreq_server.id } == [0, 1, 2])
        #expect(call(fd, DMOP.op(XEN_DMOP_destroy_ioreq_server) { $0.u.destroy_ioreq_server.id = 1 }).rc == 0)
        #expect(create(fd).op.u.create_ioreq_server.id == 1)
        #expect(fd.xen.ioreqServers.map(\.id) == [0, 1, 2])
    }

    @Test("event channels: vcpu ports then the buffered port, after xenstore and console (harness: port 4)")
    func eventPorts() throws {
        let fd = try SimulatedHypervisor.restricted()
        #expect(create(fd, bufioreq: HVM_IOREQSRV_BUFIOREQ_ATOMIC).rc == 0)
        let reply = info(fd, id: 0, flags: UInt16(XEN_DMOP_no_gfns))
        #expect(reply.rc == 0)
        #expect(reply.op.u.get_ioreq_server_info.bufioreq_port == 4)
        #expect(fd.xen.ioreqServer(id: 0)?.ioreqPorts == [3])

        let two = try SimulatedHypervisor.restricted(.init(vcpus: 2))
        #expect(create(two, bufioreq: HVM_IOREQSRV_BUFIOREQ_LEGACY).rc == 0)
        #expect(two.xen.ioreqServer(id: 0)?.ioreqPorts == [3, 5])
        #expect(two.xen.ioreqServer(id: 0)?.bufioreqPort == 4)
        // Destroying frees the ports for the next server.
        #expect(call(two, DMOP.op(XEN_DMOP_destroy_ioreq_server)).rc == 0)
        #expect(create(two).rc == 0)
        #expect(two.xen.ioreqServer(id: 0)?.ioreqPorts == [3, 4])
    }

    @Test("get_ioreq_server_info: gfns from the ioreq server pages, or untouched with XEN_DMOP_no_gfns")
    func serverInfo() throws {
        let fd = try SimulatedHypervisor.restricted()
        _ = create(fd, bufioreq: HVM_IOREQSRV_BUFIOREQ_ATOMIC)
        _ = create(fd)
        let buffered = info(fd, id: 0)
        #expect(buffered.rc == 0)
        #expect(buffered.op.u.get_ioreq_server_info.ioreq_gfn == 0xfeff0)
        #expect(buffered.op.u.get_ioreq_server_info.bufioreq_gfn == 0xfeff1)
        #expect(buffered.op.u.get_ioreq_server_info.bufioreq_port == 4)
        // Asking again gives the same gfns.
        #expect(info(fd, id: 0).op.u.get_ioreq_server_info.ioreq_gfn == 0xfeff0)

        // Without buffered ioreqs the port and bufioreq gfn are not written:
        // they come back as the caller sent them.
        let plain = info(fd, id: 1, fill: 0x5a5a)
        #expect(plain.rc == 0)
        #expect(plain.op.u.get_ioreq_server_info.ioreq_gfn == 0xfeff2)
        #expect(plain.op.u.get_ioreq_server_info.bufioreq_gfn == 0x5a5a)
        #expect(plain.op.u.get_ioreq_server_info.bufioreq_port == 0x5a5a)

        // no_gfns: only the port is written.
        _ = create(fd, bufioreq: HVM_IOREQSRV_BUFIOREQ_LEGACY)
        let noGfns = info(fd, id: 2, flags: UInt16(XEN_DMOP_no_gfns), fill: 0x77)
        #expect(noGfns.op.u.get_ioreq_server_info.ioreq_gfn == 0x77)
        #expect(noGfns.op.u.get_ioreq_server_info.bufioreq_gfn == 0x77)
        #expect(noGfns.op.u.get_ioreq_server_info.bufioreq_port != 0x77)
        #expect(fd.xen.ioreqServer(id: 2)?.ioreqGfn == nil)
    }

    @Test("get_ioreq_server_info: ENOMEM once the gfn pool and the legacy gfns are used up")
    func gfnExhaustion() throws {
        let fd = try SimulatedHypervisor.restricted()
        for _ in 0..<6 { _ = create(fd, bufioreq: HVM_IOREQSRV_BUFIOREQ_ATOMIC) }
        for id: UInt16 in 0..<4 { #expect(info(fd, id: id).rc == 0) }
        let legacy = info(fd, id: 4)
        #expect(legacy.rc == 0)
        #expect(legacy.op.u.get_ioreq_server_info.ioreq_gfn == 0xfeffd)
        #expect(legacy.op.u.get_ioreq_server_info.bufioreq_gfn == 0xfeffb)
        #expect(info(fd, id: 5).rc == -ENOMEM)
        #expect(fd.xen.ioreqServer(id: 5)?.ioreqGfn == nil)
        // Destroying a server gives its gfns back.
        #expect(call(fd, DMOP.op(XEN_DMOP_destroy_ioreq_server) { $0.u.destroy_ioreq_server.id = 0 }).rc == 0)
        #expect(info(fd, id: 5).op.u.get_ioreq_server_info.ioreq_gfn == 0xfeff0)
    }

    @Test("io ranges: kept per type, touching ranges merge, unmap splits")
    func ioRanges() throws {
        let fd = try SimulatedHypervisor.restricted()
        _ = create(fd)
        #expect(call(fd, E.range(0xcf8, 0xcfb)).rc == 0)
        #expect(call(fd, E.range(0xcfc, 0xcff)).rc == 0)
        #expect(call(fd, E.range(type: XEN_DMOP_IO_RANGE_MEMORY, 0xfee0_0000, 0xfeef_ffff)).rc == 0)
        var server = try #require(fd.xen.ioreqServer(id: 0))
        #expect(server.ranges(type: XEN_DMOP_IO_RANGE_PORT) == [.init(start: 0xcf8, end: 0xcff)])
        #expect(server.ranges(type: XEN_DMOP_IO_RANGE_MEMORY) == [.init(start: 0xfee0_0000, end: 0xfeef_ffff)])
        #expect(call(fd, E.unmap(0xcfa, 0xcfb)).rc == 0)
        server = try #require(fd.xen.ioreqServer(id: 0))
        #expect(server.ranges(type: XEN_DMOP_IO_RANGE_PORT) == [.init(start: 0xcf8, end: 0xcf9), .init(start: 0xcfc, end: 0xcff)])
    }

    @Test("set_ioreq_server_state enables and disables")
    func serverState() throws {
        let fd = try SimulatedHypervisor.restricted()
        _ = create(fd)
        #expect(fd.xen.ioreqServer(id: 0)?.enabled == false)
        #expect(call(fd, DMOP.op(XEN_DMOP_set_ioreq_server_state) { $0.u.set_ioreq_server_state.enabled = 7 }).rc == 0)
        #expect(fd.xen.ioreqServer(id: 0)?.enabled == true)
    }

    @Test("write-back: create's id is written only on success; bytes after the payload are never touched")
    func writeBack() throws {
        let fd = try SimulatedHypervisor.restricted()
        for _ in 0..<8 { _ = create(fd) }
        // The ninth fails (ENOSPC): the id the caller left there stays.
        let full = call(fd, DMOP.op(XEN_DMOP_create_ioreq_server) { $0.u.create_ioreq_server.id = 0xbeef })
        #expect(full.rc == -ENOSPC)
        #expect(full.op.u.create_ioreq_server.id == 0xbeef)

        // nr_vcpus in a 40-byte buffer with a marker past the payload.
        var bytes = withUnsafeBytes(of: DMOP.op(XEN_DMOP_nr_vcpus)) { Array($0) } + Array(repeating: 0xaa, count: 8)
        let payloadEnd = SimulatedXen.headerSize + MemoryLayout<xen_dm_op_nr_vcpus>.size
        for i in payloadEnd..<bytes.count { bytes[i] = 0xaa }
        let after = DMOP.withBuffers(sizes: [bytes.count], fill: [bytes]) { buffers -> [UInt8] in
            #expect(fd.dmOp(domid: domid, buffers: buffers) == 0)
            return Array(buffers[0])
        }
        #expect(after[SimulatedXen.headerSize] == 1)
        #expect(after[payloadEnd...].allSatisfy { $0 == 0xaa })
    }

    @Test("nr_vcpus reports the guest's vcpus; a 12-byte buffer is exactly enough")
    func nrVcpus() throws {
        let fd = try SimulatedHypervisor.restricted(.init(vcpus: 2))
        let reply = call(fd, DMOP.op(XEN_DMOP_nr_vcpus), size0: SimulatedXen.headerSize + 4)
        #expect(reply.rc == 0)
        #expect(reply.op.u.nr_vcpus.vcpus == 2)
    }

    @Test("track_dirty_vram: a new range is all dirty, then the guest's writes, bits beyond nr stay 0")
    func dirtyVRAM() throws {
        let fd = try SimulatedHypervisor.restricted()
        let nr: UInt32 = 20  // 3 bytes, 4 spare bits
        let first = call(fd, E.vram(nr: nr, first: 0x100), extra: [UInt8](repeating: 0x55, count: 4))
        #expect(first.rc == 0)
        #expect(first.buffer1 == [0xff, 0xff, 0x0f, 0x55])  // only ceil(20/8) bytes written

        fd.xen.guestWrote(frames: [0x100 + 17, 0x100 + 100] as [UInt64])  // the second is outside the range
        let second = call(fd, E.vram(nr: nr, first: 0x100), extra: [0, 0, 0])
        #expect(second.rc == 0)
        let bits = try #require(second.buffer1)
        // Frame 17 (written), plus the simulated guest's stripe (frames 0 and 1).
        #expect(bits == [0b0000_0011, 0, 0b0000_0010])
        let third = call(fd, E.vram(nr: nr, first: 0x100), extra: [0, 0, 0])
        #expect(third.buffer1 == [0b0000_1100, 0, 0])
        #expect(fd.xen.dirtyVRAM?.reads == 3)
    }

    @Test("track_dirty_vram nr=0 stops tracking; a zero-length bitmap works through dmOp")
    func dirtyVRAMStop() throws {
        let fd = try SimulatedHypervisor.restricted()
        #expect(call(fd, E.vram(nr: 8), extra: [0]).rc == 0)
        #expect(fd.xen.dirtyVRAM != nil)
        // QEMU's log_stop: nr 0 with an empty (NULL) bitmap.
        let header = withUnsafeBytes(of: E.vram(nr: 0)) { Array($0) }
        let stop = DMOP.withBuffers(sizes: [DMOP.opSize, 0], fill: [header]) { buffers -> Int32 in
            let raw = [buffers[0], UnsafeMutableRawBufferPointer(start: nil, count: 0)]
            return raw.withUnsafeBufferPointer { fd.dmOp(domid: domid, buffers: $0) }
        }
        #expect(stop == 0)
        #expect(fd.xen.dirtyVRAM == nil)
        // Tracking again starts from "all dirty".
        #expect(call(fd, E.vram(nr: 8), extra: [0]).buffer1 == [0xff])
    }

    @Test("privcmd refuses a zero-length buffer at a page-aligned address (EFAULT) before Xen")
    func zeroLengthRaw() throws {
        let fd = try SimulatedHypervisor.restricted()
        let header = withUnsafeBytes(of: E.vram(nr: 0)) { Array($0) }
        let rc = DMOP.withBuffers(sizes: [DMOP.opSize], fill: [header]) { buffers -> Int32 in
            let raw = [buffers[0], UnsafeMutableRawBufferPointer(start: nil, count: 0)]
            return raw.withUnsafeBufferPointer { fd.ioctlDMOp(domid: domid, buffers: $0) }
        }
        #expect(rc == -EFAULT)
        #expect(fd.xen.hypercalls == 0)
    }

    @Test("the zero-length backing is writable and never the start of a page")
    func zeroLengthBacking() {
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        for _ in 0..<64 {
            let backing = ZeroLengthBacking()
            #expect(Int(bitPattern: backing.address) % pageSize != 0)
            backing.address.storeBytes(of: 1, as: UInt8.self)
            #expect(backing.pointer(for: UnsafeMutableRawBufferPointer(start: nil, count: 0)) == backing.address)
        }
    }

    @Test("irq lines: ISA levels, PCI INTx levels and PCI link routes are recorded")
    func irqLines() throws {
        let fd = try SimulatedHypervisor.restricted()
        func isa(_ irq: UInt8, _ level: UInt8) -> Int32 {
            call(fd, DMOP.op(XEN_DMOP_set_isa_irq_level) {
                $0.u.set_isa_irq_level.isa_irq = irq
                $0.u.set_isa_irq_level.level = level
            }).rc
        }
        #expect(isa(4, 1) == 0)
        #expect(isa(12, 1) == 0)
        #expect(isa(12, 0) == 0)
        #expect(fd.xen.isaIRQLevels == 1 << 4)
        #expect(fd.xen.isaIRQAsserted(4) && !fd.xen.isaIRQAsserted(12))

        #expect(call(fd, DMOP.op(XEN_DMOP_set_pci_intx_level) {
            $0.u.set_pci_intx_level.device = 31
            $0.u.set_pci_intx_level.intx = 3
            $0.u.set_pci_intx_level.level = 1
        }).rc == 0)
        #expect(fd.xen.pciIntxAsserted(device: 31, intx: 3))
        #expect(!fd.xen.pciIntxAsserted(device: 31, intx: 2))

        for (link, irq): (UInt8, UInt8) in [(0, 5), (1, 10), (2, 11), (3, 5)] {
            #expect(call(fd, DMOP.op(XEN_DMOP_set_pci_link_route) {
                $0.u.set_pci_link_route.link = link
                $0.u.set_pci_link_route.isa_irq = irq
            }).rc == 0)
        }
        #expect(fd.xen.pciLinkRoutes == [5, 10, 11, 5])
    }

    @Test("inject_msi is recorded; a pirq MSI (vector 0) within nr_pirqs is accepted")
    func injectMSI() throws {
        let fd = try SimulatedHypervisor.restricted()
        #expect(call(fd, E.msi(address: 0xfee0_1000, data: 0x4041)).rc == 0)
        #expect(fd.xen.lastMSI == SimulatedXen.MSI(address: 0xfee0_1000, data: 0x4041))
        #expect(call(fd, E.msi(address: 0xfee0_0000 | 20 << 12, data: 0)).rc == 0)
        #expect(fd.xen.msiCount == 2)
    }

    @Test("inject_event: pending until the vcpu runs; no type check in Xen")
    func injectEvent() throws {
        let fd = try SimulatedHypervisor.restricted(.init(vcpus: 2))
        #expect(call(fd, E.event(vcpu: 1)).rc == 0)
        #expect(fd.xen.pendingEvents[1]?.vector == 14)
        #expect(call(fd, E.event(vcpu: 1)).rc == -EBUSY)
        #expect(call(fd, E.event(vcpu: 0)).rc == 0)
        fd.xen.runVCPUs()
        var odd = E.event(vcpu: 1)
        odd.u.inject_event.type = 1  // reserved type: Xen takes it anyway
        #expect(call(fd, odd).rc == 0)
    }

    @Test("remote_shutdown: the reason is truncated to 8 bits and the first one sticks")
    func remoteShutdown() throws {
        let fd = try SimulatedHypervisor.restricted()
        #expect(call(fd, DMOP.op(XEN_DMOP_remote_shutdown) { $0.u.remote_shutdown.reason = 0x101 }).rc == 0)
        #expect(call(fd, DMOP.op(XEN_DMOP_remote_shutdown) { $0.u.remote_shutdown.reason = 3 }).rc == 0)
        #expect(fd.xen.shutdownCode == 1)
    }

    @Test("set_mem_type changes frame types, writes back, and keeps partial progress on failure")
    func setMemType() throws {
        let fd = try SimulatedHypervisor.restricted()
        let reply = call(fd, E.memType(HVMMEM_ram_ro.rawValue, nr: 64, first: 0xc0))
        #expect(reply.rc == 0)
        #expect(reply.op.u.set_mem_type.nr == 64)
        #expect(fd.xen.memory.type(of: 0xc0) == .ramRO)
        #expect(fd.xen.memory.type(of: 0xff) == .ramRO)
        #expect(fd.xen.memory.type(of: 0x100) == .ramRW)
        // RAM ends at 0x2000: frames 0x1ffe-0x1fff change, 0x2000 (a hole) fails.
        #expect(call(fd, E.memType(HVMMEM_ram_ro.rawValue, nr: 4, first: 0x1ffe)).rc == -EINVAL)
        #expect(fd.xen.memory.type(of: 0x1fff) == .ramRO)
        #expect(fd.xen.memory.type(of: 0x2000) == .invalid)
        // A hole may become mmio_dm.
        #expect(call(fd, E.memType(HVMMEM_mmio_dm.rawValue, nr: 16, first: 0xf0000)).rc == 0)
        #expect(fd.xen.memory.type(of: 0xf000f) == .mmioDM)
    }

    @Test("map_mem_type_to_ioreq_server: claim, mark pages, unmap returns them to ram_rw")
    func memTypeServer() throws {
        let fd = try SimulatedHypervisor.restricted()
        _ = create(fd)
        let claimed = call(fd, E.claim())
        #expect(claimed.rc == 0)
        #expect(fd.xen.memTypeServer?.id == 0)
        #expect(call(fd, E.memType(HVMMEM_ioreq_server.rawValue, nr: 4, first: 0x200)).rc == 0)
        #expect(fd.xen.memory.type(of: 0x203) == .ioreqServer)
        // ioreq_server pages may only go back to ram_rw.
        #expect(call(fd, E.memType(HVMMEM_ram_ro.rawValue, nr: 1, first: 0x200)).rc == -EINVAL)
        #expect(call(fd, E.claim(flags: 0)).rc == 0)
        #expect(fd.xen.memTypeServer == nil)
        #expect(fd.xen.memory.count(of: .ioreqServer) == 0)
        #expect(fd.xen.memory.type(of: 0x203) == .ramRW)
    }

    @Test("map_mem_type_to_ioreq_server: a non-zero opaque is a continuation and maps nothing")
    func memTypeOpaque() throws {
        let fd = try SimulatedHypervisor.restricted()
        _ = create(fd)
        var op = E.claim()
        op.u.map_mem_type_to_ioreq_server.opaque = 0x1000
        #expect(call(fd, op).rc == 0)
        #expect(fd.xen.memTypeServer == nil)
    }

    @Test("modified_memory: returns 0 and writes nothing back unless log-dirty is on")
    func modifiedMemory() throws {
        let fd = try SimulatedHypervisor.restricted()
        // Off (the normal case): even a short extents buffer is not looked at.
        let off = call(fd, E.modified(nr: 3), extra: DMOP.extents([(1, 0, 0x10)]))
        #expect(off.rc == 0)
        #expect(off.op.u.modified_memory.nr_extents == 3)

        // On: the frames count as dirty for VRAM tracking; still no write-back.
        let dirty = try SimulatedHypervisor.restricted(.init(logDirty: true))
        #expect(call(dirty, E.vram(nr: 16, first: 0x100), extra: [0, 0]).rc == 0)
        let on = call(dirty, E.modified(nr: 2), extra: DMOP.extents([(2, 0, 0x104), (1, 0, 0x10f)]))
        #expect(on.rc == 0)
        #expect(on.op.u.modified_memory.nr_extents == 2)
        let bits = call(dirty, E.vram(nr: 16, first: 0x100), extra: [0, 0]).buffer1
        // Frames 4, 5, 15 from modified_memory; 0 and 1 from the guest's stripe.
        #expect(bits == [0b0011_0011, 0b1000_0000])
    }

    @Test("relocate_memory moves RAM frames and leaves holes")
    func relocate() throws {
        let fd = try SimulatedHypervisor.restricted()
        #expect(call(fd, DMOP.op(XEN_DMOP_relocate_memory) {
            $0.u.relocate_memory.size = 16
            $0.u.relocate_memory.src_gfn = 0x1000
            $0.u.relocate_memory.dst_gfn = 0xf1000
        }).rc == 0)
        #expect(fd.xen.memory.type(of: 0x1000) == .invalid)
        #expect(fd.xen.memory.type(of: 0xf100f) == .ramRW)
        #expect(fd.xen.memory.type(of: 0xf1010) == .invalid)
    }

    @Test("pin_memory_cacheattr: add, update the same range, delete")
    func pinCacheAttr() throws {
        let fd = try SimulatedHypervisor.restricted()
        #expect(call(fd, E.pin(0xf1000, 0xf1fff)).rc == 0)
        #expect(call(fd, E.pin(0xf1000, 0xf1fff, type: UInt32(XEN_DMOP_MEM_CACHEATTR_WC))).rc == 0)
        #expect(fd.xen.pinnedCacheRanges.map(\.type) == [UInt32(XEN_DMOP_MEM_CACHEATTR_WC)])
        #expect(call(fd, E.pin(0xf1000, 0xf1fff, type: cxen_dmop_delete_mem_cacheattr())).rc == 0)
        #expect(fd.xen.pinnedCacheRanges.isEmpty)
    }
}

@Suite("Xen rangeset model")
struct XenRangeSetTests {
    @Test("a range touching only the next one is allocated before merging: ENOMEM at the limit")
    func allocateBeforeMerge() {
        var set = XenRangeSet(limit: 2)
        #expect(set.add(start: 10, end: 19) == 0)
        #expect(set.add(start: 40, end: 49) == 0)
        #expect(set.add(start: 20, end: 29) == 0)  // touches 10-19: extends it, no allocation
        #expect(set.ranges == [.init(start: 10, end: 29), .init(start: 40, end: 49)])
        #expect(set.add(start: 35, end: 39) == -ENOMEM)  // touches only 40-49
        #expect(set.add(start: 30, end: 39) == 0)  // touches 10-29: merges all
        #expect(set.ranges == [.init(start: 10, end: 49)])
    }

    @Test("add across several ranges swallows them")
    func addAcross() {
        var set = XenRangeSet(limit: 8)
        for start: UInt64 in [10, 20, 30] { #expect(set.add(start: start, end: start + 2) == 0) }
        #expect(set.add(start: 5, end: 25) == 0)
        #expect(set.ranges == [.init(start: 5, end: 25), .init(start: 30, end: 32)])
        #expect(set.overlaps(start: 26, end: 29) == false)
        #expect(set.contains(start: 6, end: 25))
        #expect(!set.contains(start: 6, end: 26))
    }

    @Test("remove trims, deletes and splits")
    func remove() {
        var set = XenRangeSet(limit: 8)
        _ = set.add(start: 0, end: 99)
        #expect(set.remove(start: 0, end: 9) == 0)
        #expect(set.remove(start: 90, end: 99) == 0)
        #expect(set.remove(start: 50, end: 59) == 0)
        #expect(set.ranges == [.init(start: 10, end: 49), .init(start: 60, end: 89)])
        #expect(set.remove(start: 60, end: 89) == 0)
        #expect(set.ranges == [.init(start: 10, end: 49)])
    }
}
