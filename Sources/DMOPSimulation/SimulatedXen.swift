// SPDX-License-Identifier: MIT
import CXen
import DMOPCore
import Glibc

/// A model of Xen 4.17's `dm_op` hypercall (xen/common/dm.c, xen/arch/x86/hvm/dm.c,
/// xen/common/ioreq.c) for a host with exactly two domains: dom0, the caller,
/// and one HVM guest. It checks in Xen's order and fails with Xen's errno
/// (dm_op()'s generic checks in xen/arch/x86/hvm/dm.c, then each op's, as
/// scripts/xen-test observes them on real Xen), and it keeps the
/// guest state those ops change, so a client sees real outputs: ioreq server
/// ids, event channel ports, gfns, vcpu counts and dirty bitmaps.
///
/// Like Xen, it copies the `xen_dm_op` header and the op's payload out of
/// buffer 0 into a local `xen_dm_op`, works on that, and copies the payload
/// back only where Xen does (non-const op and rc 0). Buffer 1 is read or
/// written in place (track_dirty_vram's bitmap, modified_memory's extents).
///
/// Continuations (-ERESTART) are transparent to dom0 userspace, so the model
/// runs every preemptible op to the end in one call, as on an idle host.
public final class SimulatedXen {
    /// The release the model reports unless told otherwise: the harness's Xen 4.17.
    public static let defaultRelease = XenRelease(major: 4, minor: 17)
    public struct Configuration: Sendable, Equatable {
        /// The HVM guest; no other domain but dom0 exists.
        public var guestDomid: UInt16
        /// d->max_vcpus (what nr_vcpus reports; bounds inject_event's vcpuid).
        public var vcpus: UInt32
        /// PVH counts as HVM too; a PV guest makes every DMOP fail with EINVAL.
        public var isHVM: Bool
        /// Hardware assisted paging; without it the ioreq_server memory type
        /// is refused with EOPNOTSUPP.
        public var hap: Bool
        /// Global log-dirty mode (live migration). Off on a normal host, and
        /// then modified_memory does nothing and returns 0.
        public var logDirty: Bool
        /// XENVER_version: major << 16 | minor. 4.17 as in the harness.
        public var xenVersion: UInt32
        /// Guest RAM from gfn 0 (32 MiB, as the harness's guests).
        public var ramFrames: UInt64
        /// Frames libxc populates below 4 GiB for the special pages and the
        /// ioreq server pages (xg_dom_x86.c: up to X86_HVM_END_SPECIAL_REGION).
        public var specialFrames: ClosedRange<UInt64>
        /// HVM_PARAM_IOREQ_SERVER_PFN and HVM_PARAM_NR_IOREQ_SERVER_PAGES as
        /// libxc sets them: the gfns handed out by get_ioreq_server_info.
        public var ioreqServerGfnBase: UInt64
        public var ioreqServerGfnCount: Int
        /// HVM_PARAM_IOREQ_PFN and HVM_PARAM_BUFIOREQ_PFN: the legacy gfns
        /// used once the pool above is exhausted (nil: parameter not set).
        public var legacyIoreqGfn: UInt64?
        public var legacyBufioreqGfn: UInt64?
        /// Event channel ports already bound in the guest when QEMU starts
        /// (xenstore and console: ports 1 and 2; the harness saw bufioreq port 4).
        public var boundEventPorts: UInt32
        /// The host's paddr_bits (hvm_set_mem_pinned_cacheattr compares gfns
        /// against it).
        public var paddrBits: UInt32
        /// d->nr_pirqs (inject_msi with vector 0 routes through a pirq).
        public var nrPirqs: UInt32

        public init(guestDomid: UInt16 = 1, vcpus: UInt32 = 1, isHVM: Bool = true, hap: Bool = true,
                    logDirty: Bool = false, xenVersion: UInt32 = SimulatedXen.defaultRelease.xenVersion,
                    ramFrames: UInt64 = 0x2000, specialFrames: ClosedRange<UInt64> = 0xfeff0...0xfefff,
                    ioreqServerGfnBase: UInt64 = 0xfeff0, ioreqServerGfnCount: Int = 8,
                    legacyIoreqGfn: UInt64? = 0xfeffd, legacyBufioreqGfn: UInt64? = 0xfeffb,
                    boundEventPorts: UInt32 = 2, paddrBits: UInt32 = 48, nrPirqs: UInt32 = 56) {
            self.guestDomid = guestDomid
            self.vcpus = min(vcpus, Limits.vcpus)
            self.isHVM = isHVM
            self.hap = hap
            self.logDirty = logDirty
            self.xenVersion = xenVersion
            self.ramFrames = ramFrames
            self.specialFrames = specialFrames
            self.ioreqServerGfnBase = ioreqServerGfnBase
            self.ioreqServerGfnCount = min(max(ioreqServerGfnCount, 0), 64)
            self.legacyIoreqGfn = legacyIoreqGfn
            self.legacyBufioreqGfn = legacyBufioreqGfn
            self.boundEventPorts = boundEventPorts
            self.paddrBits = paddrBits
            self.nrPirqs = nrPirqs
        }
    }

