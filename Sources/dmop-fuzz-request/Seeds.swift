// SPDX-License-Identifier: MIT
import CXen
import DMOPCore
import Glibc

/// The committed seed corpus (Tests/fuzz-corpus), encoded with the real
/// codec and catalogue: the DMOP sequence QEMU issued for real HVM guests
/// (scripts/xen-qemu-test's guests: boot, stdvga, shutdown), one
/// well-formed call of every op, and the hostile shapes of the hostile-client
/// tests.
/// Regenerate with `dmop-fuzz-request --write-seeds Tests/fuzz-corpus`.
enum Seeds {
    /// Flag bits of the request target's input (see FuzzRequest.swift).
    static let autoHello: UInt8 = 1
    static let allowAll: UInt8 = 2
    static let attachFD: UInt8 = 4
    static let wrongPeer: UInt8 = 8

    struct Builder {
        var datagrams: [[UInt8]] = []
        var nextID: UInt32 = 1

        mutating func hello(_ hello: Hello = Hello()) { datagrams.append(Wire.encodeHello(hello)) }

        mutating func op(_ name: String, _ fields: [String: UInt64] = [:], extra: [UInt8]? = nil,
                         domid: UInt16 = brokerDomid) {
            guard let op = Catalogue.op(named: name) else { preconditionFailure("no op \(name)") }
            var buffers = [op.encodeHeader(fields)]
            if let extra { buffers.append(extra) }
            raw(buffers, domid: domid)
        }

        mutating func raw(_ buffers: [[UInt8]], domid: UInt16 = brokerDomid) {
            datagrams.append(Wire.encodeRequest(domid: domid, requestID: nextID, buffers: buffers))
            nextID &+= 1
        }

        func input(flags: UInt8) -> [UInt8] {
            var out = [flags]
            for datagram in datagrams {
                out.append(UInt8(truncatingIfNeeded: datagram.count))
                out.append(UInt8(truncatingIfNeeded: datagram.count >> 8))
                out += datagram
            }
            return out
        }
    }

