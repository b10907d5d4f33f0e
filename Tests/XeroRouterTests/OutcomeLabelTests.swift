import XCTest
@testable import XeroRouter

final class OutcomeLabelTests: XCTestCase {
    /// A worker's report outcome becomes a metric label: only a fixed set, whatever it sends.
    func testReportOutcomesMapToAFixedSet() {
        XCTAssertEqual(RouterState.outcomeKind("done"), "done")
        XCTAssertEqual(RouterState.outcomeKind("rejected:context_length_exceeded"), "rejected")
        XCTAssertEqual(RouterState.outcomeKind("error:no_slot"), "error")
        XCTAssertEqual(RouterState.outcomeKind("cancelled"), "cancelled")
        XCTAssertEqual(RouterState.outcomeKind("anything a hostile worker says \u{0}"), "error")
        XCTAssertEqual(RouterState.outcomeKind(""), "error")
    }
}
