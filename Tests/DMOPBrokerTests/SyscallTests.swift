// SPDX-License-Identifier: MIT
import DMOPPosix
import Glibc
import Testing

@Suite("Syscall: one place for EINTR retries and errno")
struct SyscallTests {
    @Test("a failing call gives the errno read right after it")
    func errnoCaptured() {
        #expect(throws: SystemError("close", errno: EBADF)) { _ = try Syscall.retrying("close", { close(-1) }) }
        guard case .failure(let error) = Syscall.valueOrErrno({ dup(-1) }) else { Issue.record("dup(-1) succeeded"); return }
        #expect(error.errno == EBADF)
    }

    @Test("writeAll and readAll move every byte; readAll refuses more than its limit")
    func wholeTransfers() throws {
        var fds: [Int32] = [-1, -1]
        try #require(pipe(&fds) == 0)
        let bytes = (0..<3000).map { UInt8(truncatingIfNeeded: $0) }
        try bytes.withUnsafeBytes { raw in try Syscall.writeAll(fds[1], raw) }
        close(fds[1])
        #expect(try Syscall.readAll(fds[0], limit: 1 << 20) == bytes)
        close(fds[0])
        try #require(pipe(&fds) == 0)
        try bytes.withUnsafeBytes { raw in try Syscall.writeAll(fds[1], raw) }
        close(fds[1])
        #expect(throws: SystemError("read (over 100 bytes)", errno: EFBIG)) { _ = try Syscall.readAll(fds[0], limit: 100) }
        close(fds[0])
    }
}