    /// Xen-internal limits (not in any public header, so they are named here
    /// with their source).
    public enum Limits {
        /// MAX_NR_IOREQ_SERVERS (xen/arch/x86/include/asm/hvm/domain.h).
        public static let ioreqServers = 8
        /// MAX_NR_IO_RANGES (xen/include/xen/ioreq.h): ranges per type per server.
        public static let ioRangesPerType = 256
        /// GB(1) >> PAGE_SHIFT in track_dirty_vram() (x86 dm.c).
        public static let dirtyVRAMFrames: UInt32 = 262_144
        /// The "arbitrary" limit in hvm_set_mem_pinned_cacheattr() (mtrr.c).
        public static let pinnedCacheRanges = 64
        /// EVTCHN_2L_NR_CHANNELS for a 64-bit guest.
        public static let eventChannels: UInt32 = 4096
        /// HVM_MAX_VCPUS (public/hvm/hvm_info_table.h): the most vcpus an HVM
        /// guest can have; the model clamps to it.
        public static let vcpus: UInt32 = 128
    }

    /// dom0: the caller of every hypercall.
    public static let callerDomid: UInt16 = 0

    // MARK: State a test (or the demo) can look at.

    public struct IoreqServer: Equatable, Sendable {
        public let id: UInt16
        /// HVM_IOREQSRV_BUFIOREQ_* given at creation.
        public let bufioreqHandling: UInt8
        public internal(set) var enabled: Bool
        /// One unbound event channel per vcpu, vcpu 0 first.
        public let ioreqPorts: [UInt32]
        /// Allocated with vcpu 0's port when buffered ioreqs are handled.
        public let bufioreqPort: UInt32?
        /// Set once get_ioreq_server_info without XEN_DMOP_no_gfns maps them.
        public internal(set) var ioreqGfn: UInt64?
        public internal(set) var bufioreqGfn: UInt64?
        /// Indexed by XEN_DMOP_IO_RANGE_PORT / _MEMORY / _PCI.
        public internal(set) var rangeSets: [XenRangeSet]

        public var handlesBufferedIoreqs: Bool { bufioreqHandling != UInt8(HVM_IOREQSRV_BUFIOREQ_OFF) }
        public func ranges(type: Int32) -> [XenRangeSet.Range] {
            guard type >= 0, Int(type) < rangeSets.count else { return [] }
            return rangeSets[Int(type)].ranges
        }
    }

    public struct PendingEvent: Equatable, Sendable {
        public let vector: UInt8
        public let type: UInt8
        public let instructionLength: UInt8
        public let errorCode: UInt32
        public let cr2: UInt64
    }

    public struct MSI: Equatable, Sendable {
        public let address: UInt64
        public let data: UInt32
    }

    public struct PinnedCacheRange: Equatable, Sendable {
        public let start: UInt64
        public let end: UInt64
        public internal(set) var type: UInt32
    }

    public struct DirtyVRAM: Equatable, Sendable {
        public let firstPfn: UInt64
        public let frames: UInt32
        /// Bitmaps returned since tracking of this range started.
        public internal(set) var reads: Int
    }

    public let configuration: Configuration
    /// false once destroyGuest() ran: every DMOP then fails with ESRCH.
    public var guestExists: Bool { guestAlive }
    /// Slots 0..<Limits.ioreqServers; ids are the slot numbers, lowest free first.
    public private(set) var ioreqServerSlots: [IoreqServer?]
    /// Bit n set: ISA IRQ n asserted (hvm_irq->isa_irq).
    public var isaIRQLevels: UInt16 { isaIRQ }
    /// Per device, bit intx set: that PCI INTx line asserted (hvm_irq->pci_intx).
    public var pciIntxLevels: [UInt8] { (0..<32).map { UInt8(truncatingIfNeeded: pciIntx >> ($0 * 4)) & 0xf } }
    /// hvm_irq->pci_link.route: ISA IRQ per PCI link, 0 = disabled.
    public private(set) var pciLinkRoutes: [UInt8] = [0, 0, 0, 0]
    public var msiCount: Int { msis }
    public var lastMSI: MSI? { latestMSI }
    /// Per vcpu: the event inject_event left for the next VM entry.
    public private(set) var pendingEvents: [PendingEvent?]
    /// d->shutdown_code once remote_shutdown ran (Xen keeps the first one).
    public private(set) var shutdownCode: UInt8?
    /// Newest first, as Xen's list.
    public private(set) var pinnedCacheRanges: [PinnedCacheRange] = []
    /// The server that claimed HVMMEM_ioreq_server, and its access flags.
    public private(set) var memTypeServer: (id: UInt16, flags: UInt32)?
    public private(set) var dirtyVRAM: DirtyVRAM?
    public private(set) var memory: SimulatedGuestMemory
    /// Calls that reached dm_op (past privcmd), whatever their result.
    public var hypercalls: Int { calls }

    // The state the interrupt ops change, stored privately and read through
    // the getters above: state no other module can reach needs no dynamic
    // exclusivity check per call.
    private var guestAlive = true
    private var isaIRQ: UInt16 = 0
    /// Bit (device * 4 + intx) set: that PCI INTx line asserted.
    private var pciIntx: UInt128 = 0
    private var msis = 0
    private var latestMSI: MSI?
    private var calls = 0
    /// opSizes, held by the instance: no lazy-global check per call.
    private let payloadSizes = SimulatedXen.opSizes

