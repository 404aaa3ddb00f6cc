// SPDX-License-Identifier: MIT
/// The buffers of a decoded REQUEST as ranges of its datagram: the sizes are
/// held inline, so decoding allocates nothing and a frame copies cheaply.
public struct BufferRanges: RandomAccessCollection, Equatable, Sendable {
    // 16 is DMOPABI.maxBuffers: WireTests decodes a REQUEST with all 16.
    private var sizes = InlineArray<16, UInt16>(repeating: 0)
    public private(set) var endIndex = 0
    public var startIndex: Int { 0 }

    /// Traps past 16 or over 65535: the decoder refuses both first.
    mutating func append(size: Int) { sizes[endIndex] = UInt16(size); endIndex += 1 }

    /// Buffer `index` follows the sizes and the buffers before it.
    public subscript(index: Int) -> Range<Int> {
        precondition(index >= 0 && index < endIndex, "buffer \(index) of \(endIndex)")
        let start = (0..<index).reduce(Wire.requestHeaderSize + Wire.requestSizeEntry * endIndex) { $0 + Int(sizes[$1]) }
        return start..<(start + Int(sizes[index]))
    }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.elementsEqual(rhs) }
}
