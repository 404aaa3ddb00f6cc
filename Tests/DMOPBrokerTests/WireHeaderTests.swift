// SPDX-License-Identifier: MIT
import DMOPCore
import DMOPTrusted
import Testing

/// The C library speaks protocol(7) from its own header, dmop_wire.h; the
/// broker from Wire.swift and Reason.swift. Each constant of the header
/// must equal its Swift twin, and every reason code must be in both with
/// the same number and name.
@Suite("dmop_wire.h and the Swift protocol constants agree")
struct WireHeaderTests {
    static let header = TestSupport.packageRoot.appendingPathComponent("Sources/xendevicemodel/include").path

    /// Runs a C program that prints `NAME VALUE` for each expression.
    static func cValues(_ expressions: [String]) throws -> [String: String] {
        let lines = expressions.map { "    printf(\"%s %llu\\n\", \"\($0)\", (unsigned long long)(\($0)));" }
        let source = """
            #include <stdio.h>
            #include "dmop_wire.h"
            int main(void)
            {
            \(lines.joined(separator: "\n"))
                return 0;
            }
            """
        let output = try TestSupport.compileAndRun(source, flags: ["-I", header])
        var values: [String: String] = [:]
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            if parts.count == 2 { values[String(parts[0])] = String(parts[1]) }
        }
        return values
    }

    @Test("every message constant of dmop_wire.h has its Swift value")
    func constants() throws {
        let pairs: [(String, Int)] = [
            ("DMOP_WIRE_MAGIC", Int(Wire.magic)),
            ("DMOP_WIRE_HEADER_SIZE", Wire.commonHeaderSize),
            ("DMOP_WIRE_TYPE_HELLO", Int(MessageType.hello.rawValue)),
            ("DMOP_WIRE_TYPE_WELCOME", Int(MessageType.welcome.rawValue)),
            ("DMOP_WIRE_TYPE_REFUSED", Int(MessageType.refused.rawValue)),
            ("DMOP_WIRE_TYPE_REQUEST", Int(MessageType.request.rawValue)),
            ("DMOP_WIRE_TYPE_REPLY", Int(MessageType.reply.rawValue)),
            ("DMOP_WIRE_TYPE_PROTOCOL_ERROR", Int(MessageType.protocolError.rawValue)),
            ("DMOP_WIRE_VERSION_MIN", Int(Wire.supportedVersions.lowerBound)),
            ("DMOP_WIRE_VERSION_MAX", Int(Wire.supportedVersions.upperBound)),
            ("DMOP_WIRE_VERSION_POSTING", Int(Wire.postingVersion)),
            ("DMOP_WIRE_HELLO_SIZE", Wire.helloSize),
            ("DMOP_WIRE_WELCOME_SIZE", Wire.welcomeSize),
            ("DMOP_WIRE_REFUSED_FIXED", Wire.refusedHeaderSize),
            ("DMOP_WIRE_REQUEST_FIXED", Wire.requestHeaderSize),
            ("DMOP_WIRE_REPLY_FIXED", Wire.replyHeaderSize),
            ("DMOP_WIRE_REPLY_DESC_SIZE", Wire.replyDescriptorSize),
            ("DMOP_WIRE_PROTOCOL_ERROR_FIXED", Wire.protocolErrorHeaderSize),
            ("DMOP_WIRE_POSTED_FAILURE_SIZE", Wire.postedFailureSize),
            ("DMOP_WIRE_REQUEST_POSTED", Int(Wire.requestFlagPosted)),
            ("DMOP_WIRE_REPLY_POSTED_FAILURE", Int(Wire.replyFlagPostedFailure)),
            ("DMOP_WIRE_MAX_BUFFERS", DMOPABI.maxBuffers),
            ("DMOP_WIRE_MAX_REPLY_BUFFERS", Wire.maxReturnedBuffers),
            ("DMOP_WIRE_ORIGIN_HYPERVISOR", Int(ReplyOrigin.hypervisor.rawValue)),
            ("DMOP_WIRE_ORIGIN_BROKER", Int(ReplyOrigin.broker.rawValue)),
        ]
        let values = try Self.cValues(pairs.map(\.0))
        for (name, swift) in pairs {
            #expect(values[name] == String(swift), "\(name): dmop_wire.h says \(values[name] ?? "nothing"), Swift \(swift)")
        }
        // The buffer bound is the kernel's page-sized one in both.
        let size = try Self.cValues(["DMOP_WIRE_MAX_BUFFER_SIZE"])
        #expect(size["DMOP_WIRE_MAX_BUFFER_SIZE"] == String(DMOPABI.maxBufferSize), "\(size)")
    }

    @Test("every reason code has the same number and name in dmop_wire.h")
    func reasons() throws {
        let source = ReasonCode.allCases.map { "\($0.rawValue)" }
        let numbers = try Self.cValues(ReasonCode.allCases.map { "DMOP_REASON_\($0.name)" })
        for code in ReasonCode.allCases {
            #expect(numbers["DMOP_REASON_\(code.name)"] == String(code.rawValue),
                    "DMOP_REASON_\(code.name): dmop_wire.h says \(numbers["DMOP_REASON_\(code.name)"] ?? "nothing"), Swift \(code.rawValue)")
        }
        // The header's names, through its own dmop_reason_name().
        let names = try TestSupport.compileAndRun("""
            #include <stdio.h>
            #include "dmop_wire.h"
            int main(void)
            {
                const unsigned int codes[] = { \(source.joined(separator: ", ")) };
                for (unsigned int i = 0; i < sizeof codes / sizeof codes[0]; i++)
                    printf("%u %s\\n", codes[i], dmop_reason_name(codes[i]));
                return 0;
            }
            """, flags: ["-I", Self.header])
        let expected = ReasonCode.allCases.map { "\($0.rawValue) \($0.name)" }.joined(separator: "\n") + "\n"
        #expect(names == expected)
    }
}