    private var boundPorts: Set<UInt32>
    private var freeServerGfns: UInt64
    private var legacyGfnsFree: [Bool]
    /// Frames written since the last bitmap (guest writes and modified_memory).
    private var dirtyFrames: Set<UInt64> = []

    public init(_ configuration: Configuration = Configuration()) {
        self.configuration = configuration
        ioreqServerSlots = Array(repeating: nil, count: Limits.ioreqServers)
        pendingEvents = Array(repeating: nil, count: Int(configuration.vcpus))
        var ram: [ClosedRange<UInt64>] = [configuration.specialFrames]
        if configuration.ramFrames > 0 { ram.append(0...(configuration.ramFrames - 1)) }
        memory = SimulatedGuestMemory(ram: ram)
        boundPorts = configuration.boundEventPorts == 0 ? [] : Set(1...configuration.boundEventPorts)
        let count = configuration.ioreqServerGfnCount
        freeServerGfns = count >= 64 ? .max : (UInt64(1) << UInt64(count)) - 1
        legacyGfnsFree = [configuration.legacyIoreqGfn != nil, configuration.legacyBufioreqGfn != nil]
    }

    public var ioreqServers: [IoreqServer] { ioreqServerSlots.compactMap { $0 } }
    public func ioreqServer(id: UInt16) -> IoreqServer? {
        Int(id) < ioreqServerSlots.count ? ioreqServerSlots[Int(id)] : nil
    }
    public func isaIRQAsserted(_ irq: Int) -> Bool { irq >= 0 && irq < 16 && isaIRQ & (1 << irq) != 0 }
    public func pciIntxAsserted(device: Int, intx: Int) -> Bool {
        device >= 0 && device < 32 && intx >= 0 && intx < 4 && pciIntx & (UInt128(1) << (device * 4 + intx)) != 0
    }

    // MARK: Things that happen outside the device model's calls.

    /// `xl destroy`: the domain goes away; later DMOPs fail with ESRCH.
    public func destroyGuest() { guestAlive = false }

    /// The guest wrote these frames (shows up in the next dirty VRAM bitmap).
    public func guestWrote(frames: some Sequence<UInt64>) {
        guard let vram = dirtyVRAM else { return }
        for pfn in frames where pfn >= vram.firstPfn && pfn - vram.firstPfn < UInt64(vram.frames) {
            dirtyFrames.insert(pfn)
        }
    }

    /// The vcpus enter the guest and take their pending events.
    public func runVCPUs() {
        for i in pendingEvents.indices { pendingEvents[i] = nil }
    }

    // MARK: The hypercall.

    /// sizeof(xen_dm_op) up to the union: the header Xen reads first.
    public static let headerSize: Int = MemoryLayout<xen_dm_op>.offset(of: \xen_dm_op.u) ?? MemoryLayout<xen_dm_op>.size

    /// x86 dm.c's op_size[]: its length is one past the highest op with an
    /// entry (nr_vcpus), and ops without an entry (0, and set_irq_level,
    /// which is Arm-only) have size 0 and fall through to EOPNOTSUPP.
    public static let opSizes: [Int] = {
        var sizes = Array(repeating: 0, count: Int(XEN_DMOP_nr_vcpus) + 1)
        func set<T>(_ op: Int32, _: T.Type) { sizes[Int(op)] = MemoryLayout<T>.size }
        set(XEN_DMOP_create_ioreq_server, xen_dm_op_create_ioreq_server.self)
        set(XEN_DMOP_get_ioreq_server_info, xen_dm_op_get_ioreq_server_info.self)
        set(XEN_DMOP_map_io_range_to_ioreq_server, xen_dm_op_ioreq_server_range.self)
        set(XEN_DMOP_unmap_io_range_from_ioreq_server, xen_dm_op_ioreq_server_range.self)
        set(XEN_DMOP_set_ioreq_server_state, xen_dm_op_set_ioreq_server_state.self)
        set(XEN_DMOP_destroy_ioreq_server, xen_dm_op_destroy_ioreq_server.self)
        set(XEN_DMOP_track_dirty_vram, xen_dm_op_track_dirty_vram.self)
        set(XEN_DMOP_set_pci_intx_level, xen_dm_op_set_pci_intx_level.self)
        set(XEN_DMOP_set_isa_irq_level, xen_dm_op_set_isa_irq_level.self)
        set(XEN_DMOP_set_pci_link_route, xen_dm_op_set_pci_link_route.self)
        set(XEN_DMOP_modified_memory, xen_dm_op_modified_memory.self)
        set(XEN_DMOP_set_mem_type, xen_dm_op_set_mem_type.self)
        set(XEN_DMOP_inject_event, xen_dm_op_inject_event.self)
        set(XEN_DMOP_inject_msi, xen_dm_op_inject_msi.self)
        set(XEN_DMOP_map_mem_type_to_ioreq_server, xen_dm_op_map_mem_type_to_ioreq_server.self)
        set(XEN_DMOP_remote_shutdown, xen_dm_op_remote_shutdown.self)
        set(XEN_DMOP_relocate_memory, xen_dm_op_relocate_memory.self)
        set(XEN_DMOP_pin_memory_cacheattr, xen_dm_op_pin_memory_cacheattr.self)
        set(XEN_DMOP_nr_vcpus, xen_dm_op_nr_vcpus.self)
        return sizes
    }()

