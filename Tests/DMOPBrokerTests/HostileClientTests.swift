// SPDX-License-Identifier: MIT
import CXen
import DMOPCore
import DMOPPosix
import Foundation
import Glibc
import Testing

/// A compromised QEMU on the socket. Each scenario runs against a
/// real `dmop-broker serve` on the simulated hypervisor and names what the
/// broker must answer (REPLY with a refusal, PROTOCOL_ERROR then close, or a
/// plain close), what state it is left in (session goes on; exit status), and
/// what the simulated record shows reached the hypervisor.
@Suite("Hostile clients: malformed datagrams", .serialized)
struct HostileMalformedTests {
    static let isa = Hostile.setIsaIrqLevel

    // MARK: Sizes and framing

    @Test("empty datagram: read as end of file, the session ends, nothing after it is served")
    func emptyMessage() throws {
        let (broker, peer) = try Hostile.session()
        try peer.send([])
        // recvmsg returns 0 for an empty SEQPACKET record as for EOF; either
        // way the session must end here, not carry on.
        try? peer.request(id: 1, [Hostile.isaIrq(1)])
        let outcome = peer.receive()
        if case .message(.protocolError(let error)) = outcome {
            #expect(error.reason == .truncated)
            peer.expectHangUp()
            Hostile.expectExit(broker, 79)
        } else {
            #expect(outcome == .hangUp, "\(outcome)")
            Hostile.expectExit(broker, 0)
        }
        Hostile.expectRecord(broker, ops: [])
    }

