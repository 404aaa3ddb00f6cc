// SPDX-License-Identifier: MIT
import DMOPCore
import Testing

@Suite("DMOP catalogue")
struct CatalogueTests {
    @Test("all 20 ops of Xen 4.17, numbered 1...20")
    func allOps() {
        #expect(Catalogue.ops.count == 20)
        #expect(Catalogue.ops.map(\.number).sorted() == Array(1...20))
        #expect(Set(Catalogue.ops.map(\.name)).count == 20)
    }

    /// A second, independent source: gcc compiles the real header and prints
    /// every op's number and payload sizeof; the catalogue must agree.
    @Test("numbers and sizes agree with gcc's view of <xen/hvm/dm_op.h>")
    func agreesWithCompiler() throws {
        let pairs: [(String, String)] = [
            ("create_ioreq_server", "create_ioreq_server"), ("get_ioreq_server_info", "get_ioreq_server_info"),
            ("map_io_range_to_ioreq_server", "ioreq_server_range"),
            ("unmap_io_range_from_ioreq_server", "ioreq_server_range"),
            ("set_ioreq_server_state", "set_ioreq_server_state"), ("destroy_ioreq_server", "destroy_ioreq_server"),
            ("track_dirty_vram", "track_dirty_vram"), ("set_pci_intx_level", "set_pci_intx_level"),
            ("set_isa_irq_level", "set_isa_irq_level"), ("set_pci_link_route", "set_pci_link_route"),
            ("modified_memory", "modified_memory"), ("set_mem_type", "set_mem_type"),
            ("inject_event", "inject_event"), ("inject_msi", "inject_msi"),
            ("map_mem_type_to_ioreq_server", "map_mem_type_to_ioreq_server"),
            ("remote_shutdown", "remote_shutdown"), ("relocate_memory", "relocate_memory"),
            ("pin_memory_cacheattr", "pin_memory_cacheattr"), ("set_irq_level", "set_irq_level"),
            ("nr_vcpus", "nr_vcpus"),
        ]
        var source = """
        #include <stdint.h>
        #include <stdio.h>
        #include <stddef.h>
        #include <xen/xen.h>
        #include <xen/hvm/dm_op.h>
        int main(void) {
            printf("header %zu %zu %zu\\n", sizeof(struct xen_dm_op), offsetof(struct xen_dm_op, u), offsetof(struct xen_dm_op, pad));
        """
        for (op, type) in pairs {
            source += "    printf(\"op \(op) %d %zu\\n\", XEN_DMOP_\(op), sizeof(struct xen_dm_op_\(type)));\n"
        }
        source += "    printf(\"extent %zu %zu\\n\", sizeof(struct xen_dm_op_modified_memory_extent), offsetof(struct xen_dm_op_modified_memory_extent, pad));\n"
        source += "    return 0;\n}\n"
        let output = try TestSupport.compileAndRun(source)
        var seen = 0
        for line in output.split(separator: "\n") {
            let words = line.split(separator: " ").map(String.init)
            switch words.first {
            case "header":
                #expect(Int(words[1]) == DMOPABI.opStructSize)
                #expect(Int(words[2]) == DMOPABI.payloadOffset)
                #expect(Int(words[3]) == DMOPABI.headerPad.offset)
            case "op":
                let op = TestSupport.op(words[1])
                #expect(UInt32(words[2]) == op.number, "number of \(words[1])")
                #expect(Int(words[3]) == op.payloadSize, "size of \(words[1])")
                seen += 1
            case "extent":
                guard case .extents(_, let size, let pad) = TestSupport.op("modified_memory").extraBuffer else {
                    Issue.record("modified_memory has no extent buffer")
                    continue
                }
                #expect(Int(words[1]) == size)
                #expect(Int(words[2]) == pad.offset)
            default:
                Issue.record("unexpected line \(line)")
            }
        }
        #expect(seen == 20)
    }

    /// The payload sizes of xen/include/public/hvm/dm_op.h's structures, as
    /// counted by hand from the header (a second reading beside sizeof).
    @Test("payload sizes match the reference table")
    func referenceSizes() {
        let expected: [String: Int] = [
            "create_ioreq_server": 6, "get_ioreq_server_info": 24, "map_io_range_to_ioreq_server": 24,
            "unmap_io_range_from_ioreq_server": 24, "set_ioreq_server_state": 4, "destroy_ioreq_server": 4,
            "track_dirty_vram": 16, "set_pci_intx_level": 6, "set_isa_irq_level": 2, "set_pci_link_route": 2,
            "modified_memory": 8, "set_mem_type": 16, "inject_event": 24, "inject_msi": 16,
            "map_mem_type_to_ioreq_server": 16, "remote_shutdown": 4, "relocate_memory": 24,
            "pin_memory_cacheattr": 24, "set_irq_level": 8, "nr_vcpus": 4,
        ]
        for op in Catalogue.ops {
            #expect(op.payloadSize == expected[op.name], "\(op.name)")
        }
        #expect(DMOPABI.opStructSize == 32)
        #expect(DMOPABI.payloadOffset == 8)
    }

    @Test("buffer shapes: exactly 2 for track_dirty_vram and modified_memory, 1 otherwise")
    func bufferShapes() {
        for op in Catalogue.ops {
            let expected = ["track_dirty_vram", "modified_memory"].contains(op.name) ? 2 : 1
            #expect(op.bufferCount == expected, "\(op.name)")
        }
    }

