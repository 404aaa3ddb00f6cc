// SPDX-License-Identifier: MIT
import Foundation
import Testing

/// Finds the unsafe constructs of a Swift source text that no `// SAFETY:`
/// comment explains.
///
/// An unsafe construct is an operation, never a type name in a signature (a
/// parameter of type `UnsafeRawBufferPointer` is not one). It is any of, in
/// code (not in comments or string literals):
/// - a call of `withUnsafe...` (withUnsafeBytes, withUnsafeMutablePointer,
///   withUnsafeBufferPointer, withUnsafeTemporaryAllocation...), of their
///   String and collection kin `withUTF8`, `withCString`,
///   `withContiguous(Mutable)StorageIfAvailable`, or of `withMemoryRebound`,
///   `assumingMemoryBound`, `bindMemory`;
/// - an `Unsafe(Mutable)(Raw)(Buffer)Pointer(...)` initialiser;
/// - `unsafeBitCast`, `unsafeDowncast`, `Unmanaged`;
/// - `.allocate(`, `.deallocate(`, `.initialize(`, `.deinitialize(`, and
///   the raw memory operations `initializeMemory`, `initializeElement`,
///   `moveInitialize...`, `copyMemory`, `storeBytes`, `loadUnaligned`,
///   `load(fromByteOffset:` / `load(as:`;
/// - `unsafeUninitializedCapacity`, `unsafeAddress`, `unsafeMutableAddress`;
/// - `nonisolated(unsafe)` and `@unchecked Sendable`.
///
/// Where the comment goes: a comment whose text starts with `SAFETY:`
/// followed by an explanation (`// SAFETY: the buffer outlives the call`)
/// covers the constructs on its own line and on the lines after it, up to
/// the first blank line or the first line indented less than the comment's
/// line (the end of the enclosing block). So it may sit at the end of the
/// construct's line, directly above its statement, or above a group of
/// statements that belong together.
///
/// Not seen, by design: subscripts and pointer arithmetic on unsafe pointers
/// and `&value` arguments to C functions (the compiler-managed inout-to-pointer
/// conversion, valid for the call); such code lives beside the constructs
/// above, whose comment covers it. Code inside string interpolations is read
/// as part of the string.
enum SafetyCommentScanner {
    struct Finding: Equatable, CustomStringConvertible {
        /// 1-based.
        let line: Int
        /// The construct, as the pattern matched it.
        let construct: String
        var description: String { "line \(line): \(construct)" }
    }

    /// The constructs' patterns, matched against a line's code.
    static let patterns: [String] = [
        #"\bwithUnsafe\w+"#,
        #"\b(withUTF8|withCString|withContiguous\w*StorageIfAvailable)\b"#,
        #"\b(withMemoryRebound|assumingMemoryBound|bindMemory)\b"#,
        #"\bUnsafe(Mutable)?(Raw)?(Buffer)?Pointer(<[^()]*>)?\s*\("#,
        #"\b(unsafeBitCast|unsafeDowncast|Unmanaged)\b"#,
        #"\.(allocate|deallocate|initialize|deinitialize)\s*\("#,
        #"\b(initializeMemory|initializeElement|moveInitialize\w*|copyMemory|storeBytes|loadUnaligned)\s*\("#,
        #"\bload\s*\(\s*(fromByteOffset|as)\s*:"#,
        #"\b(unsafeUninitializedCapacity|unsafeAddress|unsafeMutableAddress)\b"#,
        #"\bnonisolated\s*\(\s*unsafe\s*\)"#,
        #"@unchecked\s+Sendable\b"#,
    ]

    /// One source line split into its code (string literal contents and
    /// comments blanked out) and the text of its comments.
    struct Line {
        var code = ""
        var comment = ""
        let indentation: Int
        let isBlank: Bool
    }

