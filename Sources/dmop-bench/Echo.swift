// SPDX-License-Identifier: MIT
import CPosix
import DMOPCore
import Glibc

/// The floor: `dmop-bench echo-server --fd N --reply-size M` answers every
/// datagram on fd N with M bytes, through the same recvmsg/sendmsg helpers
/// the broker's loop uses (cposix_recv_datagram with its control buffer,
/// cposix_send_datagram with MSG_NOSIGNAL), and with no broker logic. It
/// runs until the peer hangs up.
enum EchoMode {
    static func run(_ arguments: ArraySlice<String>) -> Never {
        var fd: Int32?
        var replySize: Int?
        var rest = arguments
        while let flag = rest.popFirst() {
            guard let value = rest.popFirst() else { fail("echo-server: \(flag) needs a value") }
            switch flag {
            case "--fd": fd = Int32(value)
            case "--reply-size": replySize = Int(value)
            default: fail("echo-server: unknown option \(flag)")
            }
        }
        guard let fd, fd >= 0 else { fail("echo-server: --fd N is required") }
        guard let replySize, replySize > 0, replySize <= Wire.maxRequestSize else {
            fail("echo-server: --reply-size must be 1...\(Wire.maxRequestSize)")
        }
        // One buffer as large as the broker's; the reply is its first
        // replySize bytes (the request's own bytes, then zeros).
        // SAFETY: zeroed below, received into within its count, never freed:
        // the server runs until the process exits.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Wire.maxRequestSize, alignment: 16)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        while true {
            var truncated: Int32 = 0
            var fds: Int32 = 0
            let n = cposix_recv_datagram(fd, buffer.baseAddress, buffer.count, &truncated, &fds)
            if n < 0 {
                if errno == EINTR { continue }
                if errno == ECONNRESET { exit(0) }
                fail("echo-server: recvmsg: \(String(cString: strerror(errno)))")
            }
            if n == 0 { exit(0) }
            guard truncated == 0, fds == 0 else { fail("echo-server: unexpected datagram (truncated or with fds)") }
            let sent = cposix_send_datagram(fd, buffer.baseAddress, replySize, -1)
            if sent < 0 {
                if errno == EPIPE || errno == ECONNRESET { exit(0) }
                fail("echo-server: sendmsg: \(String(cString: strerror(errno)))")
            }
        }
    }
}
