import XCTest
@testable import XeroCore

final class WireCodecTests: XCTestCase {
    func sampleJob(payload: [UInt8] = Array(#"{"model":"m","messages":[{"role":"user","content":"hé 👋"}]}"#.utf8)) -> JobEnvelope {
        JobEnvelope(requestId: "chatcmpl-1", replyTo: "gw-a", attempt: 2, kind: .chatCompletion, tier: "priority", project: "p1",
                    endpoint: "ep", model: "smol", acceptedAtMs: 1_700_000_000_000, queueDeadlineMs: 1_700_000_030_000,
                    requestDeadlineMs: 1_700_000_300_000, affinityKey: "abc", sloTTFTMs: 200, sloTPOTMs: 30, payload: payload)
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
        XCTAssertThrowsError(try WorkerMessage.decode(w.bytes)) { XCTAssertEqual($0 as? WireError, .invalid("prefix hash count \(1 << 30)")) }
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
        let routerMessages: [RouterMessage] = [.job(sampleJob()), .cancel(requestId: "r"), .identify, .refused("bad join key")]
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
