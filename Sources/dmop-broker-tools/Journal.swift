// SPDX-License-Identifier: MIT
import DMOPPosix
import Glibc

/// journalctl, for the commands that read the broker's journal entries
/// (`policy learn --journal`, `status`).
enum Journal {
    /// The MESSAGE of every entry matching all `matches` (FIELD=VALUE words
    /// the caller builds from numbers and fixed names: they reach a shell),
    /// and journalctl's exit status; nil when it cannot be started.
    static func messages(_ matches: [String]) -> (text: String, status: Int32)? {
        let command = (["journalctl", "--no-pager", "-q", "-o", "cat"] + matches).joined(separator: " ")
        guard let pipe = popen(command, "r") else { return nil }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            // SAFETY: fread writes at most $0.count bytes, inside the
            // closure; n <= chunk.count, so the slice below is in bounds.
            let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, pipe) }
            if n <= 0 { break }
            out += chunk[0..<n]
        }
        let status = pclose(pipe)
        return (String(decoding: out, as: UTF8.self), status)
    }
}
