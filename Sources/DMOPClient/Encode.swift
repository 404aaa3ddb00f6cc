// SPDX-License-Identifier: MIT
import DMOPCore

extension OpSpec {
    /// Buffer 0 for this op as libxendevicemodel builds it: a zeroed
    /// `struct xen_dm_op` of 32 bytes with `op` and the named payload
    /// fields set. Naming a field the op does not have is a programming
    /// error, not an input error.
    public func encodeHeader(_ values: [String: UInt64] = [:]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: DMOPABI.opStructSize)
        for i in 0..<DMOPABI.opWidth { bytes[DMOPABI.opOffset + i] = UInt8(truncatingIfNeeded: number >> UInt32(8 * i)) }
        for (name, value) in values {
            guard let field = field(named: name) else {
                preconditionFailure("op \(self.name) has no field \(name)")
            }
            for i in 0..<min(field.width, 8) {
                bytes[field.offset + i] = UInt8(truncatingIfNeeded: value >> UInt64(8 * i))
            }
        }
        return bytes
    }

    /// Reads a named field out of a buffer 0 the hypervisor wrote back.
    public func read(_ name: String, from header: [UInt8]) -> UInt64? {
        guard let field = field(named: name) else { return nil }
        // SAFETY: the view lives for the read, whose range value(in:) checks.
        return header.withUnsafeBytes { field.value(in: $0) }
    }
}
