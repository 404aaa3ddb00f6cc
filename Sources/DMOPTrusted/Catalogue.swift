// SPDX-License-Identifier: MIT
import CXen

/// What a field of a DMOP payload is for, as far as the broker cares.
public enum FieldRole: Sendable, Equatable {
    /// Read by Xen. Policy conditions may name it.
    case input
    /// Written by Xen; its input value is ignored.
    case output
    /// Padding or state that must be zero on entry (pad, opaque).
    case mustBeZero
}

/// One field of a payload, located in buffer 0 (offsets include the 8-byte
/// `xen_dm_op` header), with its width taken from the C type.
public struct FieldSpec: Sendable, Equatable {
    public let name: String
    /// Byte offset in buffer 0.
    public let offset: Int
    /// Width in bytes (1, 2, 4 or 8; pad arrays may be 3).
    public let width: Int
    public let role: FieldRole

    /// Little-endian value of the field; nil when the buffer is too short.
    /// Fields wider than 8 bytes do not exist in dm_op.h.
    @inline(__always)
    public func value(in buffer: UnsafeRawBufferPointer) -> UInt64? {
        guard offset + width <= buffer.count else { return nil }
        var result: UInt64 = 0
        for i in 0..<min(width, 8) {
            result |= UInt64(buffer[offset + i]) << (8 * UInt64(i))
        }
        return result
    }
}

/// The extra buffer (buffer 1) an op takes, and how its size is bounded.
public enum ExtraBuffer: Sendable, Equatable {
    /// The op takes buffer 0 only.
    case none
    /// track_dirty_vram: buffer 1 is the dirty bitmap Xen writes, at least
    /// ceil(nr / 8) bytes, where nr is the named payload field.
    case dirtyBitmap(pageCountField: String)
    /// modified_memory: buffer 1 is exactly count * 16 bytes of
    /// `xen_dm_op_modified_memory_extent`, whose pad must be zero.
    case extents(countField: String, extentSize: Int, padOffset: Int, padWidth: Int)

    /// The payload field that sizes buffer 1.
    var countFieldName: String? {
        switch self {
        case .none: nil
        case .dirtyBitmap(let name): name
        case .extents(let name, _, _, _): name
        }
    }
}

/// How an op changes which ioreq servers exist, read from buffer 0.
public enum IoreqServerEffect: Sendable, Equatable {
    case none
    /// The id Xen wrote back is a new server.
    case creates(FieldSpec)
    /// The named server is gone.
    case destroys(FieldSpec)
}

/// One `XEN_DMOP_*` op of <xen/hvm/dm_op.h>.
///
/// A final class, not a struct: the request path copies an op several times
/// (catalogue lookup, policy rule, decision), and a struct of this many
/// references was copied through generic value witnesses, ~300 instructions
/// a copy (callgrind, dmop-bench); a class reference costs one retain.
/// Immutable, so value semantics are unchanged.
public final class OpSpec: Sendable, Equatable {
    /// The name after `XEN_DMOP_`, as policies spell it.
    public let name: String
    public let number: UInt32
    /// sizeof the op's payload struct.
    public let payloadSize: Int
    /// Xen copies the payload back into buffer 0 on success.
    public let writesBackPayload: Bool
    public let extraBuffer: ExtraBuffer
    public let fields: [FieldSpec]
    /// The field that sizes buffer 1 (nr, nr_extents); nil for one-buffer ops.
    public let extraBufferCountField: FieldSpec?
    /// The input field naming an existing ioreq server (`id`), if any.
    public let ioreqServerField: FieldSpec?
    /// Must-be-zero fields, precomputed for the hot path.
    public let mustBeZeroFields: [FieldSpec]
    /// What a successful call does to the set of ioreq servers a session owns.
    public let ioreqServerEffect: IoreqServerEffect

    public init(name: String, number: UInt32, payloadSize: Int, writesBackPayload: Bool,
                extraBuffer: ExtraBuffer, fields: [FieldSpec]) {
        self.name = name
        self.number = number
        self.payloadSize = payloadSize
        self.writesBackPayload = writesBackPayload
        self.extraBuffer = extraBuffer
        self.fields = fields
        extraBufferCountField = extraBuffer.countFieldName.flatMap { name in fields.first { $0.name == name } }
        ioreqServerField = fields.first { $0.name == "id" && $0.role == .input }
        mustBeZeroFields = fields.filter { $0.role == .mustBeZero }
        if let created = fields.first(where: { $0.name == "id" && $0.role == .output }) {
            ioreqServerEffect = .creates(created)
        } else if name == "destroy_ioreq_server", let destroyed = ioreqServerField {
            ioreqServerEffect = .destroys(destroyed)
        } else {
            ioreqServerEffect = .none
        }
    }

