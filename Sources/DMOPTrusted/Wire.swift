// SPDX-License-Identifier: MIT
/// Wire protocol, versions 1 and 2 (dmop-broker-protocol(7)): fixed
/// little-endian layouts over SOCK_SEQPACKET. Version 2 adds posted
/// requests (no REPLY of their own; the first failure rides on the next
/// synchronous REPLY). Decoding is total: every length is checked before it
/// is used, and nothing is allocated from a length the peer chose.
public enum Wire {
    public static let magic: UInt32 = 0x424F_4D44  // "DMOB" in memory order
    public static let protocolVersion: UInt16 = 2
    public static let supportedVersions: ClosedRange<UInt16> = 1...2
    /// The first version with posted requests.
    public static let postingVersion: UInt16 = 2
    /// REQUEST flags (bytes 14..15, version 2): the request is posted.
    public static let requestFlagPosted: UInt16 = 0x0001
    /// REPLY flags (bytes 22..23, version 2): a posted-failure trailer
    /// follows the buffers.
    public static let replyFlagPostedFailure: UInt16 = 0x0001
    public static let postedFailureSize = 20

    public static let commonHeaderSize = 8
    public static let helloSize = 16
    public static let welcomeSize = 32
    public static let refusedHeaderSize = 20
    public static let requestHeaderSize = 16
    public static let replyHeaderSize = 24
    public static let protocolErrorHeaderSize = 16
    public static let requestSizeEntry = 4
    public static let replyDescriptorSize = 8
    /// Offset of the target domid in a REQUEST (and REPLY).
    public static let domidOffset = 6

    /// The largest valid REQUEST: header, 16 sizes, 16 full buffers.
    public static let maxRequestSize =
        requestHeaderSize + requestSizeEntry * DMOPABI.maxBuffers + DMOPABI.maxBuffers * DMOPABI.maxBufferSize
    /// The largest REPLY: two buffers come back at most.
    public static let maxReturnedBuffers = 2
    public static let maxReplySize =
        replyHeaderSize + maxReturnedBuffers * (replyDescriptorSize + DMOPABI.maxBufferSize) + postedFailureSize
    /// Longest text in REFUSED and PROTOCOL_ERROR.
    public static let maxTextLength = 512
}

/// Who answered a REQUEST: Xen (result is its return value) or the broker
/// (a refusal, with a reason code).
public enum ReplyOrigin: UInt16, Sendable {
    case hypervisor = 0
    case broker = 1
}

public enum MessageType: UInt16, Sendable {
    case hello = 0x0001
    case welcome = 0x0002
    case refused = 0x0003
    case request = 0x0010
    case reply = 0x0011
    case protocolError = 0x00FF
}

/// A datagram that breaks the protocol. The broker answers PROTOCOL_ERROR
/// (or REFUSED for a hello) and closes.
public struct ProtocolViolation: Error, Equatable, Sendable {
    public let reason: ReasonCode
    public let requestID: UInt32
    public let detail: String

    public init(_ reason: ReasonCode, requestID: UInt32 = 0, _ detail: String) {
        self.reason = reason
        self.requestID = requestID
        self.detail = detail
    }
}

public struct Hello: Equatable, Sendable {
    public var minVersion: UInt16
    public var maxVersion: UInt16
    public var dmopABI: UInt32

    public init(minVersion: UInt16 = Wire.supportedVersions.lowerBound,
                maxVersion: UInt16 = Wire.supportedVersions.upperBound, dmopABI: UInt32 = DMOPABI.identifier) {
        self.minVersion = minVersion
        self.maxVersion = maxVersion
        self.dmopABI = dmopABI
    }
}

public struct Welcome: Equatable, Sendable {
    public var version: UInt16
    public var dmopABI: UInt32
    public var xenVersion: UInt32
    public var domid: UInt16
    public var maxBuffers: UInt16
    public var maxBufferSize: UInt32
    /// Bit n set: the policy allows op number n.
    public var allowedOps: UInt32
    /// Bit n set: op number n may be posted (version 2; 0 in version 1).
    public var postedOps: UInt32