    @Test("1 byte: PROTOCOL_ERROR TRUNCATED, exit 79")
    func oneByte() throws {
        let (broker, peer) = try Hostile.session()
        try peer.send([0x44])
        peer.expectProtocolError(.truncated)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [])
        #expect(broker.auditLog.contains("protocol error: reason=TRUNCATED"))
    }

    @Test("a REQUEST shorter than its 16-byte header: TRUNCATED")
    func shortRequestHeader() throws {
        let (broker, peer) = try Hostile.session()
        try peer.send(Array(Wire.encodeRequest(domid: 5, requestID: 1, buffers: [Hostile.isaIrq(1)]).prefix(15)))
        peer.expectProtocolError(.truncated)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [])
    }

    @Test("header claims 3 buffers, sends the sizes of 1: TRUNCATED with the request id")
    func moreBuffersThanSent() throws {
        let (broker, peer) = try Hostile.session()
        var bytes = Wire.encodeRequest(domid: 5, requestID: 41, buffers: [[1, 2, 3, 4]])
        bytes[12] = 3  // nr_bufs 3; 4 bytes of sizes and 4 of data follow: 8 < 12 for three sizes
        try peer.send(bytes)
        peer.expectProtocolError(.truncated, requestID: 41)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [])
    }

    @Test("size[0] claims 32 bytes, 16 are sent: LENGTH_MISMATCH")
    func moreBytesThanSent() throws {
        let (broker, peer) = try Hostile.session()
        let full = Wire.encodeRequest(domid: 5, requestID: 42, buffers: [Hostile.isaIrq(1)])
        try peer.send(Array(full.prefix(full.count - 16)))
        peer.expectProtocolError(.lengthMismatch, requestID: 42)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [])
    }

    @Test("trailing bytes after the buffers: LENGTH_MISMATCH")
    func trailingBytes() throws {
        let (broker, peer) = try Hostile.session()
        try peer.send(Wire.encodeRequest(domid: 5, requestID: 43, buffers: [Hostile.isaIrq(1)]) + [0])
        peer.expectProtocolError(.lengthMismatch, requestID: 43)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [])
    }

    @Test("a size of 4097: BUFFER_TOO_LARGE")
    func sizeOverLimit() throws {
        let (broker, peer) = try Hostile.session()
        try peer.request(id: 44, [[UInt8](repeating: 0, count: DMOPABI.maxBufferSize + 1)])
        peer.expectProtocolError(.bufferTooLarge, requestID: 44)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [])
    }

    @Test("sizes summing past the limit (0xFFFFFFFF twice, to overflow a 32-bit sum): BUFFER_TOO_LARGE")
    func sizesSumPastLimit() throws {
        let (broker, peer) = try Hostile.session()
        var bytes = Wire.encodeRequest(domid: 5, requestID: 45, buffers: [[], []])
        for offset in [16, 20] { for i in 0..<4 { bytes[offset + i] = 0xFF } }
        try peer.send(bytes)
        peer.expectProtocolError(.bufferTooLarge, requestID: 45)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [])
    }

    @Test("16 sizes of 4096 claimed, none sent: LENGTH_MISMATCH, nothing allocated from them")
    func sixteenFullBuffersClaimed() throws {
        let (broker, peer) = try Hostile.session()
        var bytes = Wire.encodeRequest(domid: 5, requestID: 46, buffers: Array(repeating: [], count: 16))
        for index in 0..<16 { bytes[16 + 4 * index + 1] = 0x10 }  // 4096 each
        try peer.send(bytes)
        peer.expectProtocolError(.lengthMismatch, requestID: 46)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [])
    }

    @Test("the largest valid datagram (65616 bytes, 16 x 4096) is read whole and refused with a REPLY")
    func largestValidDatagram() throws {
        let (broker, peer) = try Hostile.session()
        var first = [UInt8](repeating: 0, count: DMOPABI.maxBufferSize)
        first.replaceSubrange(0..<32, with: Hostile.isaIrq(1))
        let buffers = [first] + Array(repeating: [UInt8](repeating: 0xAA, count: DMOPABI.maxBufferSize), count: 15)
        let bytes = Wire.encodeRequest(domid: 5, requestID: 47, buffers: buffers)
        #expect(bytes.count == Wire.maxRequestSize)
        try peer.send(bytes)
        peer.expectRefusal(id: 47, .badBufferCount)
        try peer.expectStillServing()
        peer.close()
        Hostile.expectExit(broker, 0)
        Hostile.expectRecord(broker, ops: [Self.isa])
    }

    @Test("a datagram over 64 KiB (65617 bytes): MSG_TRUNC, OVERSIZED")
    func overSixtyFourKiB() throws {
        let (broker, peer) = try Hostile.session()
        try peer.send([UInt8](repeating: 0x44, count: Wire.maxRequestSize + 1))
        peer.expectProtocolError(.oversized)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [])
    }

    @Test("a 200 KB datagram that looks like a valid request at its start: truncated by the kernel, OVERSIZED")
    func truncatedDatagram() throws {
        let (broker, peer) = try Hostile.session()
        var size = 1 << 20
        _ = setsockopt(peer.fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var bytes = Wire.encodeRequest(domid: 5, requestID: 48, buffers: [Hostile.isaIrq(1)])
        bytes += [UInt8](repeating: 0, count: 200_000 - bytes.count)
        try peer.send(bytes)
        peer.expectProtocolError(.oversized)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [])
    }

    // MARK: Buffer counts

    @Test("0 buffers: REPLY BAD_BUFFER_COUNT, the session goes on")
    func zeroBuffers() throws {
        let (broker, peer) = try Hostile.session()
        try peer.request(id: 50, [])
        peer.expectRefusal(id: 50, .badBufferCount)
        try peer.expectStillServing()
        peer.close()
        Hostile.expectExit(broker, 0)
        Hostile.expectRecord(broker, ops: [Self.isa])
    }

    @Test("3 buffers to a one-buffer op: REPLY BAD_BUFFER_COUNT")
    func threeBuffers() throws {
        let (broker, peer) = try Hostile.session()
        try peer.request(id: 51, [Hostile.isaIrq(1), [0], [0]])
        peer.expectRefusal(id: 51, .badBufferCount)
        try peer.expectStillServing()
        peer.close()
        Hostile.expectExit(broker, 0)
        Hostile.expectRecord(broker, ops: [Self.isa])
    }

    @Test("16 buffers (the kernel's maximum): REPLY BAD_BUFFER_COUNT")
    func sixteenBuffers() throws {
        let (broker, peer) = try Hostile.session()
        try peer.request(id: 52, [Hostile.isaIrq(1)] + Array(repeating: [1], count: 15))
        peer.expectRefusal(id: 52, .badBufferCount)
        try peer.expectStillServing()
        peer.close()
        Hostile.expectExit(broker, 0)
        Hostile.expectRecord(broker, ops: [Self.isa])
    }

    @Test("17 buffers: PROTOCOL_ERROR TOO_MANY_BUFFERS")
    func seventeenBuffers() throws {
        let (broker, peer) = try Hostile.session()
        try peer.request(id: 53, [Hostile.isaIrq(1)] + Array(repeating: [1], count: 16))
        peer.expectProtocolError(.tooManyBuffers, requestID: 53)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [])
    }

    @Test("65535 buffers claimed: TOO_MANY_BUFFERS before any size is read")
    func sixtyFiveThousandBuffers() throws {
        let (broker, peer) = try Hostile.session()
        var bytes = Wire.encodeRequest(domid: 5, requestID: 54, buffers: [Hostile.isaIrq(1)])
        bytes[12] = 0xFF; bytes[13] = 0xFF
        try peer.send(bytes)
        peer.expectProtocolError(.tooManyBuffers, requestID: 54)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [])
    }

    // MARK: Header fields

    @Test("wrong magic: BAD_MAGIC")
    func wrongMagic() throws {
        let (broker, peer) = try Hostile.session()
        var bytes = Wire.encodeRequest(domid: 5, requestID: 55, buffers: [Hostile.isaIrq(1)])
        bytes[3] ^= 0x20  // "DMOb"
        try peer.send(bytes)
        peer.expectProtocolError(.badMagic)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [])
    }

    @Test("a message type only the broker sends (REPLY) and an unknown one: UNKNOWN_TYPE", arguments: [
        MessageType.reply.rawValue, MessageType.welcome.rawValue, UInt16(0x1234),
    ])
    func unknownType(type: UInt16) throws {
        let (broker, peer) = try Hostile.session()
        var bytes = Wire.encodeRequest(domid: 5, requestID: 56, buffers: [Hostile.isaIrq(1)])
        bytes[4] = UInt8(truncatingIfNeeded: type); bytes[5] = UInt8(truncatingIfNeeded: type >> 8)
        try peer.send(bytes)
        peer.expectProtocolError(.unknownType)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [])
    }

    @Test("REQUEST reserved bytes 14..15 not zero: HEADER_RESERVED_NONZERO")
    func requestReservedNonzero() throws {
        let (broker, peer) = try Hostile.session()
        var bytes = Wire.encodeRequest(domid: 5, requestID: 57, buffers: [Hostile.isaIrq(1)])
        bytes[15] = 1
        try peer.send(bytes)
        peer.expectProtocolError(.headerReservedNonzero, requestID: 57)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [])
    }

    // MARK: Hello

    @Test("HELLO with versions 0...0 and 65535...65535: REFUSED VERSION_UNSUPPORTED, exit 80",
          arguments: [UInt16(0), UInt16(65535)])
    func unsupportedVersion(version: UInt16) throws {
        let (broker, peer) = try Hostile.session(hello: false)
        try peer.send(Wire.encodeHello(Hello(minVersion: version, maxVersion: version)))
        guard case .message(.refused(let refused)) = peer.receive() else {
            Issue.record("no REFUSED"); return
        }
        #expect(refused.reason == .versionUnsupported)
        #expect(refused.brokerMinVersion == Wire.supportedVersions.lowerBound
                && refused.brokerMaxVersion == Wire.supportedVersions.upperBound)
        peer.expectHangUp()
        Hostile.expectExit(broker, 80)
        Hostile.expectRecord(broker, ops: [])
        #expect(broker.auditLog.contains("hello refused"))
    }

    @Test("HELLO with versions 0...65535: WELCOME with version 1")
    func widestVersionRange() throws {
        let (broker, peer) = try Hostile.session(hello: false)
        let welcome = try peer.hello(Hello(minVersion: 0, maxVersion: 65535))
        #expect(welcome.version == Wire.protocolVersion && welcome.domid == 5)
        try peer.expectStillServing()
        peer.close()
        Hostile.expectExit(broker, 0)
        Hostile.expectRecord(broker, ops: [Self.isa])
    }

    @Test("HELLO with min_version > max_version, of 15 bytes, of 17 bytes: BAD_HELLO; reserved bytes set: HEADER_RESERVED_NONZERO",
          arguments: ["min>max", "15 bytes", "17 bytes", "reserved"])
    func badHello(shape: String) throws {
        let (broker, peer) = try Hostile.session(hello: false)
        let good = Wire.encodeHello(Hello())
        var bytes: [UInt8]
        switch shape {
        case "min>max": bytes = Wire.encodeHello(Hello(minVersion: 2, maxVersion: 1))
        case "15 bytes": bytes = Array(good.prefix(15))
        case "17 bytes": bytes = good + [0]
        default: bytes = good; bytes[6] = 1
        }
        try peer.send(bytes)
        peer.expectProtocolError(shape == "reserved" ? .headerReservedNonzero : .badHello)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [])
    }

    @Test("a request before the hello: HELLO_REQUIRED")
    func requestBeforeHello() throws {
        let (broker, peer) = try Hostile.session(hello: false)
        try peer.request(id: 60, [Hostile.isaIrq(1)])
        peer.expectProtocolError(.helloRequired, requestID: 60)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [])
    }

    @Test("a second hello: DUPLICATE_HELLO, after the requests before it were served")
    func secondHello() throws {
        let (broker, peer) = try Hostile.session()
        try peer.expectStillServing()
        try peer.send(Wire.encodeHello(Hello()))
        peer.expectProtocolError(.duplicateHello)
        Hostile.expectExit(broker, 79)
        Hostile.expectRecord(broker, ops: [Self.isa])
    }
}

