// SPDX-License-Identifier: MIT
/// Little-endian loads for code outside the trusted core (the client's
/// decoder, the simulated Xen, tools): a read outside the buffer stops the
/// process, in release builds too. The broker reads client bytes through
/// ClientBytes instead, which refuses rather than stops.
extension UnsafeRawBufferPointer {
    @inline(__always)
    public func le16(at offset: Int) -> UInt16 {
        guard let value = ClientBytes(self).le16(at: offset) else { preconditionFailure("le16 at \(offset) of \(count) bytes") }
        return value
    }
    @inline(__always)
    public func le32(at offset: Int) -> UInt32 {
        guard let value = ClientBytes(self).le32(at: offset) else { preconditionFailure("le32 at \(offset) of \(count) bytes") }
        return value
    }
    @inline(__always)
    public func le64(at offset: Int) -> UInt64 {
        guard let value = ClientBytes(self).le64(at: offset) else { preconditionFailure("le64 at \(offset) of \(count) bytes") }
        return value
    }
}
