// SPDX-License-Identifier: MIT
import DMOPClient
import DMOPCore
import Testing

@Suite("Wire codec")
struct WireTests {
    func decode(_ bytes: [UInt8]) -> Result<ClientMessage, ProtocolViolation> {
        bytes.withUnsafeBytes { raw in
            do throws(ProtocolViolation) { return .success(try Wire.decodeClientMessage(raw)) } catch { return .failure(error) }
        }
    }

    func reason(_ bytes: [UInt8]) -> ReasonCode? {
        if case .failure(let violation) = decode(bytes) { return violation.reason }
        return nil
    }

    let irq = TestSupport.op("set_isa_irq_level").encodeHeader(["isa_irq": 4, "level": 1])

    @Test("hello round trip")
    func helloRoundTrip() {
        let hello = Hello(minVersion: 1, maxVersion: 3, dmopABI: 0x40e00)
        let bytes = Wire.encodeHello(hello)
        #expect(bytes.count == Wire.helloSize)
        #expect(decode(bytes) == .success(.hello(hello)))
    }

    @Test("request round trip, domid at offset 6, buffers in place")
    func requestRoundTrip() {
        let bitmap = [UInt8](repeating: 0xaa, count: 8)
        let bytes = Wire.encodeRequest(domid: 0x1234, requestID: 99, buffers: [irq, bitmap])
        #expect(bytes[6] == 0x34 && bytes[7] == 0x12)
        guard case .success(.request(let frame)) = decode(bytes) else {
            Issue.record("did not decode")
            return
        }
        #expect(frame.domid == 0x1234)
        #expect(frame.requestID == 99)
        #expect(Array(frame.buffers) == [24..<56, 56..<64])
        #expect(Array(bytes[frame.buffers[0]]) == irq)
        #expect(Array(bytes[frame.buffers[1]]) == bitmap)
    }

    @Test("the example of the protocol page decodes as documented")
    func manPageExample() {
        let example: [UInt8] = [0x44, 0x4d, 0x4f, 0x42, 0x10, 0x00, 0x05, 0x00, 0x07, 0, 0, 0, 1, 0, 0, 0, 0x20, 0, 0, 0]
            + [9, 0, 0, 0, 0, 0, 0, 0, 4, 1] + [UInt8](repeating: 0, count: 22)
        #expect(example == Wire.encodeRequest(domid: 5, requestID: 7, buffers: [irq]))
        #expect(example.count == 52)
    }

    @Test("zero buffers and zero-length buffers are well-formed")
    func emptyBuffers() {
        #expect(reason(Wire.encodeRequest(domid: 5, requestID: 1, buffers: [])) == nil)
        #expect(reason(Wire.encodeRequest(domid: 5, requestID: 1, buffers: [irq, []])) == nil)
    }

    @Test("largest valid request: 16 buffers of 4096 bytes")
    func largest() {
        let buffers = [[UInt8]](repeating: [UInt8](repeating: 1, count: 4096), count: 16)
        let bytes = Wire.encodeRequest(domid: 5, requestID: 1, buffers: buffers)
        #expect(bytes.count == Wire.maxRequestSize)
        #expect(reason(bytes) == nil)
        // The inline buffer list holds as many buffers as the protocol allows.
        guard case .success(.request(let frame)) = decode(bytes) else { Issue.record("did not decode"); return }
        #expect(frame.buffers.count == DMOPABI.maxBuffers)
        #expect(frame.buffers.last == (Wire.maxRequestSize - 4096)..<Wire.maxRequestSize)
    }

    // One test per rejection path.

    @Test("empty datagram and 1 byte are truncated")
    func truncatedHeader() {
        #expect(reason([]) == .truncated)
        #expect(reason([0x44]) == .truncated)
        #expect(reason(Array(Wire.encodeHello(Hello()).prefix(7))) == .truncated)
    }

    @Test("request shorter than its header or its size table is truncated")
    func truncatedRequest() {
        let bytes = Wire.encodeRequest(domid: 5, requestID: 1, buffers: [irq])
        #expect(reason(Array(bytes.prefix(15))) == .truncated)
        var claimsTwo = Array(bytes.prefix(16))
        claimsTwo[12] = 2
        claimsTwo += [0, 0, 0, 0]  // only one of two sizes
        #expect(reason(claimsTwo) == .truncated)
    }

    @Test("wrong magic")
    func badMagic() {
        var bytes = Wire.encodeHello(Hello())
        bytes[0] ^= 0xff
        #expect(reason(bytes) == .badMagic)
    }

