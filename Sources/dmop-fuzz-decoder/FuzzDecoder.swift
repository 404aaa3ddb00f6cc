// SPDX-License-Identifier: MIT
// libFuzzer target (a): the wire decoders on arbitrary bytes.
//
// Built by scripts/fuzz with `--sanitize fuzzer --sanitize address
// -Xswiftc -DDMOP_FUZZING`: libFuzzer then supplies main() and calls
// LLVMFuzzerTestOneInput. A plain `swift build` gives a replay tool instead:
// `dmop-fuzz-decoder FILE...` runs each file through the same checks, which
// is how a crash file is reproduced under a debugger.
//
// A failed check calls abort(), which libFuzzer reports as a crash.
import DMOPClient
import DMOPCore
import DMOPPosix
import DMOPTooling
import Glibc

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDecoderOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    // Copied into an exactly sized allocation, so the address sanitizer sees
    // any read past the datagram's end.
    // SAFETY: `size` bytes, all copied from libFuzzer's input (valid for this
    // call), and freed by the defer after the checks, which keep no pointer.
    let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 1)
    defer { bytes.deallocate() }
    if size > 0, let data { bytes.copyMemory(from: UnsafeRawBufferPointer(start: data, count: size)) }
    let input = UnsafeRawBufferPointer(bytes)
    checkClientDecoder(input)
    checkBrokerDecoder(input)
    return 0
}

func invariant(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() {
        printError("dmop-fuzz-decoder: invariant broken: \(message())")
        abort()
    }
}

/// The broker's decoder: whatever it accepts is exactly what the protocol
/// page allows, re-encodes to the same bytes, and never points outside the
/// datagram; whatever it refuses is refused with a protocol-error code whose
/// PROTOCOL_ERROR message stays within its bounds.
func checkClientDecoder(_ input: UnsafeRawBufferPointer) {
    do {
        let message = try Wire.decodeClientMessage(input)
        switch message {
        case .hello(let hello):
            invariant(input.count == Wire.helloSize, "HELLO of \(input.count) bytes accepted")
            invariant(hello.minVersion <= hello.maxVersion, "HELLO with min > max accepted")
            invariant(Wire.encodeHello(hello) == Array(input), "HELLO does not re-encode to its bytes")
        case .request(let frame):
            invariant(input.count >= Wire.requestHeaderSize && input.count <= Wire.maxRequestSize,
                      "REQUEST of \(input.count) bytes accepted")
            invariant(frame.buffers.count <= DMOPABI.maxBuffers, "\(frame.buffers.count) buffers accepted")
            invariant(frame.domid == input.le16(at: Wire.domidOffset), "domid not read from offset 6")
            var cursor = Wire.requestHeaderSize + Wire.requestSizeEntry * frame.buffers.count
            for (index, range) in frame.buffers.enumerated() {
                invariant(range.lowerBound == cursor, "buffer \(index) not contiguous")
                invariant(range.count <= DMOPABI.maxBufferSize, "buffer \(index) of \(range.count) bytes")
                invariant(range.upperBound <= input.count, "buffer \(index) past the datagram's end")
                invariant(Int(input.le32(at: Wire.requestHeaderSize + Wire.requestSizeEntry * index)) == range.count,
                          "buffer \(index) size differs from size[\(index)]")
                cursor = range.upperBound
            }
            invariant(cursor == input.count, "sizes add up to \(cursor), datagram has \(input.count)")
            let buffers = frame.buffers.map { Array(input[$0]) }
            invariant(Wire.encodeRequest(domid: frame.domid, requestID: frame.requestID, buffers: buffers,
                                         flags: frame.posted ? Wire.requestFlagPosted : 0) == Array(input),
                      "REQUEST does not re-encode to its bytes")
        }
    } catch {
        // Only session-ending codes: a refusal code (1..31) here would tell
        // the broker to answer a malformed datagram with REPLY.
        invariant(error.reason.rawValue >= 32, "decoder threw refusal code \(error.reason.name)")
        invariant(error.reason != .helloRequired && error.reason != .duplicateHello && error.reason != .fdsAttached
                  && error.reason != .versionUnsupported && error.reason != .xenInterfaceMismatch,
                  "decoder threw \(error.reason.name), which is the server's to decide")
        if error.requestID != 0 {
            invariant(input.count >= 12 && error.requestID == input.le32(at: 8), "request_id \(error.requestID) not from the datagram")
        }
        let encoded = Wire.encodeProtocolError(error)
        invariant(encoded.count <= Wire.protocolErrorHeaderSize + Wire.maxTextLength,
                  "PROTOCOL_ERROR of \(encoded.count) bytes")
        // SAFETY: the view lives for the decode, which copies what it keeps.
        let decoded = encoded.withUnsafeBytes { raw in Result { () throws(ProtocolViolation) in try Wire.decodeBrokerMessage(raw) } }
        guard case .success(.protocolError(let message)) = decoded else {
            invariant(false, "PROTOCOL_ERROR does not decode: \(decoded)")
            return
        }
        invariant(message.reason == error.reason && message.requestID == error.requestID,
                  "PROTOCOL_ERROR decodes to \(message.reason.name)/\(message.requestID)")
    }
}