    /// HYPERVISOR_dm_op(domid, nr_bufs, bufs) from dom0: do_dm_op() then
    /// dm_op(). Returns 0 or -errno.
    public func dmOp(domid: UInt16, buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>) -> Int32 {
        calls += 1
        // do_dm_op (common/dm.c, with the XSA-506 fix).
        if buffers.isEmpty { return -ENODATA }
        if buffers.count > 2 { return -E2BIG }  // struct dmop_args.buf[2]
        // rcu_lock_remote_domain_by_id(): dom0 exists but is the caller.
        if domid == Self.callerDomid { return -EPERM }
        guard guestAlive, domid == configuration.guestDomid else { return -ESRCH }
        guard configuration.isHVM else { return -EINVAL }
        // XSM_DM_PRIV: dom0 is the control domain, so it passes.

        let buf0 = buffers[0]
        let header = Self.headerSize
        guard buf0.count >= header, let base0 = buf0.baseAddress else { return -EFAULT }
        var op = xen_dm_op()
        // SAFETY: buf0 holds `header` bytes (checked above), and `op`, a whole
        // xen_dm_op, is larger than its header.
        withUnsafeMutableBytes(of: &op) { $0.baseAddress?.copyMemory(from: base0, byteCount: header) }
        guard op.op < UInt32(payloadSizes.count) else { return -EOPNOTSUPP }
        let size = payloadSizes[Int(op.op)]
        guard buf0.count >= header + size else { return -EFAULT }
        // SAFETY: header + size <= buf0.count (checked above), and `size` is one
        // member of op.u, so it fits in `op` after the header.
        withUnsafeMutableBytes(of: &op) { $0.baseAddress?.advanced(by: header).copyMemory(from: base0 + header, byteCount: size) }
        guard op.pad == 0 else { return -EINVAL }

        var constOp = true
        let rc = dispatch(&op, buffers: buffers, constOp: &constOp)
        if rc == 0 && !constOp {
            // SAFETY: the same range as the copy in: inside both buf0 and `op`.
            withUnsafeBytes(of: &op) { src in
                if let from = src.baseAddress { (base0 + header).copyMemory(from: from + header, byteCount: size) }
            }
        }
        return rc
    }

    private func dispatch(_ op: inout xen_dm_op, buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>,
                          constOp: inout Bool) -> Int32 {
        switch Int32(bitPattern: op.op) {
        case XEN_DMOP_create_ioreq_server:
            constOp = false
            return createIoreqServer(&op.u.create_ioreq_server)
        case XEN_DMOP_get_ioreq_server_info:
            constOp = false
            return getIoreqServerInfo(&op.u.get_ioreq_server_info)
        case XEN_DMOP_map_io_range_to_ioreq_server:
            return mapIORange(op.u.map_io_range_to_ioreq_server)
        case XEN_DMOP_unmap_io_range_from_ioreq_server:
            return unmapIORange(op.u.unmap_io_range_from_ioreq_server)
        case XEN_DMOP_set_ioreq_server_state:
            return setIoreqServerState(op.u.set_ioreq_server_state)
        case XEN_DMOP_destroy_ioreq_server:
            return destroyIoreqServer(op.u.destroy_ioreq_server)
        case XEN_DMOP_track_dirty_vram:
            let data = op.u.track_dirty_vram
            if data.pad != 0 { return -EINVAL }
            if buffers.count < 2 { return -EINVAL }
            return trackDirtyVRAM(firstPfn: data.first_pfn, frames: data.nr, bitmap: buffers[1])
        case XEN_DMOP_set_pci_intx_level:
            return setPCIIntxLevel(op.u.set_pci_intx_level)
        case XEN_DMOP_set_isa_irq_level:
            return setISAIRQLevel(op.u.set_isa_irq_level)
        case XEN_DMOP_set_pci_link_route:
            let data = op.u.set_pci_link_route
            if data.link > 3 || data.isa_irq > 15 { return -EINVAL }
            pciLinkRoutes[Int(data.link)] = data.isa_irq
            return 0
        case XEN_DMOP_modified_memory:
            // XSA-506: exactly two buffers, checked before anything else.
            if buffers.count != 2 { return -EINVAL }
            let rc = modifiedMemory(&op.u.modified_memory, extents: buffers[1])
            // const_op = !rc: written back only on -ERESTART, never seen here.
            constOp = rc == 0
            return rc
        case XEN_DMOP_set_mem_type:
            constOp = false
            if op.u.set_mem_type.pad != 0 { return -EINVAL }
            return setMemType(op.u.set_mem_type)
        case XEN_DMOP_inject_event:
            return injectEvent(op.u.inject_event)
        case XEN_DMOP_inject_msi:
            let data = op.u.inject_msi
            if data.pad != 0 { return -EINVAL }
            return injectMSI(address: data.addr, data: data.data)
        case XEN_DMOP_map_mem_type_to_ioreq_server:
            constOp = false
            return mapMemTypeToIoreqServer(op.u.map_mem_type_to_ioreq_server)
        case XEN_DMOP_remote_shutdown:
            // domain_shutdown(d, u8 reason): not validated, truncated to 8
            // bits, and the first code set sticks.
            let code = UInt8(truncatingIfNeeded: op.u.remote_shutdown.reason)
            if shutdownCode == nil, code != UInt8.max { shutdownCode = code }
            return 0
        case XEN_DMOP_relocate_memory:
            let data = op.u.relocate_memory
            if data.pad != 0 { return -EINVAL }
            return relocateMemory(size: data.size, source: data.src_gfn, destination: data.dst_gfn)
        case XEN_DMOP_pin_memory_cacheattr:
            let data = op.u.pin_memory_cacheattr
            if data.pad != 0 { return -EINVAL }
            return pinMemoryCacheAttribute(start: data.start, end: data.end, type: data.type)
        case XEN_DMOP_nr_vcpus:
            op.u.nr_vcpus.vcpus = configuration.vcpus
            constOp = false
            return 0
        default:
            // 0 and set_irq_level: ioreq_server_dm_op()'s default case.
            return -EOPNOTSUPP
        }
    }

