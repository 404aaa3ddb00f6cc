// SPDX-License-Identifier: MIT
/// Wire protocol v1 (dmop-broker-protocol(7)): fixed little-endian layouts
/// over SOCK_SEQPACKET. Decoding is total: every length is checked before it
/// is used, and nothing is allocated from a length the peer chose.
public enum Wire {
    public static let magic: UInt32 = 0x424F_4D44  // "DMOB" in memory order
    public static let protocolVersion: UInt16 = 1
    public static let supportedVersions: ClosedRange<UInt16> = 1...1

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
        replyHeaderSize + maxReturnedBuffers * (replyDescriptorSize + DMOPABI.maxBufferSize)
    /// Longest text in REFUSED and PROTOCOL_ERROR.
    public static let maxTextLength = 512
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
public struct ProtocolViolation: Error, Equatable, Sendable, CustomStringConvertible {
    public let reason: ReasonCode
    public let requestID: UInt32
    public let detail: String

    public init(_ reason: ReasonCode, requestID: UInt32 = 0, _ detail: String) {
        self.reason = reason
        self.requestID = requestID
        self.detail = detail
    }

    public var description: String { "\(reason.name): \(detail)" }
}

public struct Hello: Equatable, Sendable {
    public var minVersion: UInt16
    public var maxVersion: UInt16
    public var dmopABI: UInt32

    public init(minVersion: UInt16 = Wire.supportedVersions.lowerBound,
                maxVersion: UInt16 = Wire.supportedVersions.upperBound,
                dmopABI: UInt32 = DMOPABI.identifier) {
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

    public init(version: UInt16, dmopABI: UInt32, xenVersion: UInt32, domid: UInt16,
                maxBuffers: UInt16, maxBufferSize: UInt32, allowedOps: UInt32) {
        self.version = version
        self.dmopABI = dmopABI
        self.xenVersion = xenVersion
        self.domid = domid
        self.maxBuffers = maxBuffers
        self.maxBufferSize = maxBufferSize
        self.allowedOps = allowedOps
    }
}

public struct Refused: Equatable, Sendable {
    public var reason: ReasonCode
    public var brokerMinVersion: UInt16
    public var brokerMaxVersion: UInt16
    public var dmopABI: UInt32
    public var text: String

    public init(reason: ReasonCode, brokerMinVersion: UInt16, brokerMaxVersion: UInt16, dmopABI: UInt32, text: String) {
        self.reason = reason
        self.brokerMinVersion = brokerMinVersion
        self.brokerMaxVersion = brokerMaxVersion
        self.dmopABI = dmopABI
        self.text = text
    }
}

public struct ProtocolErrorMessage: Equatable, Sendable {
    public var reason: ReasonCode
    public var requestID: UInt32
    public var text: String

    public init(reason: ReasonCode, requestID: UInt32, text: String) {
        self.reason = reason
        self.requestID = requestID
        self.text = text
    }
}

/// A decoded REQUEST. The buffers are ranges of the datagram, so decoding
/// copies nothing and the broker can hand the bytes to the hypervisor in
/// place.
public struct RequestFrame: Equatable, Sendable {
    public var domid: UInt16
    public var requestID: UInt32
    public var buffers: [Range<Int>]
}

public enum ClientMessage: Equatable, Sendable {
    case hello(Hello)
    case request(RequestFrame)
}

/// REPLY as a client sees it.
public struct Reply: Equatable, Sendable {
    public enum Origin: UInt16, Sendable {
        case hypervisor = 0
        case broker = 1
    }
    public var domid: UInt16
    public var requestID: UInt32
    /// 0 or a negative errno.
    public var result: Int32
    public var origin: Origin
    /// Set when origin is .broker.
    public var reason: ReasonCode?
    /// Buffers the op wrote back, by request buffer index.
    public var buffers: [(index: Int, bytes: [UInt8])]

    public static func == (lhs: Reply, rhs: Reply) -> Bool {
        lhs.domid == rhs.domid && lhs.requestID == rhs.requestID && lhs.result == rhs.result
            && lhs.origin == rhs.origin && lhs.reason == rhs.reason
            && lhs.buffers.map(\.index) == rhs.buffers.map(\.index)
            && lhs.buffers.map(\.bytes) == rhs.buffers.map(\.bytes)
    }

