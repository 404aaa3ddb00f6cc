// SPDX-License-Identifier: MIT
import DMOPClient
import DMOPCore
import DMOPPosix
import Foundation
import Glibc
import Testing

@Suite("End to end: broker process, socket, simulated hypervisor", .serialized)
struct EndToEndTests {
    static let setIsaIrqLevel = 9

    @Test("an allowed op reaches the hypervisor; the record shows it")
    func allowedReaches() throws {
        let broker = try BrokerUnderTest()
        let client = try broker.connect()
        #expect(client.welcome.domid == 5)
        #expect(client.welcome.version == 2)
        #expect(client.welcome.dmopABI == DMOPABI.identifier)
        #expect(client.welcome.allowedOps & (1 << 9) != 0)
        let reply = try client.invoke("set_isa_irq_level", ["isa_irq": 4, "level": 1])
        #expect(reply.result == 0 && reply.origin == .hypervisor && reply.buffers.isEmpty)
        client.close()
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 0)
        #expect(broker.records == [.init(domid: 5, op: Self.setIsaIrqLevel, nrBufs: 1, sizes: [32], rc: 0)])
        #expect(broker.recordLines == [#"{"domid":5,"op":9,"nr_bufs":1,"sizes":[32],"rc":0}"#])
        #expect(broker.auditLog.contains("op=set_isa_irq_level verdict=forward rule=\(TestSupport.policyPath("qemu-xen.policy")):"))
    }

    @Test("a denied op and a wrong-domid request do not reach it")
    func refusalsDoNotReach() throws {
        let broker = try BrokerUnderTest()
        let client = try broker.connect()
        let denied = try client.invoke("nr_vcpus")
        #expect(denied.origin == .broker && denied.reason == .opNotAllowed && denied.result == -EPERM)
        let other = try client.invoke("set_isa_irq_level", ["isa_irq": 4, "level": 1], domid: 6)
        #expect(other.origin == .broker && other.reason == .domidMismatch && other.result == -EPERM)
        let reserved = try client.invoke("set_isa_irq_level", ["isa_irq": 4, "level": 1], domid: 0x7FF4)
        #expect(reserved.reason == .domidReserved)
        let xsa506 = try client.call(buffers: [TestSupport.op("modified_memory").encodeHeader(["nr_extents": 1])])
        #expect(xsa506.reason == .badBufferCount && xsa506.result == -EINVAL)
        // The session goes on after refusals.
        let allowed = try client.invoke("set_isa_irq_level", ["isa_irq": 3, "level": 0])
        #expect(allowed.result == 0)
        client.close()
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 0)
        #expect(broker.records.count == 1)
        #expect(broker.records.allSatisfy { $0.domid == 5 && $0.op == Self.setIsaIrqLevel })
        #expect(broker.auditLog.contains("verdict=refuse reason=OP_NOT_ALLOWED"))
        #expect(broker.auditLog.contains("verdict=refuse reason=DOMID_MISMATCH"))
    }

    @Test("a QEMU-like session: outputs come back where the op writes them")
    func session() throws {
        let broker = try BrokerUnderTest()
        let client = try broker.connect()
        let id = try client.createIoreqServer(handleBufioreq: 2)
        let info = try client.ioreqServerInfo(id: id, gfns: false)
        #expect(info.bufioreqPort != 0)
        _ = try client.perform("map_io_range_to_ioreq_server", ["id": UInt64(id), "type": 0, "start": 0x3f8, "end": 0x3ff])
        let overlap = try client.invoke("map_io_range_to_ioreq_server", ["id": UInt64(id), "type": 0, "start": 0x3fa, "end": 0x3fa])
        #expect(overlap.origin == .hypervisor && overlap.result == -EEXIST)
        _ = try client.perform("set_ioreq_server_state", ["id": UInt64(id), "enabled": 1])
        let bitmap = try client.trackDirtyVram(firstPfn: 0xf0000, pages: 64)
        #expect(bitmap.count == 8)
        _ = try client.perform("destroy_ioreq_server", ["id": UInt64(id)])
        // Gone from the session's servers: the broker refuses it now.
        let again = try client.invoke("destroy_ioreq_server", ["id": UInt64(id)])
        #expect(again.reason == .notOwner && again.result == -ENOENT)
        client.close()
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 0)
        let ops = broker.records.map(\.op)
        #expect(ops == [1, 2, 3, 3, 5, 7, 6])
        #expect(broker.records.first { $0.op == 7 }?.sizes == [32, 8])
    }

    @Test("pipelined requests are answered in order, matched by id")
    func pipelined() throws {
        let broker = try BrokerUnderTest()
        let client = try broker.connect()
        var ids: [UInt32] = []
        for irq in 0..<10 {
            ids.append(try client.send(buffers: [TestSupport.op("set_isa_irq_level").encodeHeader(["isa_irq": UInt64(irq)])]))
        }
        for id in ids {
            let reply = try client.nextReply()
            #expect(reply.requestID == id && reply.result == 0)
        }
    }

    @Test("version skew is refused cleanly, with the broker's range")
    func versionSkew() throws {
        let broker = try BrokerUnderTest()
        #expect(throws: ClientError.self) {
            do {
                _ = try broker.connect(hello: Hello(minVersion: 3, maxVersion: 7))
            } catch ClientError.refused(let refused) {
                #expect(refused.reason == .versionUnsupported)
                #expect(refused.brokerMinVersion == 1 && refused.brokerMaxVersion == 2)
                #expect(refused.text.contains("3...7"))
                throw ClientError.refused(refused)
            }
        }
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 80)
        #expect(broker.records.isEmpty)
        #expect(broker.auditLog.contains("hello refused"))
    }

    @Test("a client built for another DMOP ABI is refused")
    func interfaceSkew() throws {
        let broker = try BrokerUnderTest()
        do {
            _ = try broker.connect(hello: Hello(dmopABI: 0x0004_0d00))
            Issue.record("accepted")
        } catch ClientError.refused(let refused) {
            #expect(refused.reason == .xenInterfaceMismatch)
        }
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 80)
    }

    @Test("a request before the hello ends the session with HELLO_REQUIRED")
    func requestBeforeHello() throws {
        let broker = try BrokerUnderTest()
        let fd = try broker.rawConnection()
        try SeqPacket.send(fd.rawValue, Wire.encodeRequest(domid: 5, requestID: 3, buffers: [TestSupport.op("nr_vcpus").encodeHeader()]))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 70000, alignment: 8)
        defer { buffer.deallocate() }
        guard case .datagram(let n) = try SeqPacket.receive(fd.rawValue, into: buffer) else {
            Issue.record("no answer"); return
        }
        let message = try Wire.decodeBrokerMessage(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        guard case .protocolError(let error) = message else { Issue.record("\(message)"); return }
        #expect(error.reason == .helloRequired && error.requestID == 3)
        #expect(try SeqPacket.receive(fd.rawValue, into: buffer) == .hangUp)
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 79)
        #expect(broker.records.isEmpty)
    }

    @Test("listen mode: the socket is 0600, the next client is served after a hang-up")
    func listenMode() throws {
        let broker = try BrokerUnderTest(mode: .listen)
        var info = stat()
        #expect(stat(broker.socketPath, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        for round in 0..<3 {
            let client = try broker.connect()
            #expect(try client.invoke("set_isa_irq_level", ["isa_irq": UInt64(round), "level": 1]).result == 0)
            client.close()
        }
        #expect(broker.isAlive)
        kill(broker.pid, SIGTERM)
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 0)
        #expect(broker.records.count == 3)
    }

    @Test("SIGTERM during a session: exit 0")
    func sigterm() throws {
        let broker = try BrokerUnderTest()
        let client = try broker.connect()
        #expect(try client.invoke("set_isa_irq_level", ["isa_irq": 1]).result == 0)
        kill(broker.pid, SIGTERM)
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 0)
    }

    @Test("--listen never clobbers a path that is not a stale socket")
    func noClobber() throws {
        let directory = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("precious").path
        try "keep me".write(toFile: path, atomically: true, encoding: .utf8)
        let result = try runBroker(["serve", "--hypervisor", "simulated", "--domid", "5", "--listen", path,
                                    "--policy", TestSupport.policyPath("qemu-xen.policy"), "--allow-root"])
        #expect(result.status == 69)
        #expect(result.output.contains("not a socket"))
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "keep me")
    }

    @Test("a stale socket is replaced, a live one is not")
    func staleSocket() throws {
        let first = try BrokerUnderTest(mode: .listen)
        // Live: a second broker on the same path must refuse.
        let result = try runBroker(["serve", "--hypervisor", "simulated", "--domid", "5", "--listen", first.socketPath,
                                    "--policy", TestSupport.policyPath("qemu-xen.policy"), "--allow-root"])
        #expect(result.status == 69 && result.output.contains("live socket"))
        // Stale: kill the first broker hard; the path stays behind.
        kill(first.pid, SIGKILL)
        _ = first.waitForExit()
        #expect(FileManager.default.fileExists(atPath: first.socketPath))
        let second = try BrokerUnderTest(mode: .listen, listenPath: first.socketPath)
        let client = try second.connect()
        #expect(try client.invoke("set_isa_irq_level", ["isa_irq": 1]).result == 0)
    }

    @Test("--peer-uid: a peer with another uid is refused")
    func peerUid() throws {
        let broker = try BrokerUnderTest(extraArguments: ["--peer-uid", String(getuid() + 1)])
        let fd = try broker.rawConnection()
        // The broker may refuse (close) before the HELLO is sent: EPIPE then.
        _ = try? SeqPacket.send(fd.rawValue, Wire.encodeHello(Hello()))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 100, alignment: 8)
        defer { buffer.deallocate() }
        let received = try? SeqPacket.receive(fd.rawValue, into: buffer)
        #expect(received == .hangUp || received == nil)
        #expect(BrokerUnderTest.exitCode(broker.waitForExit()) == 77)
        #expect(broker.auditLog.contains("peer refused"))
    }

    @Test("policy check: shipped policies pass; an unknown op fails with file:line:column")
    func policyCheck() throws {
        let ok = try runBroker(["policy", "check", TestSupport.policyPath("qemu-xen.policy"),
                                TestSupport.policyPath("qemu-xen-headless.policy")])
        #expect(ok.status == 0, "\(ok.output)")
        let directory = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let bad = directory.appendingPathComponent("bad.policy").path
        try "allow nr_vcpus\nallow no_such_op\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let result = try runBroker(["policy", "check", bad])
        #expect(result.status == 65)
        #expect(result.output.contains("\(bad):2:7: unknown op 'no_such_op'"))
    }

    @Test("policy check warns on a policy that allows nothing, and counts a CRLF file's rules")
    func policyCheckEmptyAndCRLF() throws {
        let directory = TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let empty = directory.appendingPathComponent("empty.policy").path
        try "# nothing yet\n".write(toFile: empty, atomically: true, encoding: .utf8)
        let warned = try runBroker(["policy", "check", empty])
        #expect(warned.status == 0)
        #expect(warned.output.contains("\(empty): warning: this policy allows no op"), "\(warned.output)")
        let crlf = directory.appendingPathComponent("crlf.policy").path
        try "# edited elsewhere\r\nallow nr_vcpus\r\nallow set_isa_irq_level\r\n".write(toFile: crlf, atomically: true, encoding: .utf8)
        let counted = try runBroker(["policy", "check", crlf])
        #expect(counted.status == 0)
        #expect(counted.output.contains("ok, 2 op(s) allowed: nr_vcpus set_isa_irq_level"), "\(counted.output)")
        #expect(!counted.output.contains("warning"))
    }

    @Test("serve with a bad policy exits 65 with one line")
    func serveBadPolicy() throws {
        let result = try runBroker(["serve", "--hypervisor", "simulated", "--domid", "5", "--socket-fd", "0",
                                    "--policy", "/nonexistent.policy", "--allow-root"])
        #expect(result.status == 65)
        #expect(result.output.split(separator: "\n").count == 1)
    }

    @Test("reserved domids are refused on the command line")
    func reservedDomidArgument() throws {
        let result = try runBroker(["serve", "--hypervisor", "simulated", "--domid", "32756", "--socket-fd", "0",
                                    "--policy", TestSupport.policyPath("qemu-xen.policy")])
        #expect(result.status == 64)
    }

    @Test("the demo runs and shows refusals that never reached the hypervisor")
    func demo() throws {
        let result = try TestSupport.run(TestSupport.brokerPath,
                                         ["demo", "--policy", TestSupport.policyPath("qemu-xen.policy")])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("refused inject_event"))
        #expect(result.output.contains("DOMID_MISMATCH"))
        #expect(!result.output.contains("FAILED"))
    }
}