    /// Splits `source` into lines, tracking block comments (nested, as Swift
    /// allows) and string literals (plain, raw `#"..."#` and multi-line)
    /// across lines. Interpolations count as string contents.
    static func lex(_ source: String) -> [Line] {
        var lines: [Line] = []
        var commentDepth = 0
        // The closing delimiter of the string literal being read, if any.
        var stringEnd: [Character]? = nil
        for raw in source.split(separator: "\n", omittingEmptySubsequences: false) {
            let text = Array(raw)
            let indentation = text.prefix { $0 == " " || $0 == "\t" }.count
            var line = Line(indentation: indentation, isBlank: indentation == text.count)
            var i = 0
            func starts(_ s: String, at index: Int) -> Bool {
                var k = index
                for c in s {
                    guard k < text.count, text[k] == c else { return false }
                    k += 1
                }
                return true
            }
            while i < text.count {
                if commentDepth > 0 {
                    if starts("*/", at: i) { commentDepth -= 1; i += 2; continue }
                    if starts("/*", at: i) { commentDepth += 1; i += 2; continue }
                    line.comment.append(text[i]); i += 1; continue
                }
                if let end = stringEnd {
                    // Escapes (and interpolations' openings) in plain strings; a
                    // raw string's delimiter cannot be escaped.
                    if text[i] == "\\" && end.last != "#" { i += 2; continue }
                    if starts(String(end), at: i) { line.code += String(end); i += end.count; stringEnd = nil; continue }
                    i += 1; continue
                }
                if starts("//", at: i) { line.comment += String(text[i...]); break }
                if starts("/*", at: i) { commentDepth = 1; i += 2; continue }
                var hashes = 0
                while i + hashes < text.count && text[i + hashes] == "#" { hashes += 1 }
                if i + hashes < text.count && text[i + hashes] == "\"" {
                    let hashText = pad(hashes)
                    let quotes = starts("\"\"\"", at: i + hashes) ? "\"\"\"" : "\""
                    line.code += hashText + quotes
                    stringEnd = Array(quotes + hashText)
                    i += hashes + quotes.count
                    continue
                }
                if hashes > 0 { line.code += pad(hashes); i += hashes; continue }
                line.code.append(text[i]); i += 1
            }
            // A plain string literal ends with its line; only """ spans lines.
            if let end = stringEnd, !end.starts(with: Array("\"\"\"")) { stringEnd = nil }
            lines.append(line)
        }
        return lines
    }

    private static func pad(_ count: Int) -> String { String(repeating: "#", count: count) }

    /// Whether a comment's text is a SAFETY comment with an explanation.
    static func isSafetyComment(_ comment: String) -> Bool {
        let text = comment.drop { $0 == "/" || $0 == "*" || $0 == " " || $0 == "\t" }
        guard text.hasPrefix("SAFETY:") else { return false }
        return text.dropFirst("SAFETY:".count).contains { !$0.isWhitespace }
    }

    /// The unsafe constructs of `source` that no SAFETY comment covers.
    static func uncovered(in source: String) -> [Finding] {
        // Simple word boundaries: Unicode's keep "bytes.withUnsafeBytes" one word.
        let constructs = patterns.map { try! Regex($0).wordBoundaryKind(.simple) }
        var findings: [Finding] = []
        // The indentation of the line whose SAFETY comment covers the
        // current run of lines, nil outside any.
        var covering: Int? = nil
        for (index, line) in lex(source).enumerated() {
            if line.isBlank { covering = nil; continue }
            if let indentation = covering, line.indentation < indentation { covering = nil }
            if isSafetyComment(line.comment) { covering = min(covering ?? line.indentation, line.indentation) }
            guard covering == nil, line.code.contains(where: { !$0.isWhitespace }) else { continue }
            for pattern in constructs {
                if let match = line.code.firstMatch(of: pattern) {
                    findings.append(Finding(line: index + 1, construct: String(line.code[match.range])))
                    break
                }
            }
        }
        return findings
    }
}

@Suite("// SAFETY: on every unsafe construct")
struct SafetyCommentTests {
    /// Every Swift file under Sources/, relative to the package root, sorted.
    static func sourceFiles() throws -> [String] {
        let root = TestSupport.packageRoot
        let sources = root.appendingPathComponent("Sources")
        guard let enumerator = FileManager.default.enumerator(atPath: sources.path) else { return [] }
        return enumerator.compactMap { $0 as? String }.filter { $0.hasSuffix(".swift") }.map { "Sources/\($0)" }.sorted()
    }

