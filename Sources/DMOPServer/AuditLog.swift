// SPDX-License-Identifier: MIT
import CPosix
import DMOPCore
import DMOPPosix
import Glibc
import Logging

/// A swift-log handler that hands each event to an AuditLineWriter: the
/// same builder and channel as the request path's lines, one write per
/// line, no stdio buffering to lose at exit, no time-zone file to read
/// (timestamps are UTC). Values in messages are quoted by the caller with
/// Logfmt.quote; metadata values are quoted here.
public struct AuditLogHandler: LogHandler {
    public var logLevel: Logger.Level {
        get { writer.logLevel }
        set { writer.logLevel = newValue }
    }
    public var metadata: Logger.Metadata = [:]
    public let writer: AuditLineWriter

    public init(label: String, sink: AuditSink = .standardError) {
        writer = AuditLineWriter(sink: sink, label: label, logLevel: .info)
    }

    public init(writer: AuditLineWriter) {
        self.writer = writer
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = event.metadata.map { metadata.merging($0) { $1 } } ?? metadata
        writer.log(event.level, event.message.description, metadata: merged)
    }
}

/// Bytes in raw memory, reused from line to line: appending a byte is a
/// store, with none of Array's uniqueness or exclusivity checks.
struct LineBuffer {
    private(set) var base: UnsafeMutablePointer<UInt8>
    private(set) var capacity: Int
    private(set) var count = 0

    init(capacity: Int) {
        // SAFETY: UInt8 is trivial: the bytes need no initialising, and only
        // the first `count`, each written by an append, are ever read.
        base = .allocate(capacity: capacity)
        self.capacity = capacity
    }

    /// Called once, by the owner, when nothing uses the bytes any more (a
    /// copy of the struct shares the memory).
    func deallocate() { base.deallocate() }  // SAFETY: frees what init or grow allocated, once.

    /// Valid until the next append (which may move the bytes) or deallocate.
    var bytes: UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(start: base, count: count) }  // SAFETY: the first `count` bytes are all written.

    mutating func removeAll() { count = 0 }

    @inline(__always)
    mutating func reserve(_ more: Int) {
        if count + more > capacity { grow(to: count + more) }
    }

    /// Long lines (a long policy path in a refusal) grow the buffer; it
    /// never shrinks, so the steady state allocates nothing.
    private mutating func grow(to needed: Int) {
        let larger = max(needed, capacity * 2)
        // SAFETY: larger >= count: the written bytes move whole into the new
        // block, and the old one is freed once, after the copy.
        let moved = UnsafeMutablePointer<UInt8>.allocate(capacity: larger)
        moved.update(from: base, count: count)
        base.deallocate()
        base = moved
        capacity = larger
    }

    @inline(__always)
    mutating func append(_ byte: UInt8) {
        reserve(1)
        base[count] = byte
        count += 1
    }

    /// The first `count` bytes of `words` (at most 32): four stores, no
    /// copy loop for a short piece.
    @inline(__always)
    mutating func append(words: (UInt64, UInt64, UInt64, UInt64), count bytes: Int) {
        reserve(32)
        // SAFETY: reserve(32) made room for all 32 bytes at base + count;
        // storeBytes of a trivial type needs no alignment.
        UnsafeMutableRawPointer(base + count).storeBytes(of: words, as: (UInt64, UInt64, UInt64, UInt64).self)
        count += min(bytes, 32)
    }

    @inline(__always)
    mutating func append(_ raw: UnsafeBufferPointer<UInt8>) {
        guard let source = raw.baseAddress, raw.count > 0 else { return }
        reserve(raw.count)
        (base + count).update(from: source, count: raw.count)
        count += raw.count
    }

    mutating func append(_ text: String) {
        // A native string is contiguous UTF-8 already: one copy, no transcoding.
        var text = text
        // SAFETY: the bytes are copied inside the closure, not kept.
        text.withUTF8 { append($0) }
    }

    /// Decimal digits of `value`, as String(value) spells them.
    @inline(__always)
    mutating func appendDecimal(_ value: UInt64) {
        var digits = 1
        var rest = value
        while rest >= 10 { rest /= 10; digits += 1 }
        reserve(digits)
        rest = value
        for position in stride(from: count + digits - 1, through: count, by: -1) {
            base[position] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest % 10)
            rest /= 10
        }
        count += digits
    }

    mutating func appendDecimal(_ value: Int64) {
        if value < 0 { append(UInt8(ascii: "-")) }
        appendDecimal(value.magnitude)
    }

    /// Exactly `width` digits of a value in 0..<10^width (the fraction of a
    /// second): what appendPadded gives for it, without the digit count.
    @inline(__always)
    mutating func appendFixedDigits(_ value: UInt64, _ width: Int) {
        reserve(width)
        var rest = value
        for position in stride(from: count + width - 1, through: count, by: -1) {
            base[position] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest % 10)
            rest /= 10
        }
        count += width
    }

    /// String(value) with zeros added on the left up to `width`, as the
    /// String-based formatting this replaced did.
    mutating func appendPadded(_ value: Int64, _ width: Int) {
        var length = value < 0 ? 2 : 1
        var rest = value.magnitude
        while rest >= 10 { rest /= 10; length += 1 }
        for _ in length..<max(length, width) { append(UInt8(ascii: "0")) }
        appendDecimal(value)
    }
}

