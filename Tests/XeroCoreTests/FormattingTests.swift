import Foundation
import XCTest
@testable import XeroCore

/// The Foundation-free formatters print what `String(format:)` printed where they replaced it.
final class FormattingTests: XCTestCase {
    func testHexOfEveryByte() {
        let all = (0...255).map { UInt8($0) }
        XCTAssertEqual(Formatting.hex(all), all.map { String(format: "%02x", $0) }.joined())
        XCTAssertEqual(Formatting.hex([UInt8]()), "")
        XCTAssertEqual(Formatting.hex([0xde, 0xad, 0x0f]), "dead0f")
    }

    func testPadded() {
        for (v, w) in [(0, 2), (7, 2), (12, 2), (2026, 4), (123, 2), (5, 4), (99_999, 4)] {
            XCTAssertEqual(Formatting.padded(v, width: w), String(format: "%0\(w)d", v), "\(v) in \(w)")
        }
    }

    func testOneDecimalMatchesPrintfAwayFromHalves() {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<10_000 {
            // Values as latencies and durations come: ms with fractions, and seconds.
            let x = Double(rng.next() % 10_000_000) / 1000 + 0.0003
            XCTAssertEqual(Formatting.oneDecimal(x), String(format: "%.1f", x), "\(x)")
            XCTAssertEqual(Formatting.oneDecimal(-x), String(format: "%.1f", -x), "\(-x)")
        }
        XCTAssertEqual(Formatting.oneDecimal(3), "3.0")
        XCTAssertEqual(Formatting.oneDecimal(0.25), "0.3", "halves round away from zero")
        XCTAssertEqual(Formatting.oneDecimal(-0.04), "0.0")
    }

    func testOneDecimalNeverTraps() {
        XCTAssertEqual(Formatting.oneDecimal(.infinity), "inf")
        XCTAssertEqual(Formatting.oneDecimal(.nan), "nan")
        XCTAssertEqual(Formatting.oneDecimal(1e300), String(1e300))
        XCTAssertEqual(Formatting.oneDecimal(-Double.greatestFiniteMagnitude), String(-Double.greatestFiniteMagnitude))
    }
}
