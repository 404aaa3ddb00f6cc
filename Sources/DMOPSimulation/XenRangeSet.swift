// SPDX-License-Identifier: MIT
import Glibc

/// Xen's `struct rangeset` (xen/common/rangeset.c) as ioreq servers use it:
/// sorted, disjoint, inclusive ranges that merge when they touch, with a limit
/// on how many separate ranges may exist (`rangeset_limit`, MAX_NR_IO_RANGES
/// for ioreq servers). The algorithms follow Xen's step by step, so the
/// simulated hypervisor runs out of ranges (ENOMEM) exactly where Xen does,
/// including Xen's quirk of allocating before merging with the next range.
public struct XenRangeSet: Equatable, Sendable {
    public struct Range: Equatable, Sendable, CustomStringConvertible {
        public let start: UInt64
        public let end: UInt64
        public init(start: UInt64, end: UInt64) {
            self.start = start
            self.end = end
        }
        public var description: String { "[\(hex(start))-\(hex(end))]" }
    }

    public private(set) var ranges: [Range] = []
    /// Maximum number of separate ranges.
    public let limit: Int

    public init(limit: Int) {
        self.limit = limit
    }

    /// find_range(): index of the last range starting at or below `value`.
    private func find(_ value: UInt64) -> Int? {
        var low = 0, high = ranges.count
        while low < high {
            let mid = (low + high) / 2
            if ranges[mid].start <= value { low = mid + 1 } else { high = mid }
        }
        return low == 0 ? nil : low - 1
    }

    /// rangeset_overlaps_range().
    public func overlaps(start: UInt64, end: UInt64) -> Bool {
        guard let x = find(end) else { return false }
        return start <= ranges[x].end
    }

    /// rangeset_contains_range(): one range covers all of [start, end].
    public func contains(start: UInt64, end: UInt64) -> Bool {
        guard let x = find(start) else { return false }
        return ranges[x].end >= end
    }

    /// rangeset_add_range(): 0 or -ENOMEM. Requires start <= end.
    public mutating func add(start s: UInt64, end e: UInt64) -> Int32 {
        precondition(s <= e, "rangeset_add_range with start > end")
        let xi = find(s), yi = find(e)
        var x: Int
        if xi == yi {
            if let i = xi, !(ranges[i].end < s && ranges[i].end &+ 1 != s) {
                x = i
                if ranges[x].end < e { ranges[x] = Range(start: ranges[x].start, end: e) }
            } else {
                // A separate range is allocated first, even when it will merge
                // with the next one below: Xen fails here at the limit.
                guard ranges.count < limit else { return -ENOMEM }
                x = (xi ?? -1) + 1
                ranges.insert(Range(start: s, end: e), at: x)
            }
        } else {
            // yi is non-nil here (it differs from xi and find is monotonic).
            guard let y = yi else { return -ENOMEM }
            if let i = xi {
                x = (ranges[i].end < s && ranges[i].end &+ 1 != s) ? i + 1 : i
            } else {
                x = 0
            }
            let newStart = (x == xi) ? ranges[x].start : s
            let newEnd = max(ranges[y].end, e)
            ranges[x] = Range(start: newStart, end: newEnd)
            // Destroy the following ranges swallowed by the new end.
            while x + 1 < ranges.count, ranges[x + 1].end <= ranges[x].end {
                ranges.remove(at: x + 1)
            }
        }
        if x + 1 < ranges.count, ranges[x].end &+ 1 == ranges[x + 1].start {
            ranges[x] = Range(start: ranges[x].start, end: ranges[x + 1].end)
            ranges.remove(at: x + 1)
        }
        return 0
    }

    /// rangeset_remove_range(): 0 or -ENOMEM (splitting a range needs one
    /// more). Requires start <= end.
    public mutating func remove(start s: UInt64, end e: UInt64) -> Int32 {
        precondition(s <= e, "rangeset_remove_range with start > end")
        let xi = find(s), yi = find(e)
        if xi == yi {
            guard let x = xi, ranges[x].end >= s else { return 0 }
            let r = ranges[x]
            if r.start < s && r.end > e {
                guard ranges.count < limit else { return -ENOMEM }
                ranges[x] = Range(start: r.start, end: s - 1)
                ranges.insert(Range(start: e + 1, end: r.end), at: x + 1)
            } else if r.start == s && r.end <= e {
                ranges.remove(at: x)
            } else if r.start == s {
                ranges[x] = Range(start: e + 1, end: r.end)
            } else if r.end <= e {
                ranges[x] = Range(start: r.start, end: s - 1)
            }
            return 0
        }
        guard var y = yi else { return 0 }
        var x = xi ?? 0
        if ranges[x].start < s {
            ranges[x] = Range(start: ranges[x].start, end: min(ranges[x].end, s - 1))
            x += 1
        }
        // Destroy everything strictly between x and y.
        while x < y {
            ranges.remove(at: x)
            y -= 1
        }
        if ranges[y].end <= e {
            ranges.remove(at: y)
        } else {
            ranges[y] = Range(start: e + 1, end: ranges[y].end)
        }
        return 0
    }
}

func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