    static func requestSeeds() -> [(String, [UInt8])] {
        var seeds: [(String, [UInt8])] = []

        // A seabios guest's boot, as QEMU issued it (trimmed: a few of each).
        var boot = Builder()
        boot.op("create_ioreq_server", ["handle_bufioreq": 2])
        boot.op("get_ioreq_server_info", ["id": 0, "flags": 1])
        boot.op("set_ioreq_server_state", ["id": 0, "enabled": 1])
        for (type, start, end) in [(0, 0xcf8, 0xcff), (0, 0x3f8, 0x3ff), (0, 0x70, 0x71), (0, 0x60, 0x60),
                                   (1, 0xfee0_0000, 0xfeef_ffff), (1, 0xfec0_0000, 0xfec0_0fff), (2, 0x8, 0x8)]
            as [(UInt64, UInt64, UInt64)] {
            boot.op("map_io_range_to_ioreq_server", ["id": 0, "type": type, "start": start, "end": end])
        }
        boot.op("unmap_io_range_from_ioreq_server", ["id": 0, "type": 0, "start": 0xcf8, "end": 0xcff])
        boot.op("set_mem_type", ["nr": 64, "mem_type": 0, "first_pfn": 0xc0])
        for (link, irq) in [(0, 5), (1, 10), (2, 11), (3, 5)] as [(UInt64, UInt64)] {
            boot.op("set_pci_link_route", ["link": link, "isa_irq": irq])
        }
        for irq in [1, 12, 1, 4, 4, 0] as [UInt64] {
            boot.op("set_isa_irq_level", ["isa_irq": irq, "level": irq == 4 ? 1 : 0])
        }
        boot.op("set_ioreq_server_state", ["id": 0, "enabled": 0])
        boot.op("destroy_ioreq_server", ["id": 0])
        seeds.append(("qemu-boot", boot.input(flags: autoHello)))

        // The stdvga variant: VRAM relocation, pinning, a display refresh.
        var vga = Builder()
        vga.hello()
        vga.op("create_ioreq_server", ["handle_bufioreq": 2])
        vga.op("relocate_memory", ["size": 16, "src_gfn": 0x1000, "dst_gfn": 0xf1000])
        vga.op("pin_memory_cacheattr", ["start": 0xf1000, "end": 0xf1fff, "type": 6])
        vga.op("map_io_range_to_ioreq_server", ["id": 0, "type": 1, "start": 0xa0000, "end": 0xbffff])
        vga.op("track_dirty_vram", ["first_pfn": 0xf1000, "nr": 64], extra: [UInt8](repeating: 0, count: 8))
        var oneExtent = xen_dm_op_modified_memory_extent()
        oneExtent.first_pfn = 0x100
        oneExtent.nr = 1
        // SAFETY: the bytes of a plain C struct, copied into the array.
        let extent = withUnsafeBytes(of: oneExtent) { Array($0) }
        vga.op("modified_memory", ["nr_extents": 1], extra: extent)
        vga.op("set_mem_type", ["nr": 1, "mem_type": 1, "first_pfn": 0xc0])
        seeds.append(("qemu-vga", vga.input(flags: 0)))

        // Interrupt traffic and rate limits (remote_shutdown: burst 4).
        var interrupts = Builder()
        interrupts.op("inject_msi", ["addr": 0x3_5000, "data": 0x4041])
        interrupts.op("set_pci_intx_level", ["device": 3, "intx": 0, "level": 1])
        interrupts.op("set_pci_intx_level", ["device": 3, "intx": 0, "level": 0])
        for _ in 0..<6 { interrupts.op("remote_shutdown", ["reason": 1]) }
        seeds.append(("interrupts", interrupts.input(flags: autoHello)))
        seeds.append(("interrupts-allow-all", interrupts.input(flags: autoHello | allowAll)))

        // One well-formed call of every op under the allow-all policy.
        for op in Catalogue.ops {
            var one = Builder()
            if op.ioreqServerField != nil { one.op("create_ioreq_server", ["handle_bufioreq": 1]) }
            switch op.extraBuffer {
            case .none: one.op(op.name, op.field(named: "id") != nil && op.ioreqServerField != nil ? ["id": 0] : [:])
            case .dirtyBitmap: one.op(op.name, ["nr": 16, "first_pfn": 0x100], extra: [0, 0])
            case .extents: one.op(op.name, ["nr_extents": 1], extra: extent)
            }
            seeds.append(("op-\(op.name)", one.input(flags: autoHello | allowAll)))
        }

        // What a compromised QEMU tries (each is refused; the session goes on).
        var hostile = Builder()
        hostile.hello()
        hostile.op("set_isa_irq_level", ["isa_irq": 1, "level": 1], domid: 6)
        hostile.op("set_isa_irq_level", ["isa_irq": 1, "level": 1], domid: 0)
        hostile.op("set_isa_irq_level", ["isa_irq": 1, "level": 1], domid: 0x7FF0)
        hostile.op("set_isa_irq_level", ["isa_irq": 1, "level": 1], domid: 0xFFFF)
        hostile.op("nr_vcpus")
        hostile.op("inject_event", ["vcpuid": 0, "vector": 14, "type": 3])
        hostile.raw([[0, 0, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 24)])  // op 0
        hostile.raw([[0xff, 0, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 24)])  // op 255
        var padded = TestOps.header("set_isa_irq_level", ["isa_irq": 1])
        padded[DMOPABI.headerPad.offset] = 1
        hostile.raw([padded])
        hostile.op("track_dirty_vram", ["first_pfn": 0x100, "nr": 64], extra: [0])
        hostile.raw([TestOps.header("modified_memory", ["nr_extents": 1])])
        hostile.op("modified_memory", ["nr_extents": 2], extra: extent)
        hostile.op("set_ioreq_server_state", ["id": 3, "enabled": 1])
        hostile.op("set_isa_irq_level", ["isa_irq": 99, "level": 1])
        hostile.raw([])
        hostile.raw(Array(repeating: [1, 2, 3], count: 3))
        hostile.hello()
        seeds.append(("hostile-refusals", hostile.input(flags: 0)))

        // Session-ending shapes, one per seed.
        var early = Builder()
        early.op("set_isa_irq_level", ["isa_irq": 1])
        seeds.append(("request-before-hello", early.input(flags: 0)))
        var skew = Builder()
        skew.hello(Hello(minVersion: 2, maxVersion: 9))
        seeds.append(("version-skew", skew.input(flags: 0)))
        var interface = Builder()
        interface.hello(Hello(dmopABI: 0x0004_0d00))
        seeds.append(("interface-skew", interface.input(flags: 0)))
        var magic = Builder()
        magic.datagrams.append(Array("DMOX".utf8) + [0x10, 0, 5, 0, 1, 0, 0, 0, 0, 0, 0, 0])
        seeds.append(("bad-magic", magic.input(flags: autoHello)))
        var lying = Builder()
        var header = Wire.encodeRequest(domid: brokerDomid, requestID: 9, buffers: [TestOps.header("nr_vcpus")])
        header[12] = 3  // nr_bufs 3, one sent
        lying.datagrams.append(header)
        seeds.append(("sizes-lie", lying.input(flags: autoHello)))
        var many = Builder()
        many.raw(Array(repeating: [], count: 17))
        seeds.append(("seventeen-buffers", many.input(flags: autoHello)))
        var fd = Builder()
        fd.op("set_isa_irq_level", ["isa_irq": 1])
        fd.op("set_isa_irq_level", ["isa_irq": 2])
        seeds.append(("fd-attached", fd.input(flags: autoHello | attachFD)))
        seeds.append(("wrong-peer", fd.input(flags: autoHello | wrongPeer)))
        var empty = Builder()
        empty.op("set_isa_irq_level", ["isa_irq": 1])
        empty.datagrams.append([])
        empty.op("set_isa_irq_level", ["isa_irq": 2])
        seeds.append(("empty-datagram", empty.input(flags: autoHello)))
        return seeds
    }