    @Test("every unsafe construct under Sources/ has a SAFETY comment")
    func sourcesAnnotated() throws {
        let files = try Self.sourceFiles()
        #expect(files.count > 50, "found only \(files.count) Swift files under Sources/")
        var missing: [String] = []
        var checked = 0
        for path in files {
            let text = try String(contentsOfFile: TestSupport.packageRoot.appendingPathComponent(path).path, encoding: .utf8)
            checked += 1
            missing += SafetyCommentScanner.uncovered(in: text).map { "\(path):\($0.line): \($0.construct)" }
        }
        #expect(checked > 40, "checked only \(checked) files")
        #expect(missing.isEmpty, """
            \(missing.count) unsafe construct(s) without a '// SAFETY:' comment saying why it is sound \
            (lifetime, bounds, alignment, initialisation). Put it on the line, or directly above the \
            statement with no blank line between:
            \(missing.joined(separator: "\n"))
            """)
    }

    @Test("the scanner finds each kind of construct when no comment explains it")
    func findsUncommented() {
        let examples = [
            "let n = bytes.withUnsafeBytes { $0.count }",
            "line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }",
            "withUnsafeTemporaryAllocation(of: Int.self, capacity: 4) { _ in }",
            "let p = UnsafeRawBufferPointer(start: base, count: 4)",
            "let q = UnsafeMutablePointer<UInt8>(mutating: p)",
            "let c = raw.assumingMemoryBound(to: CChar.self)",
            "raw.bindMemory(to: UInt8.self, capacity: 1)",
            "views.withMemoryRebound(to: Int.self) { _ in }",
            "let f = unsafeBitCast(address, to: Function.self)",
            "let box = Unmanaged.passRetained(object)",
            "let block = UnsafeMutableRawPointer.allocate(byteCount: 2, alignment: 1)",
            "storage = .allocate(capacity: 1)",
            "block.deallocate()",
            "storage.initialize(to: value)",
            "storage.deinitialize(count: 1)",
            "out.copyMemory(from: base, byteCount: 4)",
            "storeBytes(of: value, toByteOffset: 0, as: UInt16.self)",
            "let v = raw.load(fromByteOffset: 2, as: UInt8.self)",
            "let a = Array<UInt8>(unsafeUninitializedCapacity: 4) { _, n in n = 0 }",
            "nonisolated(unsafe) var flag = false",
            "final class Box: @unchecked Sendable {}",
        ]
        for example in examples {
            #expect(SafetyCommentScanner.uncovered(in: example).map(\.line) == [1], "not found: \(example)")
        }
        // Found on its own line of a longer text, after a comment that is
        // not a SAFETY one, and after a SAFETY comment that a blank line or
        // the end of its block separates from it.
        let text = """
            func f(_ raw: UnsafeRawBufferPointer) -> Int {
                // Reads the first byte.
                let a = raw.load(as: UInt8.self)
                if a > 0 {
                    // SAFETY: raw holds at least one byte, checked above.
                    let b = raw.load(fromByteOffset: 0, as: UInt8.self)
                }
                let c = raw.load(fromByteOffset: 0, as: UInt8.self)
                // SAFETY: the same byte again.

                let d = raw.load(fromByteOffset: 0, as: UInt8.self)
                //SAFETY:
                let e = raw.load(fromByteOffset: 0, as: UInt8.self)
            }
            """
        #expect(SafetyCommentScanner.uncovered(in: text).map(\.line) == [3, 8, 11, 13])
    }

    @Test("the scanner accepts a SAFETY comment on the line, above, or over a group, and ignores signatures, comments and strings")
    func acceptsCommented() {
        let text = #"""
            func f(_ raw: UnsafeRawBufferPointer, out: UnsafeMutableRawBufferPointer) -> Int {
                let a = raw.load(as: UInt8.self)  // SAFETY: raw is non-empty (guarded by the caller).
                // SAFETY: out has 2 bytes, and raw outlives
                // the copy into it.
                out.copyMemory(from: raw)
                let views: [UnsafeRawBufferPointer] = []
                // SAFETY: the pointer is used only inside the closure.
                return views.withUnsafeBufferPointer { list in
                    list.withMemoryRebound(to: UnsafeMutableRawBufferPointer.self) { rebound in
                        UnsafeRawBufferPointer(rebound[0]).count
                    }
                }
            }
            // Calls withUnsafeBytes and UnsafeRawPointer(x) nowhere: a comment.
            /* Nor here: storage.deallocate()
               nor here: nonisolated(unsafe) */
            let message = "withUnsafeBytes(of:) in a string, and #\"raw\"# too"
            let raw = #"Unmanaged.passRetained(x) in "a raw" string"#
            let long = """
                UnsafeRawBufferPointer(start: nil, count: 0) in a multi-line string
                """
            """#
        #expect(SafetyCommentScanner.uncovered(in: text) == [])
    }
}