    // MARK: ioreq servers (common/ioreq.c, x86 hvm/ioreq.c)

    private func allocatePort() -> UInt32? {
        for port in UInt32(1)..<Limits.eventChannels where !boundPorts.contains(port) {
            boundPorts.insert(port)
            return port
        }
        return nil
    }

    private func createIoreqServer(_ data: inout xen_dm_op_create_ioreq_server) -> Int32 {
        if data.pad.0 != 0 || data.pad.1 != 0 || data.pad.2 != 0 { return -EINVAL }
        if data.handle_bufioreq > UInt8(HVM_IOREQSRV_BUFIOREQ_ATOMIC) { return -EINVAL }
        guard let slot = ioreqServerSlots.firstIndex(where: { $0 == nil }) else { return -ENOSPC }
        // hvm_ioreq_server_add_vcpu() per vcpu: the vcpu's port, then for
        // vcpu 0 the buffered-ioreq port.
        var ports: [UInt32] = []
        var bufPort: UInt32?
        let buffered = data.handle_bufioreq != UInt8(HVM_IOREQSRV_BUFIOREQ_OFF)
        for vcpu in 0..<Int(configuration.vcpus) {
            guard let port = allocatePort() else {
                for p in ports { boundPorts.remove(p) }
                if let p = bufPort { boundPorts.remove(p) }
                return -ENOSPC
            }
            ports.append(port)
            if vcpu == 0 && buffered {
                guard let port = allocatePort() else {
                    for p in ports { boundPorts.remove(p) }
                    return -ENOSPC
                }
                bufPort = port
            }
        }
        let sets = Array(repeating: XenRangeSet(limit: Limits.ioRangesPerType), count: 3)
        ioreqServerSlots[slot] = IoreqServer(id: UInt16(slot), bufioreqHandling: data.handle_bufioreq, enabled: false,
                                             ioreqPorts: ports, bufioreqPort: bufPort, ioreqGfn: nil,
                                             bufioreqGfn: nil, rangeSets: sets)
        data.id = ioservid_t(slot)
        return 0
    }

    private func allocateIoreqGfn() -> UInt64? {
        if freeServerGfns != 0 {
            let bit = UInt64(freeServerGfns.trailingZeroBitCount)
            freeServerGfns &= ~(UInt64(1) << bit)
            return configuration.ioreqServerGfnBase + bit
        }
        // hvm_alloc_legacy_ioreq_gfn(): IOREQ_PFN, then BUFIOREQ_PFN.
        for (i, gfn) in [configuration.legacyIoreqGfn, configuration.legacyBufioreqGfn].enumerated() {
            if let gfn, legacyGfnsFree[i] {
                legacyGfnsFree[i] = false
                return gfn
            }
        }
        return nil
    }

    private func freeIoreqGfn(_ gfn: UInt64?) {
        guard let gfn else { return }
        if gfn == configuration.legacyIoreqGfn { legacyGfnsFree[0] = true; return }
        if gfn == configuration.legacyBufioreqGfn { legacyGfnsFree[1] = true; return }
        if gfn >= configuration.ioreqServerGfnBase, gfn - configuration.ioreqServerGfnBase < 64 {
            freeServerGfns |= UInt64(1) << (gfn - configuration.ioreqServerGfnBase)
        }
    }

    private func getIoreqServerInfo(_ data: inout xen_dm_op_get_ioreq_server_info) -> Int32 {
        let noGfns = data.flags & UInt16(XEN_DMOP_no_gfns) != 0
        if data.flags & ~UInt16(XEN_DMOP_no_gfns) != 0 { return -EINVAL }
        guard var server = ioreqServer(id: data.id) else { return -ENOENT }
        // (EPERM when another emulator domain owns it: only dom0 exists.)
        if !noGfns {
            // arch_ioreq_server_map_pages(): the ioreq gfn, then the buffered
            // one; if that fails the ioreq gfn is given back too.
            if server.ioreqGfn == nil {
                guard let gfn = allocateIoreqGfn() else { return -ENOMEM }
                server.ioreqGfn = gfn
            }
            if server.handlesBufferedIoreqs && server.bufioreqGfn == nil {
                guard let gfn = allocateIoreqGfn() else {
                    freeIoreqGfn(server.ioreqGfn)
                    server.ioreqGfn = nil
                    ioreqServerSlots[Int(data.id)] = server
                    return -ENOMEM
                }
                server.bufioreqGfn = gfn
            }
            ioreqServerSlots[Int(data.id)] = server
            data.ioreq_gfn = server.ioreqGfn ?? 0
        }
        if server.handlesBufferedIoreqs {
            if !noGfns { data.bufioreq_gfn = server.bufioreqGfn ?? 0 }
            data.bufioreq_port = server.bufioreqPort ?? 0
        }
        return 0
    }