    /// Exact number of buffers the broker accepts for the op. Xen is laxer
    /// for some (modified_memory with one buffer before XSA-506); the broker
    /// is not.
    public var bufferCount: Int { extraBuffer == .none ? 1 : 2 }

    /// Smallest acceptable buffer 0: the header plus the payload.
    public var minimumHeaderBufferSize: Int { DMOPABI.payloadOffset + payloadSize }

    public func field(named name: String) -> FieldSpec? {
        fields.first { $0.name == name }
    }

    /// Equal when every stored input is (the rest is derived from them).
    public static func == (lhs: OpSpec, rhs: OpSpec) -> Bool {
        lhs === rhs
            || (lhs.name == rhs.name && lhs.number == rhs.number && lhs.payloadSize == rhs.payloadSize
                && lhs.writesBackPayload == rhs.writesBackPayload && lhs.extraBuffer == rhs.extraBuffer
                && lhs.fields == rhs.fields)
    }
}

/// Sizes and offsets of the DMOP and privcmd ABI, from the imported C types.
public enum DMOPABI {
    /// sizeof(struct xen_dm_op): what libxendevicemodel puts in buffer 0.
    public static let opStructSize = MemoryLayout<xen_dm_op>.size
    /// offsetof(struct xen_dm_op, u).
    public static let payloadOffset = fieldOffset(\xen_dm_op.u)
    /// offsetof(struct xen_dm_op, op) and its width.
    public static let opOffset = fieldOffset(\xen_dm_op.op)
    public static let opWidth = MemoryLayout<UInt32>.size
    /// The header's pad, which Xen requires to be zero.
    public static let headerPad = FieldSpec(
        name: "pad", offset: fieldOffset(\xen_dm_op.pad),
        width: MemoryLayout.size(ofValue: xen_dm_op().pad), role: .mustBeZero)
    /// Linux privcmd's defaults (module parameters dm_op_max_nr_bufs and
    /// dm_op_buf_max_size in drivers/xen/privcmd.c); not in any header.
    public static let maxBuffers = 16
    public static let maxBufferSize = 4096
    /// Domids at or above this are reserved (DOMID_SELF, DOMID_INVALID, ...).
    public static let firstReservedDomid: UInt16 = cxen_domid_first_reserved()
    /// The Xen interface version of the headers the broker is built with
    /// (logged only: Xen 4.19 raised it without changing the DMOP ABI).
    public static let xenInterfaceVersion: UInt32 = cxen_latest_interface_version()
    /// The DMOP ABI identifier HELLO carries (CXen/dmop_abi.h): equal
    /// exactly when the headers lay out every op, field and constant alike.
    public static let identifier: UInt32 = cxen_dmop_abi_identifier()

    static func fieldOffset<T>(_ keyPath: PartialKeyPath<T>) -> Int {
        guard let offset = MemoryLayout<T>.offset(of: keyPath) else {
            preconditionFailure("no stored offset for \(keyPath)")
        }
        return offset
    }
}

/// Every op of Xen 4.17's dm_op.h, built from the imported C structs.
public enum Catalogue {
    public static let ops: [OpSpec] = buildOps()

    /// Ops indexed by number for the hot path; nil where no op exists.
    private static let byNumber: [OpSpec?] = {
        let highest = ops.map { Int($0.number) }.max() ?? 0
        var table = [OpSpec?](repeating: nil, count: highest + 1)
        for op in ops { table[Int(op.number)] = op }
        return table
    }()

    @inline(__always)
    public static func op(number: UInt32) -> OpSpec? {
        guard number < UInt32(byNumber.count) else { return nil }
        return byNumber[Int(number)]
    }

    public static func op(named name: String) -> OpSpec? {
        ops.first { $0.name == name }
    }