    public init(version: UInt16, dmopABI: UInt32, xenVersion: UInt32, domid: UInt16,
                maxBuffers: UInt16, maxBufferSize: UInt32, allowedOps: UInt32, postedOps: UInt32 = 0) {
        self.version = version
        self.dmopABI = dmopABI
        self.xenVersion = xenVersion
        self.domid = domid
        self.maxBuffers = maxBuffers
        self.maxBufferSize = maxBufferSize
        self.allowedOps = allowedOps
        self.postedOps = postedOps
    }
}

/// A decoded REQUEST. The buffers are ranges of the datagram, so decoding
/// copies nothing and the broker can hand the bytes to the hypervisor in
/// place.
public struct RequestFrame: Equatable, Sendable {
    public var domid: UInt16
    public var requestID: UInt32
    public var buffers: BufferRanges
    /// Version 2: no REPLY unless it fails, and then with the next
    /// synchronous one.
    public var posted: Bool = false
}

/// The first failure of a posted request since the last synchronous
/// REPLY, and how many failed after it (the REPLY trailer).
public struct PostedFailure: Equatable, Sendable {
    public var requestID: UInt32
    /// xen_dm_op.op, or UInt32.max when buffer 0 could not hold one.
    public var op: UInt32
    /// A negative errno.
    public var result: Int32
    public var origin: ReplyOrigin
    /// Set when origin is .broker.
    public var reason: ReasonCode?
    /// Posted requests that failed after this one (saturating).
    public var laterFailures: UInt32

    public init(requestID: UInt32, op: UInt32, result: Int32, origin: ReplyOrigin, reason: ReasonCode?,
                laterFailures: UInt32 = 0) {
        self.requestID = requestID
        self.op = op
        self.result = result
        self.origin = origin
        self.reason = reason
        self.laterFailures = laterFailures
    }
}

public enum ClientMessage: Equatable, Sendable {
    case hello(Hello)
    case request(RequestFrame)
}

// MARK: - Broker side: decode what a client sends

extension ClientBytes {
    /// A read the decoder's length checks already cover: should one ever
    /// not, the datagram is refused as truncated, never read past.
    @inline(__always)
    func checked16(_ offset: Int) throws(ProtocolViolation) -> UInt16 {
        guard let value = le16(at: offset) else { throw Self.cutShort(offset, count) }
        return value
    }
    @inline(__always)
    func checked32(_ offset: Int) throws(ProtocolViolation) -> UInt32 {
        guard let value = le32(at: offset) else { throw Self.cutShort(offset, count) }
        return value
    }
    static func cutShort(_ offset: Int, _ count: Int) -> ProtocolViolation {
        ProtocolViolation(.truncated, "\(count) bytes end before the field at byte \(offset)")
    }
}

extension Wire {
    /// Decodes one datagram from a client. Throws the reason the protocol
    /// page names for every way it can be wrong.
    public static func decodeClientMessage(_ bytes: UnsafeRawBufferPointer) throws(ProtocolViolation) -> ClientMessage {
        guard bytes.count >= commonHeaderSize else {
            throw ProtocolViolation(.truncated, "\(bytes.count) bytes, shorter than the 8-byte header")
        }
        guard bytes.count <= maxRequestSize else {
            throw ProtocolViolation(.oversized, "\(bytes.count) bytes, over the \(maxRequestSize)-byte limit")
        }
        let reader = ClientBytes(bytes)
        let sentMagic = try reader.checked32(0)
        guard sentMagic == magic else {
            throw ProtocolViolation(.badMagic, "magic 0x\(String(sentMagic, radix: 16))")
        }
        let rawType = try reader.checked16(4)
        switch MessageType(rawValue: rawType) {
        case .hello:
            return .hello(try decodeHello(reader))
        case .request:
            return .request(try decodeRequest(reader))
        default:
            throw ProtocolViolation(.unknownType, "type 0x\(String(rawType, radix: 16)) is not one a client sends")
        }
    }

