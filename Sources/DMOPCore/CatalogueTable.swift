// SPDX-License-Identifier: MIT
/// The op table as `dmop-broker catalogue` prints it: one block an op,
/// every fact the decision checks, offsets in buffer 0 (buffer 1's for
/// extent fields).
public enum CatalogueTable {
    public static func render() -> String {
        var text = "# The DMOP op table of this build (<xen/hvm/dm_op.h>; offsets in buffer 0, the\n"
        text += "# xen_dm_op header is \(DMOPABI.opStructSize) bytes with the payload at \(DMOPABI.payloadOffset)).\n"
        for op in Catalogue.ops.sorted(by: { $0.number < $1.number }) {
            text += "\(op.name) number=\(op.number) struct=\(op.cStruct) payload=\(op.payloadSize)"
            text += " buffers=\(op.bufferCount) reply=\(op.replyBuffers.isEmpty ? "none" : op.replyBuffers.map(String.init).joined(separator: ","))\n"
            switch op.ioreqServer {
            case .none: break
            case .creates(let field): text += "  ioreq_server creates field=\(field.name)\n"
            case .names(let field): text += "  ioreq_server names field=\(field.name) (must be the session's)\n"
            case .destroys(let field): text += "  ioreq_server destroys field=\(field.name) (must be the session's)\n"
            }
            switch op.extraBuffer {
            case .none: break
            case .dirtyBitmap(let count):
                text += "  buffer1 dirty_bitmap count=\(count.name) size>=ceil(\(count.name)/8)\n"
            case .extents(let count, let size, let pad):
                text += "  buffer1 extents count=\(count.name) size=\(count.name)*\(size)\n"
                text += "  buffer1 extent_field \(describe(pad))\n"
            }
            for field in op.fields { text += "  field \(describe(field))\n" }
        }
        return text
    }

    static func describe(_ field: FieldSpec) -> String {
        let role = switch field.role {
        case .input: "input"
        case .output: "output"
        case .mustBeZero: "must_be_zero"
        }
        return "\(field.name) offset=\(field.offset) width=\(field.width) \(role)"
    }
}
