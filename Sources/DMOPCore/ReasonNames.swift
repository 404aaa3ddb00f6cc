// SPDX-License-Identifier: MIT
import DMOPTrusted

/// The names of the reason codes, as the audit log and protocol(7) spell
/// them: for people, so outside the trusted core, which deals in the numbers.
extension ReasonCode: CustomStringConvertible {
    public var name: String {
        switch self {
        case .domidMismatch: "DOMID_MISMATCH"
        case .domidReserved: "DOMID_RESERVED"
        case .opUnknown: "OP_UNKNOWN"
        case .opNotAllowed: "OP_NOT_ALLOWED"
        case .badBufferCount: "BAD_BUFFER_COUNT"
        case .badBufferSize: "BAD_BUFFER_SIZE"
        case .payloadFieldNonzero: "PAYLOAD_FIELD_NONZERO"
        case .conditionFailed: "CONDITION_FAILED"
        case .rateLimited: "RATE_LIMITED"
        case .notOwner: "NOT_OWNER"
        case .auditUnavailable: "AUDIT_UNAVAILABLE"
        case .postingNotAllowed: "POSTING_NOT_ALLOWED"
        case .badMagic: "BAD_MAGIC"
        case .truncated: "TRUNCATED"
        case .oversized: "OVERSIZED"
        case .unknownType: "UNKNOWN_TYPE"
        case .helloRequired: "HELLO_REQUIRED"
        case .duplicateHello: "DUPLICATE_HELLO"
        case .lengthMismatch: "LENGTH_MISMATCH"
        case .tooManyBuffers: "TOO_MANY_BUFFERS"
        case .bufferTooLarge: "BUFFER_TOO_LARGE"
        case .fdsAttached: "FDS_ATTACHED"
        case .headerReservedNonzero: "HEADER_RESERVED_NONZERO"
        case .versionUnsupported: "VERSION_UNSUPPORTED"
        case .xenInterfaceMismatch: "XEN_INTERFACE_MISMATCH"
        case .badHello: "BAD_HELLO"
        }
    }

    public var description: String { name }
}

extension ProtocolViolation: CustomStringConvertible {
    public var description: String { "\(reason.name): \(detail)" }
}