    public func buffer(_ index: Int) -> [UInt8]? {
        buffers.first { $0.index == index }?.bytes
    }
}

public enum BrokerMessage: Equatable, Sendable {
    case welcome(Welcome)
    case refused(Refused)
    case reply(Reply)
    case protocolError(ProtocolErrorMessage)
}

// MARK: - Broker side: decode what a client sends

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
        guard bytes.le32(at: 0) == magic else {
            throw ProtocolViolation(.badMagic, "magic 0x\(String(bytes.le32(at: 0), radix: 16))")
        }
        let rawType = bytes.le16(at: 4)
        switch MessageType(rawValue: rawType) {
        case .hello:
            return .hello(try decodeHello(bytes))
        case .request:
            return .request(try decodeRequest(bytes))
        default:
            throw ProtocolViolation(.unknownType, "type 0x\(String(rawType, radix: 16)) is not one a client sends")
        }
    }

    static func decodeHello(_ bytes: UnsafeRawBufferPointer) throws(ProtocolViolation) -> Hello {
        guard bytes.count == helloSize else {
            throw ProtocolViolation(.badHello, "HELLO of \(bytes.count) bytes, expected \(helloSize)")
        }
        guard bytes.le16(at: 6) == 0 else {
            throw ProtocolViolation(.reservedNonzero, "HELLO reserved bytes 6..7 not zero")
        }
        let hello = Hello(minVersion: bytes.le16(at: 8), maxVersion: bytes.le16(at: 10),
                          dmopABI: bytes.le32(at: 12))
        guard hello.minVersion <= hello.maxVersion else {
            throw ProtocolViolation(.badHello, "min_version \(hello.minVersion) > max_version \(hello.maxVersion)")
        }
        return hello
    }