    static func decodeHello(_ bytes: ClientBytes) throws(ProtocolViolation) -> Hello {
        guard bytes.count == helloSize else {
            throw ProtocolViolation(.badHello, "HELLO of \(bytes.count) bytes, expected \(helloSize)")
        }
        guard try bytes.checked16(6) == 0 else {
            throw ProtocolViolation(.headerReservedNonzero, "HELLO reserved bytes 6..7 not zero")
        }
        let hello = Hello(minVersion: try bytes.checked16(8), maxVersion: try bytes.checked16(10),
                          dmopABI: try bytes.checked32(12))
        guard hello.minVersion <= hello.maxVersion else {
            throw ProtocolViolation(.badHello, "min_version \(hello.minVersion) > max_version \(hello.maxVersion)")
        }
        return hello
    }

    static func decodeRequest(_ bytes: ClientBytes) throws(ProtocolViolation) -> RequestFrame {
        guard bytes.count >= requestHeaderSize else {
            throw ProtocolViolation(.truncated, "REQUEST of \(bytes.count) bytes, shorter than its 16-byte header")
        }
        let requestID = try bytes.checked32(8)
        let count = Int(try bytes.checked16(12))
        // Whether the session's version allows the posted flag is the
        // server's check: the codec knows no session.
        let flags = try bytes.checked16(14)
        guard flags & ~requestFlagPosted == 0 else {
            throw ProtocolViolation(.headerReservedNonzero, requestID: requestID,
                                    "REQUEST flags 0x\(String(flags, radix: 16)) name no defined flag")
        }
        guard count <= DMOPABI.maxBuffers else {
            throw ProtocolViolation(.tooManyBuffers, requestID: requestID,
                                    "nr_bufs \(count) > \(DMOPABI.maxBuffers)")
        }
        let dataStart = requestHeaderSize + requestSizeEntry * count
        guard bytes.count >= dataStart else {
            throw ProtocolViolation(.truncated, requestID: requestID,
                                    "\(bytes.count) bytes cannot hold \(count) buffer sizes")
        }
        var buffers = BufferRanges()
        var cursor = dataStart
        for index in 0..<count {
            let size = Int(try bytes.checked32(requestHeaderSize + requestSizeEntry * index))
            guard size <= DMOPABI.maxBufferSize else {
                throw ProtocolViolation(.bufferTooLarge, requestID: requestID,
                                        "size[\(index)] = \(size) > \(DMOPABI.maxBufferSize)")
            }
            // Bounded: count <= 16 and size <= 4096, so cursor cannot overflow.
            buffers.append(size: size)
            cursor += size
        }
        guard cursor == bytes.count else {
            throw ProtocolViolation(.lengthMismatch, requestID: requestID,
                                    "sizes add up to \(cursor) bytes, the datagram has \(bytes.count)")
        }
        return RequestFrame(domid: try bytes.checked16(domidOffset), requestID: requestID, buffers: buffers,
                            posted: flags & requestFlagPosted != 0)
    }

    /// Chooses the protocol version, or says why the hello is refused.
    public static func negotiate(_ hello: Hello) -> Result<UInt16, ProtocolViolation> {
        let low = max(hello.minVersion, supportedVersions.lowerBound)
        let high = min(hello.maxVersion, supportedVersions.upperBound)
        guard low <= high else {
            return .failure(ProtocolViolation(.versionUnsupported,
                "client speaks versions \(hello.minVersion)...\(hello.maxVersion), broker speaks \(supportedVersions.lowerBound)...\(supportedVersions.upperBound)"))
        }
        guard hello.dmopABI == DMOPABI.identifier else {
            return .failure(ProtocolViolation(.xenInterfaceMismatch,
                "client built for DMOP ABI 0x\(String(hello.dmopABI, radix: 16)), broker for 0x\(String(DMOPABI.identifier, radix: 16))"))
        }
        return .success(high)
    }
}

// MARK: - Broker side: encode what the broker sends

extension Wire {
    public static func encodeWelcome(_ w: Welcome) -> [UInt8] {
        var out: [UInt8] = []
        out.appendLE32(magic); out.appendLE16(MessageType.welcome.rawValue); out.appendLE16(w.version)
        out.appendLE32(w.dmopABI); out.appendLE32(w.xenVersion)
        out.appendLE16(w.domid); out.appendLE16(w.maxBuffers)
        out.appendLE32(w.maxBufferSize); out.appendLE32(w.allowedOps)
        out.appendLE32(w.version >= postingVersion ? w.postedOps : 0)
        return out
    }

