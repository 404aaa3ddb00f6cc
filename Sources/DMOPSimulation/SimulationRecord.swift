// SPDX-License-Identifier: MIT
import DMOPPosix
import Glibc

/// The `--simulated-record` file: one JSON object per line, one line per DMOP
/// call that reached the simulated hypervisor, in call order:
///
///     {"domid":5,"op":1,"nr_bufs":1,"sizes":[32],"rc":0}
///
/// `op` is buffer 0's `op` field when buffer 0 has at least 4 bytes, else -1;
/// `rc` is 0 or a negative errno. Written with one write(2) per line on an
/// O_APPEND fd, so a reader in another process sees whole lines only.
public enum SimulationRecord {
    public struct Entry: Equatable, Sendable, CustomStringConvertible {
        public let domid: Int
        public let op: Int
        public let nrBufs: Int
        public let sizes: [Int]
        public let rc: Int

        public init(domid: Int, op: Int, nrBufs: Int, sizes: [Int], rc: Int) {
            self.domid = domid
            self.op = op
            self.nrBufs = nrBufs
            self.sizes = sizes
            self.rc = rc
        }

        public var description: String {
            "{\"domid\":\(domid),\"op\":\(op),\"nr_bufs\":\(nrBufs),\"sizes\":[\(sizes.map(String.init).joined(separator: ","))],\"rc\":\(rc)}"
        }
    }

    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public let line: Int
        public let reason: String
        public var description: String { "simulation record line \(line): \(reason)" }
    }

    /// The bytes of one record line, newline included.
    static func line(domid: UInt16, buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>, rc: Int32) -> [UInt8] {
        var op = -1
        if let first = buffers.first, first.count >= MemoryLayout<UInt32>.size {
            // SAFETY: `first` holds at least 4 bytes, checked above.
            op = Int(UInt32(littleEndian: first.loadUnaligned(fromByteOffset: 0, as: UInt32.self)))
        }
        let entry = Entry(domid: Int(domid), op: op, nrBufs: buffers.count, sizes: buffers.map(\.count), rc: Int(rc))
        return Array((entry.description + "\n").utf8)
    }

    /// Reads and parses a whole record file.
    public static func read(path: String) throws -> [Entry] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open \(path)") }
        let file = FileDescriptor(owning: fd)
        let bytes = try Syscall.readAll(file.rawValue, limit: Int.max, what: "read \(path)")
        return try parse(bytes)
    }

    /// Parses record text: every non-empty line must be one entry.
    public static func parse(_ text: [UInt8]) throws(ParseError) -> [Entry] {
        var entries: [Entry] = []
        var lineNumber = 0
        for line in text.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) { continue }
            var parser = LineParser(bytes: Array(line), line: lineNumber)
            entries.append(try parser.entry())
        }
        return entries
    }

    /// Exactly the five keys, each once, in any order; integers and one array
    /// of integers. Nothing else is accepted.
    private struct LineParser {
        let bytes: [UInt8]
        let line: Int
        var index = 0

        mutating func entry() throws(ParseError) -> Entry {
            var fields: [String: Int] = [:]
            var sizes: [Int]?
            try expect("{")
            while true {
                let key = try string()
                try expect(":")
                switch key {
                case "domid", "op", "nr_bufs", "rc":
                    guard fields[key] == nil else { throw fail("duplicate key \(key)") }
                    fields[key] = try integer()
                case "sizes":
                    guard sizes == nil else { throw fail("duplicate key sizes") }
                    sizes = try integerArray()
                default:
                    throw fail("unknown key \(key)")
                }
                if try peek() == UInt8(ascii: ",") { index += 1; continue }
                try expect("}")
                break
            }
            skipSpace()
            guard index == bytes.count else { throw fail("trailing bytes") }
            guard let domid = fields["domid"], let op = fields["op"], let nrBufs = fields["nr_bufs"],
                  let rc = fields["rc"], let sizes else { throw fail("missing key") }
            return Entry(domid: domid, op: op, nrBufs: nrBufs, sizes: sizes, rc: rc)
        }

        func fail(_ reason: String) -> ParseError { ParseError(line: line, reason: reason) }

        mutating func skipSpace() {
            while index < bytes.count, bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\t")
                || bytes[index] == UInt8(ascii: "\r") { index += 1 }
        }

        mutating func peek() throws(ParseError) -> UInt8 {
            skipSpace()
            guard index < bytes.count else { throw fail("unexpected end of line") }
            return bytes[index]
        }

        mutating func expect(_ character: Unicode.Scalar) throws(ParseError) {
            guard try peek() == UInt8(ascii: character) else { throw fail("expected '\(character)' at byte \(index)") }
            index += 1
        }

        mutating func string() throws(ParseError) -> String {
            try expect("\"")
            let start = index
            while index < bytes.count, bytes[index] != UInt8(ascii: "\"") {
                guard bytes[index] >= 0x20, bytes[index] != UInt8(ascii: "\\") else { throw fail("bad key") }
                index += 1
            }
            guard index < bytes.count else { throw fail("unterminated string") }
            let value = String(decoding: bytes[start..<index], as: UTF8.self)
            index += 1
            return value
        }

        mutating func integer() throws(ParseError) -> Int {
            _ = try peek()
            var negative = false
            if bytes[index] == UInt8(ascii: "-") { negative = true; index += 1 }
            var value = 0
            var digits = 0
            while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
                let (times, o1) = value.multipliedReportingOverflow(by: 10)
                let (sum, o2) = times.addingReportingOverflow(Int(bytes[index] - UInt8(ascii: "0")))
                guard !o1, !o2 else { throw fail("integer out of range") }
                value = sum
                digits += 1
                index += 1
            }
            guard digits > 0 else { throw fail("expected an integer at byte \(index)") }
            return negative ? -value : value
        }

        mutating func integerArray() throws(ParseError) -> [Int] {
            try expect("[")
            var values: [Int] = []
            if try peek() == UInt8(ascii: "]") { index += 1; return values }
            while true {
                values.append(try integer())
                if try peek() == UInt8(ascii: ",") { index += 1; continue }
                try expect("]")
                return values
            }
        }
    }
}
