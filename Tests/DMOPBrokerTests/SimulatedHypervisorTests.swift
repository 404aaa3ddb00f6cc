// SPDX-License-Identifier: MIT
import CXen
import DMOPTrusted
import DMOPSimulation
import Glibc
import Testing

@Suite("Simulated hypervisor: the Hypervisor interface and the record")
struct SimulatedHypervisorTests {
    @Test("restrict refuses reserved domids before the kernel sees them")
    func reservedDomid() throws {
        let fd = try SimulatedHypervisor(guestDomid: 5)
        for domid in [cxen_domid_first_reserved(), cxen_domid_self(), cxen_domid_invalid(), UInt16.max] {
            #expect(throws: HypervisorError.self) { try fd.restrict(to: domid) }
            do { try fd.restrict(to: domid) } catch { #expect(error.step == .reservedDomid) }
        }
        #expect(!fd.isRestricted)
    }

    @Test("restrict, verify; restricting to another domid afterwards fails with EINVAL")
    func restrictOnce() throws {
        let fd = try SimulatedHypervisor(guestDomid: 5)
        #expect(fd.xenVersion == 4 << 16 | 17)
        do {
            try fd.verifyRestricted()
            Issue.record("an unrestricted fd passed verifyRestricted")
        } catch {
            #expect(error.step == .verifyRestriction)
            #expect(error.errno == EFAULT)
            #expect(error.detail.contains("NOT restricted"))
        }
        try fd.restrict(to: 5)
        try fd.verifyRestricted()
        try fd.restrict(to: 5)
        do {
            try fd.restrict(to: 6)
            Issue.record("restriction changed")
        } catch {
            #expect(error.step == .restrict)
            #expect(error.errno == EINVAL)
        }
        #expect(fd.restriction == 5)
    }

    @Test("the record: one JSON line per call, whatever the rc, in the exact format")
    func recordLines() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("record.jsonl")
        let fd = try SimulatedHypervisor.restricted(.init(guestDomid: 5), recordPath: path)
        #expect(fd.recordFileDescriptor >= 0)
        _ = DMOP.call(fd, domid: 5, DMOP.op(XEN_DMOP_nr_vcpus))                     // 0
        _ = DMOP.call(fd, domid: 6, DMOP.op(XEN_DMOP_nr_vcpus))                     // EPERM (privcmd)
        _ = DMOP.call(fd, domid: 5, DMOP.op(XEN_DMOP_track_dirty_vram), extra: [])  // EINVAL? nr 0: 0
        _ = DMOP.call(fd, domid: 5, DMOP.op(XEN_DMOP_nr_vcpus), size0: 3)           // op -1, EFAULT
        _ = DMOP.withBuffers(sizes: []) { fd.dmOp(domid: 5, buffers: $0) }         // num 0
        _ = DMOP.withBuffers(sizes: [4097]) { fd.dmOp(domid: 5, buffers: $0) }     // E2BIG (privcmd)

        let text = try String(decoding: readAll(path), as: UTF8.self)
        #expect(text == """
            {"domid":5,"op":20,"nr_bufs":1,"sizes":[32],"rc":0}
            {"domid":6,"op":20,"nr_bufs":1,"sizes":[32],"rc":-1}
            {"domid":5,"op":7,"nr_bufs":2,"sizes":[32,0],"rc":0}
            {"domid":5,"op":-1,"nr_bufs":1,"sizes":[3],"rc":-14}
            {"domid":5,"op":-1,"nr_bufs":0,"sizes":[],"rc":0}
            {"domid":5,"op":0,"nr_bufs":1,"sizes":[4097],"rc":-7}

            """)
        let entries = try SimulationRecord.read(path: path)
        #expect(entries.count == 6)
        #expect(entries[1] == SimulationRecord.Entry(domid: 6, op: 20, nrBufs: 1, sizes: [32], rc: -Int(EPERM)))
        #expect(fd.dmOpCalls == 6)
        #expect(fd.recordWriteFailures == 0)
    }

    @Test("the record file: appended to, created 0600, close-on-exec")
    func recordFile() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("r")
        do {
            let fd = try SimulatedHypervisor.restricted(recordPath: path)
            _ = DMOP.call(fd, domid: 1, DMOP.op(XEN_DMOP_nr_vcpus))
            var status = stat()
            #expect(stat(path, &status) == 0)
            #expect(status.st_mode & 0o777 == 0o600)
            let flags = fcntl(fd.recordFileDescriptor, F_GETFL)
            #expect(flags & O_APPEND != 0)
            #expect(flags & O_ACCMODE == O_WRONLY)
            #expect(fcntl(fd.recordFileDescriptor, F_GETFD) & FD_CLOEXEC != 0)
        }
        let second = try SimulatedHypervisor.restricted(recordPath: path)
        _ = DMOP.call(second, domid: 1, DMOP.op(XEN_DMOP_nr_vcpus))
        #expect(try SimulationRecord.read(path: path).count == 2)
    }

    static let impossibleGuests: [(UInt16, UInt32)] = [
        (0, 1), (cxen_domid_first_reserved(), 1), (5, 0), (5, SimulatedXen.Limits.vcpus + 1),
    ]

    @Test("the CLI's guest is refused when no HVM guest could be it", arguments: impossibleGuests)
    func impossibleGuest(domid: UInt16, vcpus: UInt32) {
        #expect(throws: HypervisorError.self) { _ = try SimulatedHypervisor(guestDomid: domid, vcpus: vcpus) }
    }

    @Test("the CLI's guest: domid and vcpus reach the model")
    func cliGuest() throws {
        let fd = try SimulatedHypervisor(guestDomid: 5, vcpus: SimulatedXen.Limits.vcpus)
        #expect(fd.xen.configuration.guestDomid == 5)
        #expect(fd.xen.configuration.vcpus == SimulatedXen.Limits.vcpus)
    }

    @Test("an unwritable record path is a recordFile error naming the path")
    func recordFileError() {
        do {
            _ = try SimulatedHypervisor(guestDomid: 1, recordPath: "/nonexistent-dir/record")
            Issue.record("opened a record in a missing directory")
        } catch {
            #expect(error.step == .recordFile)
            #expect(error.errno == ENOENT)
            #expect(error.detail.contains("/nonexistent-dir/record"))
        }
    }

    @Test("record parser: any key order and spacing; rejects what is not a record", arguments: [
        ("{\"rc\":-95, \"sizes\": [ 32 , 0 ], \"nr_bufs\":2,\"op\":9999,\"domid\":1}", true),
        ("{\"domid\":1,\"op\":1,\"nr_bufs\":1,\"sizes\":[32]}", false),
        ("{\"domid\":1,\"op\":1,\"nr_bufs\":1,\"sizes\":[32],\"rc\":0,\"rc\":0}", false),
        ("{\"domid\":1,\"op\":1,\"nr_bufs\":1,\"sizes\":[32],\"rc\":0,\"x\":0}", false),
        ("{\"domid\":1,\"op\":1,\"nr_bufs\":1,\"sizes\":[32],\"rc\":0} junk", false),
        ("{\"domid\":1,\"op\":1,\"nr_bufs\":1,\"sizes\":[3a],\"rc\":0}", false),
        ("{\"domid\":99999999999999999999,\"op\":1,\"nr_bufs\":1,\"sizes\":[],\"rc\":0}", false),
        ("{\"domid\":1,\"op\":1,\"nr_bufs\":1,\"sizes\":[32],\"rc\":0", false),
    ])
    func parser(line: String, valid: Bool) {
        let result = Result { () throws(SimulationRecord.ParseError) in try SimulationRecord.parse(Array((line + "\n").utf8)) }
        switch result {
        case .success(let entries):
            #expect(valid)
            #expect(entries == [SimulationRecord.Entry(domid: 1, op: 9999, nrBufs: 2, sizes: [32, 0], rc: -95)])
        case .failure(let error):
            #expect(!valid, "\(error)")
            #expect(error.line == 1)
        }
    }

    func readAll(_ path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return bytes
    }
}
