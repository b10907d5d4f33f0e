import Foundation
import XCTest
@testable import XeroCore

/// `/v1/completions` bodies: every prompt form, the fields OpenAI documents, and refusals that
/// name the parameter; the tier's default `max_tokens` written into the body; legacy logprobs.
final class CompletionRequestTests: XCTestCase {
    func parse(_ json: String) throws(APIError) -> ChatRequest { try CompletionRequest.parse(Array(json.utf8)) }

    func assertRejected(_ json: String, param: String?, code: String? = nil, file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try parse(json)
            XCTFail("accepted: \(json)", file: file, line: line)
        } catch {
            XCTAssertEqual(error.status, 400, file: file, line: line)
            XCTAssertEqual(error.param, param, "\(error.message)", file: file, line: line)
            if let code { XCTAssertEqual(error.code, code, file: file, line: line) }
        }
    }

    func testEveryPromptForm() throws {
        XCTAssertEqual(try parse(#"{"model":"m","prompt":"Once upon"}"#).completion?.prompts, [.text("Once upon")])
        XCTAssertEqual(try parse(#"{"model":"m","prompt":["a","b"]}"#).completion?.prompts, [.text("a"), .text("b")])
        XCTAssertEqual(try parse(#"{"model":"m","prompt":[1,2,3]}"#).completion?.prompts, [.tokens([1, 2, 3])])
        XCTAssertEqual(try parse(#"{"model":"m","prompt":[[1,2],[3]]}"#).completion?.prompts, [.tokens([1, 2]), .tokens([3])])
        XCTAssertEqual(try parse(#"{"model":"m","prompt":["a",[7]]}"#).completion?.prompts, [.text("a"), .tokens([7])])
        let r = try parse(#"{"model":"m","prompt":"x","n":3,"echo":true,"logprobs":2,"max_tokens":5,"temperature":0.5,"top_p":0.5,"stop":"\n","seed":4,"stream":true,"stream_options":{"include_usage":true}}"#)
        XCTAssertEqual(r.n, 3); XCTAssertEqual(r.maxTokens, 5); XCTAssertEqual(r.stop, ["\n"]); XCTAssertEqual(r.seed, 4)
        XCTAssertTrue(r.stream); XCTAssertTrue(r.includeUsage); XCTAssertTrue(r.logprobs); XCTAssertEqual(r.topLogprobs, 2)
        XCTAssertEqual(r.completion, TextCompletion(prompts: [.text("x")], echo: true, logprobs: 2))
        XCTAssertTrue(r.messages.isEmpty)
        XCTAssertEqual(r.completion?.choiceCount(n: r.n), 3)
        // Scoring a prompt without generating: max_tokens 0 with echo.
        XCTAssertEqual(try parse(#"{"model":"m","prompt":"x","echo":true,"max_tokens":0,"logprobs":0}"#).maxTokens, 0)
    }

    func testRefusalsNameTheParameter() {
        assertRejected(#"{"model":"m"}"#, param: "prompt", code: "missing_required_parameter")
        assertRejected(#"{"prompt":"x"}"#, param: "model", code: "missing_required_parameter")
        assertRejected(#"{"model":"m","prompt":[]}"#, param: "prompt", code: "empty_array")
        assertRejected(#"{"model":"m","prompt":{"a":1}}"#, param: "prompt", code: "invalid_type")
        assertRejected(#"{"model":"m","prompt":[1,-2]}"#, param: "prompt", code: "invalid_value")
        assertRejected(#"{"model":"m","prompt":[1,4294967296]}"#, param: "prompt", code: "invalid_value")
        assertRejected(#"{"model":"m","prompt":["a",[]]}"#, param: "prompt[1]", code: "invalid_value")
        assertRejected(#"{"model":"m","prompt":["a",true]}"#, param: "prompt[1]", code: "invalid_type")
        assertRejected(#"{"model":"m","prompt":"x","logprobs":6}"#, param: "logprobs", code: "invalid_value")
        assertRejected(#"{"model":"m","prompt":"x","logprobs":true}"#, param: "logprobs", code: "invalid_type")
        assertRejected(#"{"model":"m","prompt":"x","max_tokens":0}"#, param: "max_tokens", code: "invalid_value")
        assertRejected(#"{"model":"m","prompt":"x","max_tokens":-1}"#, param: "max_tokens", code: "invalid_value")
        assertRejected(#"{"model":"m","prompt":"x","temperature":3}"#, param: "temperature", code: "invalid_value")
        assertRejected(#"{"model":"m","prompt":"x","suffix":"end"}"#, param: "suffix", code: "unsupported_parameter")
        assertRejected(#"{"model":"m","prompt":"x","best_of":3}"#, param: "best_of", code: "unsupported_parameter")
        assertRejected(#"{"model":"m","prompt":"x","stop":["a","b","c","d","e"]}"#, param: "stop", code: "array_above_max_length")
        assertRejected(#"{"model":"m","prompt":"x","stream_options":{"include_usage":true}}"#, param: "stream_options", code: "invalid_value")
        // Every choice of every prompt must fit the wire's choice indices.
        let prompts = "[" + Array(repeating: "\"p\"", count: 20).joined(separator: ",") + "]"
        assertRejected(#"{"model":"m","prompt":\#(prompts),"n":7}"#, param: "n", code: "invalid_value")
        XCTAssertNoThrow(try parse(#"{"model":"m","prompt":\#(prompts),"n":6}"#))
    }

    func testTierDefaultMaxTokensIsWrittenIntoTheBody() throws {
        var tier = Tier(name: "t", priority: 1, weight: 1, queueTimeoutMs: 1, requestTimeoutMs: 1)
        // Text completions: OpenAI's 16 when the tier says nothing; chat: nothing.
        var text = try parse(#"{"model":"m","prompt":"x"}"#)
        var body = Array(#"{"model":"m","prompt":"x"}"#.utf8)
        RequestDefaults.apply(to: &text, body: &body, tier: tier)
        XCTAssertNil(text.maxTokens)
        XCTAssertEqual(text.defaultMaxTokens, 16)
        XCTAssertEqual(text.budget, 16)
        XCTAssertEqual(try parse(String(decoding: body, as: UTF8.self)).defaultMaxTokens, 16)
        // Applying twice (a batch line re-read) writes nothing more.
        let once = body
        RequestDefaults.apply(to: &text, body: &body, tier: tier)
        XCTAssertEqual(body, once)
        var chatBody = Array(#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#.utf8)
        var chat = try ChatRequest.parse(chatBody)
        RequestDefaults.apply(to: &chat, body: &chatBody, tier: tier)
        XCTAssertNil(chat.budget)
        XCTAssertEqual(chatBody, Array(#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#.utf8))
        // The tier's default, after an explicit null (last key wins) and trailing whitespace.
        tier.defaultMaxTokens = 300
        chatBody = Array("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":null} \n".utf8)
        chat = try ChatRequest.parse(chatBody)
        RequestDefaults.apply(to: &chat, body: &chatBody, tier: tier)
        XCTAssertNil(chat.maxTokens)
        XCTAssertEqual(chat.budget, 300)
        XCTAssertEqual(try ChatRequest.parse(chatBody).defaultMaxTokens, 300)
        XCTAssertNil(try ChatRequest.parse(chatBody).maxTokens)
        // Text completions keep OpenAI's 16 whatever the tier says.
        text = try parse(#"{"model":"m","prompt":"x"}"#)
        body = Array(#"{"model":"m","prompt":"x"}"#.utf8)
        RequestDefaults.apply(to: &text, body: &body, tier: tier)
        XCTAssertEqual(text.budget, 16)
        // A client's own value is never touched.
        chatBody = Array(#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":7}"#.utf8)
        let before = chatBody
        chat = try ChatRequest.parse(chatBody)
        RequestDefaults.apply(to: &chat, body: &chatBody, tier: tier)
        XCTAssertEqual(chatBody, before)
        XCTAssertEqual(chat.maxTokens, 7)
    }

    func testLegacyLogprobsFromChatStyleEntries() throws {
        let w = CompletionResponseWriter(id: "cmpl-1", created: 1, model: "m")
        var c = CompletionResponseWriter.Choice()
        c.text = "Hello world"
        c.entries = [#"{"token":"Hello","logprob":null,"bytes":[72],"top_logprobs":[]}"#,
                     #"{"token":" world","logprob":-0.5,"bytes":[32],"top_logprobs":[{"token":" world","logprob":-0.5},{"token":" there","logprob":-1.5},{"token":" world","logprob":-2.0}]}"#]
        c.finishReason = "length"
        let json = try JSONValue.parse(w.completion(choices: [c], logprobs: true, usage: Usage(promptTokens: 2, completionTokens: 1)))
        guard case let .object(o) = json, case let .array(choices)? = o["choices"], case let .object(choice) = choices[0],
              case let .object(lp)? = choice["logprobs"] else { return XCTFail("\(json)") }
        XCTAssertEqual(o["object"], .string("text_completion"))
        XCTAssertEqual(choice["text"], .string("Hello world"))
        XCTAssertEqual(choice["finish_reason"], .string("length"))
        XCTAssertEqual(lp["tokens"], .array([.string("Hello"), .string(" world")]))
        XCTAssertEqual(lp["token_logprobs"], .array([.null, .double(-0.5)]))
        XCTAssertEqual(lp["text_offset"], .array([.int(0), .int(5)]))
        // The first prompt token has no alternatives; a duplicated alternative keeps its best score.
        XCTAssertEqual(lp["top_logprobs"], .array([.null, .object([" world": .double(-0.5), " there": .double(-1.5)])]))
    }
}