/// UTC timestamps as bytes. The date and time to the second are cached, so
/// in the steady state a line costs one clock read and six digits.
struct AuditClock {
    static let timestampLength = 27
    private var cachedSecond = Int64.min
    /// "YYYY-MM-DDTHH:MM:SS." of cachedSecond, in fixed storage (32 bytes:
    /// room for any Int64 year).
    private var prefix: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    private var prefixLength = 0
    /// A clock that always reads this time (golden tests).
    var fixed: (seconds: Int64, nanos: Int32)?

    mutating func appendTimestamp(to out: inout LineBuffer) {
        var seconds: Int64 = 0
        var nanos: Int32 = 0
        if let fixed {
            (seconds, nanos) = fixed
        } else {
            cposix_realtime(&seconds, &nanos)
        }
        if seconds != cachedSecond {
            var text = LineBuffer(capacity: 32)
            Self.formatPrefix(seconds, into: &text)
            text.append(UInt8(ascii: "."))
            prefixLength = min(text.count, MemoryLayout.size(ofValue: prefix))
            // SAFETY: prefixLength <= text.count and <= the 32 bytes of
            // `prefix`; text's bytes are read before it is freed, once.
            withUnsafeMutableBytes(of: &prefix) { raw in
                raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(text.bytes)[0..<prefixLength]))
            }
            text.deallocate()
            cachedSecond = seconds
        }
        out.append(words: prefix, count: prefixLength)
        // 0...999_999: always six digits, as appendPadded(_, 6) wrote them.
        out.appendFixedDigits(UInt64(max(0, min(999_999, nanos / 1000))), 6)
        out.append(UInt8(ascii: "Z"))
    }

    private static func formatPrefix(_ seconds: Int64, into out: inout LineBuffer) {
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        // Howard Hinnant's civil-from-days.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        out.appendPadded(year, 4)
        out.append(UInt8(ascii: "-"))
        out.appendPadded(month, 2)
        out.append(UInt8(ascii: "-"))
        out.appendPadded(day, 2)
        out.append(UInt8(ascii: "T"))
        out.appendPadded(secondOfDay / 3600, 2)
        out.append(UInt8(ascii: ":"))
        out.appendPadded(secondOfDay / 60 % 60, 2)
        out.append(UInt8(ascii: ":"))
        out.appendPadded(secondOfDay % 60, 2)
    }
}

