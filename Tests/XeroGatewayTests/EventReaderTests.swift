import XCTest
import XeroCore
import XeroQueue
@testable import XeroGateway
import XeroJobs

/// The token path fails visibly: a gap in an attempt's sequence numbers, or a mailbox whose
/// reader fell too far behind, ends the request with `stream_interrupted` — never a silent hole.
final class EventReaderTests: XCTestCase {
    func delta(_ seq: Int, attempt: Int = 1, _ text: String = "t") -> StreamEvent {
        StreamEvent(requestId: "r", attempt: attempt, seq: seq, body: .delta(index: 0, text: text, logprobs: nil))
    }

    func testInOrderEventsPassAndDuplicatesAreSkipped() async throws {
        let box = EventMailbox()
        for s in [0, 1, 1, 2] { box.put(delta(s, "\(s)")) }
        box.put(StreamEvent(requestId: "r", attempt: 1, seq: 3, body: .done(Usage(promptTokens: 1, completionTokens: 3))))
        var reader = EventReader(box)
        var texts: [String] = []
        while true {
            let ev = try await reader.next()
            if case let .delta(_, t, _, _) = ev.body { texts.append(t) }
            if ev.isTerminal { break }
        }
        XCTAssertEqual(texts, ["0", "1", "2"])
    }

    func testAGapEndsTheRequestWithStreamInterrupted() async throws {
        let box = EventMailbox()
        box.put(delta(0))
        box.put(delta(2))   // 1 was lost on the way
        var reader = EventReader(box)
        _ = try await reader.next()
        let ev = try await reader.next()
        guard case let .error(e) = ev.body else { return XCTFail("expected an error, got \(ev.body)") }
        XCTAssertEqual(e.code, "stream_interrupted")
        XCTAssertEqual(e.status, 502)
    }

    func testAGapBeforeTheTerminalEventIsCaughtToo() async throws {
        let box = EventMailbox()
        box.put(delta(0))
        box.put(StreamEvent(requestId: "r", attempt: 1, seq: 5, body: .done(Usage(promptTokens: 1, completionTokens: 5))))
        var reader = EventReader(box)
        _ = try await reader.next()
        guard case .error = try await reader.next().body else { return XCTFail("a done after a gap must not pass") }
    }

    func testOutOfBandTerminalEventsAreAcceptedAnyTimeAndOtherAttemptsIgnored() async throws {
        let box = EventMailbox()
        box.put(delta(0, attempt: 2))
        box.put(delta(1, attempt: 1))   // a stale attempt: ignored
        box.put(StreamEvent(requestId: "r", attempt: 2, seq: WireLimits.outOfBandSeq, body: .error(.workerLost())))
        var reader = EventReader(box)
        _ = try await reader.next()
        guard case let .error(e) = try await reader.next().body else { return XCTFail("expected the router's error") }
        XCTAssertEqual(e.code, "worker_lost")
    }

    func testAMailboxPastItsCapacityHoldsOnlyAnErrorAndSaysSoOnce() async throws {
        let box = EventMailbox(capacity: 3)
        XCTAssertTrue(box.put(delta(0)))
        XCTAssertTrue(box.put(delta(1)))
        XCTAssertTrue(box.put(delta(2)))
        XCTAssertFalse(box.put(delta(3)), "the fourth event overflows: the caller cancels the job")
        XCTAssertTrue(box.put(delta(4)), "later events are ignored quietly")
        let taken = await box.take()
        XCTAssertEqual(taken.count, 1)
        guard case let .error(e) = taken[0].body else { return XCTFail("expected the overflow error") }
        XCTAssertEqual(e.code, "stream_interrupted")
        XCTAssertTrue(taken[0].isTerminal)
    }

    func testMadeUpStatusesNeverReachHTTP() {
        XCTAssertEqual(APIError(status: 1000, message: "m", type: "t").httpStatus, 502)
        XCTAssertEqual(APIError(status: -1, message: "m", type: "t").httpStatus, 502)
        XCTAssertEqual(APIError(status: 200, message: "m", type: "t").httpStatus, 502)
        XCTAssertEqual(APIError(status: 404, message: "m", type: "t").httpStatus, 404)
    }

    func testAccumulatorIgnoresOutOfRangeChoicesAndTools() {
        var acc = ChatAccumulator(n: 2, logprobs: false)
        acc.add(.delta(index: -1, text: "x", logprobs: nil))
        acc.add(.delta(index: 2, text: "x", logprobs: nil))
        acc.add(.toolCall(index: 0, toolIndex: -1, id: "i", name: "n", arguments: "{}"))
        acc.add(.toolCall(index: 0, toolIndex: 1 << 40, id: "i", name: "n", arguments: "{}"))
        acc.add(.finish(index: Int.min, reason: "stop"))
        acc.add(.delta(index: 1, text: "ok", logprobs: nil))
        XCTAssertEqual(acc.choices.map(\.content), ["", "ok"])
        XCTAssertTrue(acc.choices.allSatisfy { $0.toolCalls.isEmpty && $0.finishReason == nil })
    }
}
