// SPDX-License-Identifier: MIT
import DMOPPosix
import Glibc

public enum Files {
    /// Reads a whole (small) file. Policies are a few KiB; anything over
    /// `limit` is refused rather than read.
    public static func read(_ path: String, limit: Int = 1 << 20) throws(SystemError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open \(path)") }
        defer { close(fd) }
        return try Syscall.readAll(fd, limit: limit, what: "read \(path)")
    }

    /// Writes all of `bytes` to `fd`, retrying short writes and EINTR.
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws(SystemError) {
        // SAFETY: the view lives for the writes, which copy the bytes.
        let failure: SystemError? = bytes.withUnsafeBytes { raw in
            do throws(SystemError) { try Syscall.writeAll(fd, raw) } catch { return error }
            return nil
        }
        if let failure { throw failure }
    }

    /// mkdtemp(3): a new directory of mode 0700 named from `template`,
    /// which ends in XXXXXX.
    public static func makeTemporaryDirectory(_ template: String) throws(SystemError) -> String {
        var bytes = Array(template.utf8CString)
        // SAFETY: a NUL-terminated template (utf8CString, never empty);
        // mkdtemp rewrites it in place, and the name is copied out before
        // the closure that lends the storage ends.
        let made = bytes.withUnsafeMutableBufferPointer { buffer in
            buffer.baseAddress.flatMap { mkdtemp($0) }.map { String(cString: $0) }
        }
        guard let made else { throw SystemError("mkdtemp \(template)") }
        return made
    }

    /// A directory stands for the (non-hidden) files in it, sorted; any other
    /// path for itself. For tools that take "FILE|DIR" arguments.
    public static func expandDirectory(_ path: String) -> [String] {
        var info = stat()
        guard stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR, let directory = opendir(path) else { return [path] }
        defer { closedir(directory) }
        var files: [String] = []
        while let entry = readdir(directory) {
            // SAFETY: a copy of d_name, read within its bytes up to the NUL.
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name.hasPrefix(".") { continue }
            files.append(path + "/" + name)
        }
        return files.sorted()
    }

    /// Path of the running executable.
    public static func selfExecutable() -> String? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        // SAFETY: CChar and UInt8 may alias (same size, signedness only differs);
        // readlink writes at most count - 1 bytes, into the buffer it is given.
        let n = buffer.withUnsafeMutableBytes { readlink("/proc/self/exe", $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count - 1) }
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n], as: UTF8.self)
    }
}

extension String {
    /// Every occurrence of `target` replaced (Foundation's
    /// replacingOccurrences, without linking Foundation).
    public func replacingAll(_ target: String, with replacement: String) -> String {
        var out = ""
        var rest = self[...]
        while let range = rest.firstRange(of: target) {
            out += rest[..<range.lowerBound] + replacement
            rest = rest[range.upperBound...]
        }
        return out + rest
    }
}
