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
    @inline(__always)
    public func value(in buffer: UnsafeRawBufferPointer) -> UInt64? {
        ClientBytes(buffer).value(at: offset, width: width)
    }
}

/// The extra buffer (buffer 1) an op takes, and how its size is bounded.
public enum ExtraBuffer: Sendable, Equatable {
    /// The op takes buffer 0 only.
    case none
    /// track_dirty_vram: buffer 1 is the dirty bitmap Xen writes, at least
    /// ceil(pageCount / 8) bytes.
    case dirtyBitmap(pageCount: FieldSpec)
    /// modified_memory: buffer 1 is exactly count * extentSize bytes of
    /// `xen_dm_op_modified_memory_extent`, each extent's pad zero (the pad's
    /// offset is within an extent).
    case extents(count: FieldSpec, extentSize: Int, pad: FieldSpec)

    /// The payload field that sizes buffer 1.
    public var countField: FieldSpec? {
        switch self {
        case .none: nil
        case .dirtyBitmap(let field): field
        case .extents(let field, _, _): field
        }
    }
}

/// Whether and how an op names an ioreq server, by which field of buffer 0.
public enum IoreqServerRole: Sendable, Equatable {
    case none
    /// Xen writes the new server's id into the field.
    case creates(FieldSpec)
    /// The field names an existing server, which must be the session's.
    case names(FieldSpec)
    /// As `names`, and the server is gone after a successful call.
    case destroys(FieldSpec)
}

/// One `XEN_DMOP_*` op of <xen/hvm/dm_op.h>: one row of the op table, every
/// check the decision makes on it stated here.
///
/// A final class, not a struct: the request path copies an op several times
/// (catalogue lookup, policy rule, decision), and a class reference costs one
/// retain. Immutable, so value semantics are unchanged.
public final class OpSpec: Sendable, Equatable {
    /// The name after `XEN_DMOP_`, as policies spell it.
    public let name: String
    public let number: UInt32
    /// The C payload struct (for the table and the compiler cross-check).
    public let cStruct: String
    /// sizeof the op's payload struct.
    public let payloadSize: Int
    public let extraBuffer: ExtraBuffer
    public let fields: [FieldSpec]
    /// The ioreq-server field and what the op does with that server.
    public let ioreqServer: IoreqServerRole
    /// The request buffers a successful REPLY returns (what Xen writes back).
    public let replyBuffers: [Int]
    /// Must-be-zero fields, precomputed for the hot path.
    public let mustBeZeroFields: [FieldSpec]

    /// A row that contradicts itself (a count or id field that is not one
    /// of its input fields, a reply buffer it does not take) stops the
    /// broker at start-up rather than skip a check later.
    init(name: String, number: UInt32, cStruct: String, payloadSize: Int, extraBuffer: ExtraBuffer,
                ioreqServer: IoreqServerRole, replyBuffers: [Int], fields: [FieldSpec]) {
        self.name = name
        self.number = number
        self.cStruct = cStruct
        self.payloadSize = payloadSize
        self.extraBuffer = extraBuffer
        self.fields = fields
        self.ioreqServer = ioreqServer
        self.replyBuffers = replyBuffers
        mustBeZeroFields = fields.filter { $0.role == .mustBeZero }
        for field in fields {
            precondition(field.offset >= DMOPABI.payloadOffset
                         && field.offset + field.width <= DMOPABI.payloadOffset + payloadSize && field.width <= 8,
                         "op table: \(name).\(field.name) lies outside the payload")
        }
        if let count = extraBuffer.countField {
            precondition(fields.contains(count) && count.role == .input, "op table: \(name)'s buffer 1 count is not an input field")
        }
        switch ioreqServer {
        case .none: break
        case .creates(let field):
            precondition(fields.contains(field) && field.role == .output, "op table: \(name) creates into a non-output field")
        case .names(let field), .destroys(let field):
            precondition(fields.contains(field) && field.role == .input, "op table: \(name) names a server by a non-input field")
        }
        precondition(replyBuffers.allSatisfy { $0 >= 0 && $0 < (extraBuffer == .none ? 1 : 2) },
                     "op table: \(name) returns a buffer it does not take")
    }

    /// Exact number of buffers the broker accepts for the op. Xen is laxer
    /// for some (modified_memory with one buffer before XSA-506); the broker
    /// is not.
    public var bufferCount: Int { extraBuffer == .none ? 1 : 2 }

    /// Smallest acceptable buffer 0: the header plus the payload.
    public var minimumHeaderBufferSize: Int { DMOPABI.payloadOffset + payloadSize }