    private func mapIORange(_ data: xen_dm_op_ioreq_server_range) -> Int32 {
        if data.pad != 0 { return -EINVAL }
        if data.start > data.end { return -EINVAL }
        guard var server = ioreqServer(id: data.id) else { return -ENOENT }
        guard data.type < UInt32(server.rangeSets.count) else { return -EINVAL }
        let type = Int(data.type)
        if server.rangeSets[type].overlaps(start: data.start, end: data.end) { return -EEXIST }
        let rc = server.rangeSets[type].add(start: data.start, end: data.end)
        ioreqServerSlots[Int(data.id)] = server
        return rc
    }

    private func unmapIORange(_ data: xen_dm_op_ioreq_server_range) -> Int32 {
        if data.pad != 0 { return -EINVAL }
        if data.start > data.end { return -EINVAL }
        guard var server = ioreqServer(id: data.id) else { return -ENOENT }
        guard data.type < UInt32(server.rangeSets.count) else { return -EINVAL }
        let type = Int(data.type)
        guard server.rangeSets[type].contains(start: data.start, end: data.end) else { return -ENOENT }
        let rc = server.rangeSets[type].remove(start: data.start, end: data.end)
        ioreqServerSlots[Int(data.id)] = server
        return rc
    }

    private func setIoreqServerState(_ data: xen_dm_op_set_ioreq_server_state) -> Int32 {
        if data.pad != 0 { return -EINVAL }
        guard ioreqServer(id: data.id) != nil else { return -ENOENT }
        ioreqServerSlots[Int(data.id)]?.enabled = data.enabled != 0
        return 0
    }

    private func destroyIoreqServer(_ data: xen_dm_op_destroy_ioreq_server) -> Int32 {
        if data.pad != 0 { return -EINVAL }
        guard let server = ioreqServer(id: data.id) else { return -ENOENT }
        // arch_ioreq_server_destroy(): the p2m forgets the server's memory type.
        if let claimed = memTypeServer, claimed.id == server.id {
            memTypeServer = nil
            resetIoreqServerPages()
        }
        for port in server.ioreqPorts { boundPorts.remove(port) }
        if let port = server.bufioreqPort { boundPorts.remove(port) }
        freeIoreqGfn(server.ioreqGfn)
        freeIoreqGfn(server.bufioreqGfn)
        ioreqServerSlots[Int(data.id)] = nil
        return 0
    }

    private func mapMemTypeToIoreqServer(_ data: xen_dm_op_map_mem_type_to_ioreq_server) -> Int32 {
        guard configuration.hap else { return -EOPNOTSUPP }
        // A non-zero opaque is a continuation's progress: Xen skips the
        // (un)mapping and only resumes the p2m sweep.
        if data.opaque == 0 {
            if UInt32(data.type) != HVMMEM_ioreq_server.rawValue { return -EINVAL }
            if data.flags & ~UInt32(XEN_DMOP_IOREQ_MEM_ACCESS_WRITE) != 0 { return -EINVAL }
            guard ioreqServer(id: data.id) != nil else { return -ENOENT }
            // p2m_set_ioreq_server()
            if data.flags == 0 {
                guard let claimed = memTypeServer, claimed.id == data.id else { return -EINVAL }
                memTypeServer = nil
            } else {
                if memTypeServer != nil { return -EBUSY }
                if memory.count(of: .ioreqServer) != 0 { return -EBUSY }
                memTypeServer = (data.id, data.flags)
            }
        }
        // After an unmap the remaining ioreq_server pages go back to ram_rw.
        if data.flags == 0 { resetIoreqServerPages() }
        return 0
    }

    private func resetIoreqServerPages() {
        for run in memory.runs where run.type == .ioreqServer {
            memory.set(run.start...run.end, to: .ramRW)
        }
    }

    // MARK: memory (x86 dm.c, hap, mtrr.c)

