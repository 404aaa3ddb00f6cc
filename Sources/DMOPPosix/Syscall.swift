// SPDX-License-Identifier: MIT
import Glibc

/// The one place that retries EINTR and reads errno right after the call
/// that failed (as swift-system's valueOrErrno and NIO's syscall()). Calls
/// that must return on a signal the broker acts on (SIGTERM, SIGHUP,
/// SIGUSR1) say so with `retryingEINTRWhile`; only the broker's waits
/// (ppoll), which act on the signal themselves, handle EINTR where they are.
public enum Syscall {
    /// Runs `call` again while it fails with EINTR: its result when >= 0,
    /// else the errno of the failure.
    @inline(__always)
    public static func valueOrErrno<T: SignedInteger>(_ call: () -> T) -> Result<T, SystemError> {
        valueOrErrno(retryingEINTRWhile: { true }, call)
    }

    /// As `valueOrErrno`, but an EINTR is retried only while `retry()` is
    /// true; otherwise it is the failure, so the caller sees the signal.
    @inline(__always)
    public static func valueOrErrno<T: SignedInteger>(retryingEINTRWhile retry: () -> Bool,
                                                      _ call: () -> T) -> Result<T, SystemError> {
        while true {
            let result = call()
            if result >= 0 { return .success(result) }
            let error = errno
            if error != EINTR || !retry() { return .failure(SystemError("", errno: error)) }
        }
    }

    /// As `valueOrErrno`, throwing a SystemError that names `what`.
    @inline(__always)
    public static func retrying<T: SignedInteger>(_ what: @autoclosure () -> String,
                                                  _ call: () -> T) throws(SystemError) -> T {
        switch valueOrErrno(call) {
        case .success(let value): return value
        case .failure(let error): throw SystemError(what(), errno: error.errno)
        }
    }

    /// Writes all of `bytes` to `fd`, retrying EINTR and short writes.
    /// A write that makes no progress fails with EIO.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, what: @autoclosure () -> String = "write")
        throws(SystemError) {
        var written = 0
        try writeAll(fd, bytes, what: what(), written: &written)
    }

    /// As `writeAll`, counting in `written` the bytes that reached the file,
    /// also when a later write fails.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, what: @autoclosure () -> String = "write",
                                written: inout Int) throws(SystemError) {
        guard let base = bytes.baseAddress else { return }
        var offset = 0
        while offset < bytes.count {
            let n = try retrying(what(), { write(fd, base + offset, bytes.count - offset) })
            guard n > 0 else { throw SystemError(what(), errno: EIO) }
            offset += n
            written += n
        }
    }

    /// Reads `fd` to its end, retrying EINTR; more than `limit` bytes is
    /// EFBIG rather than read on.
    public static func readAll(_ fd: Int32, limit: Int, what: @autoclosure () -> String = "read")
        throws(SystemError) -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            // SAFETY: read writes at most chunk.count bytes, into the chunk it is given.
            let n = try retrying(what(), { chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) } })
            if n == 0 { return result }
            result += chunk[0..<n]
            if result.count > limit { throw SystemError("\(what()) (over \(limit) bytes)", errno: EFBIG) }
        }
    }
}
