import XCTest
import XeroCore

final class OutcomeKindTests: XCTestCase {
    /// A worker's report outcome becomes a metric label (router and worker): only a fixed set, whatever it sends.
    func testReportOutcomesMapToAFixedSet() {
        XCTAssertEqual(JobReport.kind(ofOutcome: "done"), "done")
        XCTAssertEqual(JobReport.kind(ofOutcome: "rejected:context_length_exceeded"), "rejected")
        XCTAssertEqual(JobReport.kind(ofOutcome: "error:no_slot"), "error")
        XCTAssertEqual(JobReport.kind(ofOutcome: "cancelled"), "cancelled")
        XCTAssertEqual(JobReport.kind(ofOutcome: "anything a hostile worker says \u{0}"), "error")
        XCTAssertEqual(JobReport.kind(ofOutcome: ""), "error")
    }
}
