// SPDX-License-Identifier: MIT
import DMOPTrusted

// The parser of dmop-broker.policy(5). It reads the operator's file, never a
// client's bytes, so it sits outside the trusted core; what it makes of each
// shipped policy is a reviewed file instead (`dmop-broker policy check
// --print`, Tests/golden/policy), so a parser bug shows there.

/// A policy file that does not parse: file, line and column of the first
/// problem, as compilers print them.
public struct PolicyError: Error, Equatable, CustomStringConvertible {
    public let file: String
    public let line: Int
    public let column: Int
    public let message: String

    public var description: String { "\(file):\(line):\(column): \(message)" }
}

extension Policy {
    /// Parses policy text. `file` names it in errors and audit lines.
    ///
    ///     # comment
    ///     allow <op>
    ///     allow <op> if <field> <cmp> <number> [and <field> in <n>,<n>...]
    ///     allow <op> [if ...] rate <n>/s [burst <m>]
    ///     allow <op> [if ...] [rate ...] posted
    public static func parse(_ text: String, file: String) throws(PolicyError) -> Policy {
        var rules: [PolicyRule] = []
        var lineNumber = 0
        // Split on the byte: as Characters, "\r\n" is one grapheme that is not
        // "\n", so a CRLF file would be a single line. Split as an array:
        // the broker parses its policy at every start, and slicing String's
        // UTF-8 view took half of the parse.
        let bytes = Array(text.utf8)
        for rawLine in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            var scanner = LineScanner(line: Array(rawLine), file: file, lineNumber: lineNumber)
            guard let keyword = scanner.word() else {
                try scanner.expectEnd()
                continue
            }
            guard keyword.text == "allow" else {
                throw scanner.error(at: keyword.column, "unknown keyword '\(keyword.text)', expected 'allow'")
            }
            guard let opWord = scanner.word() else {
                throw scanner.error(at: scanner.column, "'allow' needs an op name")
            }
            guard let op = Catalogue.op(named: opWord.text) else {
                throw scanner.error(at: opWord.column, "unknown op '\(opWord.text)'; known ops: "
                                    + Catalogue.ops.map(\.name).joined(separator: ", "))
            }
            if let earlier = rules.first(where: { $0.op == op }) {
                throw scanner.error(at: opWord.column,
                                    "op '\(op.name)' already has a rule at line \(earlier.line); merge the conditions")
            }
            var conditions: [Condition] = []
            var rateLimit: RateLimit?
            var next = scanner.word()
            if let word = next, word.text == "if" {
                repeat {
                    conditions.append(try scanner.condition(for: op))
                    next = scanner.word()
                    guard let joiner = next, joiner.text == "and" else { break }
                } while true
            }
            if let word = next, word.text == "rate" {
                rateLimit = try scanner.rateLimit()
                next = scanner.word()
            }
            var mayPost = false
            if let word = next, word.text == "posted" {
                // A posted request gets no REPLY, so nothing could carry
                // what such an op writes back.
                guard op.replyBuffers.isEmpty else {
                    throw scanner.error(at: word.column, "'\(op.name)' writes results back, so it cannot be posted")
                }
                mayPost = true
                next = scanner.word()
            }
            if let word = next {
                let expected = mayPost ? "nothing"
                    : conditions.isEmpty && rateLimit == nil ? "'if', 'rate', 'posted'"
                    : rateLimit == nil ? "'and', 'rate', 'posted'" : "'posted'"
                throw scanner.error(at: word.column, "expected \(expected) or end of line, found '\(word.text)'")
            }
            try scanner.expectEnd()
            rules.append(PolicyRule(op: op, line: lineNumber, conditions: conditions,
                                    location: "\(file):\(lineNumber)", rateLimit: rateLimit, mayPost: mayPost))
        }
        return Policy(source: file, rules: rules)
    }
}

/// Scans one line; columns are 1-based byte positions.
private struct LineScanner {
    let line: [UInt8]
    let file: String
    let lineNumber: Int
    var index = 0

    var column: Int { index + 1 }

    init(line: [UInt8], file: String, lineNumber: Int) {
        // A trailing CR (a file edited on another system) is whitespace.
        self.line = line.last == UInt8(ascii: "\r") ? Array(line.dropLast()) : line
        self.file = file
        self.lineNumber = lineNumber
    }

    func error(at column: Int, _ message: String) -> PolicyError {
        PolicyError(file: file, line: lineNumber, column: column, message: message)
    }