    static func decodeRequest(_ bytes: UnsafeRawBufferPointer) throws(ProtocolViolation) -> RequestFrame {
        guard bytes.count >= requestHeaderSize else {
            throw ProtocolViolation(.truncated, "REQUEST of \(bytes.count) bytes, shorter than its 16-byte header")
        }
        let requestID = bytes.le32(at: 8)
        let count = Int(bytes.le16(at: 12))
        guard bytes.le16(at: 14) == 0 else {
            throw ProtocolViolation(.reservedNonzero, requestID: requestID, "REQUEST reserved bytes 14..15 not zero")
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
        var buffers: [Range<Int>] = []
        buffers.reserveCapacity(count)
        var cursor = dataStart
        for index in 0..<count {
            let size = Int(bytes.le32(at: requestHeaderSize + requestSizeEntry * index))
            guard size <= DMOPABI.maxBufferSize else {
                throw ProtocolViolation(.bufferTooLarge, requestID: requestID,
                                        "size[\(index)] = \(size) > \(DMOPABI.maxBufferSize)")
            }
            // Bounded: count <= 16 and size <= 4096, so cursor cannot overflow.
            buffers.append(cursor..<(cursor + size))
            cursor += size
        }
        guard cursor == bytes.count else {
            throw ProtocolViolation(.lengthMismatch, requestID: requestID,
                                    "sizes add up to \(cursor) bytes, the datagram has \(bytes.count)")
        }
        return RequestFrame(domid: bytes.le16(at: domidOffset), requestID: requestID, buffers: buffers)
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
        out.reserveCapacity(welcomeSize)
        out.appendLE32(magic); out.appendLE16(MessageType.welcome.rawValue); out.appendLE16(w.version)
        out.appendLE32(w.dmopABI); out.appendLE32(w.xenVersion)
        out.appendLE16(w.domid); out.appendLE16(w.maxBuffers)
        out.appendLE32(w.maxBufferSize); out.appendLE32(w.allowedOps); out.appendLE32(0)
        return out
    }

    public static func encodeRefused(_ reason: ReasonCode, text: String) -> [UInt8] {
        let textBytes = Array(text.utf8.prefix(maxTextLength))
        var out: [UInt8] = []
        out.appendLE32(magic); out.appendLE16(MessageType.refused.rawValue); out.appendLE16(reason.rawValue)
        out.appendLE16(supportedVersions.lowerBound); out.appendLE16(supportedVersions.upperBound)
        out.appendLE32(DMOPABI.identifier)
        out.appendLE16(UInt16(textBytes.count)); out.appendLE16(0)
        out += textBytes
        return out
    }

    public static func encodeProtocolError(_ violation: ProtocolViolation) -> [UInt8] {
        let textBytes = Array(violation.detail.utf8.prefix(maxTextLength))
        var out: [UInt8] = []
        out.appendLE32(magic); out.appendLE16(MessageType.protocolError.rawValue)
        out.appendLE16(violation.reason.rawValue)
        out.appendLE32(violation.requestID)
        out.appendLE16(UInt16(textBytes.count)); out.appendLE16(0)
        out += textBytes
        return out
    }

    /// Writes a REPLY into `out` (at least maxReplySize bytes) and returns
    /// its length. `returned` are (index, bytes) of buffers the op wrote back.
    public static func encodeReply(into out: UnsafeMutableRawBufferPointer, domid: UInt16, requestID: UInt32,
                                   result: Int32, refusal: ReasonCode?,
                                   returned: [(index: Int, bytes: UnsafeRawBufferPointer)]) -> Int {
        precondition(out.count >= maxReplySize && returned.count <= maxReturnedBuffers)
        out.putLE32(magic, at: 0)
        out.putLE16(MessageType.reply.rawValue, at: 4)
        out.putLE16(domid, at: 6)
        out.putLE32(requestID, at: 8)
        out.putLE32(UInt32(bitPattern: result), at: 12)
        out.putLE16(refusal == nil ? Reply.Origin.hypervisor.rawValue : Reply.Origin.broker.rawValue, at: 16)
        out.putLE16(refusal?.rawValue ?? 0, at: 18)
        out.putLE16(UInt16(returned.count), at: 20)
        out.putLE16(0, at: 22)
        var cursor = replyHeaderSize + replyDescriptorSize * returned.count
        for (slot, buffer) in returned.enumerated() {
            precondition(buffer.bytes.count <= DMOPABI.maxBufferSize)
            let descriptor = replyHeaderSize + replyDescriptorSize * slot
            out.putLE16(UInt16(buffer.index), at: descriptor)
            out.putLE16(0, at: descriptor + 2)
            out.putLE32(UInt32(buffer.bytes.count), at: descriptor + 4)
            if let base = buffer.bytes.baseAddress, buffer.bytes.count > 0 {
                (out.baseAddress! + cursor).copyMemory(from: base, byteCount: buffer.bytes.count)
            }
            cursor += buffer.bytes.count
        }
        return cursor
    }
}

// MARK: - Client side

extension Wire {
    public static func encodeHello(_ hello: Hello) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(helloSize)
        out.appendLE32(magic); out.appendLE16(MessageType.hello.rawValue); out.appendLE16(0)
        out.appendLE16(hello.minVersion); out.appendLE16(hello.maxVersion); out.appendLE32(hello.dmopABI)
        return out
    }

    /// Encodes a REQUEST. Sizes are not checked here on purpose: tests use
    /// this to build hostile requests; the broker checks.
    public static func encodeRequest(domid: UInt16, requestID: UInt32, buffers: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(requestHeaderSize + 4 * buffers.count + buffers.reduce(0) { $0 + $1.count })
        out.appendLE32(magic); out.appendLE16(MessageType.request.rawValue); out.appendLE16(domid)
        out.appendLE32(requestID); out.appendLE16(UInt16(truncatingIfNeeded: buffers.count)); out.appendLE16(0)
        for buffer in buffers { out.appendLE32(UInt32(truncatingIfNeeded: buffer.count)) }
        for buffer in buffers { out += buffer }
        return out
    }

