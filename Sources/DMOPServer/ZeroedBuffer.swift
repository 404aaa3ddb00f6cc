// SPDX-License-Identifier: MIT
import Glibc

/// Zero-filled memory for the server's long-lived buffers, from anonymous
/// pages: zero from the start without writing them, so a page stays out of
/// the broker's private dirty memory until a datagram actually reaches it.
/// (allocate + initializeMemory wrote all 64 KiB of the receive buffer at
/// start-up, though a QEMU-like session only ever touches its first pages.)
struct ZeroedBuffer {
    let bytes: UnsafeMutableRawBufferPointer
    private let mapped: Bool

    init(byteCount: Int) {
        let address = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if let address, address != MAP_FAILED {
            // SAFETY: mmap gave byteCount readable, writable, zero-filled bytes.
            bytes = UnsafeMutableRawBufferPointer(start: address, count: byteCount)
            mapped = true
        } else {
            // mmap refused: zeroed heap memory, as before.
            // SAFETY: byteCount bytes, all zeroed before use.
            bytes = .allocate(byteCount: byteCount, alignment: 16)
            bytes.initializeMemory(as: UInt8.self, repeating: 0)
            mapped = false
        }
    }

    func deallocate() {
        // SAFETY: returns the memory the way init got it; the owner calls this once,
        // when nothing uses the buffer any more.
        if mapped { munmap(bytes.baseAddress, bytes.count) } else { bytes.deallocate() }
    }
}
