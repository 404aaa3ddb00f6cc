// SPDX-License-Identifier: MIT
import DMOPCore
import Logging

/// "X.Y" on the command line.
public struct XenReleaseArgument: Sendable {
    public let release: XenRelease

    public init(_ release: XenRelease) { self.release = release }

    public init?(argument: String) {
        guard let release = XenRelease(parsing: argument) else { return nil }
        self.release = release
    }
}

/// What --accept-xen names: a release "X.Y", or "unknown" for a hypervisor
/// whose version query fails.
public enum XenAcceptance: Equatable, Sendable {
    case release(XenRelease)
    case unknown

    public init?(argument: String) {
        if argument == "unknown" {
            self = .unknown
        } else if let release = XenRelease(parsing: argument) {
            self = .release(release)
        } else {
            return nil
        }
    }
}

extension ServeOptions {
    /// Refuses to go on, with one line and its own status, on a Xen release
    /// whose DMOP ABI this build was not checked against, unless the
    /// operator accepted exactly that release; an accepted one is logged.
    func checkXenRelease(_ xenVersion: UInt32, audit: Logger) {
        var accepted = Set<XenRelease>()
        var acceptUnknown = false
        for acceptance in acceptXen {
            switch acceptance {
            case .release(let release): accepted.insert(release)
            case .unknown: acceptUnknown = true
            }
        }
        switch XenReleases.verdict(xenVersion: xenVersion, accepted: accepted, acceptUnknown: acceptUnknown) {
        case .known(let release):
            audit.info("xen release \(release): DMOP ABI checked for this build (checked releases: \(XenReleases.compatibleText))")
        case .accepted(let release):
            let what = XenRelease(xenVersion: xenVersion) == nil ? "an unknown Xen release (the version query failed)" : "Xen \(release)"
            audit.warning("running on \(what), accepted with --accept-xen although its DMOP ABI was not checked for this build (checked releases: \(XenReleases.compatibleText)): requests may be misread by the hypervisor")
        case .refused(let release?):
            fail(.xenReleaseUnchecked, "Xen \(release) is not a release whose DMOP ABI this build was checked against (\(XenReleases.compatibleText)); refusing to start (--accept-xen \(release) runs anyway, at the risk described in dmop-broker(8))")
        case .refused(nil):
            fail(.xenReleaseUnchecked, "the hypervisor's Xen version could not be read; refusing to start (--accept-xen unknown runs anyway, at the risk described in dmop-broker(8))")
        }
    }
}