    public static func encodeRefused(_ reason: ReasonCode, text: String) -> [UInt8] {
        textMessage(.refused, reason, text) { out in
            out.appendLE16(supportedVersions.lowerBound); out.appendLE16(supportedVersions.upperBound)
            out.appendLE32(DMOPABI.identifier)
        }
    }

    public static func encodeProtocolError(_ violation: ProtocolViolation) -> [UInt8] {
        textMessage(.protocolError, violation.reason, violation.detail) { $0.appendLE32(violation.requestID) }
    }

    /// REFUSED and PROTOCOL_ERROR: type and reason, `fields`, then the text.
    private static func textMessage(_ type: MessageType, _ reason: ReasonCode, _ text: String, _ fields: (inout [UInt8]) -> Void) -> [UInt8] {
        let textBytes = Array(text.utf8.prefix(maxTextLength))
        var out: [UInt8] = []
        out.appendLE32(magic); out.appendLE16(type.rawValue); out.appendLE16(reason.rawValue)
        fields(&out)
        out.appendLE16(UInt16(textBytes.count)); out.appendLE16(0)
        return out + textBytes
    }

    /// Writes a REPLY into `out` (at least maxReplySize bytes) and returns
    /// its length. `returned` are (index, bytes) of buffers the op wrote back;
    /// `postedFailure` goes in the trailer (version 2 sessions only).
    public static func encodeReply(into out: UnsafeMutableRawBufferPointer, domid: UInt16, requestID: UInt32,
                                   result: Int32, refusal: ReasonCode?,
                                   returned: some Collection<(index: Int, bytes: UnsafeRawBufferPointer)>, postedFailure: PostedFailure? = nil) -> Int {
        precondition(out.count >= maxReplySize && returned.count <= maxReturnedBuffers)
        out.putLE32(magic, at: 0)
        out.putLE16(MessageType.reply.rawValue, at: 4)
        out.putLE16(domid, at: 6)
        out.putLE32(requestID, at: 8)
        out.putLE32(UInt32(bitPattern: result), at: 12)
        out.putLE16(refusal == nil ? ReplyOrigin.hypervisor.rawValue : ReplyOrigin.broker.rawValue, at: 16)
        out.putLE16(refusal?.rawValue ?? 0, at: 18)
        out.putLE16(UInt16(returned.count), at: 20)
        out.putLE16(postedFailure == nil ? 0 : replyFlagPostedFailure, at: 22)
        var cursor = replyHeaderSize + replyDescriptorSize * returned.count
        for (slot, buffer) in returned.enumerated() {
            precondition(buffer.bytes.count <= DMOPABI.maxBufferSize)
            let descriptor = replyHeaderSize + replyDescriptorSize * slot
            out.putLE16(UInt16(buffer.index), at: descriptor)
            out.putLE16(0, at: descriptor + 2)
            out.putLE32(UInt32(buffer.bytes.count), at: descriptor + 4)
            if let base = buffer.bytes.baseAddress, buffer.bytes.count > 0 {
                // SAFETY: cursor + count <= header + 2 descriptors + 2 full
                // buffers = maxReplySize <= out.count (preconditions above).
                (out.baseAddress! + cursor).copyMemory(from: base, byteCount: buffer.bytes.count)
            }
            cursor += buffer.bytes.count
        }
        if let failure = postedFailure {
            out.putLE32(failure.requestID, at: cursor)
            out.putLE32(failure.op, at: cursor + 4)
            out.putLE32(UInt32(bitPattern: failure.result), at: cursor + 8)
            out.putLE16(failure.origin.rawValue, at: cursor + 12)
            out.putLE16(failure.reason?.rawValue ?? 0, at: cursor + 14)
            out.putLE32(failure.laterFailures, at: cursor + 16)
            cursor += postedFailureSize
        }
        return cursor
    }
}
