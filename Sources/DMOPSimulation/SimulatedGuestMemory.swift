// SPDX-License-Identifier: MIT
/// The guest's physical memory map as the simulated Xen sees it: one p2m type
/// per guest frame, kept as runs of equal type so the whole 64-bit gfn space
/// costs a few entries (a set_mem_type over a million frames is one run).
public struct SimulatedGuestMemory: Equatable, Sendable {
    /// The p2m types the modelled DMOPs can produce (Xen's p2m_type_t, the
    /// subset reachable through set_mem_type, relocate_memory and
    /// map_mem_type_to_ioreq_server).
    public enum PageType: UInt8, Sendable, CustomStringConvertible {
        /// p2m_invalid: nothing mapped (a hole).
        case invalid
        case ramRW
        case ramRO
        /// p2m_mmio_dm: accesses go to the device model.
        case mmioDM
        /// p2m_ioreq_server: writes go to the ioreq server that claimed the type.
        case ioreqServer

        /// p2m_is_ram().
        public var isRAM: Bool { self == .ramRW || self == .ramRO }
        /// p2m_is_hole(): p2m_invalid or p2m_mmio_dm.
        public var isHole: Bool { self == .invalid || self == .mmioDM }

        public var description: String {
            switch self {
            case .invalid: "invalid"
            case .ramRW: "ram_rw"
            case .ramRO: "ram_ro"
            case .mmioDM: "mmio_dm"
            case .ioreqServer: "ioreq_server"
            }
        }
    }

    public struct Run: Equatable, Sendable {
        public var start: UInt64
        public var end: UInt64
        public var type: PageType
    }

    /// Runs covering [0, UInt64.max] without gaps, sorted, neighbours of the
    /// same type merged.
    public private(set) var runs: [Run]
    /// p2m->max_mapped_pfn: the highest frame ever mapped; it only grows.
    public private(set) var maxMappedPfn: UInt64

    /// `mapped` ranges become ram_rw, everything else is a hole.
    public init(ram mapped: [ClosedRange<UInt64>]) {
        runs = [Run(start: 0, end: .max, type: .invalid)]
        maxMappedPfn = 0
        for range in mapped { set(range, to: .ramRW) }
    }

    /// Index of the run holding `pfn`.
    private func index(of pfn: UInt64) -> Int {
        var low = 0, high = runs.count
        while low < high {
            let mid = (low + high) / 2
            if runs[mid].start <= pfn { low = mid + 1 } else { high = mid }
        }
        return low - 1
    }

    public func type(of pfn: UInt64) -> PageType { runs[index(of: pfn)].type }

    /// The runs overlapping `range`, clipped to it, in order.
    public func runs(in range: ClosedRange<UInt64>) -> [Run] {
        var result: [Run] = []
        var i = index(of: range.lowerBound)
        while i < runs.count, runs[i].start <= range.upperBound {
            result.append(Run(start: max(runs[i].start, range.lowerBound),
                              end: min(runs[i].end, range.upperBound), type: runs[i].type))
            i += 1
        }
        return result
    }

    /// Number of frames of `type` (p2m->ioreq.entry_count for ioreqServer).
    public func count(of type: PageType) -> UInt64 {
        runs.reduce(0) { $1.type == type ? $0 &+ ($1.end - $1.start &+ 1) : $0 }
    }

    public mutating func set(_ range: ClosedRange<UInt64>, to type: PageType) {
        let first = index(of: range.lowerBound), last = index(of: range.upperBound)
        var replacement: [Run] = []
        if runs[first].start < range.lowerBound {
            replacement.append(Run(start: runs[first].start, end: range.lowerBound - 1, type: runs[first].type))
        }
        replacement.append(Run(start: range.lowerBound, end: range.upperBound, type: type))
        if runs[last].end > range.upperBound {
            replacement.append(Run(start: range.upperBound + 1, end: runs[last].end, type: runs[last].type))
        }
        runs.replaceSubrange(first...last, with: replacement)
        // Merge equal neighbours around the change.
        var i = max(first - 1, 0)
        while i + 1 < runs.count, i <= first + replacement.count {
            if runs[i].type == runs[i + 1].type {
                runs[i].end = runs[i + 1].end
                runs.remove(at: i + 1)
            } else {
                i += 1
            }
        }
        if type != .invalid, range.upperBound > maxMappedPfn { maxMappedPfn = range.upperBound }
    }
}