    @Test("write-back ops are those Xen copies back on success")
    func writeBack() {
        let writesBack = Set(Catalogue.ops.filter(\.writesBackPayload).map(\.name))
        #expect(writesBack == ["create_ioreq_server", "get_ioreq_server_info", "set_mem_type",
                               "map_mem_type_to_ioreq_server", "nr_vcpus"])
    }

    @Test("must-be-zero fields: every pad and opaque")
    func mustBeZero() {
        let zero = Catalogue.ops.flatMap { op in op.mustBeZeroFields.map { "\(op.name).\($0.name)" } }
        #expect(Set(zero) == [
            "create_ioreq_server.pad", "map_io_range_to_ioreq_server.pad", "unmap_io_range_from_ioreq_server.pad",
            "set_ioreq_server_state.pad", "destroy_ioreq_server.pad", "track_dirty_vram.pad",
            "modified_memory.opaque", "set_mem_type.pad", "inject_event.pad0", "inject_event.pad1",
            "inject_msi.pad", "map_mem_type_to_ioreq_server.opaque", "relocate_memory.pad",
            "pin_memory_cacheattr.pad", "set_irq_level.pad",
        ])
        // Field offsets stay inside the payload.
        for op in Catalogue.ops {
            for field in op.fields {
                #expect(field.offset >= 8 && field.offset + field.width <= 8 + op.payloadSize, "\(op.name).\(field.name)")
            }
        }
    }

    @Test("encodeHeader builds what libxendevicemodel builds")
    func encodeHeader() {
        let bytes = TestSupport.op("set_isa_irq_level").encodeHeader(["isa_irq": 4, "level": 1])
        #expect(bytes.count == 32)
        #expect(Array(bytes[0..<10]) == [9, 0, 0, 0, 0, 0, 0, 0, 4, 1])
        #expect(bytes[10...].allSatisfy { $0 == 0 })
        let msi = TestSupport.op("inject_msi").encodeHeader(["addr": 0xfee0_1000, "data": 0x4041])
        #expect(TestSupport.op("inject_msi").read("addr", from: msi) == 0xfee0_1000)
        #expect(Array(msi[8..<12]) == [0x41, 0x40, 0, 0])
    }
}

@Suite("DMOP op table: printed, held by a golden file, checked against the C compiler")
struct OpTableTests {
    static let goldenPath = TestSupport.packageRoot.appendingPathComponent("Tests/golden/catalogue.txt").path

    @Test("dmop-broker catalogue prints the table the golden file holds")
    func golden() throws {
        let golden = try String(contentsOfFile: Self.goldenPath, encoding: .utf8)
        #expect(CatalogueTable.render() == golden)
        let (status, output) = try runBroker(["catalogue"])
        #expect(status == 0)
        #expect(output == golden, "regenerate with: dmop-broker catalogue > Tests/golden/catalogue.txt")
    }

    /// Every field's offset and width, every op's number, struct and size,
    /// and buffer 1's extent layout, from gcc's view of the headers.
    @Test("every field's offset and width agree with the C compiler")
    func fieldsAgreeWithCompiler() throws {
        var source = """
        #include <stdint.h>
        #include <stdio.h>
        #include <stddef.h>
        #include <xen/xen.h>
        #include <xen/hvm/dm_op.h>
        #define FIELD(op, type, name) printf("field %s %s %zu %zu\\n", op, #name, \\
            offsetof(struct xen_dm_op, u) + offsetof(struct type, name), sizeof(((struct type *)0)->name))
        int main(void) {

        """
        var expected: [String] = []
        for op in Catalogue.ops {
            source += "    printf(\"op \(op.name) %d %zu\\n\", XEN_DMOP_\(op.name), sizeof(struct \(op.cStruct)));\n"
            expected.append("op \(op.name) \(op.number) \(op.payloadSize)")
            for field in op.fields {
                source += "    FIELD(\"\(op.name)\", \(op.cStruct), \(field.name));\n"
                expected.append("field \(op.name) \(field.name) \(field.offset) \(field.width)")
            }
            if case .extents(_, let size, let pad) = op.extraBuffer {
                source += "    printf(\"extent %zu %zu %zu\\n\", sizeof(struct xen_dm_op_modified_memory_extent), "
                source += "offsetof(struct xen_dm_op_modified_memory_extent, \(pad.name)), "
                source += "sizeof(((struct xen_dm_op_modified_memory_extent *)0)->\(pad.name)));\n"
                expected.append("extent \(size) \(pad.offset) \(pad.width)")
            }
        }
        source += "    return 0;\n}\n"
        let output = try TestSupport.compileAndRun(source)
        #expect(output.split(separator: "\n").map(String.init) == expected)
    }

    @Test("the rows state ioreq-server roles and reply buffers explicitly")
    func roles() {
        func role(_ name: String) -> String {
            switch TestSupport.op(name).ioreqServer {
            case .none: "none"
            case .creates(let f): "creates:\(f.name)"
            case .names(let f): "names:\(f.name)"
            case .destroys(let f): "destroys:\(f.name)"
            }
        }
        #expect(role("create_ioreq_server") == "creates:id")
        #expect(role("destroy_ioreq_server") == "destroys:id")
        for name in ["get_ioreq_server_info", "map_io_range_to_ioreq_server", "unmap_io_range_from_ioreq_server",
                     "set_ioreq_server_state", "map_mem_type_to_ioreq_server"] {
            #expect(role(name) == "names:id", "\(name)")
        }
        #expect(Catalogue.ops.filter { $0.ioreqServer != .none }.count == 7)
        #expect(TestSupport.op("track_dirty_vram").replyBuffers == [1])
        #expect(Catalogue.ops.filter { !$0.replyBuffers.isEmpty }.map(\.name).sorted()
                == ["create_ioreq_server", "get_ioreq_server_info", "map_mem_type_to_ioreq_server", "nr_vcpus",
                    "set_mem_type", "track_dirty_vram"])
    }
}
