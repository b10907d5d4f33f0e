import XCTest
@testable import XeroCore

final class WireCodecTests: XCTestCase {
    func sampleJob(payload: [UInt8] = Array(#"{"model":"m","messages":[{"role":"user","content":"hé 👋"}]}"#.utf8)) -> JobEnvelope {
        JobEnvelope(requestId: "chatcmpl-1", replyTo: "gw-a", attempt: 2, kind: .chatCompletion, tier: "priority", project: "p1",
                    endpoint: "ep", model: "smol", acceptedAtMs: 1_700_000_000_000, queueDeadlineMs: 1_700_000_030_000,
                    requestDeadlineMs: 1_700_000_300_000, prefixBlocks: [1, 2, 0xFFFF_FFFF_FFFF_FFFF], sloTTFTMs: 200, sloTPOTMs: 30, payload: payload)
    }

    func testJobEnvelopeRoundTrip() throws {
        let job = sampleJob()
        XCTAssertEqual(try JobEnvelope.decode(job.encode()), job)
        XCTAssertEqual(job.topic, "gw-a/chatcmpl-1")
    }

    func testEmptyPayloadRoundTrip() throws {
        let job = sampleJob(payload: [])
        XCTAssertEqual(try JobEnvelope.decode(job.encode()), job)
    }

    func testTruncatedEnvelopeThrowsAtEveryCut() {
        let bytes = sampleJob().encode()
        for cut in 0..<bytes.count {
            XCTAssertThrowsError(try JobEnvelope.decode(Array(bytes[0..<cut])), "cut at \(cut)")
        }
    }

    func testTrailingBytesRejected() {
        XCTAssertThrowsError(try JobEnvelope.decode(sampleJob().encode() + [0]))
    }

    func testWrongKindAndVersionRejected() {
        var bytes = sampleJob().encode()
        bytes[0] = 0x00
        XCTAssertThrowsError(try JobEnvelope.decode(bytes)) { XCTAssertEqual($0 as? WireError, .invalid("message kind 0, expected 74")) }
        bytes = sampleJob().encode()
        bytes[1] = 99
        XCTAssertThrowsError(try JobEnvelope.decode(bytes))
    }

    func testHugeLengthPrefixDoesNotAllocateOrCrash() {
        var w = WireWriter()
        w.u8(0x4A); w.u8(wireVersion); w.u32(UInt32.max)
        XCTAssertThrowsError(try JobEnvelope.decode(w.bytes))
    }

    func testPrefixHashListsAreBoundedAndComplete() {
        let good = WorkerMessage.prefixes([7, 8, 9]).encode()
        for cut in 3..<good.count { XCTAssertThrowsError(try WorkerMessage.decode(Array(good[0..<cut])), "cut at \(cut)") }
        var w = WireWriter()
        w.u8(0x57); w.u8(wireVersion); w.u8(8); w.int(1 << 30)   // claims a billion hashes
        XCTAssertThrowsError(try WorkerMessage.decode(w.bytes)) { XCTAssertEqual($0 as? WireError, .invalid("prefix hash count \(1 << 30) outside 0...65536")) }
    }

    /// Values another process made up are refused at decode, before any arithmetic: the traps
    /// found by reading the code (credits + n, freeSlots − inflight, deadlines × 10⁶, statuses).
    func testOutOfRangeControlValuesAreRefused() {
        func hello(slots: Int, free: Int) -> [UInt8] {
            WorkerMessage.hello(WorkerInfo(id: "w", slots: slots, freeSlots: free, models: ["*"], capabilities: ["chat"], engine: "sim", host: "h", pid: 1)).encode()
        }
        XCTAssertNoThrow(try WorkerMessage.decode(hello(slots: 4, free: 4)))
        for (slots, free) in [(0, 0), (-1, 0), (1 << 62, 0), (4, 5), (4, -1), (Int.max, Int.max)] {
            XCTAssertThrowsError(try WorkerMessage.decode(hello(slots: slots, free: free)), "slots \(slots) free \(free)")
        }
        for n in [0, -1, Int.max, Int.min, 4097] { XCTAssertThrowsError(try WorkerMessage.decode(WorkerMessage.credit(n).encode()), "credit \(n)") }
        XCTAssertThrowsError(try WorkerMessage.decode(WorkerMessage.heartbeat(active: -1).encode()))
        let badReports = [
            JobReport(requestId: "r", attempt: 0, outcome: "done", firstTokenAtMs: 0, finishedAtMs: 0, promptTokens: 0, completionTokens: 0),
            JobReport(requestId: "r", attempt: 1, outcome: "done", firstTokenAtMs: -1, finishedAtMs: 0, promptTokens: 0, completionTokens: 0),
            JobReport(requestId: "r", attempt: 1, outcome: "done", firstTokenAtMs: 0, finishedAtMs: Int64.max, promptTokens: 0, completionTokens: 0),
            JobReport(requestId: "r", attempt: 1, outcome: "done", firstTokenAtMs: 0, finishedAtMs: 0, promptTokens: -5, completionTokens: 0),
            JobReport(requestId: "r", attempt: 1, outcome: "done", firstTokenAtMs: 0, finishedAtMs: 0, promptTokens: 0, completionTokens: 1 << 62),
        ]
        for r in badReports { XCTAssertThrowsError(try WorkerMessage.decode(WorkerMessage.done(r).encode()), "\(r)") }
        var job = sampleJob()
        job.requestDeadlineMs = Int64.max
        XCTAssertThrowsError(try JobEnvelope.decode(job.encode()), "a deadline past the year 9999")
        job = sampleJob(); job.attempt = 0
        XCTAssertThrowsError(try JobEnvelope.decode(job.encode()))
        job = sampleJob(); job.sloTTFTMs = -1
        XCTAssertThrowsError(try JobEnvelope.decode(job.encode()))
    }

    func testOutOfRangeEventValuesAreRefusedAndStatusesClamped() throws {
        func roundTrip(_ b: StreamEvent.Body) throws -> StreamEvent.Body {
            try StreamEvent.decode(StreamEvent(requestId: "r", attempt: 1, seq: 0, body: b).encode()).body
        }
        for b: StreamEvent.Body in [.delta(index: -1, text: "x", logprobs: nil), .delta(index: 1 << 40, text: "x", logprobs: nil),
                                    .finish(index: 128, reason: "stop"), .toolCall(index: 0, toolIndex: -1, id: "", name: "", arguments: ""),
                                    .vectors(dim: 1 << 61, data: [0, 0, 0, 0]), .vectors(dim: 2, data: [0, 0, 0, 0]), .vectors(dim: 0, data: []),
                                    .done(Usage(promptTokens: -1, completionTokens: 0))] {
            XCTAssertThrowsError(try roundTrip(b), "\(b)")
        }
        for status in [1000, -1, 99_999, 200, Int.max] {
            guard case let .error(e) = try roundTrip(.error(APIError(status: status, message: "m", type: "t"))) else { return XCTFail() }
            XCTAssertEqual(e.status, 502, "status \(status) becomes 502")
        }
        XCTAssertThrowsError(try StreamEvent.decode(StreamEvent(requestId: "r", attempt: -1, seq: 0, body: .done(Usage(promptTokens: 0, completionTokens: 0))).encode()))
        XCTAssertThrowsError(try StreamEvent.decode(StreamEvent(requestId: "r", attempt: 1, seq: -3, body: .done(Usage(promptTokens: 0, completionTokens: 0))).encode()))
    }

    func testInvalidUTF8StringRejected() {
        var w = WireWriter()
        w.u8(0x4A); w.u8(wireVersion); w.u32(2); w.u8(0xFF); w.u8(0xFE)
        XCTAssertThrowsError(try JobEnvelope.decode(w.bytes))
    }

    func testStreamEventsRoundTrip() throws {
        let bodies: [StreamEvent.Body] = [
            .delta(index: 1, text: "Paris 🇫🇷", logprobs: nil),
            .delta(index: 0, text: "", logprobs: #"{"token":"a","logprob":-0.1}"#),
            .finish(index: 3, reason: "length"),
            .toolCall(index: 1, toolIndex: 2, id: "call_1", name: "get_weather", arguments: "{\"city\":"),
            .done(Usage(promptTokens: 12, completionTokens: 34, cachedTokens: 5)),
            .error(APIError.noCapacity(model: "m", tier: "standard", waitedMs: 30000)),
            .error(APIError(status: 400, message: "x", type: "invalid_request_error", param: "messages", code: nil)),
        ]
        for (i, b) in bodies.enumerated() {
            let ev = StreamEvent(requestId: "r\(i)", attempt: 1, seq: i, body: b)
            XCTAssertEqual(try StreamEvent.decode(ev.encode()), ev)
        }
        XCTAssertTrue(StreamEvent(requestId: "r", attempt: 1, seq: 0, body: .done(Usage(promptTokens: 0, completionTokens: 0))).isTerminal)
        XCTAssertFalse(StreamEvent(requestId: "r", attempt: 1, seq: 0, body: .finish(index: 0, reason: "stop")).isTerminal)
    }

    func testControlMessagesRoundTrip() throws {
        let info = WorkerInfo(id: "w1", slots: 8, freeSlots: 6, models: ["a", "b"], capabilities: ["chat"], engine: "sim", host: "h", pid: 42, joinKey: "jk")
        let workerMessages: [WorkerMessage] = [
            .hello(info), .credit(3), .heartbeat(active: 2), .started(requestId: "r"), .prefixes([]), .prefixes([1, .max, 0xdead_beef]),
            .done(JobReport(requestId: "r", attempt: 1, outcome: "done", firstTokenAtMs: 5, finishedAtMs: 9, promptTokens: 1, completionTokens: 2)),
            .draining, .bye,
        ]
        for m in workerMessages { XCTAssertEqual(try WorkerMessage.decode(m.encode()), m) }
        let routerMessages: [RouterMessage] = [.job(sampleJob(), ticket: [1, 2, 3]), .ack(routerId: "router-a", demand: 3), .returned(2),
                                               .adopted(requestId: "r"), .adoptRefused(requestId: "r"), .relocate(["a", "b"]), .cancel(requestId: "r"), .identify, .refused("bad join key")]
        for m in routerMessages { XCTAssertEqual(try RouterMessage.decode(m.encode()), m) }
        let gatewayMessages: [GatewayMessage] = [.submit(sampleJob()), .cancel(requestId: "x")]
        for m in gatewayMessages { XCTAssertEqual(try GatewayMessage.decode(m.encode()), m) }
    }

    func testMessagesOfOneKindAreNotReadAsAnother() {
        XCTAssertThrowsError(try WorkerMessage.decode(RouterMessage.identify.encode()))
        XCTAssertThrowsError(try RouterMessage.decode(WorkerMessage.bye.encode()))
        XCTAssertThrowsError(try StreamEvent.decode(GatewayMessage.cancel(requestId: "x").encode()))
    }

    func testWorkerServesModel() {
        let any = WorkerInfo(id: "w", slots: 1, freeSlots: 1, models: ["*"], capabilities: [], engine: "sim", host: "", pid: 0)
        XCTAssertTrue(any.serves(model: "whatever"))
        let one = WorkerInfo(id: "w", slots: 1, freeSlots: 1, models: ["a"], capabilities: [], engine: "x", host: "", pid: 0)
        XCTAssertTrue(one.serves(model: "a"))
        XCTAssertFalse(one.serves(model: "b"))
    }
}
