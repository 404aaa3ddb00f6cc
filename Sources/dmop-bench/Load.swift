// SPDX-License-Identifier: MIT
import DMOPClient
import DMOPCore
import Glibc

/// `dmop-bench load --socket PATH`: sends requests to a broker started by
/// hand (`dmop-broker serve --listen PATH ...`), so the broker can run under
/// a profiler (callgrind counts instructions reproducibly; perf samples).
enum LoadMode {
    static func run(_ arguments: ArraySlice<String>) -> Never {
        var socket: String?
        var requests = 100_000
        var op = "intx"
        var rest = arguments
        while let flag = rest.popFirst() {
            guard let value = rest.popFirst() else { fail("load: \(flag) needs a value") }
            switch flag {
            case "--socket": socket = value
            case "--requests":
                guard let n = Int(value), n > 0 else { fail("load: --requests '\(value)' is not a positive number") }
                requests = n
            case "--op":
                guard ["intx", "vram", "mix"].contains(value) else { fail("load: --op is intx, vram or mix") }
                op = value
            default: fail("load: unknown option \(flag)")
            }
        }
        guard let socket else { fail("load: --socket PATH is required") }
        let client: BrokerClient
        do { client = try BrokerClient.connect(path: socket) } catch { fail("load: \(error)") }
        let intx = Bench.op("set_pci_intx_level")
        let vram = Bench.op("track_dirty_vram")
        let variants: [[[UInt8]]] = [
            [intx.encodeHeader(["device": 3, "level": 1])],
            [intx.encodeHeader(["device": 3, "level": 0])],
            [vram.encodeHeader(["first_pfn": 0x10_0000, "nr": 32_768]), [UInt8](repeating: 0, count: 4096)],
            [vram.encodeHeader(["first_pfn": 0x20_0000, "nr": 32_768]), [UInt8](repeating: 0, count: 4096)],
            [Bench.op("nr_vcpus").encodeHeader()],
        ]
        let started = now()
        for i in 0..<requests {
            let index: Int
            switch op {
            case "intx": index = i & 1
            case "vram": index = 2 + (i & 1)
            default: index = i % 100 == 99 ? 4 : (i % 10 == 5 ? 2 + ((i / 10) & 1) : i & 1)
            }
            do {
                let reply = try client.call(buffers: variants[index])
                guard (reply.result == 0) == (index != 4) else { fail("load: request \(i): result \(reply.result)") }
            } catch {
                fail("load: request \(i): \(error)")
            }
        }
        let elapsed = Double(now() &- started)
        print("\(requests) \(op) requests, \(fixed(elapsed / Double(requests) / 1000, 2)) us each on average")
        exit(0)
    }
}