@Suite("Hostile clients: well-formed requests the broker refuses", .serialized)
struct HostileRefusalTests {
    static let isa = Hostile.setIsaIrqLevel

    @Test("repeated request ids: each answered, in order, with the id echoed")
    func repeatedRequestIDs() throws {
        let (broker, peer) = try Hostile.session()
        for irq in 0..<5 { try peer.request(id: 7, [Hostile.isaIrq(UInt64(irq))]) }
        try peer.request(id: 7, [Hostile.header("nr_vcpus")])
        for _ in 0..<5 { peer.expectReply(id: 7, result: 0, reason: nil) }
        peer.expectRefusal(id: 7, .opNotAllowed)
        peer.close()
        Hostile.expectExit(broker, 0)
        Hostile.expectRecord(broker, ops: Array(repeating: Self.isa, count: 5))
    }

    @Test("domids other than the broker's: DOMID_MISMATCH for 6 and 0 (dom0), DOMID_RESERVED for 0x7FF0 and 0xFFFF",
          arguments: [(UInt16(6), ReasonCode.domidMismatch), (0, .domidMismatch), (0x7FF0, .domidReserved),
                      (0x7FF2, .domidReserved), (0xFFFF, .domidReserved)])
    func foreignDomid(domid: UInt16, reason: ReasonCode) throws {
        let (broker, peer) = try Hostile.session()
        try peer.request(domid: domid, id: 70, [Hostile.isaIrq(1)])
        peer.expectRefusal(id: 70, domid: domid, reason)
        try peer.expectStillServing()
        peer.close()
        Hostile.expectExit(broker, 0)
        Hostile.expectRecord(broker, ops: [Self.isa])
        #expect(broker.auditLog.contains("domid=\(domid) op=set_isa_irq_level verdict=refuse reason=\(reason.name)"))
    }

