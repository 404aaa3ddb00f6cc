// SPDX-License-Identifier: MIT
import DMOPCore

/// The client's half of protocols 1 and 2 (dmop-broker-protocol(7)): what a
/// client sends and how it reads what the broker answers.
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

/// REPLY as a client sees it.
public struct Reply: Equatable, Sendable {
    public typealias Origin = ReplyOrigin
    public var domid: UInt16
    public var requestID: UInt32
    /// 0 or a negative errno.
    public var result: Int32
    public var origin: Origin
    /// Set when origin is .broker.
    public var reason: ReasonCode?
    /// Buffers the op wrote back, by request buffer index.
    public var buffers: [(index: Int, bytes: [UInt8])]
    /// Version 2: a posted request failed since the last synchronous REPLY.
    public var postedFailure: PostedFailure? = nil

    public static func == (lhs: Reply, rhs: Reply) -> Bool {
        lhs.domid == rhs.domid && lhs.requestID == rhs.requestID && lhs.result == rhs.result
            && lhs.origin == rhs.origin && lhs.reason == rhs.reason && lhs.postedFailure == rhs.postedFailure
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
    public static func encodeRequest(domid: UInt16, requestID: UInt32, buffers: [[UInt8]], flags: UInt16 = 0) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(requestHeaderSize + 4 * buffers.count + buffers.reduce(0) { $0 + $1.count })
        out.appendLE32(magic); out.appendLE16(MessageType.request.rawValue); out.appendLE16(domid)
        out.appendLE32(requestID); out.appendLE16(UInt16(truncatingIfNeeded: buffers.count)); out.appendLE16(flags)
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
                                    allowedOps: bytes.le32(at: 24), postedOps: bytes.le32(at: 28)))
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
                // SAFETY: bytes.count >= refusedHeaderSize, checked above; String copies.
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
                // SAFETY: bytes.count >= protocolErrorHeaderSize, checked above; String copies.
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
            throw ProtocolViolation(.headerReservedNonzero, "REPLY origin \(bytes.le16(at: 16))")
        }
        let rawReason = bytes.le16(at: 18)
        let reason: ReasonCode?
        switch origin {
        case .hypervisor:
            guard rawReason == 0 else { throw ProtocolViolation(.headerReservedNonzero, "REPLY from hypervisor with reason") }
            reason = nil
        case .broker:
            guard let code = ReasonCode(rawValue: rawReason) else {
                throw ProtocolViolation(.unknownType, "REPLY reason \(rawReason)")
            }
            reason = code
        }
        let count = Int(bytes.le16(at: 20))
        guard count <= maxReturnedBuffers else { throw ProtocolViolation(.tooManyBuffers, "REPLY with \(count) buffers") }
        let flags = bytes.le16(at: 22)
        guard flags & ~replyFlagPostedFailure == 0 else { throw ProtocolViolation(.headerReservedNonzero, "REPLY flags \(flags)") }
        let end = bytes.count - (flags & replyFlagPostedFailure != 0 ? postedFailureSize : 0)
        var cursor = replyHeaderSize + replyDescriptorSize * count
        guard end >= cursor else { throw ProtocolViolation(.truncated, "REPLY descriptors cut short") }
        var buffers: [(index: Int, bytes: [UInt8])] = []
        for slot in 0..<count {
            let descriptor = replyHeaderSize + replyDescriptorSize * slot
            let size = Int(bytes.le32(at: descriptor + 4))
            guard size <= DMOPABI.maxBufferSize, cursor + size <= end else {
                throw ProtocolViolation(.lengthMismatch, "REPLY buffer \(slot) of \(size) bytes")
            }
            buffers.append((Int(bytes.le16(at: descriptor)), Array(bytes[cursor..<(cursor + size)])))
            cursor += size
        }
        guard cursor == end else { throw ProtocolViolation(.lengthMismatch, "REPLY has trailing bytes") }
        var postedFailure: PostedFailure?
        if flags & replyFlagPostedFailure != 0 {
            guard let failureOrigin = Reply.Origin(rawValue: bytes.le16(at: end + 12)) else {
                throw ProtocolViolation(.headerReservedNonzero, "posted failure origin \(bytes.le16(at: end + 12))")
            }
            let failureReason = ReasonCode(rawValue: bytes.le16(at: end + 14))
            guard (failureOrigin == .broker) == (failureReason != nil) else {
                throw ProtocolViolation(.headerReservedNonzero, "posted failure reason \(bytes.le16(at: end + 14))")
            }
            postedFailure = PostedFailure(requestID: bytes.le32(at: end), op: bytes.le32(at: end + 4),
                                          result: Int32(bitPattern: bytes.le32(at: end + 8)), origin: failureOrigin,
                                          reason: failureReason, laterFailures: bytes.le32(at: end + 16))
        }
        return Reply(domid: bytes.le16(at: 6), requestID: bytes.le32(at: 8),
                     result: Int32(bitPattern: bytes.le32(at: 12)), origin: origin, reason: reason, buffers: buffers,
                     postedFailure: postedFailure)
    }
}