    private func trackDirtyVRAM(firstPfn: UInt64, frames: UInt32, bitmap: UnsafeMutableRawBufferPointer) -> Int32 {
        if frames > Limits.dirtyVRAMFrames { return -EINVAL }
        if configuration.vcpus == 0 { return -EINVAL }  // !d->max_vcpus || !d->vcpu[0]
        let bytes = (Int(frames) + 7) / 8
        if bytes > bitmap.count { return -EINVAL }
        guard frames > 0 else {
            // nr == 0 stops tracking.
            dirtyVRAM = nil
            dirtyFrames.removeAll()
            return 0
        }
        // SAFETY: bytes <= bitmap.count (checked above), and dirtyFrames holds only
        // frames of the tracked range [firstPfn, firstPfn + frames), so bit / 8 < bytes.
        guard let out = bitmap.baseAddress else { return -EFAULT }
        if let vram = dirtyVRAM, vram.firstPfn == firstPfn, vram.frames == frames {
            // The guest keeps drawing: one stripe of the range per read, so a
            // client sees bits move from one bitmap to the next.
            let stripe = max(UInt64(frames) / 8, 1)
            let offset = (UInt64(vram.reads - 1) * stripe) % UInt64(frames)
            for i in 0..<stripe { dirtyFrames.insert(firstPfn + (offset + i) % UInt64(frames)) }
            out.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
            for pfn in dirtyFrames {
                let bit = Int(pfn - firstPfn)
                out.storeBytes(of: out.load(fromByteOffset: bit / 8, as: UInt8.self) | UInt8(1 << (bit % 8)),
                               toByteOffset: bit / 8, as: UInt8.self)
            }
            dirtyVRAM?.reads += 1
        } else {
            // A new range: everything in it counts as dirty once.
            out.initializeMemory(as: UInt8.self, repeating: 0xff, count: bytes)
            if frames % 8 != 0 {
                out.storeBytes(of: UInt8((1 << (frames % 8)) - 1), toByteOffset: bytes - 1, as: UInt8.self)
            }
            dirtyVRAM = DirtyVRAM(firstPfn: firstPfn, frames: frames, reads: 1)
        }
        // Kept for the next read: a guest that draws dirties as many frames.
        dirtyFrames.removeAll(keepingCapacity: true)
        return 0
    }

    private func modifiedMemory(_ data: inout xen_dm_op_modified_memory, extents: UnsafeMutableRawBufferPointer) -> Int32 {
        guard configuration.logDirty else { return 0 }
        let extentSize = MemoryLayout<xen_dm_op_modified_memory_extent>.size
        if UInt64(extents.count / extentSize) < UInt64(data.nr_extents) { return -EINVAL }
        guard let base = extents.baseAddress else { return data.nr_extents == 0 ? 0 : -EFAULT }
        // Last extent first, as Xen walks them.
        // SAFETY: nr_extents <= extents.count / extentSize (checked above), so each
        // extent read lies inside the buffer.
        while data.nr_extents > 0 {
            let extent = base.loadUnaligned(fromByteOffset: Int(data.nr_extents - 1) * extentSize,
                                            as: xen_dm_op_modified_memory_extent.self)
            if extent.pad != 0 { return -EINVAL }
            let (end, overflow) = extent.first_pfn.addingReportingOverflow(UInt64(extent.nr))
            if overflow || end <= extent.first_pfn || end > memory.maxMappedPfn { return -EINVAL }
            if data.opaque >= extent.nr { return -EINVAL }
            // Marked in the log-dirty bitmap; only a tracked VRAM range can
            // show them, so only that part is kept.
            if let vram = dirtyVRAM {
                let low = max(extent.first_pfn + UInt64(data.opaque), vram.firstPfn)
                let high = min(end, vram.firstPfn + UInt64(vram.frames))
                if low < high {
                    for pfn in low..<high where memory.type(of: pfn).isRAM { dirtyFrames.insert(pfn) }
                }
            }
            data.nr_extents -= 1
            data.opaque = 0
        }
        return 0
    }

    private func setMemType(_ data: xen_dm_op_set_mem_type) -> Int32 {
        let last = data.first_pfn &+ UInt64(data.nr) &- 1
        if data.first_pfn > last || last > memory.maxMappedPfn { return -EINVAL }
        // memtype[] has HVMMEM_ram_rw ... HVMMEM_ioreq_server; HVMMEM_unused is refused.
        guard UInt32(data.mem_type) <= HVMMEM_ioreq_server.rawValue,
              UInt32(data.mem_type) != HVMMEM_unused.rawValue else { return -EINVAL }
        let new: SimulatedGuestMemory.PageType
        switch UInt32(data.mem_type) {
        case HVMMEM_ram_rw.rawValue: new = .ramRW
        case HVMMEM_ram_ro.rawValue: new = .ramRO
        case HVMMEM_mmio_dm.rawValue: new = .mmioDM
        default:
            guard configuration.hap else { return -EOPNOTSUPP }
            guard memTypeServer != nil else { return -EINVAL }
            new = .ioreqServer
        }
        // Frame by frame in Xen: the frames before the first refused one keep
        // their new type and the call fails with EINVAL.
        for run in memory.runs(in: data.first_pfn...last) {
            guard Self.allowTypeChange(from: run.type, to: new) else {
                if run.start > data.first_pfn { memory.set(data.first_pfn...(run.start - 1), to: new) }
                return -EINVAL
            }
        }
        memory.set(data.first_pfn...last, to: new)
        return 0
    }

    /// allow_p2m_type_change() in x86 dm.c.
    static func allowTypeChange(from old: SimulatedGuestMemory.PageType, to new: SimulatedGuestMemory.PageType) -> Bool {
        if new == .ioreqServer { return old == .ramRW }
        if old == .ioreqServer { return new == .ramRW }
        return old.isRAM || (old.isHole && new == .mmioDM)
    }

