// SPDX-License-Identifier: MIT

/// logfmt as the audit log writes it: `key=value` pairs separated by
/// spaces; a value that is empty or holds a space, `=`, a quote, a
/// backslash or a control character is written in double quotes with `\"`,
/// `\\`, `\n`, `\r`, `\t` and `\u00XX` escapes. Words without `=` (the
/// event's name, "session start:") are keys without a value.
public enum Logfmt {
    /// Whether `value` must be quoted to read back as one value. Inlinable,
    /// as is `quote`, so that callers get code for their own string type:
    /// unspecialized, the first call resolves String's UTF-8 view through
    /// the runtime's conformance tables (about 50 k instructions at start).
    @inlinable
    public static func needsQuoting(_ value: some StringProtocol) -> Bool {
        if value.isEmpty { return true }
        for byte in value.utf8 where byte <= 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "=")
            || byte == UInt8(ascii: "\\") || byte == 0x7f {
            return true
        }
        return false
    }

    /// `value` as it appears after `key=`.
    @inlinable
    public static func quote(_ value: some StringProtocol) -> String {
        guard needsQuoting(value) else { return String(value) }
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7f {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    public struct Pair: Equatable, Sendable {
        public let key: String
        /// nil for a bare word.
        public let value: String?
        public init(_ key: String, _ value: String?) {
            self.key = key
            self.value = value
        }
    }

    public enum ParseError: Error, Equatable {
        case unterminatedQuote(offset: Int)
        case badEscape(offset: Int)
        case quoteInsideValue(offset: Int)
    }

    /// The pairs of one line (no trailing newline), in order. Strict: a
    /// quote that does not close, an unknown escape or a quote in the middle
    /// of an unquoted word is an error, so a test over every line kind
    /// catches a value written without quoting.
    public static func parse(_ line: some StringProtocol) throws(ParseError) -> [Pair] {
        let scalars = Array(line.unicodeScalars)
        var pairs: [Pair] = []
        var i = 0
        func word(stopAtEquals: Bool) throws(ParseError) -> String {
            var text = ""
            while i < scalars.count, scalars[i] != " " {
                if stopAtEquals && scalars[i] == "=" { break }
                if scalars[i] == "\"" { throw .quoteInsideValue(offset: i) }
                text.unicodeScalars.append(scalars[i])
                i += 1
            }
            return text
        }
        while i < scalars.count {
            if scalars[i] == " " { i += 1; continue }
            let key = try word(stopAtEquals: true)
            guard i < scalars.count, scalars[i] == "=" else {
                pairs.append(Pair(key, nil))
                continue
            }
            i += 1
            if i < scalars.count, scalars[i] == "\"" {
                let start = i
                i += 1
                var value = ""
                var closed = false
                while i < scalars.count {
                    let c = scalars[i]
                    if c == "\"" { closed = true; i += 1; break }
                    if c == "\\" {
                        guard i + 1 < scalars.count else { throw .badEscape(offset: i) }
                        switch scalars[i + 1] {
                        case "\"": value += "\""; i += 2
                        case "\\": value += "\\"; i += 2
                        case "n": value += "\n"; i += 2
                        case "r": value += "\r"; i += 2
                        case "t": value += "\t"; i += 2
                        case "u":
                            guard i + 6 <= scalars.count,
                                  let code = UInt32(String(String.UnicodeScalarView(scalars[(i + 2)..<(i + 6)])), radix: 16),
                                  let decoded = Unicode.Scalar(code) else { throw .badEscape(offset: i) }
                            value.unicodeScalars.append(decoded)
                            i += 6
                        default: throw .badEscape(offset: i)
                        }
                        continue
                    }
                    value.unicodeScalars.append(c)
                    i += 1
                }
                guard closed else { throw .unterminatedQuote(offset: start) }
                guard i >= scalars.count || scalars[i] == " " else { throw .quoteInsideValue(offset: i) }
                pairs.append(Pair(key, value))
            } else {
                pairs.append(Pair(key, try word(stopAtEquals: false)))
            }
        }
        return pairs
    }

    /// The value of the first `key=` in `line`, or nil (also for a line that
    /// does not parse).
    public static func value(of key: String, in line: some StringProtocol) -> String? {
        guard let pairs = try? parse(line) else { return nil }
        return pairs.first { $0.key == key }?.value ?? nil
    }
}