    @Test("types a client may not send")
    func unknownType() {
        for type: UInt16 in [0, 2, 3, 0x11, 0xff, 0x1234] {
            var bytes = Wire.encodeHello(Hello())
            bytes[4] = UInt8(type & 0xff)
            bytes[5] = UInt8(type >> 8)
            #expect(reason(bytes) == .unknownType, "type \(type)")
        }
    }

    @Test("hello of the wrong size, reversed range, reserved bytes")
    func badHello() {
        #expect(reason(Wire.encodeHello(Hello()) + [0]) == .badHello)
        #expect(reason(Array(Wire.encodeHello(Hello()).prefix(15))) == .badHello)
        #expect(reason(Wire.encodeHello(Hello(minVersion: 3, maxVersion: 2))) == .badHello)
        var reserved = Wire.encodeHello(Hello())
        reserved[6] = 1
        #expect(reason(reserved) == .headerReservedNonzero)
    }

    @Test("more than 16 buffers, including 17 and 65535")
    func tooManyBuffers() {
        for count in [17, 255, 65535] {
            var bytes = Wire.encodeRequest(domid: 5, requestID: 1, buffers: [])
            bytes[12] = UInt8(count & 0xff)
            bytes[13] = UInt8(count >> 8)
            #expect(reason(bytes) == .tooManyBuffers, "count \(count)")
        }
    }

    @Test("a buffer over 4096 bytes")
    func bufferTooLarge() {
        var bytes = Wire.encodeRequest(domid: 5, requestID: 1, buffers: [irq])
        bytes[16] = 0x01; bytes[17] = 0x10  // size 4097
        #expect(reason(bytes) == .bufferTooLarge)
        var huge = Wire.encodeRequest(domid: 5, requestID: 1, buffers: [irq])
        huge[16] = 0xff; huge[17] = 0xff; huge[18] = 0xff; huge[19] = 0xff
        #expect(reason(huge) == .bufferTooLarge)
    }

    @Test("sizes that do not add up: short data, trailing bytes")
    func lengthMismatch() {
        let bytes = Wire.encodeRequest(domid: 5, requestID: 1, buffers: [irq])
        #expect(reason(Array(bytes.dropLast())) == .lengthMismatch)
        #expect(reason(bytes + [0]) == .lengthMismatch)
        // Claims more bytes than sent.
        var claims = bytes
        claims[16] = 200
        #expect(reason(claims) == .lengthMismatch)
    }

    @Test("reserved request bytes")
    func reservedRequest() {
        var bytes = Wire.encodeRequest(domid: 5, requestID: 1, buffers: [irq])
        // Bit 0 is POSTED (version 2); every other flag bit is reserved.
        for bit in 1..<16 {
            bytes[14] = UInt8(truncatingIfNeeded: 1 << bit)
            bytes[15] = UInt8(truncatingIfNeeded: (1 << bit) >> 8)
            #expect(reason(bytes) == .headerReservedNonzero, "flag bit \(bit)")
        }
        bytes[14] = 1
        bytes[15] = 0
        #expect(reason(bytes) == nil)
    }

    @Test("over the datagram limit")
    func oversized() {
        #expect(reason([UInt8](repeating: 0, count: Wire.maxRequestSize + 1)) == .oversized)
    }

    @Test("version negotiation: overlap, skew, interface")
    func negotiation() {
        #expect(Wire.negotiate(Hello(minVersion: 1, maxVersion: 1)) == .success(1))
        #expect(Wire.negotiate(Hello(minVersion: 0, maxVersion: 9)) == .success(2))
        #expect(Wire.negotiate(Hello(minVersion: 2, maxVersion: 2)) == .success(2))
        guard case .failure(let tooNew) = Wire.negotiate(Hello(minVersion: 3, maxVersion: 65535)) else {
            Issue.record("v3+ accepted"); return
        }
        #expect(tooNew.reason == .versionUnsupported)
        guard case .failure(let tooOld) = Wire.negotiate(Hello(minVersion: 0, maxVersion: 0)) else {
            Issue.record("v0 accepted"); return
        }
        #expect(tooOld.reason == .versionUnsupported)
        guard case .failure(let xen) = Wire.negotiate(Hello(dmopABI: DMOPABI.identifier + 1)) else {
            Issue.record("interface skew accepted"); return
        }
        #expect(xen.reason == .xenInterfaceMismatch)
    }