    /// XENMEM_add_to_physmap with XENMAPSPACE_gmfn_range, one frame at a
    /// time: each source frame must be RAM; it moves to the destination and
    /// leaves a hole behind. Earlier frames stay moved when one fails.
    private func relocateMemory(size: UInt32, source: UInt64, destination: UInt64) -> Int32 {
        let shift = Int(configuration.paddrBits) - 12  // frame number bits
        let gfnLimit: UInt64 = shift >= 64 ? .max : shift <= 0 ? 0 : (UInt64(1) << UInt64(shift)) - 1
        for i in 0..<UInt64(size) {
            let (src, o1) = source.addingReportingOverflow(i)
            let (dst, o2) = destination.addingReportingOverflow(i)
            if o1 || o2 || dst > gfnLimit { return -EINVAL }
            // Xen needs a RAM source even when it maps the frame onto itself;
            // without this check first, src == dst walked all `size` frames.
            let type = memory.type(of: src)
            guard type.isRAM else { return -EINVAL }
            if src == dst { continue }
            memory.set(dst...dst, to: type)
            memory.set(src...src, to: .invalid)
        }
        return 0
    }

    /// hvm_set_mem_pinned_cacheattr().
    private func pinMemoryCacheAttribute(start: UInt64, end: UInt64, type: UInt32) -> Int32 {
        if end < start || (start | end) >> UInt64(configuration.paddrBits) != 0 { return -EINVAL }
        if type == cxen_dmop_delete_mem_cacheattr() {
            guard let i = pinnedCacheRanges.firstIndex(where: { $0.start == start && $0.end == end }) else {
                return -ENOENT
            }
            pinnedCacheRanges.remove(at: i)
            return 0
        }
        let valid = [XEN_DMOP_MEM_CACHEATTR_UCM, XEN_DMOP_MEM_CACHEATTR_UC, XEN_DMOP_MEM_CACHEATTR_WB,
                     XEN_DMOP_MEM_CACHEATTR_WC, XEN_DMOP_MEM_CACHEATTR_WP, XEN_DMOP_MEM_CACHEATTR_WT]
        guard valid.contains(Int32(bitPattern: type)) else { return -EINVAL }
        for i in pinnedCacheRanges.indices {
            let range = pinnedCacheRanges[i]
            if range.start == start && range.end == end {
                pinnedCacheRanges[i].type = type
                return 0
            }
            if range.start <= end && start <= range.end { return -EBUSY }
        }
        if pinnedCacheRanges.count >= Limits.pinnedCacheRanges { return -ENOSPC }
        pinnedCacheRanges.insert(PinnedCacheRange(start: start, end: end, type: type), at: 0)
        return 0
    }

    // MARK: interrupts (x86 dm.c, hvm/irq.c, hvm/vmsi.c)

    private func setPCIIntxLevel(_ data: xen_dm_op_set_pci_intx_level) -> Int32 {
        if data.domain != 0 || data.bus != 0 || data.device > 0x1f || data.intx > 3 { return -EINVAL }
        let bit = UInt128(1) << (Int(data.device) * 4 + Int(data.intx))
        switch data.level {
        case 0: pciIntx &= ~bit
        case 1: pciIntx |= bit
        default: return -EINVAL
        }
        return 0
    }

    private func setISAIRQLevel(_ data: xen_dm_op_set_isa_irq_level) -> Int32 {
        if data.isa_irq > 15 { return -EINVAL }
        let bit = UInt16(1) << UInt16(data.isa_irq)
        switch data.level {
        case 0: isaIRQ &= ~bit
        case 1: isaIRQ |= bit
        default: return -EINVAL
        }
        return 0
    }

    private func injectEvent(_ data: xen_dm_op_inject_event) -> Int32 {
        if data.pad0 != 0 || data.pad1 != 0 { return -EINVAL }
        if data.vcpuid >= configuration.vcpus { return -EINVAL }
        let vcpu = Int(data.vcpuid)
        // One event per vcpu until it next enters the guest. Xen does not
        // check the type here.
        if pendingEvents[vcpu] != nil { return -EBUSY }
        pendingEvents[vcpu] = PendingEvent(vector: data.vector, type: data.type, instructionLength: data.insn_len,
                                           errorCode: data.error_code, cr2: data.cr2)
        return 0
    }

    /// hvm_inject_msi(): vector 0 means "route through a pirq"; otherwise the
    /// vLAPIC takes fixed and lowest-priority deliveries.
    private func injectMSI(address: UInt64, data: UInt32) -> Int32 {
        let vector = data & 0xff
        if vector == 0 {
            let destination = UInt32(truncatingIfNeeded: address >> 12) & 0xff
            let pirq = Int32(bitPattern: UInt32(truncatingIfNeeded: address >> 32) & 0xffff_ff00 | destination)
            guard pirq > 0 else { return -ERANGE }
            // map_domain_emuirq_pirq() refuses pirqs beyond d->nr_pirqs.
            guard UInt32(pirq) < configuration.nrPirqs else { return -EINVAL }
        } else {
            // Delivery mode, data bits 10:8: 0 fixed, 1 lowest priority.
            // Other modes are refused (model choice: vmsi_deliver() logs
            // "Unsupported MSI delivery mode"; its exact rc is unverified).
            let deliveryMode = (data >> 8) & 7
            guard deliveryMode <= 1 else { return -EINVAL }
        }
        msis += 1
        latestMSI = MSI(address: address, data: data)
        return 0
    }
}
