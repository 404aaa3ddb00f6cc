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

    @Test("EINTR is retried while the caller's condition holds, and is the failure once it does not")
    func interruptedCalls() {
        var calls = 0
        let retried = Syscall.valueOrErrno(retryingEINTRWhile: { true }) { () -> Int in
            calls += 1
            if calls < 3 { errno = EINTR; return -1 }
            return 7
        }
        #expect(retried == .success(7) && calls == 3)
        calls = 0
        let signalled = Syscall.valueOrErrno(retryingEINTRWhile: { calls < 2 }) { () -> Int in
            calls += 1
            errno = EINTR
            return -1
        }
        #expect(signalled == .failure(SystemError("", errno: EINTR)) && calls == 2)
    }

    @Test("writeAll counts the bytes that reached the fd, also when a later write fails")
    func writtenCounted() throws {
        var fds: [Int32] = [-1, -1]
        try #require(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        try #require(fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0 && fcntl(fds[1], F_SETFL, O_NONBLOCK) == 0)
        // More than a pipe holds: a write fills it, the next fails with EAGAIN.
        let bytes = [UInt8](repeating: 1, count: 1 << 20)
        var written = 0
        #expect(throws: SystemError("write", errno: EAGAIN)) {
            try bytes.withUnsafeBytes { raw in try Syscall.writeAll(fds[1], raw, written: &written) }
        }
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var inPipe = 0
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
            guard n > 0 else { break }
            inPipe += n
        }
        #expect(written > 0 && written == inPipe)
    }
}