    private static func buildOps() -> [OpSpec] {
        var ops: [OpSpec] = []

        func add<T>(_ name: String, _ number: Int32, _ type: T.Type, writesBack: Bool = false,
                    extra: ExtraBuffer = .none, _ fields: [(String, PartialKeyPath<T>, Int, FieldRole)]) {
            let specs = fields.map { name, keyPath, width, role in
                FieldSpec(name: name, offset: DMOPABI.payloadOffset + DMOPABI.fieldOffset(keyPath),
                          width: width, role: role)
            }
            ops.append(OpSpec(name: name, number: UInt32(number), payloadSize: MemoryLayout<T>.size,
                              writesBackPayload: writesBack, extraBuffer: extra, fields: specs))
        }
        func size<V>(_: V.Type) -> Int { MemoryLayout<V>.size }

        typealias Create = xen_dm_op_create_ioreq_server
        add("create_ioreq_server", XEN_DMOP_create_ioreq_server, Create.self, writesBack: true, [
            ("handle_bufioreq", \Create.handle_bufioreq, size(UInt8.self), .input),
            ("pad", \Create.pad, MemoryLayout.size(ofValue: Create().pad), .mustBeZero),
            ("id", \Create.id, size(ioservid_t.self), .output),
        ])
        typealias Info = xen_dm_op_get_ioreq_server_info
        add("get_ioreq_server_info", XEN_DMOP_get_ioreq_server_info, Info.self, writesBack: true, [
            ("id", \Info.id, size(ioservid_t.self), .input),
            ("flags", \Info.flags, size(UInt16.self), .input),
            ("bufioreq_port", \Info.bufioreq_port, size(evtchn_port_t.self), .output),
            ("ioreq_gfn", \Info.ioreq_gfn, size(UInt64.self), .output),
            ("bufioreq_gfn", \Info.bufioreq_gfn, size(UInt64.self), .output),
        ])
        typealias Range = xen_dm_op_ioreq_server_range
        let rangeFields: [(String, PartialKeyPath<Range>, Int, FieldRole)] = [
            ("id", \Range.id, size(ioservid_t.self), .input),
            ("pad", \Range.pad, size(UInt16.self), .mustBeZero),
            ("type", \Range.type, size(UInt32.self), .input),
            ("start", \Range.start, size(UInt64.self), .input),
            ("end", \Range.end, size(UInt64.self), .input),
        ]
        add("map_io_range_to_ioreq_server", XEN_DMOP_map_io_range_to_ioreq_server, Range.self, rangeFields)
        add("unmap_io_range_from_ioreq_server", XEN_DMOP_unmap_io_range_from_ioreq_server, Range.self, rangeFields)
        typealias State = xen_dm_op_set_ioreq_server_state
        add("set_ioreq_server_state", XEN_DMOP_set_ioreq_server_state, State.self, [
            ("id", \State.id, size(ioservid_t.self), .input),
            ("enabled", \State.enabled, size(UInt8.self), .input),
            ("pad", \State.pad, size(UInt8.self), .mustBeZero),
        ])
        typealias Destroy = xen_dm_op_destroy_ioreq_server
        add("destroy_ioreq_server", XEN_DMOP_destroy_ioreq_server, Destroy.self, [
            ("id", \Destroy.id, size(ioservid_t.self), .input),
            ("pad", \Destroy.pad, size(UInt16.self), .mustBeZero),
        ])
        typealias Vram = xen_dm_op_track_dirty_vram
        add("track_dirty_vram", XEN_DMOP_track_dirty_vram, Vram.self,
            extra: .dirtyBitmap(pageCountField: "nr"), [
            ("nr", \Vram.nr, size(UInt32.self), .input),
            ("pad", \Vram.pad, size(UInt32.self), .mustBeZero),
            ("first_pfn", \Vram.first_pfn, size(UInt64.self), .input),
        ])
        typealias Intx = xen_dm_op_set_pci_intx_level
        add("set_pci_intx_level", XEN_DMOP_set_pci_intx_level, Intx.self, [
            ("domain", \Intx.domain, size(UInt16.self), .input),
            ("bus", \Intx.bus, size(UInt8.self), .input),
            ("device", \Intx.device, size(UInt8.self), .input),
            ("intx", \Intx.intx, size(UInt8.self), .input),
            ("level", \Intx.level, size(UInt8.self), .input),
        ])
        typealias Isa = xen_dm_op_set_isa_irq_level
        add("set_isa_irq_level", XEN_DMOP_set_isa_irq_level, Isa.self, [
            ("isa_irq", \Isa.isa_irq, size(UInt8.self), .input),
            ("level", \Isa.level, size(UInt8.self), .input),
        ])
        typealias Link = xen_dm_op_set_pci_link_route
        add("set_pci_link_route", XEN_DMOP_set_pci_link_route, Link.self, [
            ("link", \Link.link, size(UInt8.self), .input),
            ("isa_irq", \Link.isa_irq, size(UInt8.self), .input),
        ])
        typealias Modified = xen_dm_op_modified_memory
        typealias Extent = xen_dm_op_modified_memory_extent
        add("modified_memory", XEN_DMOP_modified_memory, Modified.self,
            extra: .extents(countField: "nr_extents", extentSize: MemoryLayout<Extent>.size,
                            padOffset: DMOPABI.fieldOffset(\Extent.pad), padWidth: size(UInt32.self)), [
            ("nr_extents", \Modified.nr_extents, size(UInt32.self), .input),
            ("opaque", \Modified.opaque, size(UInt32.self), .mustBeZero),
        ])
        typealias MemType = xen_dm_op_set_mem_type
        add("set_mem_type", XEN_DMOP_set_mem_type, MemType.self, writesBack: true, [
            ("nr", \MemType.nr, size(UInt32.self), .input),
            ("mem_type", \MemType.mem_type, size(UInt16.self), .input),
            ("pad", \MemType.pad, size(UInt16.self), .mustBeZero),
            ("first_pfn", \MemType.first_pfn, size(UInt64.self), .input),
        ])
        typealias Event = xen_dm_op_inject_event
        add("inject_event", XEN_DMOP_inject_event, Event.self, [
            ("vcpuid", \Event.vcpuid, size(UInt32.self), .input),
            ("vector", \Event.vector, size(UInt8.self), .input),
            ("type", \Event.type, size(UInt8.self), .input),
            ("insn_len", \Event.insn_len, size(UInt8.self), .input),
            ("pad0", \Event.pad0, size(UInt8.self), .mustBeZero),
            ("error_code", \Event.error_code, size(UInt32.self), .input),
            ("pad1", \Event.pad1, size(UInt32.self), .mustBeZero),
            ("cr2", \Event.cr2, size(UInt64.self), .input),
        ])
        typealias Msi = xen_dm_op_inject_msi
        add("inject_msi", XEN_DMOP_inject_msi, Msi.self, [
            ("data", \Msi.data, size(UInt32.self), .input),
            ("pad", \Msi.pad, size(UInt32.self), .mustBeZero),
            ("addr", \Msi.addr, size(UInt64.self), .input),
        ])
        typealias MapMem = xen_dm_op_map_mem_type_to_ioreq_server
        add("map_mem_type_to_ioreq_server", XEN_DMOP_map_mem_type_to_ioreq_server, MapMem.self,
            writesBack: true, [
            ("id", \MapMem.id, size(ioservid_t.self), .input),
            ("type", \MapMem.type, size(UInt16.self), .input),
            ("flags", \MapMem.flags, size(UInt32.self), .input),
            ("opaque", \MapMem.opaque, size(UInt64.self), .mustBeZero),
        ])
        typealias Shutdown = xen_dm_op_remote_shutdown
        add("remote_shutdown", XEN_DMOP_remote_shutdown, Shutdown.self, [
            ("reason", \Shutdown.reason, size(UInt32.self), .input),
        ])
        typealias Relocate = xen_dm_op_relocate_memory
        add("relocate_memory", XEN_DMOP_relocate_memory, Relocate.self, [
            ("size", \Relocate.size, size(UInt32.self), .input),
            ("pad", \Relocate.pad, size(UInt32.self), .mustBeZero),
            ("src_gfn", \Relocate.src_gfn, size(UInt64.self), .input),
            ("dst_gfn", \Relocate.dst_gfn, size(UInt64.self), .input),
        ])
        typealias Pin = xen_dm_op_pin_memory_cacheattr
        add("pin_memory_cacheattr", XEN_DMOP_pin_memory_cacheattr, Pin.self, [
            ("start", \Pin.start, size(UInt64.self), .input),
            ("end", \Pin.end, size(UInt64.self), .input),
            ("type", \Pin.type, size(UInt32.self), .input),
            ("pad", \Pin.pad, size(UInt32.self), .mustBeZero),
        ])
        typealias Irq = xen_dm_op_set_irq_level
        add("set_irq_level", XEN_DMOP_set_irq_level, Irq.self, [
            ("irq", \Irq.irq, size(UInt32.self), .input),
            ("level", \Irq.level, size(UInt8.self), .input),
            ("pad", \Irq.pad, MemoryLayout.size(ofValue: Irq().pad), .mustBeZero),
        ])
        typealias Vcpus = xen_dm_op_nr_vcpus
        add("nr_vcpus", XEN_DMOP_nr_vcpus, Vcpus.self, writesBack: true, [
            ("vcpus", \Vcpus.vcpus, size(UInt32.self), .output),
        ])
        return ops
    }
}