    @Test("op 0, one past the last op, and 0xFFFFFFFF: OP_UNKNOWN", arguments: [
        UInt32(0), (Catalogue.ops.map(\.number).max() ?? 0) + 1, UInt32.max,
    ])
    func unknownOp(number: UInt32) throws {
        let (broker, peer) = try Hostile.session()
        var header = [UInt8](repeating: 0, count: DMOPABI.opStructSize)
        for i in 0..<4 { header[DMOPABI.opOffset + i] = UInt8(truncatingIfNeeded: number >> (8 * UInt32(i))) }
        try peer.request(id: 71, [header])
        peer.expectRefusal(id: 71, .opUnknown)
        try peer.expectStillServing()
        peer.close()
        Hostile.expectExit(broker, 0)
        Hostile.expectRecord(broker, ops: [Self.isa])
    }

    @Test("an op the policy does not allow (inject_event, nr_vcpus): OP_NOT_ALLOWED")
    func opNotAllowed() throws {
        let (broker, peer) = try Hostile.session()
        try peer.request(id: 72, [Hostile.header("inject_event", ["vector": 14, "type": 3])])
        try peer.request(id: 73, [Hostile.header("nr_vcpus")])
        peer.expectRefusal(id: 72, .opNotAllowed)
        peer.expectRefusal(id: 73, .opNotAllowed)
        peer.close()
        Hostile.expectExit(broker, 0)
        Hostile.expectRecord(broker, ops: [])
    }

    @Test("buffer 0 too short for the op header, and too short for the payload: BAD_BUFFER_SIZE")
    func shortHeaderBuffer() throws {
        let (broker, peer) = try Hostile.session()
        try peer.request(id: 74, [[9, 0]])
        try peer.request(id: 75, [Array(Hostile.isaIrq(1).prefix(9))])
        try peer.request(id: 76, [Hostile.isaIrq(1) + [0]])  // 33 > sizeof(struct xen_dm_op)
        for id in [UInt32(74), 75, 76] { peer.expectRefusal(id: id, .badBufferSize) }
        peer.close()
        Hostile.expectExit(broker, 0)
        Hostile.expectRecord(broker, ops: [])
    }