    private var atComment: Bool { index < line.count && line[index] == UInt8(ascii: "#") }

    mutating func skipSpace() {
        while index < line.count, line[index] == UInt8(ascii: " ") || line[index] == UInt8(ascii: "\t") { index += 1 }
    }

    static func isWordByte(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
            || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "_")
    }

    /// The next identifier-like word, or nil at end of line or a comment.
    mutating func word() -> (text: String, column: Int)? {
        skipSpace()
        guard index < line.count, !atComment, Self.isWordByte(line[index]) else { return nil }
        let start = index
        while index < line.count, Self.isWordByte(line[index]) { index += 1 }
        return (String(decoding: line[start..<index], as: UTF8.self), start + 1)
    }

    mutating func expectEnd() throws(PolicyError) {
        skipSpace()
        guard index == line.count || atComment else {
            let rest = String(decoding: line[index...], as: UTF8.self)
            throw error(at: column, "unexpected '\(rest)'")
        }
    }

    mutating func number(width: Int) throws(PolicyError) -> UInt64 {
        skipSpace()
        let start = index
        guard let word = word() else { throw error(at: start + 1, "expected a number") }
        let text = word.text
        let parsed: UInt64?
        if text.hasPrefix("0x") || text.hasPrefix("0X") {
            parsed = UInt64(text.dropFirst(2), radix: 16)
        } else {
            parsed = UInt64(text, radix: 10)
        }
        guard let value = parsed else { throw error(at: word.column, "'\(text)' is not a number") }
        if width < 8, value >> UInt64(width * 8) != 0 {
            throw error(at: word.column, "\(text) does not fit the field's \(width) bytes")
        }
        return value
    }

    mutating func comparison() -> Condition.Comparison? {
        skipSpace()
        // Longest operators first, so "<=" is not read as "<".
        for candidate in [Condition.Comparison.lessOrEqual, .greaterOrEqual, .equal, .notEqual, .less, .greater] {
            let bytes = Array(candidate.rawValue.utf8)
            if index + bytes.count <= line.count, Array(line[index..<(index + bytes.count)]) == bytes {
                index += bytes.count
                return candidate
            }
        }
        return nil
    }

    /// `<n>/s [burst <m>]`, after the word `rate`.
    mutating func rateLimit() throws(PolicyError) -> RateLimit {
        skipSpace()
        let start = column
        let perSecond = try number(width: 8)
        skipSpace()
        let unit = Array("/s".utf8)
        guard index + unit.count <= line.count, Array(line[index..<(index + unit.count)]) == unit else {
            throw error(at: column, "expected '/s' after the rate")
        }
        index += unit.count
        guard perSecond >= 1, perSecond <= RateLimit.maximum else {
            throw error(at: start, "rate must be 1...\(RateLimit.maximum) per second")
        }
        var burst = perSecond
        let save = index
        if let word = word(), word.text == "burst" {
            let burstColumn = column + 1
            burst = try number(width: 8)
            guard burst >= 1, burst <= RateLimit.maximum else {
                throw error(at: burstColumn, "burst must be 1...\(RateLimit.maximum)")
            }
        } else {
            index = save
        }
        return RateLimit(perSecond: perSecond, burst: burst)
    }

    mutating func condition(for op: OpSpec) throws(PolicyError) -> Condition {
        guard let fieldWord = word() else { throw error(at: column, "expected a field name after 'if'/'and'") }
        guard let field = op.field(named: fieldWord.text) else {
            let names = op.fields.filter { $0.role == .input }.map(\.name)
            throw error(at: fieldWord.column, "op '\(op.name)' has no field '\(fieldWord.text)'; its input fields: "
                        + (names.isEmpty ? "none" : names.joined(separator: ", ")))
        }
        guard field.role == .input else {
            throw error(at: fieldWord.column,
                        "field '\(field.name)' is \(field.role == .output ? "an output" : "padding that must be zero"); only input fields take conditions")
        }
        if let comparison = comparison() {
            return Condition(field: field, test: .compare(comparison, try number(width: field.width)))
        }
        let save = index
        if let keyword = word(), keyword.text == "in" {
            var values = [try number(width: field.width)]
            while true {
                skipSpace()
                guard index < line.count, line[index] == UInt8(ascii: ",") else { break }
                index += 1
                values.append(try number(width: field.width))
            }
            return Condition(field: field, test: .oneOf(values))
        }
        index = save
        skipSpace()
        throw error(at: column, "expected one of == != < <= > >= or 'in' after '\(field.name)'")
    }
}