/// The client's decoder (a client must not trust a broker's lengths): total,
/// and what it accepts is within the protocol's bounds.
func checkBrokerDecoder(_ input: UnsafeRawBufferPointer) {
    guard let message = try? Wire.decodeBrokerMessage(input) else { return }
    switch message {
    case .welcome:
        invariant(input.count == Wire.welcomeSize, "WELCOME of \(input.count) bytes accepted")
    case .refused(let refused):
        invariant(input.count == Wire.refusedHeaderSize + Int(input.le16(at: 16)), "REFUSED length accepted")
        invariant(refused.text.utf8.count <= 3 * (input.count - Wire.refusedHeaderSize), "REFUSED text grew")
    case .protocolError:
        invariant(input.count == Wire.protocolErrorHeaderSize + Int(input.le16(at: 12)), "PROTOCOL_ERROR length accepted")
    case .reply(let reply):
        invariant(reply.buffers.count <= Wire.maxReturnedBuffers, "REPLY with \(reply.buffers.count) buffers")
        let total = reply.buffers.reduce(0) { $0 + $1.bytes.count }
        let trailer = reply.postedFailure == nil ? 0 : Wire.postedFailureSize
        invariant(Wire.replyHeaderSize + Wire.replyDescriptorSize * reply.buffers.count + total + trailer == input.count,
                  "REPLY sizes do not add up")
        invariant(input.count <= Wire.maxReplySize, "REPLY of \(input.count) bytes accepted")
        invariant((reply.origin == .broker) == (reply.reason != nil), "REPLY origin and reason disagree")
    }
}

#if !DMOP_FUZZING
/// Replay: each argument is a file (or a directory of files) run through
/// the checks above. Exit 0 when all pass; a failed check aborts.
@main
struct ReplayDecoder {
    static func main() {
        let paths = Array(CommandLine.arguments.dropFirst())
        guard !paths.isEmpty else {
            printError("usage: dmop-fuzz-decoder FILE|DIR...  (replays inputs; scripts/fuzz builds the fuzzer)")
            exit(64)
        }
        var count = 0
        for path in paths {
            for file in Files.expandDirectory(path) {
                guard let bytes = try? Files.read(file, limit: 1 << 26) else {
                    printError("dmop-fuzz-decoder: cannot read \(file)")
                    exit(66)
                }
                // SAFETY: the array outlives the call, which copies the input first.
                _ = bytes.withUnsafeBufferPointer { fuzzDecoderOneInput($0.baseAddress, $0.count) }
                count += 1
            }
        }
        print("dmop-fuzz-decoder: \(count) input(s) replayed, all checks held")
    }
}
#endif

/// One line on stderr with a single write(2).
func printError(_ text: String) {
    var line = text + "\n"
    // SAFETY: the view lives for the write, which copies the bytes.
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
