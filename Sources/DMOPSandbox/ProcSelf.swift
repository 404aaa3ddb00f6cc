// SPDX-License-Identifier: MIT
import DMOPPosix
import Glibc

/// Small readers of /proc/self, used before confinement (they open files).
public enum ProcSelf {
    /// The whole of a small file, or nil.
    public static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard let bytes = try? Syscall.readAll(fd, limit: 1 << 24) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The value of `Key:` in a /proc/PID/status text, trimmed. Scanned as
    /// bytes (the text is ASCII): it runs at every start.
    public static func statusField(_ key: String, in status: String) -> String? {
        let text = status.utf8, name = key.utf8
        var start = text.startIndex
        while start < text.endIndex {
            let end = text[start...].firstIndex(of: UInt8(ascii: "\n")) ?? text.endIndex
            let line = text[start..<end]
            if line.starts(with: name), line.dropFirst(name.count).first == UInt8(ascii: ":") {
                let value = line.dropFirst(name.count + 1).drop { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
                return String(Substring(value))
            }
            start = end == text.endIndex ? end : text.index(after: end)
        }
        return nil
    }

    /// A `Vm*:   123 kB` field in bytes.
    public static func memoryField(_ key: String, in status: String) -> UInt64? {
        guard let value = statusField(key, in: status) else { return nil }
        let digits = value.utf8.prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        return UInt64(String(Substring(digits))).map { $0 * 1024 }
    }

    /// The open fds of `/proc/<pid>/fd` (pid nil: this process), not counting
    /// the directory stream's own fd; nil when /proc cannot be read.
    public static func openDescriptors(pid: Int32? = nil) -> [Int32]? {
        let path = pid.map { "/proc/\($0)/fd" } ?? "/proc/self/fd"
        guard let dir = opendir(path) else { return nil }
        let own = dirfd(dir)
        var fds: [Int32] = []
        while let entry = readdir(dir) {
            // SAFETY: a copy of d_name, read within its bytes up to the NUL.
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if let fd = Int32(name), pid != nil || fd != own { fds.append(fd) }
        }
        closedir(dir)
        return fds.sorted()
    }
}
