// SPDX-License-Identifier: MIT
import CXen
import DMOPTrusted
import DMOPSimulation
import Glibc

/// Builds DMOP buffers from the C structs (as libxendevicemodel does) and
/// runs them through a hypervisor, returning what came back.
enum DMOP {
    static let opSize = MemoryLayout<xen_dm_op>.size
    static let extentSize = MemoryLayout<xen_dm_op_modified_memory_extent>.size

    /// A zeroed xen_dm_op with `number` set and the payload filled in.
    static func op(_ number: Int32, _ fill: (inout xen_dm_op) -> Void = { _ in }) -> xen_dm_op {
        var op = xen_dm_op()
        op.op = UInt32(bitPattern: number)
        fill(&op)
        return op
    }

    struct Result {
        let rc: Int32
        /// Buffer 0 after the call, read back as a xen_dm_op (zero-padded if shorter).
        let op: xen_dm_op
        /// Buffer 0's raw bytes after the call.
        let buffer0: [UInt8]
        /// Buffer 1's bytes after the call, if one was passed.
        let buffer1: [UInt8]?
    }

    /// Calls `hypervisor.dmOp` with buffer 0 = `op` (truncated or padded to
    /// `size0` bytes) and an optional buffer 1 holding `extra`.
    static func call(_ hypervisor: SimulatedHypervisor, domid: UInt16, _ op: xen_dm_op, size0: Int = opSize,
                     extra: [UInt8]? = nil) -> Result {
        var bytes0 = withUnsafeBytes(of: op) { Array($0) }
        if size0 < bytes0.count { bytes0 = Array(bytes0[0..<size0]) } else {
            bytes0 += Array(repeating: 0, count: size0 - bytes0.count)
        }
        var sizes = [bytes0.count]
        if let extra { sizes.append(extra.count) }
        return withBuffers(sizes: sizes, fill: [bytes0, extra ?? []]) { buffers in
            let rc = hypervisor.dmOp(domid: domid, buffers: buffers)
            var out = xen_dm_op()
            withUnsafeMutableBytes(of: &out) { dst in
                let n = min(dst.count, buffers[0].count)
                if n > 0 { dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: buffers[0][0..<n])) }
            }
            return Result(rc: rc, op: out, buffer0: Array(buffers[0]),
                          buffer1: buffers.count > 1 ? Array(buffers[1]) : nil)
        }
    }

    /// Allocates writable buffers of `sizes` (zeroed, then `fill` copied in),
    /// hands them to `body`, frees them.
    static func withBuffers<R>(sizes: [Int], fill: [[UInt8]] = [],
                               _ body: (UnsafeBufferPointer<UnsafeMutableRawBufferPointer>) -> R) -> R {
        let buffers = sizes.enumerated().map { index, size -> UnsafeMutableRawBufferPointer in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(size, 1), alignment: 16)
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            if index < fill.count { buffer.copyBytes(from: fill[index].prefix(size)) }
            return UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size])
        }
        defer {
            for buffer in buffers {
                UnsafeMutableRawBufferPointer(start: buffer.baseAddress, count: max(buffer.count, 1)).deallocate()
            }
        }
        return buffers.withUnsafeBufferPointer(body)
    }

    static func extents(_ list: [(nr: UInt32, pad: UInt32, firstPfn: UInt64)]) -> [UInt8] {
        list.flatMap { item -> [UInt8] in
            var extent = xen_dm_op_modified_memory_extent()
            extent.nr = item.nr
            extent.pad = item.pad
            extent.first_pfn = item.firstPfn
            return withUnsafeBytes(of: extent) { Array($0) }
        }
    }
}

/// A temporary directory removed when the value goes away.
final class TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/dmop-hyp-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { buffer in
            guard let base = buffer.baseAddress, let result = mkdtemp(base) else { return "/tmp" }
            return String(cString: result)
        }
    }

    func file(_ name: String) -> String { path + "/" + name }

    deinit {
        if path != "/tmp" {
            if let dir = opendir(path) {
                while let entry = readdir(dir) {
                    let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                    if name != "." && name != ".." { unlink(path + "/" + name) }
                }
                closedir(dir)
            }
            rmdir(path)
        }
    }
}

extension SimulatedHypervisor {
    /// A simulated privcmd fd restricted to the guest, as the broker holds it.
    static func restricted(_ configuration: SimulatedXen.Configuration = .init(),
                           recordPath: String? = nil) throws -> SimulatedHypervisor {
        let hypervisor = try SimulatedHypervisor(xen: SimulatedXen(configuration), recordPath: recordPath)
        try hypervisor.restrict(to: configuration.guestDomid)
        try hypervisor.verifyRestricted()
        return hypervisor
    }
}