    /// Single datagrams for the decoder target: every client datagram of the
    /// request seeds, and one of each broker message.
    static func decoderSeeds(_ requestSeeds: [(String, [UInt8])]) -> [(String, [UInt8])] {
        var seeds: [(String, [UInt8])] = []
        var seen = Set<[UInt8]>()
        for (name, input) in requestSeeds {
            var cursor = 1
            var index = 0
            while cursor + 2 <= input.count {
                let length = Int(input[cursor]) | Int(input[cursor + 1]) << 8
                let datagram = Array(input[(cursor + 2)..<min(cursor + 2 + length, input.count)])
                cursor += 2 + length
                if seen.insert(datagram).inserted { seeds.append(("\(name)-\(index)", datagram)) }
                index += 1
            }
        }
        seeds.append(("welcome", Wire.encodeWelcome(Welcome(version: 1, dmopABI: DMOPABI.identifier,
                                                              xenVersion: 4 << 16 | 17, domid: 5, maxBuffers: 16,
                                                              maxBufferSize: 4096, allowedOps: 0x7fffe))))
        seeds.append(("refused", Wire.encodeRefused(.versionUnsupported, text: "client speaks versions 2...9")))
        seeds.append(("protocol-error", Wire.encodeProtocolError(ProtocolViolation(.lengthMismatch, requestID: 7, "sizes"))))
        // SAFETY: maxReplySize bytes, the size encodeReply writes within; freed by
        // the defer; the views below live for the encode.
        let reply = UnsafeMutableRawBufferPointer.allocate(byteCount: Wire.maxReplySize, alignment: 16)
        defer { reply.deallocate() }
        let payload: [UInt8] = TestOps.header("track_dirty_vram", ["nr": 16])
        let bitmap: [UInt8] = [0xff, 0x01]
        let length = payload.withUnsafeBytes { p in
            bitmap.withUnsafeBytes { b in
                Wire.encodeReply(into: reply, domid: 5, requestID: 3, result: 0, refusal: nil, returned: [(0, p), (1, b)])
            }
        }
        seeds.append(("reply-two-buffers", Array(reply[0..<length])))
        let refusal = Wire.encodeReply(into: reply, domid: 6, requestID: 4, result: -EPERM, refusal: .domidMismatch, returned: [])
        seeds.append(("reply-refused", Array(reply[0..<refusal])))
        return seeds
    }

