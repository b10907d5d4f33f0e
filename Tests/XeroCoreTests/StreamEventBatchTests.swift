import XCTest
@testable import XeroCore

final class StreamEventBatchTests: XCTestCase {
    private func event(_ request: String, _ seq: Int, _ text: String = "t") -> StreamEvent {
        StreamEvent(requestId: request, attempt: 1, seq: seq, body: .delta(index: 0, text: text, logprobs: nil))
    }

    private func message(_ topic: String, _ e: StreamEvent) -> [[UInt8]] { [Array(topic.utf8), e.encode()] }

    /// Interleaved streams: each topic's events become one frame, in order, at the place of its first
    /// event; every event decodes back with its own seq.
    func testCoalesceMergesPerTopicAndKeepsOrderAndSeqs() throws {
        let messages = [message("g/a", event("a", 0, "x")), message("g/b", event("b", 0)), message("g/a", event("a", 1, "y")),
                        [Array("other".utf8)], message("g/a", event("a", 2, "z")), message("g/b", event("b", 1))]
        let out = StreamEventBatch.coalesce(messages)
        XCTAssertEqual(out.map { String(decoding: $0[0], as: UTF8.self) }, ["g/a", "g/b", "other"])
        let a = try StreamEventBatch.decodeFrame(out[0][1])
        XCTAssertEqual(a, [event("a", 0, "x"), event("a", 1, "y"), event("a", 2, "z")])
        XCTAssertEqual(try StreamEventBatch.decodeFrame(out[1][1]).map(\.seq), [0, 1])
        XCTAssertEqual(out[2], [Array("other".utf8)])
    }

    /// Nothing to merge: the messages come back as they were, and a single event stays a plain event.
    func testCoalesceWithoutRepeatsIsIdentity() throws {
        let messages = [message("g/a", event("a", 0)), message("g/b", event("b", 0))]
        XCTAssertEqual(StreamEventBatch.coalesce(messages), messages)
        XCTAssertEqual(try StreamEventBatch.decodeFrame(messages[0][1]), [event("a", 0)])
    }

    /// A topic with more events than a batch may hold is split into full batches, still in order.
    func testCoalesceSplitsAtTheBound() throws {
        let n = StreamEventBatch.maxEvents + 5
        let out = StreamEventBatch.coalesce((0..<n).map { message("g/a", event("a", $0)) })
        XCTAssertEqual(out.count, 2)
        let seqs = try out.flatMap { try StreamEventBatch.decodeFrame($0[1]) }.map(\.seq)
        XCTAssertEqual(seqs, Array(0..<n))
    }

    /// Large events travel alone once the byte bound is reached.
    func testCoalesceRespectsTheByteBound() throws {
        let big = String(repeating: "x", count: StreamEventBatch.maxBytes / 3)
        let out = StreamEventBatch.coalesce((0..<4).map { message("g/a", event("a", $0, big)) })
        XCTAssertEqual(out.count, 2, "two events of a third of the bound fit in one batch, not three")
        XCTAssertEqual(try out.flatMap { try StreamEventBatch.decodeFrame($0[1]) }.map(\.seq), [0, 1, 2, 3])
    }

    /// A batch is untrusted input like any frame: wrong counts, mixed requests, nested batches,
    /// trailing bytes and every truncation are refused, never a crash.
    func testHostileBatchesAreRefused() throws {
        let a0 = event("a", 0).encode(), a1 = event("a", 1).encode(), b0 = event("b", 0).encode()
        let good = StreamEventBatch.encode([a0, a1])
        XCTAssertEqual(try StreamEventBatch.decodeFrame(good).count, 2)
        XCTAssertThrowsError(try StreamEventBatch.decodeFrame(StreamEventBatch.encode([a0, b0])), "mixed requests")
        XCTAssertThrowsError(try StreamEventBatch.decodeFrame(good + [0]), "trailing bytes")
        XCTAssertThrowsError(try StreamEventBatch.decodeFrame(StreamEventBatch.encode([good, good])), "nested batch")
        for cut in 0..<good.count { XCTAssertThrowsError(try StreamEventBatch.decodeFrame(Array(good[..<cut])), "cut at \(cut)") }
        var w = WireWriter()
        w.u8(StreamEventBatch.wireKind); w.u8(wireVersion); w.u32(UInt32.max); w.raw(a0)
        XCTAssertThrowsError(try StreamEventBatch.decodeFrame(w.bytes), "count beyond the bound")
        var one = WireWriter()
        one.u8(StreamEventBatch.wireKind); one.u8(wireVersion); one.u32(1); one.raw(a0)
        XCTAssertThrowsError(try StreamEventBatch.decodeFrame(one.bytes), "a batch of one")
    }
}
