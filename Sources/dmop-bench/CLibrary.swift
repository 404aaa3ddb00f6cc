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
    /// `separateCopy`: a second copy in a new link-map namespace (dlmopen),
    /// with its own process-wide session, so one process can hold a waiting
    /// session and a posting one side by side.
    init?(path: String, separateCopy: Bool = false) {
        guard access(path, R_OK) == 0 else { return nil }
        typealias DLMOpen = @convention(c) (Int, UnsafePointer<CChar>, Int32) -> UnsafeMutableRawPointer?
        let loaded: UnsafeMutableRawPointer?
        if separateCopy {
            // Glibc's module map does not declare dlmopen (a GNU extension).
            guard let address = dlsym(nil, "dlmopen") else { fail("this libc has no dlmopen") }
            // SAFETY: DLMOpen is dlmopen's C signature (glibc's dlfcn.h).
            loaded = unsafeBitCast(address, to: DLMOpen.self)(-1 /* LM_ID_NEWLM */, path, RTLD_NOW)
        } else {
            loaded = dlopen(path, RTLD_NOW | RTLD_LOCAL)
        }
        guard let handle = loaded else {
            fail("dlopen \(path): \(dlerror().map { String(cString: $0) } ?? "unknown error")")
        }
        func symbol<T>(_ name: String, _: T.Type) -> T {
            guard let address = dlsym(handle, name) else { fail("\(path) has no \(name)") }
            // SAFETY: each T below is the C type of its symbol in xendevicemodel.h.
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
    func openSession(fd: Int32, posting: Bool = true) -> OpaquePointer {
        setenv("DMOP_BROKER_FD", String(fd), 1)
        if !posting { setenv("DMOP_POSTED", "0", 1) }
        defer { unsetenv("DMOP_BROKER_FD"); unsetenv("DMOP_POSTED") }
        guard let handle = open(nil, 0) else {
            fail("xendevicemodel_open with DMOP_BROKER_FD=\(fd) failed: \(String(cString: strerror(errno)))")
        }
        return handle
    }
}