    /// libFuzzer dictionary: the protocol's constants and every op number,
    /// taken from the codec and the catalogue (never typed by hand).
    static func dictionary() -> String {
        func quoted(_ bytes: [UInt8]) -> String {
            "\"" + bytes.map { "\\x" + ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() + "\""
        }
        func le16(_ v: UInt16) -> [UInt8] { [UInt8(truncatingIfNeeded: v), UInt8(truncatingIfNeeded: v >> 8)] }
        func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) } }
        var lines = ["# libFuzzer dictionary for dmop-broker-protocol(7); written by dmop-fuzz-request --write-seeds"]
        lines.append("magic=\(quoted(le32(Wire.magic)))")
        for type in [MessageType.hello, .welcome, .refused, .request, .reply, .protocolError] {
            lines.append("type_\(type)=\(quoted(le16(type.rawValue)))")
        }
        lines.append("domid_broker=\(quoted(le16(brokerDomid)))")
        lines.append("domid_first_reserved=\(quoted(le16(DMOPABI.firstReservedDomid)))")
        lines.append("version=\(quoted(le16(Wire.protocolVersion)))")
        lines.append("dmop_abi=\(quoted(le32(DMOPABI.identifier)))")
        lines.append("size_op_struct=\(quoted(le32(UInt32(DMOPABI.opStructSize))))")
        lines.append("size_max_buffer=\(quoted(le32(UInt32(DMOPABI.maxBufferSize))))")
        lines.append("nr_bufs_max=\(quoted(le16(UInt16(DMOPABI.maxBuffers))))")
        for op in Catalogue.ops {
            lines.append("op_\(op.name)=\(quoted(le32(op.number)))")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Writes DIR/request/*.bin, DIR/decoder/*.bin and DIR/dmop.dict;
    /// returns an exit status.
    static func write(to directory: String) -> Int32 {
        let requests = requestSeeds()
        let dictionary = Array(dictionary().utf8)
        let dictionaryPath = directory + "/dmop.dict"
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            printError("dmop-fuzz-request: mkdir \(directory): \(String(cString: strerror(errno)))")
            return 73
        }
        let dictionaryFD = open(dictionaryPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        // SAFETY: the view lives for the write, which copies the bytes.
        guard dictionaryFD >= 0,
              dictionary.withUnsafeBytes({ Glibc.write(dictionaryFD, $0.baseAddress, $0.count) }) == dictionary.count else {
            printError("dmop-fuzz-request: write \(dictionaryPath): \(String(cString: strerror(errno)))")
            return 73
        }
        close(dictionaryFD)
        for (subdirectory, seeds) in [("request", requests), ("decoder", decoderSeeds(requests))] {
            let path = directory + "/" + subdirectory
            if mkdir(path, 0o755) != 0 && errno != EEXIST {
                printError("dmop-fuzz-request: mkdir \(path): \(String(cString: strerror(errno)))")
                return 73
            }
            for (name, bytes) in seeds {
                let file = path + "/" + name + ".bin"
                let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
                // SAFETY: the view lives for the write, which copies the bytes.
                guard fd >= 0, bytes.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
                    printError("dmop-fuzz-request: write \(file): \(String(cString: strerror(errno)))")
                    return 73
                }
                close(fd)
            }
            print("\(seeds.count) seeds in \(path)")
        }
        return 0
    }
}

enum TestOps {
    static func header(_ name: String, _ fields: [String: UInt64] = [:]) -> [UInt8] {
        guard let op = Catalogue.op(named: name) else { preconditionFailure("no op \(name)") }
        return op.encodeHeader(fields)
    }
}
