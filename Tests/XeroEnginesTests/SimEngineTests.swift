import XCTest
import XeroCore
@testable import XeroEngines

final class SimEngineTests: XCTestCase {
    func chat(_ extra: String = "") throws -> ChatRequest {
        try ChatRequest.parse(Array(#"{"model":"m","messages":[{"role":"user","content":"What is the capital of France?"}]\#(extra)}"#.utf8))
    }

    func run(_ engine: SimEngine, _ chat: ChatRequest) async throws -> (texts: [Int: String], finish: [Int: String], usage: Usage?) {
        var texts: [Int: String] = [:], finish: [Int: String] = [:], usage: Usage?
        for try await ev in engine.generate(EngineRequest(requestId: "r", model: "m", chat: chat)) {
            switch ev {
            case let .text(c, t, _, _): texts[c, default: ""] += t
            case let .finish(c, r): finish[c] = r
            case let .usage(u): usage = u
            case .toolCall: break
            }
        }
        return (texts, finish, usage)
    }

    func testDeterministicAndQuotesTheUser() async throws {
        let e = SimEngine()
        let a = try await run(e, try chat(#","seed":7"#))
        let b = try await run(e, try chat(#","seed":7"#))
        XCTAssertEqual(a.texts, b.texts)
        XCTAssertTrue(a.texts[0]!.hasPrefix("You said: What is the capital of France?."))
        XCTAssertEqual(a.finish[0], "stop")
        XCTAssertEqual(a.usage?.completionTokens, 16)
        let c = try await run(e, try chat(#","seed":8"#))
        XCTAssertNotEqual(a.texts, c.texts, "another seed, another text")
    }

    func testMaxTokensEndsWithLength() async throws {
        let r = try await run(SimEngine(), try chat(#","max_tokens":3"#))
        XCTAssertEqual(r.texts[0], "You said: What")
        XCTAssertEqual(r.finish[0], "length")
        XCTAssertEqual(r.usage?.completionTokens, 3)
    }

    func testStopStringIsNeverEmitted() async throws {
        let r = try await run(SimEngine(), try chat(#","stop":["capital of"]"#))
        XCTAssertEqual(r.texts[0], "You said: What is the ")
        XCTAssertEqual(r.finish[0], "stop")
    }

    func testNChoicesDiffer() async throws {
        let r = try await run(SimEngine(), try chat(#","n":3"#))
        XCTAssertEqual(r.finish.count, 3)
        XCTAssertEqual(Set(r.texts.values).count, 3)
        XCTAssertEqual(r.usage?.completionTokens, 48)
    }

    func testCancellationStopsGeneration() async throws {
        let e = SimEngine(options: .init(tpotMs: 5, answerTokens: 10_000))
        var count = 0
        for try await ev in e.generate(EngineRequest(requestId: "r", model: "m", chat: try chat())) {
            if case .text = ev { count += 1 }
            if count == 5 { break }
        }
        XCTAssertEqual(count, 5)
    }
}

final class StopScannerTests: XCTestCase {
    func feedAll(_ pieces: [String], stops: [String]) -> (String, Bool) {
        var s = StopScanner(stops: stops)
        var out = ""
        for p in pieces {
            out += s.feed(p)
            if s.stopped { return (out, true) }
        }
        return (out + s.flush(), false)
    }

    func testStopSplitAcrossPieces() {
        XCTAssertEqual(feedAll(["Hello wo", "rl", "d! more"], stops: ["world"]).0, "Hello ")
        XCTAssertEqual(feedAll(["ab", "c"], stops: ["bc"]).0, "a")
        XCTAssertEqual(feedAll(["a", "b", "c", "d"], stops: ["bcd"]).0, "a")
    }

    func testHeldBackTextIsReleasedWhenNoMatch() {
        let (out, stopped) = feedAll(["wor", "ld", "wo"], stops: ["word"])
        XCTAssertEqual(out, "worldwo")
        XCTAssertFalse(stopped)
    }

    func testEarliestOfSeveralStops() {
        XCTAssertEqual(feedAll(["one two three"], stops: ["three", "two"]).0, "one ")
    }

    func testMultibyteStops() {
        XCTAssertEqual(feedAll(["日本", "語の", "テキスト"], stops: ["語の"]).0, "日本")
        XCTAssertEqual(feedAll(["hi 👋", "🏽 there"], stops: ["🏽"]).0, "hi 👋", "a stop inside a grapheme cluster matches at the byte level")
    }

    func testNoStops() {
        XCTAssertEqual(feedAll(["a", "b"], stops: []).0, "ab")
    }
}

/// The simulator's models of a real engine: its prefix cache, its batch slowdown.
extension SimEngineTests {
    /// THE SIMULATOR's modelled prefix cache: a prompt that shares a cached prefix reports cached
    /// tokens (per project), the worker gets its block hashes to report, and the oldest prompts
    /// fall out beyond the capacity.
    func testModelledPrefixCache() async throws {
        let e = SimEngine(options: .init(prefixCacheBlocks: 10))
        let system = String(repeating: "You are a careful assistant who answers briefly. ", count: 20)   // ~1,000 bytes: 3 full blocks and more
        func ask(_ q: String, project: String = "p") async throws -> Usage? {
            let body = try JSONSerialization.data(withJSONObject: ["model": "m", "messages": [["role": "system", "content": system], ["role": "user", "content": q]]])
            let chat = try ChatRequest.parse(Array(body))
            var usage: Usage?
            for try await ev in e.generate(EngineRequest(requestId: "r", model: "m", chat: chat, project: project)) {
                if case let .usage(u) = ev { usage = u }
            }
            return usage
        }
        let cold = try await ask("first question")
        XCTAssertEqual(cold?.cachedTokens, 0)
        XCTAssertFalse(e.prefixBlockHashes().isEmpty, "the worker reports what the cache holds")
        let warm = try await ask("second question")
        XCTAssertGreaterThan(warm?.cachedTokens ?? 0, (warm?.promptTokens ?? 0) / 2, "the shared system prompt is cached")
        let other = try await ask("second question", project: "q")
        XCTAssertEqual(other?.cachedTokens, 0, "another project never hits this project's prefix")
        // 10 blocks hold two or three of these prompts: after more distinct ones, the first is gone.
        let ledger = PromptLedger(capacityBlocks: 4)
        ledger.record([1, 2, 3])
        ledger.record([7, 8])
        XCTAssertEqual(ledger.match([1, 2, 3, 4]), 0, "the oldest prompt fell out for the newest")
        XCTAssertEqual(ledger.match([7, 8, 9]), 2)
        ledger.record([7, 8, 10])
        XCTAssertEqual(ledger.hashes(), [7, 8, 10], "the new prompt evicted nothing it did not have to")
        // Prompts sharing a prefix share its blocks: two questions after one system prompt are 4 blocks, not 6.
        ledger.record([7, 8, 11])
        XCTAssertEqual(ledger.match([7, 8, 10]), 3)
        XCTAssertEqual(ledger.match([7, 8, 11]), 3)
        ledger.record([7, 8, 12])
        XCTAssertEqual(ledger.match([7, 8, 10]), 2, "the least recently used question went, its system prompt stayed")
        XCTAssertEqual(ledger.match([7, 8, 12]), 3)
    }

    /// THE SIMULATOR's batch slowdown: a step's time grows with the answers generated at once, by
    /// `tpotGrowth` of `tpotMs` per other answer; the count rises while streams run and falls after.
    func testStepTimeGrowsWithRunningAnswers() async throws {
        let e = SimEngine(options: .init(tpotMs: 10, answerTokens: 10_000, tpotGrowth: 0.5))
        XCTAssertEqual(e.stepMs(running: 1), 10)
        XCTAssertEqual(e.stepMs(running: 3), 20)
        XCTAssertEqual(e.stepMs(running: 0), 10, "never faster than one answer alone")
        XCTAssertEqual(SimEngine(options: .init(tpotMs: 10)).stepMs(running: 8), 10, "no growth: the step time of one")
        let chat = try ChatRequest.parse(Array(#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#.utf8))
        var streams: [AsyncThrowingStream<EngineEvent, Error>.AsyncIterator] = []
        for i in 0..<3 {
            var it = e.generate(EngineRequest(requestId: "r\(i)", model: "m", chat: chat, project: "p")).makeAsyncIterator()
            _ = try await it.next()   // the first piece: this answer is being generated
            streams.append(it)
        }
        XCTAssertEqual(e.runningAnswers, 3)
        streams.removeAll()   // dropping a stream cancels its answer
        for _ in 0..<200 where e.runningAnswers > 0 { try await Task.sleep(nanoseconds: 5_000_000) }
        XCTAssertEqual(e.runningAnswers, 0, "ended answers no longer count")
    }
}