/// The one builder of audit lines, for the Logger (AuditLogHandler) and for
/// the request path alike: "<timestamp> <label> <level> <message>", values
/// in logfmt, built in one buffer reused from line to line (on the request
/// path: no String, no Logger.Message, no metadata), handed to the
/// AuditSink whole.
// SAFETY: Sendable only because swift-log's LogHandler must be; the state is
// unsynchronised. A broker process is single-threaded (it starts no thread
// or task) and uses its writer from that one thread.
public final class AuditLineWriter: @unchecked Sendable {
    public var logLevel: Logger.Level {
        get { lowestLevel }
        set { lowestLevel = newValue }
    }
    /// Stored privately behind `logLevel`: every line reads it, and state no
    /// other module can reach needs no dynamic exclusivity check.
    private var lowestLevel: Logger.Level
    public let sink: AuditSink
    /// " <label> " as bytes.
    private let label: [UInt8]
    /// " <label> info " and " <label> notice ": what follows the timestamp
    /// on the per-request lines, one copy each.
    private let infoHead: [UInt8]
    private let noticeHead: [UInt8]
    /// State behind a pointer: stored `var`s of a class would cost a
    /// dynamic exclusivity check on every append.
    private let state: UnsafeMutablePointer<State>

    private struct State {
        var line: LineBuffer
        var clock: AuditClock
        /// A finished line not yet written.
        var pending = false
        var level = Logger.Level.info
        var importance = AuditImportance.essential
        /// Where the message starts (after timestamp, label, level).
        var messageStart = 0
        /// Finished bulk lines not yet written (stream channels), written
        /// in one write when full, before any other line, or when due.
        var batch: LineBuffer
        var batchLines = 0
        /// Monotonic time of the batch's first line.
        var batchStarted: UInt64 = 0
    }

    /// A batch of forward lines is written at the latest this long after
    /// its first line (the server's wait wakes up for it).
    public static let batchDelay: UInt64 = 500_000_000
    static let batchCapacity = 256 << 10

    public init(sink: AuditSink, label: String, logLevel: Logger.Level = .info) {
        self.sink = sink
        self.label = Array(" \(label) ".utf8)
        infoHead = Array(" \(label) info ".utf8)
        noticeHead = Array(" \(label) notice ".utf8)
        lowestLevel = logLevel
        // SAFETY: one State, initialized at once; destroyed and freed once in deinit.
        state = .allocate(capacity: 1)
        state.initialize(to: State(line: LineBuffer(capacity: 512), clock: AuditClock(),
                                   batch: LineBuffer(capacity: sink.isStream ? Self.batchCapacity : 0)))
    }

    deinit {
        flush()
        writeBatch()
        // SAFETY: the last use of the state: its buffers are freed once (the
        // State's deinitialize does not free them), then the State itself.
        state.pointee.line.deallocate()
        state.pointee.batch.deallocate()
        state.deinitialize(count: 1)
        state.deallocate()
    }

    /// The writer behind `logger`, or nil when its handler is not an
    /// AuditLogHandler without metadata (then lines go through the Logger).
    public static func of(_ logger: Logger) -> AuditLineWriter? {
        guard let handler = logger.handler as? AuditLogHandler, handler.metadata.isEmpty else { return nil }
        return handler.writer
    }

    /// Every timestamp reads this time (golden tests).
    func fixClock(seconds: Int64, nanos: Int32) {
        state.pointee.clock.fixed = (seconds, nanos)
    }

    /// Starts a line: "<timestamp> <label> <level> ". False when `level` is
    /// below the handler's level (the line is then not written).
    public func begin(_ level: Logger.Level, _ importance: AuditImportance) -> Bool {
        guard level >= lowestLevel else { return false }
        flush()
        // Lines keep their order: the batch goes out before anything else.
        if importance != .bulk { writeBatch() }
        state.pointee.level = level
        state.pointee.importance = importance
        state.pointee.line.removeAll()
        appendHead(level, to: &state.pointee.line)
        state.pointee.messageStart = state.pointee.line.count
        return true
    }

