// SPDX-License-Identifier: MIT
import Glibc

/// Writable memory for the zero-length buffers of a DMOP.
///
/// privcmd pins every buffer's pages for writing, and a zero-length buffer at
/// a page-aligned address (NULL included) needs zero pages, which newer
/// kernels refuse with EFAULT (privcmd_ioctl_dm_op()'s page pinning, Linux
/// drivers/xen/privcmd.c): QEMU's
/// track_dirty_vram(nr = 0) to stop tracking hits this. Such a buffer is
/// passed instead as size 0 at an address inside this small owned block that
/// is not the first byte of a page: the kernel pins that one page, and Xen,
/// told the size is 0, reads and writes nothing. The sizes Xen sees stay
/// exactly what the client sent.
public final class ZeroLengthBacking {
    private let block: UnsafeMutableRawPointer
    /// An address inside `block` that is not page-aligned.
    public let address: UnsafeMutableRawPointer

    public init() {
        // SAFETY: 2 bytes this object owns, freed once in deinit.
        block = UnsafeMutableRawPointer.allocate(byteCount: 2, alignment: 1)
        // SAFETY: the block was just allocated with 2 bytes.
        block.storeBytes(of: 0 as UInt16, as: UInt16.self)
        let pageSize = max(Int(sysconf(Int32(_SC_PAGESIZE))), 1)
        // Of two neighbouring bytes at most one starts a page.
        address = Int(bitPattern: block) % pageSize == 0 ? block + 1 : block
    }

    // SAFETY: the block from init, freed once; the hypervisor that hands
    // `address` to the kernel holds this object.
    deinit { block.deallocate() }

    /// The pointer to hand the kernel for `buffer`.
    @inline(__always)
    public func pointer(for buffer: UnsafeMutableRawBufferPointer) -> UnsafeMutableRawPointer? {
        buffer.count == 0 ? address : buffer.baseAddress
    }
}
