// SPDX-License-Identifier: MIT
import CPosix

/// Monotonic nanoseconds (vDSO clock_gettime; one pair costs ~30 ns here and
/// is included in every sample, echo and broker alike).
@inline(__always)
func now() -> UInt64 { cposix_monotonic_ns() }

/// Samples of one measurement, in nanoseconds. Percentiles are nearest-rank
/// over all samples: no averaging that would hide the tail.
struct Samples {
    private(set) var values: [UInt64] = []

    init(capacity: Int) { values.reserveCapacity(capacity) }

    @inline(__always)
    mutating func add(_ value: UInt64) { values.append(value) }

    var count: Int { values.count }

    func summary() -> Summary {
        precondition(!values.isEmpty, "no samples")
        let sorted = values.sorted()
        func rank(_ quantile: Double) -> Double {
            let index = Int((Double(sorted.count) * quantile).rounded(.up)) - 1
            return Double(sorted[max(0, min(sorted.count - 1, index))])
        }
        return Summary(count: sorted.count, median: rank(0.5), p99: rank(0.99),
                       min: Double(sorted[0]), max: Double(sorted[sorted.count - 1]))
    }
}

struct Summary {
    let count: Int
    let median: Double
    let p99: Double
    let min: Double
    let max: Double
}

// MARK: - Formatting without Foundation

/// `value` with `digits` decimals.
func fixed(_ value: Double, _ digits: Int) -> String {
    var scale = 1
    for _ in 0..<digits { scale *= 10 }
    let scaled = Int((abs(value) * Double(scale)).rounded())
    let sign = value < 0 && scaled != 0 ? "-" : ""
    guard digits > 0 else { return sign + String(scaled) }
    let fraction = String(scaled % scale)
    return sign + String(scaled / scale) + "." + String(repeating: "0", count: digits - fraction.count) + fraction
}

func leftAligned(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}

func rightAligned(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
}

/// The unit a row is printed in.
enum Unit {
    case microseconds, nanoseconds, milliseconds

    func format(_ nanoseconds: Double) -> String {
        switch self {
        case .microseconds: fixed(nanoseconds / 1_000, 2) + " us"
        case .nanoseconds: fixed(nanoseconds, 0) + " ns"
        case .milliseconds: fixed(nanoseconds / 1_000_000, 2) + " ms"
        }
    }
}

/// The printed table: one line per row, flushed at once so progress shows.
enum Table {
    static let labelWidth = 52

    static func section(_ title: String) {
        print("")
        print(title)
    }

    static func header() {
        print(leftAligned("measurement", labelWidth) + rightAligned("n", 9) + rightAligned("median", 13)
              + rightAligned("p99", 13))
    }

    static func row(_ label: String, _ summary: Summary, _ unit: Unit, note: String = "") {
        print(leftAligned("  " + label, labelWidth) + rightAligned(String(summary.count), 9)
              + rightAligned(unit.format(summary.median), 13) + rightAligned(unit.format(summary.p99), 13)
              + (note.isEmpty ? "" : "  " + note))
    }

    static func text(_ label: String, _ value: String) {
        print(leftAligned("  " + label, labelWidth) + value)
    }
}