    /// "<timestamp> <label> <level> ", into the line or (forwardLine) the batch.
    @inline(__always)
    private func appendHead(_ level: Logger.Level, to out: inout LineBuffer) {
        state.pointee.clock.appendTimestamp(to: &out)
        // The two levels of the per-request lines without a String; the
        // same bytes as level.rawValue.
        // SAFETY: each array's bytes are copied inside its closure, not kept.
        switch level {
        case .info: infoHead.withUnsafeBufferPointer { out.append($0) }
        case .notice: noticeHead.withUnsafeBufferPointer { out.append($0) }
        default:
            label.withUnsafeBufferPointer { out.append($0) }
            out.append(level.rawValue)
            out.append(UInt8(ascii: " "))
        }
    }

    public func append(_ text: StaticString) {
        // SAFETY: a StaticString's UTF-8 is static memory of exactly that
        // many bytes (utf8Start traps for a one-scalar form; a literal is never one).
        state.pointee.line.append(UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    /// Bytes that are logfmt already (a cached part of a line).
    func append(bytes: UnsafeBufferPointer<UInt8>) {
        state.pointee.line.append(bytes)
    }

    /// Text as it is (named apart from append(_: StaticString) so that a
    /// literal never picks the String overload).
    public func append(string text: String) {
        state.pointee.line.append(text)
    }

    /// A value in logfmt: as it is when it needs no quotes, else quoted and
    /// escaped (Logfmt.quote).
    public func append(value text: String) {
        if Logfmt.needsQuoting(text) {
            state.pointee.line.append(Logfmt.quote(text))
        } else {
            state.pointee.line.append(text)
        }
    }

    // One overload per integer type of the lines: no generic conversion.
    public func append(_ value: Int32) { state.pointee.line.appendDecimal(Int64(value)) }
    public func append(_ value: UInt32) { state.pointee.line.appendDecimal(UInt64(value)) }
    public func append(_ value: UInt16) { state.pointee.line.appendDecimal(UInt64(value)) }
    public func append(_ value: UInt64) { state.pointee.line.appendDecimal(value) }
    public func append(_ value: Int) { state.pointee.line.appendDecimal(Int64(value)) }

    /// Ends the line. It is written by the next flush(), which the broker
    /// calls right after sending the reply (so the client does not wait for
    /// the log write), or at the latest by the next begin().
    public func end() {
        state.pointee.line.append(UInt8(ascii: "\n"))
        guard state.pointee.importance == .bulk, state.pointee.batch.capacity > 0 else {
            state.pointee.pending = true
            return
        }
        makeRoom(forLineOf: state.pointee.line.count)
        state.pointee.batch.append(state.pointee.line.bytes)
        state.pointee.batchLines += 1
    }

    /// Before a batched line of at most `length` bytes: the batch goes out
    /// first if the line would not fit; a first line starts the time bound.
    private func makeRoom(forLineOf length: Int) {
        if state.pointee.batch.count + length > state.pointee.batch.capacity { writeBatch() }
        if state.pointee.batchLines == 0 { state.pointee.batchStarted = cposix_monotonic_ns() }
    }

    /// A forward line in one step: the bytes `begin(.info, .bulk)`, then
    /// `start`, `rc`, " latency_us=" and `latencyMicros`, then `end()` would
    /// give, written straight into the batch when lines are batched (no copy
    /// from the line buffer: this is the line of nearly every request).
    func forwardLine(start: UnsafeBufferPointer<UInt8>, rc: Int32, latencyMicros: UInt64) {
        guard state.pointee.batch.capacity > 0 else {
            guard begin(.info, .bulk) else { return }
            append(bytes: start); append(rc); append(" latency_us="); append(latencyMicros)
            end()
            return
        }
        guard Logger.Level.info >= lowestLevel else { return }
        flush()
        // The longest the line can be: the timestamp, the head, the start,
        // then rc, the latency's key and value and the newline (<= 48 bytes).
        makeRoom(forLineOf: AuditClock.timestampLength + infoHead.count + start.count + 48)
        appendHead(.info, to: &state.pointee.batch)
        state.pointee.batch.append(start)
        state.pointee.batch.appendDecimal(Int64(rc))
        let key: StaticString = " latency_us="
        // SAFETY: a literal's UTF-8, static and of exactly that many bytes.
        state.pointee.batch.append(UnsafeBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount))
        state.pointee.batch.appendDecimal(latencyMicros)
        state.pointee.batch.append(UInt8(ascii: "\n"))
        state.pointee.batchLines += 1
    }

    /// When the batch must be written (monotonic ns), nil when empty.
    public var batchDeadline: UInt64? {
        state.pointee.batchLines == 0 ? nil : state.pointee.batchStarted &+ Self.batchDelay
    }

    /// Writes the batched forward lines, if any, in one write.
    public func writeBatch() {
        guard state.pointee.batchLines > 0 else { return }
        let lines = state.pointee.batchLines
        state.pointee.batchLines = 0
        let batch = state.pointee.batch.bytes
        var written: Bool
        if sink.fits(batch.count, .bulk) {
            written = sink.write(batch, messageStart: 0, level: .info, importance: .bulk, lines: lines)
        } else {
            // A file near its size limit takes what still fits, line by line.
            written = false
            var start = 0
            for index in batch.indices where batch[index] == UInt8(ascii: "\n") {
                // SAFETY: start...index lies in the batch's written bytes,
                // which nothing appends to (or moves) until removeAll below.
                let line = UnsafeBufferPointer(rebasing: batch[start...index])
                if sink.write(line, messageStart: 0, level: .info, importance: .bulk) { written = true }
                start = index + 1
            }
        }
        state.pointee.batch.removeAll()
        if written, sink.unreportedLost > 0 { reportLost() }
    }

    /// Whether one more forward line can be taken: the channel works and a
    /// file still has room for the batch and the line.
    public var acceptsBulk: Bool {
        !sink.failing && sink.fits(state.pointee.batch.count + 512, .bulk)
    }

    /// A whole line from the Logger: message as given, metadata sorted by
    /// key, values quoted; written at once.
    func log(_ level: Logger.Level, _ message: String, metadata: Logger.Metadata) {
        let importance: AuditImportance = switch level {
        case .trace, .debug: .bulk
        case .notice, .warning: .refusal
        case .info, .error, .critical: .essential
        }
        guard begin(level, importance) else { return }
        append(string: message)
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            append(" "); append(string: key); append("="); append(value: "\(value)")
        }
        end()
        flush()
    }

    /// Writes the finished line, if any; after a write that works, says how
    /// many lines were lost before it. Every request calls it, mostly with
    /// nothing pending: that check stays inline, the write does not.
    @inline(__always)
    public func flush() {
        guard state.pointee.pending else { return }
        writePending()
    }

    @inline(never)
    private func writePending() {
        state.pointee.pending = false
        let written = sink.write(state.pointee.line.bytes, messageStart: state.pointee.messageStart,
                                 level: state.pointee.level, importance: state.pointee.importance)
        if written, sink.unreportedLost > 0 { reportLost() }
    }

    private func reportLost() {
        let count = sink.unreportedLost
        guard begin(.warning, .essential) else { return }
        append("audit lines lost: lost="); append(count)
        append(" total_lost="); append(sink.lost)
        append(" error="); append(string: Errno.name(sink.lastError))
        end()
        state.pointee.pending = false
        if sink.write(state.pointee.line.bytes, messageStart: state.pointee.messageStart,
                      level: .warning, importance: .essential) {
            sink.lostReported()
        }
    }
}