    /// Decodes what a broker sends, as strictly as the broker decodes
    /// requests: a client must not trust a broker's lengths either.
    public static func decodeBrokerMessage(_ bytes: UnsafeRawBufferPointer) throws(ProtocolViolation) -> BrokerMessage {
        guard bytes.count >= commonHeaderSize else {
            throw ProtocolViolation(.truncated, "\(bytes.count) bytes from the broker")
        }
        guard bytes.le32(at: 0) == magic else { throw ProtocolViolation(.badMagic, "bad magic from the broker") }
        switch MessageType(rawValue: bytes.le16(at: 4)) {
        case .welcome:
            guard bytes.count == welcomeSize else {
                throw ProtocolViolation(.truncated, "WELCOME of \(bytes.count) bytes")
            }
            return .welcome(Welcome(version: bytes.le16(at: 6), dmopABI: bytes.le32(at: 8),
                                    xenVersion: bytes.le32(at: 12), domid: bytes.le16(at: 16),
                                    maxBuffers: bytes.le16(at: 18), maxBufferSize: bytes.le32(at: 20),
                                    allowedOps: bytes.le32(at: 24)))
        case .refused:
            guard bytes.count >= refusedHeaderSize else {
                throw ProtocolViolation(.truncated, "REFUSED of \(bytes.count) bytes")
            }
            let length = Int(bytes.le16(at: 16))
            guard bytes.count == refusedHeaderSize + length else {
                throw ProtocolViolation(.lengthMismatch, "REFUSED text length \(length)")
            }
            return .refused(Refused(
                reason: ReasonCode(rawValue: bytes.le16(at: 6)) ?? .versionUnsupported,
                brokerMinVersion: bytes.le16(at: 8), brokerMaxVersion: bytes.le16(at: 10),
                dmopABI: bytes.le32(at: 12),
                text: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[refusedHeaderSize...]), as: UTF8.self)))
        case .protocolError:
            guard bytes.count >= protocolErrorHeaderSize else {
                throw ProtocolViolation(.truncated, "PROTOCOL_ERROR of \(bytes.count) bytes")
            }
            let length = Int(bytes.le16(at: 12))
            guard bytes.count == protocolErrorHeaderSize + length else {
                throw ProtocolViolation(.lengthMismatch, "PROTOCOL_ERROR text length \(length)")
            }
            return .protocolError(ProtocolErrorMessage(
                reason: ReasonCode(rawValue: bytes.le16(at: 6)) ?? .unknownType,
                requestID: bytes.le32(at: 8),
                text: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[protocolErrorHeaderSize...]),
                             as: UTF8.self)))
        case .reply:
            return .reply(try decodeReply(bytes))
        default:
            throw ProtocolViolation(.unknownType, "type 0x\(String(bytes.le16(at: 4), radix: 16)) from the broker")
        }
    }

    static func decodeReply(_ bytes: UnsafeRawBufferPointer) throws(ProtocolViolation) -> Reply {
        guard bytes.count >= replyHeaderSize else { throw ProtocolViolation(.truncated, "REPLY of \(bytes.count) bytes") }
        guard let origin = Reply.Origin(rawValue: bytes.le16(at: 16)) else {
            throw ProtocolViolation(.reservedNonzero, "REPLY origin \(bytes.le16(at: 16))")
        }
        let rawReason = bytes.le16(at: 18)
        let reason: ReasonCode?
        switch origin {
        case .hypervisor:
            guard rawReason == 0 else { throw ProtocolViolation(.reservedNonzero, "REPLY from hypervisor with reason") }
            reason = nil
        case .broker:
            guard let code = ReasonCode(rawValue: rawReason) else {
                throw ProtocolViolation(.unknownType, "REPLY reason \(rawReason)")
            }
            reason = code
        }
        let count = Int(bytes.le16(at: 20))
        guard count <= maxReturnedBuffers else { throw ProtocolViolation(.tooManyBuffers, "REPLY with \(count) buffers") }
        var cursor = replyHeaderSize + replyDescriptorSize * count
        guard bytes.count >= cursor else { throw ProtocolViolation(.truncated, "REPLY descriptors cut short") }
        var buffers: [(index: Int, bytes: [UInt8])] = []
        for slot in 0..<count {
            let descriptor = replyHeaderSize + replyDescriptorSize * slot
            let size = Int(bytes.le32(at: descriptor + 4))
            guard size <= DMOPABI.maxBufferSize, cursor + size <= bytes.count else {
                throw ProtocolViolation(.lengthMismatch, "REPLY buffer \(slot) of \(size) bytes")
            }
            buffers.append((Int(bytes.le16(at: descriptor)), Array(bytes[cursor..<(cursor + size)])))
            cursor += size
        }
        guard cursor == bytes.count else { throw ProtocolViolation(.lengthMismatch, "REPLY has trailing bytes") }
        return Reply(domid: bytes.le16(at: 6), requestID: bytes.le32(at: 8),
                     result: Int32(bitPattern: bytes.le32(at: 12)), origin: origin, reason: reason, buffers: buffers)
    }
}
