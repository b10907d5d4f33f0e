import Synchronization
import XCTest
import XeroCore
@testable import XeroStore

final class CallBatcherTests: XCTestCase {
    /// Every caller gets its own call's result, whichever batch it went in; calls that wait while
    /// both lanes are busy share batches; a failing batch fails exactly its own callers.
    func testResultsReachTheirCallersAndWaitingCallsShareBatches() async throws {
        let batches = Mutex<[Int]>([])
        let batcher = CallBatcher<Int, Int>(maxBatch: 64, concurrency: 2) { calls in
            batches.withLock { $0.append(calls.count) }
            try await Task.sleep(nanoseconds: 2_000_000)   // a round trip, while others pile up
            if calls.contains(-1) { throw RedisError("refused") }
            return calls.map { $0 * 10 }
        }
        let results = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for i in 0..<200 { group.addTask { (i, try await batcher.run(i)) } }
            var out: [Int: Int] = [:]
            for try await (i, r) in group { out[i] = r }
            return out
        }
        XCTAssertEqual(results.count, 200)
        for (i, r) in results { XCTAssertEqual(r, i * 10, "call \(i) got another call's result") }
        let sizes = batches.withLock { $0 }
        XCTAssertEqual(sizes.reduce(0, +), 200, "every call ran exactly once")
        XCTAssertLessThan(sizes.count, 200, "calls that waited shared batches")
        do {
            _ = try await batcher.run(-1)
            XCTFail("the batch's error reaches its caller")
        } catch {}
        let after = try await batcher.run(3)
        XCTAssertEqual(after, 30, "a failed batch leaves the batcher working")
    }

    func testBatchOfOneRunsEachCallAlone() async throws {
        let batches = Mutex(0)
        let batcher = CallBatcher<Int, Int>(maxBatch: 1, concurrency: 2) { calls in
            batches.withLock { $0 += 1 }
            return calls
        }
        for i in 0..<5 {
            let r = try await batcher.run(i)
            XCTAssertEqual(r, i)
        }
        XCTAssertEqual(batches.withLock { $0 }, 5)
    }
}
