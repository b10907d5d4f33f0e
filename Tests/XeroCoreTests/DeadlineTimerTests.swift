import Foundation
import XCTest
@testable import XeroCore

final class DeadlineTimerTests: XCTestCase {
    func testActionsRunInDeadlineOrderAndCancelledOnesNever() {
        let timer = DeadlineTimer()
        let fired = Locked([Int]())
        let done = expectation(description: "the last action ran")
        timer.schedule(afterMs: 60) { fired.withLock { $0.append(3) }; done.fulfill() }
        timer.schedule(afterMs: 20) { fired.withLock { $0.append(2) } }
        let cancelled = timer.schedule(afterMs: 30) { fired.withLock { $0.append(99) } }
        timer.schedule(afterMs: 0) { fired.withLock { $0.append(1) } }
        timer.cancel(cancelled)
        wait(for: [done], timeout: 10)
        XCTAssertEqual(fired.withLock { $0 }, [1, 2, 3])
    }

    /// What the timer is for: entries for deadlines far away that are cancelled right after (every
    /// request's safety net) must not pile up.
    func testCancelledFarDeadlinesDoNotAccumulate() {
        let timer = DeadlineTimer()
        for _ in 0..<100_000 {
            let t = timer.schedule(afterMs: 300_000) {}
            timer.cancel(t)
        }
        XCTAssertLessThan(timer.heapCount, 2100)
        // Live entries are kept through compaction.
        let live = (0..<3000).map { _ in timer.schedule(afterMs: 300_000) {} }
        for _ in 0..<10_000 { timer.cancel(timer.schedule(afterMs: 300_000) {}) }
        XCTAssertGreaterThanOrEqual(timer.heapCount, live.count)
        XCTAssertLessThan(timer.heapCount, 2 * live.count + 1100)
    }
}