    @Test("non-zero xen_dm_op.pad and non-zero payload pad: PAYLOAD_FIELD_NONZERO")
    func nonZeroPad() throws {
        let (broker, peer) = try Hostile.session()
        var padded = Hostile.isaIrq(1)
        padded[DMOPABI.headerPad.offset] = 1
        try peer.request(id: 77, [padded])
        let create = TestSupport.op("create_ioreq_server")
        var createPadded = create.encodeHeader()
        if let pad = create.field(named: "pad") { createPadded[pad.offset] = 0x80 }
        try peer.request(id: 78, [createPadded])
        peer.expectRefusal(id: 77, .payloadFieldNonzero)
        peer.expectRefusal(id: 78, .payloadFieldNonzero)
        peer.close()
        Hostile.expectExit(broker, 0)
        Hostile.expectRecord(broker, ops: [])
    }

    @Test("track_dirty_vram with a bitmap shorter than ceil(nr/8): BAD_BUFFER_SIZE; the right size goes through")
    func shortDirtyBitmap() throws {
        let (broker, peer) = try Hostile.session()
        let header = Hostile.header("track_dirty_vram", ["first_pfn": 0xf0000, "nr": 65])
        try peer.request(id: 80, [header, [UInt8](repeating: 0, count: 8)])   // 65 pages need 9 bytes
        try peer.request(id: 81, [header, [UInt8](repeating: 0, count: 9)])
        peer.expectRefusal(id: 80, .badBufferSize)
        let reply = peer.expectReply(id: 81, result: 0, reason: nil)
        #expect(reply?.buffer(1)?.count == 9)
        peer.close()
        Hostile.expectExit(broker, 0)
        Hostile.expectRecord(broker, ops: [Int(TestSupport.op("track_dirty_vram").number)])
        #expect(broker.records.first?.sizes == [32, 9])
    }

    @Test("modified_memory with one buffer (the XSA-506 shape): BAD_BUFFER_COUNT")
    func modifiedMemoryOneBuffer() throws {
        let (broker, peer) = try Hostile.session()
        try peer.request(id: 82, [Hostile.header("modified_memory", ["nr_extents": 1])])
        peer.expectRefusal(id: 82, .badBufferCount)
        try peer.expectStillServing()
        peer.close()
        Hostile.expectExit(broker, 0)
        Hostile.expectRecord(broker, ops: [Self.isa])
    }

    @Test("nr_extents not matching buffer 1's size, and a non-zero extent pad: refused")
    func extentsMismatch() throws {
        let (broker, peer) = try Hostile.session()
        var one = xen_dm_op_modified_memory_extent()
        one.first_pfn = 0x10
        one.nr = 1
        let extent = withUnsafeBytes(of: one) { Array($0) }
        one.pad = 1
        let padded = withUnsafeBytes(of: one) { Array($0) }
        try peer.request(id: 83, [Hostile.header("modified_memory", ["nr_extents": 2]), extent])
        try peer.request(id: 84, [Hostile.header("modified_memory", ["nr_extents": 1]), extent + extent])
        try peer.request(id: 85, [Hostile.header("modified_memory", ["nr_extents": 0xFFFF_FFFF]), extent])
        try peer.request(id: 86, [Hostile.header("modified_memory", ["nr_extents": 1]), padded])
        try peer.request(id: 87, [Hostile.header("modified_memory", ["nr_extents": 1]), extent])
        for id in [UInt32(83), 84, 85] { peer.expectRefusal(id: id, .badBufferSize) }
        peer.expectRefusal(id: 86, .payloadFieldNonzero)
        peer.expectReply(id: 87, result: 0, reason: nil)
        peer.close()
        Hostile.expectExit(broker, 0)
        Hostile.expectRecord(broker, ops: [Int(TestSupport.op("modified_memory").number)])
    }

    @Test("a policy condition fails (isa_irq 16, inject_msi outside the APIC window): CONDITION_FAILED")
    func conditionFailed() throws {
        let (broker, peer) = try Hostile.session()
        try peer.request(id: 88, [Hostile.isaIrq(16)])
        try peer.request(id: 89, [Hostile.header("inject_msi", ["addr": 0xfed0_0000, "data": 1])])
        peer.expectRefusal(id: 88, .conditionFailed)
        peer.expectRefusal(id: 89, .conditionFailed)
        peer.close()
        Hostile.expectExit(broker, 0)
        Hostile.expectRecord(broker, ops: [])
    }
}
