// SPDX-License-Identifier: MIT
import Glibc

/// The drop-in libxendevicemodel.so.1, loaded with dlopen so the bench does
/// not link it (nor Debian's) and runs the same whether it is built or not.
/// Signatures are those of Xen 4.17's <xendevicemodel.h>.
final class CLibrary {
    typealias Open = @convention(c) (OpaquePointer?, UInt32) -> OpaquePointer?
    typealias Close = @convention(c) (OpaquePointer?) -> Int32
    typealias SetPciIntxLevel = @convention(c) (OpaquePointer?, UInt16, UInt16, UInt8, UInt8, UInt8, UInt32) -> Int32
    typealias TrackDirtyVram = @convention(c) (OpaquePointer?, UInt16, UInt64, UInt32, UnsafeMutablePointer<UInt>?) -> Int32

    let path: String
    let open: Open
    let close: Close
    let setPciIntxLevel: SetPciIntxLevel
    let trackDirtyVram: TrackDirtyVram

    /// nil when there is no file at `path`; exits when the file is there but
    /// is not the library (a broken build should not pass silently).
    init?(path: String) {
        guard access(path, R_OK) == 0 else { return nil }
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            fail("dlopen \(path): \(dlerror().map { String(cString: $0) } ?? "unknown error")")
        }
        func symbol<T>(_ name: String, _: T.Type) -> T {
            guard let address = dlsym(handle, name) else { fail("\(path) has no \(name)") }
            return unsafeBitCast(address, to: T.self)
        }
        self.path = path
        open = symbol("xendevicemodel_open", Open.self)
        close = symbol("xendevicemodel_close", Close.self)
        setPciIntxLevel = symbol("xendevicemodel_set_pci_intx_level", SetPciIntxLevel.self)
        trackDirtyVram = symbol("xendevicemodel_track_dirty_vram", TrackDirtyVram.self)
    }

    /// xendevicemodel_open on an inherited broker socket, as the wrapper
    /// hands one to QEMU: DMOP_BROKER_FD names it, the library adopts it.
    func openSession(fd: Int32) -> OpaquePointer {
        setenv("DMOP_BROKER_FD", String(fd), 1)
        defer { unsetenv("DMOP_BROKER_FD") }
        guard let handle = open(nil, 0) else {
            fail("xendevicemodel_open with DMOP_BROKER_FD=\(fd) failed: \(String(cString: strerror(errno)))")
        }
        return handle
    }
}
