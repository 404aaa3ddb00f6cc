// SPDX-License-Identifier: MIT
import DMOPTrusted

// Questions tools, the bench, the fuzzers and tests ask of the trusted core's
// types, built only from their public API; the forward path asks none of them.

extension OpSpec {
    /// The field called `name` (policies and tools name fields).
    public func field(named name: String) -> FieldSpec? {
        fields.first { $0.name == name }
    }

    /// Xen copies the payload back into buffer 0 on success.
    public var writesBackPayload: Bool { replyBuffers.contains(0) }
}

extension Decision {
    public var isForward: Bool {
        if case .forward = self { return true }
        return false
    }
}

extension RestrictedHypervisor {
    /// Restricts and proves in one step.
    public static func restrictAndVerify(_ hypervisor: any Hypervisor, to domid: UInt16) throws(HypervisorError)
        -> RestrictedHypervisor {
        try restrict(hypervisor, to: domid).verify()
    }
}
