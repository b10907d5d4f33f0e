import Foundation
import XCTest
@testable import XeroCore

final class ChatRequestTests: XCTestCase {
    func parse(_ json: String) throws(APIError) -> ChatRequest { try ChatRequest.parse(Array(json.utf8)) }

    func assertRejected(_ json: String, param: String?, code: String? = nil, file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try parse(json)
            XCTFail("accepted: \(json)", file: file, line: line)
        } catch {
            XCTAssertEqual(error.status, 400, file: file, line: line)
            XCTAssertEqual(error.type, "invalid_request_error", file: file, line: line)
            XCTAssertEqual(error.param, param, "\(error.message)", file: file, line: line)
            if let code { XCTAssertEqual(error.code, code, file: file, line: line) }
        }
    }

    func testSpecExampleParses() throws {
        let r = try parse("""
        {"model":"deepseek-r1-distill-llama-70b","messages":[{"role":"system","content":"You are a helpful assistant."},
         {"role":"user","content":"What is the capital of France?"}],"max_tokens":100}
        """)
        XCTAssertEqual(r.model, "deepseek-r1-distill-llama-70b")
        XCTAssertEqual(r.messages.map(\.role), ["system", "user"])
        XCTAssertEqual(r.maxTokens, 100)
        XCTAssertEqual(r.n, 1)
        XCTAssertFalse(r.stream)
    }

    func testAllFields() throws {
        let r = try parse("""
        {"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
         "max_completion_tokens":7,"temperature":0.5,"top_p":0.9,"top_k":40,"min_p":0.05,"n":3,"stream":true,
         "stream_options":{"include_usage":true},"stop":["x","y"],"seed":42,"presence_penalty":1,"frequency_penalty":-1,
         "logprobs":true,"top_logprobs":5,"user":"u","response_format":{"type":"json_object"},"tools":[{"type":"function","function":{"name":"f"}}],
         "some_future_field":{"ignored":true}}
        """)
        XCTAssertEqual(r.messages[0].content, "ab")
        XCTAssertEqual(r.maxTokens, 7)
        XCTAssertEqual(r.temperature, 0.5)
        XCTAssertEqual(r.topK, 40)
        XCTAssertEqual(r.n, 3)
        XCTAssertTrue(r.includeUsage)
        XCTAssertEqual(r.stop, ["x", "y"])
        XCTAssertEqual(r.seed, 42)
        XCTAssertEqual(r.topLogprobs, 5)
        XCTAssertEqual(r.responseFormat, "json_object")
        XCTAssertNotNil(r.toolsJSON)
    }

    func testStopAsString() throws {
        XCTAssertEqual(try parse(#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":"END"}"#).stop, ["END"])
    }

    func testRejections() {
        assertRejected("[1,2]", param: nil)
        assertRejected(#"{"messages":[{"role":"user","content":"x"}]}"#, param: "model", code: "missing_required_parameter")
        assertRejected(#"{"model":"","messages":[{"role":"user","content":"x"}]}"#, param: "model")
        assertRejected(#"{"model":7,"messages":[{"role":"user","content":"x"}]}"#, param: "model", code: "invalid_type")
        assertRejected(#"{"model":"m"}"#, param: "messages", code: "missing_required_parameter")
        assertRejected(#"{"model":"m","messages":[]}"#, param: "messages", code: "empty_array")
        assertRejected(#"{"model":"m","messages":"hi"}"#, param: "messages", code: "invalid_type")
        assertRejected(#"{"model":"m","messages":[{"content":"x"}]}"#, param: "messages[0].role")
        assertRejected(#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#, param: "messages[0].role", code: "invalid_value")
        assertRejected(#"{"model":"m","messages":[{"role":"user"}]}"#, param: "messages[0].content")
        assertRejected(#"{"model":"m","messages":[{"role":"user","content":5}]}"#, param: "messages[0].content", code: "invalid_type")
        assertRejected(#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]}"#, param: "messages[0].content[0].type")
        assertRejected(#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#, param: "messages[0].tool_call_id")
        let ok = #""model":"m","messages":[{"role":"user","content":"x"}]"#
        assertRejected("{\(ok),\"max_tokens\":0}", param: "max_tokens", code: "invalid_value")
        assertRejected("{\(ok),\"max_tokens\":1.5}", param: "max_tokens", code: "invalid_type")
        assertRejected("{\(ok),\"max_tokens\":\"10\"}", param: "max_tokens", code: "invalid_type")
        assertRejected("{\(ok),\"temperature\":2.5}", param: "temperature", code: "invalid_value")
        assertRejected("{\(ok),\"temperature\":true}", param: "temperature", code: "invalid_type")
        assertRejected("{\(ok),\"top_p\":-0.1}", param: "top_p")
        assertRejected("{\(ok),\"n\":0}", param: "n")
        assertRejected("{\(ok),\"n\":129}", param: "n")
        assertRejected("{\(ok),\"stream\":\"yes\"}", param: "stream", code: "invalid_type")
        assertRejected("{\(ok),\"stream_options\":{\"include_usage\":true}}", param: "stream_options")
        assertRejected("{\(ok),\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", param: "stop", code: "array_above_max_length")
        assertRejected("{\(ok),\"stop\":[1]}", param: "stop")
        assertRejected("{\(ok),\"stop\":\"\"}", param: "stop")
        assertRejected("{\(ok),\"presence_penalty\":3}", param: "presence_penalty")
        assertRejected("{\(ok),\"top_logprobs\":3}", param: "top_logprobs")
        assertRejected("{\(ok),\"top_logprobs\":21,\"logprobs\":true}", param: "top_logprobs")
        assertRejected("{\(ok),\"response_format\":{\"type\":\"xml\"}}", param: "response_format.type")
        assertRejected("{\(ok),\"tools\":{}}", param: "tools")
        // The gateway-killer: max_tokens near Int64.max overflowed the reservation. Now a 400.
        for big in ["9223372036854775807", "1048577", "-9223372036854775808", "1e308"] {
            assertRejected("{\(ok),\"max_tokens\":\(big)}", param: "max_tokens")
            assertRejected("{\(ok),\"max_completion_tokens\":\(big)}", param: "max_completion_tokens")
        }
        XCTAssertEqual(try ChatRequest.parse(Array("{\(ok),\"max_tokens\":1048576}".utf8)).maxTokens, 1 << 20)
        assertRejected("{\(ok),\"top_k\":9223372036854775807}", param: "top_k")
        assertRejected("{\(ok),\"stop\":\"\(String(repeating: "s", count: 1025))\"}", param: "stop")
        assertRejected(String(repeating: "[", count: 129) + String(repeating: "]", count: 129), param: nil)
    }

    func testToolsAndToolChoice() throws {
        let tools = #"[{"type":"function","function":{"name":"get_weather","parameters":{}}},{"type":"function","function":{"name":"search"}}]"#
        let ok = #""model":"m","messages":[{"role":"user","content":"x"}]"#
        let r = try parse("{\(ok),\"tools\":\(tools),\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"search\"}}}")
        XCTAssertEqual(r.toolNames, ["get_weather", "search"])
        XCTAssertEqual(r.toolChoice, "search")
        XCTAssertEqual(try parse("{\(ok),\"tools\":\(tools),\"tool_choice\":\"required\"}").toolChoice, "required")
        assertRejected("{\(ok),\"tools\":[{\"type\":\"function\"}]}", param: "tools[0]")
        assertRejected("{\(ok),\"tools\":\(tools),\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"nope\"}}}", param: "tool_choice")
        assertRejected("{\(ok),\"tool_choice\":\"required\"}", param: "tool_choice")
        assertRejected("{\(ok),\"tools\":\(tools),\"tool_choice\":\"sometimes\"}", param: "tool_choice")
    }

    func testAccumulatorFoldsToolCallsAndText() throws {
        var acc = ChatAccumulator(n: 2, logprobs: false)
        acc.add(.toolCall(index: 0, toolIndex: 0, id: "call_a", name: "f", arguments: "{\"q\":"))
        acc.add(.toolCall(index: 0, toolIndex: 0, id: "", name: "", arguments: "1}"))
        acc.add(.finish(index: 0, reason: "tool_calls"))
        acc.add(.delta(index: 1, text: "hi", logprobs: nil))
        acc.add(.finish(index: 1, reason: "stop"))
        acc.add(.delta(index: 7, text: "ignored", logprobs: nil))
        XCTAssertEqual(acc.choices[0].toolCalls, [ChatResponseWriter.ToolCall(id: "call_a", name: "f", arguments: "{\"q\":1}")])
        let w = ChatResponseWriter(id: "c", created: 0, model: "m")
        let obj = try JSONSerialization.jsonObject(with: Data(w.completion(choices: acc.choices, usage: Usage(promptTokens: 1, completionTokens: 2)))) as! [String: Any]
        let choices = obj["choices"] as! [[String: Any]]
        let msg = choices[0]["message"] as! [String: Any]
        XCTAssertTrue(msg["content"] is NSNull)
        let call = (msg["tool_calls"] as! [[String: Any]])[0]
        XCTAssertEqual(call["type"] as? String, "function")
        XCTAssertEqual((call["function"] as! [String: Any])["arguments"] as? String, "{\"q\":1}")
        XCTAssertEqual((choices[1]["message"] as! [String: Any])["content"] as? String, "hi")
    }

    func testMalformedJSONIsInvalidJSON() {
        for body in ["", "{", "{\"model\":", "nul", "{\"a\":1}}", "\u{FF}"] {
            do { _ = try ChatRequest.parse(Array(body.utf8)); XCTFail("accepted \(body)") } catch {
                XCTAssertEqual(error.status, 400)
                XCTAssertNotNil(error.code)
            }
        }
    }

    func testChunkAndCompletionShapes() throws {
        let w = ChatResponseWriter(id: "chatcmpl-1", created: 1, model: "m", includeUsage: true)
        let chunk = try JSONSerialization.jsonObject(with: Data(w.chunk(index: 0, role: true, content: ""))) as! [String: Any]
        XCTAssertEqual(chunk["object"] as? String, "chat.completion.chunk")
        let choice = (chunk["choices"] as! [[String: Any]])[0]
        XCTAssertEqual((choice["delta"] as! [String: Any])["role"] as? String, "assistant")
        XCTAssertTrue(choice["finish_reason"] is NSNull)
        XCTAssertTrue(chunk["usage"] is NSNull)
        let usage = try JSONSerialization.jsonObject(with: Data(w.usageChunk(Usage(promptTokens: 2, completionTokens: 3)))) as! [String: Any]
        XCTAssertEqual((usage["choices"] as! [Any]).count, 0)
        XCTAssertEqual((usage["usage"] as! [String: Any])["total_tokens"] as? Int, 5)
        var c = ChatResponseWriter.Choice()
        c.content = "hi \"there\""
        c.finishReason = "length"
        let full = try JSONSerialization.jsonObject(with: Data(w.completion(choices: [c], usage: Usage(promptTokens: 1, completionTokens: 2)))) as! [String: Any]
        XCTAssertEqual(full["object"] as? String, "chat.completion")
        let fc = (full["choices"] as! [[String: Any]])[0]
        XCTAssertEqual((fc["message"] as! [String: Any])["content"] as? String, "hi \"there\"")
        XCTAssertEqual(fc["finish_reason"] as? String, "length")
    }

    func testConfigParsingAndValidation() throws {
        let c = try PlatformConfig.parse(yaml: """
        tiers:
          - {name: gold, priority: 9, weight: 3, queue_timeout_ms: 100, request_timeout_ms: 1000, requests_per_minute: 5}
          - {name: basic, priority: 1, weight: 1, queue_timeout_ms: 100, request_timeout_ms: 1000}
        """)
        XCTAssertEqual(c.tier(named: "gold")?.requestsPerMinute, 5)
        XCTAssertThrowsError(try PlatformConfig.parse(yaml: "tiers: []"))
        XCTAssertThrowsError(try PlatformConfig.parse(yaml: """
        tiers:
          - {name: Bad Name, priority: 1, weight: 1, queue_timeout_ms: 1, request_timeout_ms: 1}
        """))
        XCTAssertThrowsError(try PlatformConfig.parse(yaml: """
        tiers:
          - {name: a, priority: 1, weight: -1, queue_timeout_ms: 1, request_timeout_ms: 1}
        """))
        // New endpoints land on an interactive tier: named, or the interactive one of lowest priority.
        XCTAssertEqual(c.defaultEndpointTier, "basic")
        let named = try PlatformConfig.parse(yaml: """
        default_endpoint_tier: gold
        tiers:
          - {name: gold, priority: 9, weight: 3, queue_timeout_ms: 100, request_timeout_ms: 1000}
          - {name: bulk, priority: 0, weight: 0, queue_timeout_ms: 100, request_timeout_ms: 1000}
        """)
        XCTAssertEqual(named.defaultEndpointTier, "gold")
        XCTAssertThrowsError(try PlatformConfig.parse(yaml: """
        default_endpoint_tier: bulk
        tiers:
          - {name: gold, priority: 9, weight: 3, queue_timeout_ms: 100, request_timeout_ms: 1000}
          - {name: bulk, priority: 0, weight: 0, queue_timeout_ms: 100, request_timeout_ms: 1000}
        """), "a weight-0 default tier fails the load")
        XCTAssertThrowsError(try PlatformConfig.parse(yaml: """
        default_endpoint_tier: nope
        tiers:
          - {name: gold, priority: 9, weight: 3, queue_timeout_ms: 100, request_timeout_ms: 1000}
        """))
        XCTAssertThrowsError(try PlatformConfig.parse(yaml: """
        tiers:
          - {name: bulk, priority: 0, weight: 0, queue_timeout_ms: 100, request_timeout_ms: 1000}
        """), "no interactive tier at all")
        XCTAssertThrowsError(try PlatformConfig.parse(yaml: """
        tiers:
          - {name: gold, priority: 9, weight: 3, queue_timeout_ms: 100, request_timeout_ms: 1000, tokens_per_minute: -5}
        """))
        XCTAssertThrowsError(try PlatformConfig.load(path: "/nonexistent/xerotier.yaml"))
        // The shipped config must load.
        let shipped = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("config/xerotier.yaml").path
        let real = try PlatformConfig.load(path: shipped)
        XCTAssertGreaterThanOrEqual(real.tiers.count, 2)
        XCTAssertNotNil(real.demo)
        XCTAssertEqual(real.defaultEndpointTier, "standard")
    }

    func testSaturatingArithmetic() {
        XCTAssertEqual(Int.max.addingSaturated(1), .max)
        XCTAssertEqual(Int.min.addingSaturated(-1), .min)
        XCTAssertEqual(Int.max.multipliedSaturated(by: 128), .max)
        XCTAssertEqual(Int.min.multipliedSaturated(by: 2), .min)
        XCTAssertEqual((-5).multipliedSaturated(by: Int.max), .min)
        XCTAssertEqual(Int.min.subtractingSaturated(1), .min)
        XCTAssertEqual(3.addingSaturated(4), 7)
    }
}
