// SPDX-License-Identifier: MIT

/// A Xen release as XENVER_version reports it: major << 16 | minor.
public struct XenRelease: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let major: UInt16
    public let minor: UInt16

    public init(major: UInt16, minor: UInt16) {
        self.major = major
        self.minor = minor
    }

    /// From XENVER_version's return value; nil for 0 (the query failed).
    public init?(xenVersion: UInt32) {
        guard xenVersion != 0 else { return nil }
        self.init(major: UInt16(truncatingIfNeeded: xenVersion >> 16), minor: UInt16(truncatingIfNeeded: xenVersion))
    }

    /// "X.Y", as an operator writes it; nil for anything else.
    public init?(parsing text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, parts.allSatisfy({ !$0.isEmpty && $0.count <= 5 && $0.utf8.allSatisfy { (0x30...0x39).contains($0) } }),
              let major = UInt16(parts[0]), let minor = UInt16(parts[1]) else { return nil }
        self.init(major: major, minor: minor)
    }

    public var xenVersion: UInt32 { UInt32(major) << 16 | UInt32(minor) }
    public var description: String { "\(major).\(minor)" }

    public static func < (lhs: XenRelease, rhs: XenRelease) -> Bool { lhs.xenVersion < rhs.xenVersion }
}

/// The Xen releases whose DMOP ABI is the one this build's catalogue has.
///
/// How the table was checked: from Xen's public repository, at the tags
/// RELEASE-4.17.0, 4.18.0, 4.19.0, 4.20.0, 4.21.0 and 4.22.0 (the newest
/// published on 2026-12-01) and RELEASE-4.20.4 (Debian 13's):
/// - xen/include/public/hvm/dm_op.h with its comments stripped
///   (gcc -fpreprocessed -dD -E -P) is byte-identical at every tag;
/// - tools/libs/devicemodel/libxendevicemodel.map is byte-identical
///   (VERS_1.0 to VERS_1.4, the same 26 functions);
/// - tools/include/xendevicemodel.h without comments is byte-identical;
/// - CXen/dmop_abi.h compiled against each tag's xen/include/public gives
///   the same identifier, `abiIdentifier` below, while
///   __XEN_LATEST_INTERFACE_VERSION__ is 0x00040e00 at 4.17 and 4.18 and
///   0x00041300 from 4.19.
/// `scripts/check-xen-releases XEN-GIT-DIR` repeats the check. A release
/// joins the table only after it. The table speaks
/// for the ABI it was checked with: a build against headers whose identifier
/// differs (a future dm_op.h) trusts no release until the table is redone.
public enum XenReleases {
    public static let checked: [XenRelease] = [
        XenRelease(major: 4, minor: 17), XenRelease(major: 4, minor: 18), XenRelease(major: 4, minor: 19),
        XenRelease(major: 4, minor: 20), XenRelease(major: 4, minor: 21), XenRelease(major: 4, minor: 22),
    ]
    /// dmop_abi_identifier() at every tag above.
    public static let abiIdentifier: UInt32 = 0x3549_b994

    /// The releases this build can trust: the table, when the build's own
    /// ABI is the one the table was checked with.
    public static var compatible: [XenRelease] { DMOPABI.identifier == abiIdentifier ? checked : [] }

    public enum Verdict: Equatable, Sendable {
        /// In the table.
        case known(XenRelease)
        /// Not in the table, and the operator accepted exactly this release.
        case accepted(XenRelease)
        /// Not in the table (nil: the version query failed), not accepted.
        case refused(XenRelease?)
    }

    /// `accepted`: what `--accept-xen` named; `acceptUnknown`: the operator
    /// accepts a hypervisor whose version could not be read.
    public static func verdict(xenVersion: UInt32, accepted: Set<XenRelease>, acceptUnknown: Bool = false) -> Verdict {
        guard let release = XenRelease(xenVersion: xenVersion) else {
            return acceptUnknown ? .accepted(XenRelease(major: 0, minor: 0)) : .refused(nil)
        }
        if compatible.contains(release) { return .known(release) }
        return accepted.contains(release) ? .accepted(release) : .refused(release)
    }

    /// "4.17 to 4.22", for messages.
    public static var compatibleText: String {
        guard let first = compatible.first, let last = compatible.last else { return "none (this build's DMOP ABI was never checked)" }
        return first == last ? "\(first)" : "\(first) to \(last)"
    }
}