    @Test("broker messages round trip through the client decoder")
    func brokerMessages() throws {
        let welcome = Welcome(version: 1, dmopABI: DMOPABI.identifier, xenVersion: 0x40011,
                              domid: 5, maxBuffers: 16, maxBufferSize: 4096, allowedOps: 0x1fffe)
        let decoded = try Wire.encodeWelcome(welcome).withUnsafeBytes { try Wire.decodeBrokerMessage($0) }
        #expect(decoded == .welcome(welcome))

        let refused = try Wire.encodeRefused(.versionUnsupported, text: "no").withUnsafeBytes { try Wire.decodeBrokerMessage($0) }
        guard case .refused(let r) = refused else { Issue.record("not refused"); return }
        #expect(r.reason == .versionUnsupported && r.text == "no" && r.brokerMaxVersion == 2)

        let error = try Wire.encodeProtocolError(ProtocolViolation(.badMagic, requestID: 4, "bad"))
            .withUnsafeBytes { try Wire.decodeBrokerMessage($0) }
        #expect(error == .protocolError(ProtocolErrorMessage(reason: .badMagic, requestID: 4, text: "bad")))

        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: Wire.maxReplySize, alignment: 8)
        defer { out.deallocate() }
        let bitmap: [UInt8] = [1, 2, 3]
        let length = bitmap.withUnsafeBytes { b in
            Wire.encodeReply(into: out, domid: 5, requestID: 77, result: 0, refusal: nil, returned: [(1, b)])
        }
        #expect(length == 24 + 8 + 3)
        let reply = try Wire.decodeBrokerMessage(UnsafeRawBufferPointer(rebasing: out[0..<length]))
        guard case .reply(let r2) = reply else { Issue.record("not a reply"); return }
        #expect(r2.requestID == 77 && r2.result == 0 && r2.origin == .hypervisor && r2.buffer(1) == bitmap)

        let refusedLength = Wire.encodeReply(into: out, domid: 6, requestID: 8, result: -1, refusal: .domidMismatch, returned: [])
        let refusal = try Wire.decodeBrokerMessage(UnsafeRawBufferPointer(rebasing: out[0..<refusedLength]))
        guard case .reply(let r3) = refusal else { Issue.record("not a reply"); return }
        #expect(r3.origin == .broker && r3.reason == .domidMismatch && r3.result == -1 && r3.buffers.isEmpty)
    }

    @Test("client decoder refuses a reply whose buffer runs past the datagram")
    func clientDecoderBounds() {
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: Wire.maxReplySize, alignment: 8)
        defer { out.deallocate() }
        let data: [UInt8] = [1, 2, 3, 4]
        let length = data.withUnsafeBytes { Wire.encodeReply(into: out, domid: 5, requestID: 1, result: 0, refusal: nil, returned: [(0, $0)]) }
        let cut = UnsafeRawBufferPointer(rebasing: out[0..<(length - 1)])
        #expect(throws: ProtocolViolation.self) { try Wire.decodeBrokerMessage(cut) }
    }
}

@Suite("ClientBytes: every read of client bytes is checked")
struct ClientBytesTests {
    @Test("reads inside give the little-endian value; any read reaching outside is nil")
    func bounds() {
        let bytes: [UInt8] = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09]
        bytes.withUnsafeBytes { raw in
            let reader = ClientBytes(raw)
            #expect(reader.u8(at: 8) == 0x09)
            #expect(reader.le16(at: 7) == 0x0908)
            #expect(reader.le32(at: 5) == 0x0908_0706)
            #expect(reader.le64(at: 1) == 0x0908_0706_0504_0302)
            #expect(reader.value(at: 6, width: 3) == 0x09_0807)
            for offset in [-1, 9, 10, Int.max, Int.min] { #expect(reader.u8(at: offset) == nil, "\(offset)") }
            #expect(reader.le16(at: 8) == nil)
            #expect(reader.le32(at: 6) == nil)
            #expect(reader.le64(at: 2) == nil)
            #expect(reader.le64(at: Int.max - 3) == nil)
            #expect(reader.value(at: 7, width: 3) == nil)
            #expect(reader.value(at: 0, width: 0) == nil && reader.value(at: 0, width: 9) == nil)
            let short = ClientBytes(UnsafeRawBufferPointer(rebasing: raw[0..<3]))
            #expect(short.le32(at: 0) == nil && short.le64(at: 0) == nil && short.le16(at: 1) == 0x0302)
        }
        let empty = ClientBytes(UnsafeRawBufferPointer(start: nil, count: 0))
        #expect(empty.u8(at: 0) == nil && empty.le16(at: 0) == nil)
    }
}
