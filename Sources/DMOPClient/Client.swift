// SPDX-License-Identifier: MIT
import DMOPCore
import DMOPPosix
import Glibc

/// Why a client call failed before the broker's answer could be used.
public enum ClientError: Error, CustomStringConvertible {
    case system(SystemError)
    /// The broker refused the hello (version or interface skew).
    case refused(Refused)
    /// The broker reported a protocol error and closed.
    case protocolError(ProtocolErrorMessage)
    /// The broker sent something that does not decode.
    case malformed(ProtocolViolation)
    /// The broker closed the connection.
    case brokerClosed
    /// A well-formed message that makes no sense here.
    case unexpected(String)

    public var description: String {
        switch self {
        case .system(let e): "\(e)"
        case .refused(let r): "broker refused the hello: \(r.reason.name): \(r.text) (broker speaks \(r.brokerMinVersion)...\(r.brokerMaxVersion))"
        case .protocolError(let p): "broker protocol error \(p.reason.name): \(p.text)"
        case .malformed(let v): "malformed message from broker: \(v)"
        case .brokerClosed: "broker closed the connection"
        case .unexpected(let text): text
        }
    }
}

/// A DMOP that came back with a non-zero result.
public struct DMOPFailure: Error, Equatable, CustomStringConvertible {
    public let op: String
    public let errno: Int32
    public let refusal: ReasonCode?

    public var description: String {
        if let refusal { return "\(op): refused by the broker (\(refusal.name)), \(Errno.name(errno))" }
        return "\(op): \(Errno.name(errno)) from the hypervisor"
    }
}

/// A session with a broker. Not thread-safe: one caller at a time (the C
/// library serialises QEMU's threads itself).
public final class BrokerClient {
    /// The session's socket; nil once closed or released.
    private var connection: FileDescriptor?
    public let welcome: Welcome
    private var nextRequestID: UInt32 = 1
    private let receiveBuffer: UnsafeMutableRawBufferPointer

    /// Performs the hello on an already connected socket.
    public init(connection: consuming FileDescriptor, hello: Hello = Hello()) throws(ClientError) {
        let fd = connection.rawValue
        self.connection = Optional(connection)
        // SAFETY: freed in deinit, or below when init throws: that is before
        // `welcome` is set, so deinit does not run and nothing frees it twice.
        receiveBuffer = .allocate(byteCount: Wire.maxReplySize + 1, alignment: 16)
        do {
            try SeqPacket.send(fd, Wire.encodeHello(hello))
        } catch {
            receiveBuffer.deallocate()
            throw .system(error)
        }
        let message: BrokerMessage
        do {
            message = try Self.receive(fd, receiveBuffer)
        } catch {
            receiveBuffer.deallocate()
            throw error
        }
        switch message {
        case .welcome(let welcome):
            self.welcome = welcome
        case .refused(let refused):
            receiveBuffer.deallocate()
            throw .refused(refused)
        case .protocolError(let error):
            receiveBuffer.deallocate()
            throw .protocolError(error)
        case .reply:
            receiveBuffer.deallocate()
            throw .unexpected("REPLY before WELCOME")
        }
    }

    // SAFETY: init completed, so it kept the buffer; freed once here.
    deinit { receiveBuffer.deallocate() }

    public static func connect(path: String, hello: Hello = Hello()) throws(ClientError) -> BrokerClient {
        let fd: FileDescriptor
        do { fd = try SeqPacket.connect(path: path) } catch { throw .system(error) }
        return try BrokerClient(connection: fd, hello: hello)
    }

    /// The broker's domain.
    public var domid: UInt16 { welcome.domid }

    /// The session socket's descriptor; -1 once closed or released.
    public var fd: Int32 { connection.rawValue }

    /// Hangs up now, rather than when the client goes away.
    public func close() { connection = nil }

