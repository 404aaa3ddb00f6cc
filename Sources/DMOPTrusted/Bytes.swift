// SPDX-License-Identifier: MIT
/// Bytes a client sent, read only through this type: every read checks its
/// range, in release builds too (loadUnaligned's own check is debug-only),
/// and a read outside the bytes is nil, never memory beyond them. It wraps
/// the received buffer in place and allocates nothing. Decoders keep their
/// up-front length checks, which name the precise reason; these checks are
/// the floor beneath them.
public struct ClientBytes {
    private let bytes: UnsafeRawBufferPointer

    @inline(__always)
    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    @inline(__always)
    public var count: Int { bytes.count }

    @inline(__always)
    public func u8(at offset: Int) -> UInt8? { load(offset, as: UInt8.self) }
    @inline(__always)
    public func le16(at offset: Int) -> UInt16? { load(offset, as: UInt16.self).map(UInt16.init(littleEndian:)) }
    @inline(__always)
    public func le32(at offset: Int) -> UInt32? { load(offset, as: UInt32.self).map(UInt32.init(littleEndian:)) }
    @inline(__always)
    public func le64(at offset: Int) -> UInt64? { load(offset, as: UInt64.self).map(UInt64.init(littleEndian:)) }

    /// The little-endian value of the `width` bytes at `offset` (width 1 to 8).
    @inline(__always)
    public func value(at offset: Int, width: Int) -> UInt64? {
        switch width {
        case 1: return u8(at: offset).map(UInt64.init)
        case 2: return le16(at: offset).map(UInt64.init)
        case 4: return le32(at: offset).map(UInt64.init)
        case 8: return le64(at: offset)
        default: return oddWidthValue(at: offset, width: width)
        }
    }

    /// The 3-byte pad arrays: kept out of line so the common widths inline.
    @inline(never)
    private func oddWidthValue(at offset: Int, width: Int) -> UInt64? {
        guard width > 0, width < 8, offset >= 0, offset <= bytes.count &- width else { return nil }
        var result: UInt64 = 0
        for i in 0..<width {
            // SAFETY: offset + i < offset + width <= bytes.count, checked above.
            result |= UInt64(bytes.load(fromByteOffset: offset + i, as: UInt8.self)) << (8 * UInt64(i))
        }
        return result
    }

    @inline(__always)
    private func load<T: FixedWidthInteger>(_ offset: Int, as type: T.Type) -> T? {
        // `count - size` is negative when the bytes are shorter than T, so
        // no offset passes; no overflow: count and size are both >= 0.
        guard offset >= 0, offset <= bytes.count &- MemoryLayout<T>.size else { return nil }
        // SAFETY: [offset, offset + size) lies inside the bytes, checked above.
        return bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
    }
}

/// Little-endian stores into the broker's own buffers (the REPLY it
/// encodes): the encoder sizes them, and each store is checked.
extension UnsafeMutableRawBufferPointer {
    @inline(__always)
    public func putLE16(_ value: UInt16, at offset: Int) {
        precondition(offset >= 0 && offset <= count &- 2)
        // SAFETY: [offset, offset + 2) lies inside the buffer, checked above.
        storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt16.self)
    }
    @inline(__always)
    public func putLE32(_ value: UInt32, at offset: Int) {
        precondition(offset >= 0 && offset <= count &- 4)
        // SAFETY: [offset, offset + 4) lies inside the buffer, checked above.
        storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt32.self)
    }
}

extension Array where Element == UInt8 {
    public mutating func appendLE16(_ value: UInt16) {
        append(UInt8(truncatingIfNeeded: value)); append(UInt8(truncatingIfNeeded: value >> 8))
    }
    public mutating func appendLE32(_ value: UInt32) {
        for shift in stride(from: 0, to: 32, by: 8) { append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }
}
