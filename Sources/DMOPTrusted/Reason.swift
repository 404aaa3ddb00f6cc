// SPDX-License-Identifier: MIT
import Glibc

/// Why the broker refused something. The numbers are wire values
/// (dmop-broker-protocol(7)); their names, for the audit log and people,
/// are in DMOPCore (ReasonNames.swift).
public enum ReasonCode: UInt16, Sendable, CaseIterable {
    // Refusals of a well-formed request: the session goes on.
    case domidMismatch = 1
    case domidReserved = 2
    case opUnknown = 3
    case opNotAllowed = 4
    case badBufferCount = 5
    case badBufferSize = 6
    case payloadFieldNonzero = 7
    case conditionFailed = 8
    case rateLimited = 9
    case notOwner = 10
    /// The audit log cannot take the forward's line (--audit-failure refuse).
    case auditUnavailable = 11
    /// A posted request for an op its rule does not mark `posted`.
    case postingNotAllowed = 12
    // Protocol errors (the broker closes) and hello refusals.
    case badMagic = 32
    case truncated = 33
    case oversized = 34
    case unknownType = 35
    case helloRequired = 36
    case duplicateHello = 37
    case lengthMismatch = 38
    case tooManyBuffers = 39
    case bufferTooLarge = 40
    case fdsAttached = 41
    case headerReservedNonzero = 42
    case versionUnsupported = 43
    case xenInterfaceMismatch = 44
    case badHello = 45

    /// The errno a client reports for a refused request (negative in REPLY).
    /// Policy-type refusals look like privcmd's own domid refusal (EPERM);
    /// malformed arguments look like Xen's (EINVAL). An ioreq server the
    /// session does not own looks like one that does not exist (Xen's
    /// ENOENT), so a drop-in library answers as the real one would.
    public var errno: Int32 {
        switch self {
        case .badBufferCount, .badBufferSize, .payloadFieldNonzero: EINVAL
        case .rateLimited: EAGAIN
        case .notOwner: ENOENT
        default: EPERM
        }
    }
}