    /// The input field naming an existing ioreq server, if any.
    public var ioreqServerField: FieldSpec? {
        switch ioreqServer {
        case .names(let field), .destroys(let field): field
        case .none, .creates: nil
        }
    }

    /// The table makes the only instance of each op (the initializer is
    /// internal), so the same op is the same instance.
    public static func == (lhs: OpSpec, rhs: OpSpec) -> Bool { lhs === rhs }
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
    /// The highest op number: tables indexed by op number have this plus one entries.
    public static let highestNumber = ops.map { Int($0.number) }.max() ?? 0

    /// Ops indexed by number for the hot path; nil where no op exists.
    private static let byNumber: [OpSpec?] = {
        var table = [OpSpec?](repeating: nil, count: highestNumber + 1)
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

    /// One row an op: its payload struct, then the facts the decision
    /// checks (buffer 1, ioreq-server role, reply buffers), then the fields,
    /// each a key path into the C struct.
    private static func buildOps() -> [OpSpec] {
        var ops: [OpSpec] = []
        func add<T>(_ name: String, _ number: Int32, _ row: Row<T>, extra: ExtraBuffer = .none,
                    ioreqServer: IoreqServerRole = .none, reply: [Int] = [], _ fields: [FieldSpec]) {
            ops.append(OpSpec(name: name, number: UInt32(number), cStruct: _typeName(T.self, qualified: false),
                              payloadSize: MemoryLayout<T>.size, extraBuffer: extra, ioreqServer: ioreqServer,
                              replyBuffers: reply, fields: fields))
        }

        let create = Row<xen_dm_op_create_ioreq_server>(), createdID = create.output("id", \.id)
        add("create_ioreq_server", XEN_DMOP_create_ioreq_server, create, ioreqServer: .creates(createdID), reply: [0],
            [create.input("handle_bufioreq", \.handle_bufioreq), create.zero("pad", \.pad), createdID])
        let info = Row<xen_dm_op_get_ioreq_server_info>(), infoID = info.input("id", \.id)
        add("get_ioreq_server_info", XEN_DMOP_get_ioreq_server_info, info, ioreqServer: .names(infoID), reply: [0],
            [infoID, info.input("flags", \.flags), info.output("bufioreq_port", \.bufioreq_port),
             info.output("ioreq_gfn", \.ioreq_gfn), info.output("bufioreq_gfn", \.bufioreq_gfn)])
        let range = Row<xen_dm_op_ioreq_server_range>(), rangeID = range.input("id", \.id)
        let rangeFields = [rangeID, range.zero("pad", \.pad), range.input("type", \.type),
                           range.input("start", \.start), range.input("end", \.end)]
        add("map_io_range_to_ioreq_server", XEN_DMOP_map_io_range_to_ioreq_server, range,
            ioreqServer: .names(rangeID), rangeFields)
        add("unmap_io_range_from_ioreq_server", XEN_DMOP_unmap_io_range_from_ioreq_server, range,
            ioreqServer: .names(rangeID), rangeFields)
        let state = Row<xen_dm_op_set_ioreq_server_state>(), stateID = state.input("id", \.id)
        add("set_ioreq_server_state", XEN_DMOP_set_ioreq_server_state, state, ioreqServer: .names(stateID),
            [stateID, state.input("enabled", \.enabled), state.zero("pad", \.pad)])
        let destroy = Row<xen_dm_op_destroy_ioreq_server>(), destroyedID = destroy.input("id", \.id)
        add("destroy_ioreq_server", XEN_DMOP_destroy_ioreq_server, destroy, ioreqServer: .destroys(destroyedID),
            [destroyedID, destroy.zero("pad", \.pad)])
        let vram = Row<xen_dm_op_track_dirty_vram>(), pages = vram.input("nr", \.nr)
        add("track_dirty_vram", XEN_DMOP_track_dirty_vram, vram, extra: .dirtyBitmap(pageCount: pages), reply: [1],
            [pages, vram.zero("pad", \.pad), vram.input("first_pfn", \.first_pfn)])
        let intx = Row<xen_dm_op_set_pci_intx_level>()
        add("set_pci_intx_level", XEN_DMOP_set_pci_intx_level, intx,
            [intx.input("domain", \.domain), intx.input("bus", \.bus), intx.input("device", \.device),
             intx.input("intx", \.intx), intx.input("level", \.level)])
        let isa = Row<xen_dm_op_set_isa_irq_level>()
        add("set_isa_irq_level", XEN_DMOP_set_isa_irq_level, isa,
            [isa.input("isa_irq", \.isa_irq), isa.input("level", \.level)])
        let link = Row<xen_dm_op_set_pci_link_route>()
        add("set_pci_link_route", XEN_DMOP_set_pci_link_route, link,
            [link.input("link", \.link), link.input("isa_irq", \.isa_irq)])
        let modified = Row<xen_dm_op_modified_memory>(), extents = modified.input("nr_extents", \.nr_extents)
        let extent = Row<xen_dm_op_modified_memory_extent>(offsetInBuffer: 0)
        add("modified_memory", XEN_DMOP_modified_memory, modified,
            extra: .extents(count: extents, extentSize: MemoryLayout<xen_dm_op_modified_memory_extent>.size,
                            pad: extent.zero("pad", \.pad)),
            [extents, modified.zero("opaque", \.opaque)])
        let memType = Row<xen_dm_op_set_mem_type>()
        add("set_mem_type", XEN_DMOP_set_mem_type, memType, reply: [0],
            [memType.input("nr", \.nr), memType.input("mem_type", \.mem_type), memType.zero("pad", \.pad),
             memType.input("first_pfn", \.first_pfn)])
        let event = Row<xen_dm_op_inject_event>()
        add("inject_event", XEN_DMOP_inject_event, event,
            [event.input("vcpuid", \.vcpuid), event.input("vector", \.vector), event.input("type", \.type),
             event.input("insn_len", \.insn_len), event.zero("pad0", \.pad0), event.input("error_code", \.error_code),
             event.zero("pad1", \.pad1), event.input("cr2", \.cr2)])
        let msi = Row<xen_dm_op_inject_msi>()
        add("inject_msi", XEN_DMOP_inject_msi, msi,
            [msi.input("data", \.data), msi.zero("pad", \.pad), msi.input("addr", \.addr)])
        let mapMem = Row<xen_dm_op_map_mem_type_to_ioreq_server>(), mapMemID = mapMem.input("id", \.id)
        add("map_mem_type_to_ioreq_server", XEN_DMOP_map_mem_type_to_ioreq_server, mapMem,
            ioreqServer: .names(mapMemID), reply: [0],
            [mapMemID, mapMem.input("type", \.type), mapMem.input("flags", \.flags), mapMem.zero("opaque", \.opaque)])
        let shutdown = Row<xen_dm_op_remote_shutdown>()
        add("remote_shutdown", XEN_DMOP_remote_shutdown, shutdown, [shutdown.input("reason", \.reason)])
        let relocate = Row<xen_dm_op_relocate_memory>()
        add("relocate_memory", XEN_DMOP_relocate_memory, relocate,
            [relocate.input("size", \.size), relocate.zero("pad", \.pad), relocate.input("src_gfn", \.src_gfn),
             relocate.input("dst_gfn", \.dst_gfn)])
        let pin = Row<xen_dm_op_pin_memory_cacheattr>()
        add("pin_memory_cacheattr", XEN_DMOP_pin_memory_cacheattr, pin,
            [pin.input("start", \.start), pin.input("end", \.end), pin.input("type", \.type), pin.zero("pad", \.pad)])
        let irq = Row<xen_dm_op_set_irq_level>()
        add("set_irq_level", XEN_DMOP_set_irq_level, irq,
            [irq.input("irq", \.irq), irq.input("level", \.level), irq.zero("pad", \.pad)])
        let vcpus = Row<xen_dm_op_nr_vcpus>()
        add("nr_vcpus", XEN_DMOP_nr_vcpus, vcpus, reply: [0], [vcpus.output("vcpus", \.vcpus)])
        return ops
    }
}

/// Fields of one C payload struct `T`: offset and width both from the C
/// type, through a key path (MemoryLayout), never typed in. `offsetInBuffer`
/// is where the struct starts: after the xen_dm_op header for payloads, 0
/// for the extents of buffer 1.
struct Row<T> {
    var offsetInBuffer = DMOPABI.payloadOffset

    func field<V>(_ name: String, _ keyPath: KeyPath<T, V>, _ role: FieldRole) -> FieldSpec {
        FieldSpec(name: name, offset: offsetInBuffer + DMOPABI.fieldOffset(keyPath), width: MemoryLayout<V>.size,
                  role: role)
    }
    func input<V>(_ name: String, _ keyPath: KeyPath<T, V>) -> FieldSpec { field(name, keyPath, .input) }
    func output<V>(_ name: String, _ keyPath: KeyPath<T, V>) -> FieldSpec { field(name, keyPath, .output) }
    func zero<V>(_ name: String, _ keyPath: KeyPath<T, V>) -> FieldSpec { field(name, keyPath, .mustBeZero) }
}