    private static func receive(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer) throws(ClientError) -> BrokerMessage {
        let received: SeqPacket.Received
        do {
            received = try SeqPacket.receiveRetryingEINTR(fd, into: buffer)
        } catch {
            if error.errno == ECONNRESET { throw .brokerClosed }
            throw .system(error)
        }
        switch received {
        case .hangUp: throw .brokerClosed
        case .truncated: throw .malformed(ProtocolViolation(.oversized, "reply over \(Wire.maxReplySize) bytes"))
        case .fdsAttached: throw .malformed(ProtocolViolation(.fdsAttached, "broker sent fds"))
        case .datagram(let n):
            do {
                // SAFETY: n <= buffer.count (a larger datagram is .truncated); the
                // message copies what it keeps.
                return try Wire.decodeBrokerMessage(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            } catch {
                throw .malformed(error)
            }
        }
    }

    // MARK: Raw requests (pipelining allowed)

    /// Sends a REQUEST and returns its id; the reply comes from nextReply().
    @discardableResult
    public func send(domid: UInt16? = nil, buffers: [[UInt8]], posted: Bool = false) throws(ClientError) -> UInt32 {
        let id = nextRequestID
        nextRequestID &+= 1
        do {
            try SeqPacket.send(fd,
                               Wire.encodeRequest(domid: domid ?? welcome.domid, requestID: id, buffers: buffers,
                                                  flags: posted ? Wire.requestFlagPosted : 0))
        } catch {
            throw .system(error)
        }
        return id
    }

    /// Sends a posted REQUEST (protocol version 2): no REPLY comes for it;
    /// if it fails, the next synchronous reply carries the failure.
    @discardableResult
    public func post(domid: UInt16? = nil, buffers: [[UInt8]]) throws(ClientError) -> UInt32 {
        try send(domid: domid, buffers: buffers, posted: true)
    }

    /// Sends raw bytes as one datagram (tests use this for hostile input).
    public func sendRaw(_ bytes: [UInt8]) throws(ClientError) {
        do { try SeqPacket.send(fd, bytes) } catch { throw .system(error) }
    }

    public func nextMessage() throws(ClientError) -> BrokerMessage {
        try Self.receive(fd, receiveBuffer)
    }

    public func nextReply() throws(ClientError) -> Reply {
        switch try nextMessage() {
        case .reply(let reply): return reply
        case .protocolError(let error): throw .protocolError(error)
        case .refused(let refused): throw .refused(refused)
        case .welcome: throw .unexpected("WELCOME in the middle of a session")
        }
    }

    /// One request, one reply.
    public func call(domid: UInt16? = nil, buffers: [[UInt8]]) throws(ClientError) -> Reply {
        let id = try send(domid: domid, buffers: buffers)
        let reply = try nextReply()
        guard reply.requestID == id else {
            throw .unexpected("reply for request \(reply.requestID), expected \(id)")
        }
        return reply
    }

    // MARK: Ops by name

    /// Builds buffer 0 of `opName` from named fields (and buffer 1 when
    /// given), sends it, and returns the reply whatever its result.
    public func invoke(_ opName: String, _ fields: [String: UInt64] = [:], extra: [UInt8]? = nil,
                       domid: UInt16? = nil) throws(ClientError) -> Reply {
        guard let op = Catalogue.op(named: opName) else { throw .unexpected("unknown op \(opName)") }
        var buffers = [op.encodeHeader(fields)]
        if let extra { buffers.append(extra) }
        return try call(domid: domid, buffers: buffers)
    }

    /// Like invoke, but a non-zero result is thrown as DMOPFailure; returns
    /// the written-back buffer 0 (or the sent one when nothing came back).
    public func perform(_ opName: String, _ fields: [String: UInt64] = [:], extra: [UInt8]? = nil) throws -> Reply {
        let reply = try invoke(opName, fields, extra: extra)
        guard reply.result == 0 else {
            throw DMOPFailure(op: opName, errno: -reply.result, refusal: reply.reason)
        }
        return reply
    }

    // MARK: Typed helpers for what QEMU does

    public func createIoreqServer(handleBufioreq: UInt8 = 0) throws -> UInt16 {
        let reply = try perform("create_ioreq_server", ["handle_bufioreq": UInt64(handleBufioreq)])
        return UInt16(truncatingIfNeeded: try output(reply, "create_ioreq_server", "id"))
    }

    public func ioreqServerInfo(id: UInt16, gfns: Bool = true) throws -> (ioreqGfn: UInt64, bufioreqGfn: UInt64, bufioreqPort: UInt32) {
        let reply = try perform("get_ioreq_server_info", ["id": UInt64(id), "flags": gfns ? 0 : 1])
        return (try output(reply, "get_ioreq_server_info", "ioreq_gfn"),
                try output(reply, "get_ioreq_server_info", "bufioreq_gfn"),
                UInt32(truncatingIfNeeded: try output(reply, "get_ioreq_server_info", "bufioreq_port")))
    }

    public func nrVcpus() throws -> UInt32 {
        UInt32(truncatingIfNeeded: try output(try perform("nr_vcpus"), "nr_vcpus", "vcpus"))
    }

    public func trackDirtyVram(firstPfn: UInt64, pages: UInt32) throws -> [UInt8] {
        let reply = try perform("track_dirty_vram", ["first_pfn": firstPfn, "nr": UInt64(pages)],
                                extra: [UInt8](repeating: 0, count: Int((pages + 7) / 8)))
        guard let bitmap = reply.buffer(1) else { throw ClientError.unexpected("track_dirty_vram: no bitmap returned") }
        return bitmap
    }

    private func output(_ reply: Reply, _ opName: String, _ field: String) throws -> UInt64 {
        guard let header = reply.buffer(0), let op = Catalogue.op(named: opName),
              let value = op.read(field, from: header) else {
            throw ClientError.unexpected("\(opName): buffer 0 was not written back")
        }
        return value
    }
}
