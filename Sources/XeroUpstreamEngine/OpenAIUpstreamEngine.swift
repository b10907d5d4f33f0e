import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import XeroCore
import XeroEngines

/// The `openai` engine: forwards each job to an OpenAI-compatible server (vLLM, SGLang,
/// llama.cpp's llama-server, Ollama, another Xerotier) over pooled HTTP connections, always
/// streaming upstream so tokens pass through as they come. The client's body is forwarded as sent
/// (tools, response_format and any vendor fields included) with `model` set to the upstream model.
/// Upstream failures become OpenAI-shaped errors; cancelling the job cancels the upstream request.
public struct OpenAIUpstreamEngine: Engine {
    public struct Options: Sendable {
        /// Base URL ending in `/v1` (e.g. `http://gpu-box:8000/v1`).
        public var baseURL: String
        public var apiKey: String?
        /// Models this worker serves; the job's model is sent upstream unless `upstreamModel` is set.
        public var models: [String]
        public var upstreamModel: String?
        public var slots: Int
        public init(baseURL: String, apiKey: String?, models: [String], upstreamModel: String?, slots: Int) {
            self.baseURL = baseURL
            self.apiKey = apiKey
            self.models = models
            self.upstreamModel = upstreamModel
            self.slots = slots
        }
    }

    public let options: Options
    let client: HTTPClient

    public init(options: Options) {
        self.options = options
        var config = HTTPClient.Configuration()
        config.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: max(8, options.slots))
        // An upstream that refuses connections fails the request at once (502), rather than after
        // the client library's retries (10 s each): the router's breaker then takes the worker out.
        config.connectionPool.retryConnectionEstablishment = false
        config.timeout.connect = .seconds(3)
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }

    public var info: EngineInfo { EngineInfo(name: "openai", models: options.models, capabilities: ["chat", "completions"], slots: options.slots) }

    public func generate(_ request: EngineRequest) -> AsyncThrowingStream<EngineEvent, Error> {
        let client = self.client, options = self.options
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    try await Self.run(request, client: client, options: options, continuation: continuation)
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    static func run(_ request: EngineRequest, client: HTTPClient, options: Options,
                    continuation: AsyncThrowingStream<EngineEvent, Error>.Continuation) async throws {
        // The client's body, with our model and streaming (with usage) forced on.
        guard case var .object(body) = try JSONValue.parse(request.rawBody) else { throw APIError.invalidRequest("The request body must be a JSON object.") }
        body["model"] = .string(options.upstreamModel ?? request.model)
        // The platform's default budget becomes the upstream's own `max_tokens` (ours, not a field it knows).
        if let cap = body.removeValue(forKey: ChatRequest.defaultMaxTokensField), body["max_tokens"] == nil, body["max_completion_tokens"] == nil { body["max_tokens"] = cap }
        body["stream"] = .bool(true)
        body["stream_options"] = .object(["include_usage": .bool(true)])
        let isText = request.chat.completion != nil
        let choiceCount = request.chat.completion?.choiceCount(n: request.chat.n) ?? request.chat.n
        var http = HTTPClientRequest(url: options.baseURL.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + (isText ? "/completions" : "/chat/completions"))
        http.method = .POST
        http.headers.add(name: "Content-Type", value: "application/json")
        http.headers.add(name: "Accept", value: "text/event-stream")
        if let key = options.apiKey, !key.isEmpty { http.headers.add(name: "Authorization", value: "Bearer \(key)") }
        http.body = .bytes(ByteBuffer(bytes: JSONValue.object(body).encoded()))
        let remainingMs = max(1, request.deadlineMs == .max ? 600_000 : request.deadlineMs - nowMs())
        let response: HTTPClientResponse
        do {
            response = try await client.execute(http, timeout: .milliseconds(remainingMs))
        } catch is CancellationError {
            throw CancellationError()
        } catch let e as HTTPClientError where e == .deadlineExceeded || e == .readTimeout || e == .connectTimeout {
            throw APIError(status: 504, message: "The upstream model server did not answer in time.", type: "timeout", code: "upstream_timeout")
        } catch {
            throw APIError(status: 502, message: "The upstream model server is unreachable (\(error)).", type: "server_error", code: "upstream_unreachable")
        }
        guard response.status == .ok else {
            let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
            throw mapUpstreamError(status: Int(response.status.code), body: text)
        }
        var pending: [UInt8] = []
        var usage: Usage?
        var finished = Set<Int>()
        for try await chunk in response.body {
            pending += chunk.readableBytesView
            // SSE events end with a blank line; process every complete one.
            while let end = findEventEnd(pending) {
                let event = Array(pending[..<end.start])
                pending.removeFirst(end.next)
                for line in String(decoding: event, as: UTF8.self).split(separator: "\n") where line.hasPrefix("data:") {
                    let data = line.dropFirst(5).trimmingCharacters(in: .whitespaces)
                    if data == "[DONE]" { continue }
                    guard case let .object(o)? = try? JSONValue.parse(Array(data.utf8)) else { continue }
                    if let err = o["error"], case let .object(eo) = err {
                        var msg = "upstream error"
                        if case let .string(m)? = eo["message"] { msg = m }
                        throw APIError(status: 502, message: "The upstream model server failed mid-stream: \(msg)", type: "server_error", code: "upstream_error")
                    }
                    // The upstream's numbers are not trusted: counts are clamped to what the wire
                    // carries, choices and tool calls outside the request's range are ignored.
                    if case let .object(u)? = o["usage"], case let .int(p)? = u["prompt_tokens"], case let .int(c)? = u["completion_tokens"] {
                        var cached = 0
                        if case let .object(d)? = u["prompt_tokens_details"], case let .int(ct)? = d["cached_tokens"] { cached = ct }
                        let clamp = { (v: Int) in min(max(v, WireLimits.tokens.lowerBound), WireLimits.tokens.upperBound) }
                        usage = Usage(promptTokens: clamp(p), completionTokens: clamp(c), cachedTokens: clamp(cached))
                        request.meter.set(usage!)
                    }
                    guard case let .array(choices)? = o["choices"] else { continue }
                    for ch in choices {
                        guard case let .object(co) = ch, case let .int(index)? = co["index"], (0..<choiceCount).contains(index) else { continue }
                        if isText, case let .string(text)? = co["text"], !text.isEmpty {
                            if usage == nil { request.meter.addCompletion() }
                            continuation.yield(.text(choice: index, text, logprobs: Self.chatStyleLogprobs(co["logprobs"])))
                        }
                        if !isText, case let .object(delta)? = co["delta"], case let .string(text)? = delta["content"], !text.isEmpty {
                            var lp: String?
                            if case let .object(l)? = co["logprobs"], case let .array(content)? = l["content"] {
                                lp = content.map { String(decoding: $0.encoded(), as: UTF8.self) }.joined(separator: ",")
                            }
                            // One streamed chunk ≈ one token: what a cancelled job is billed
                            // for until the upstream's own usage replaces it.
                            if usage == nil { request.meter.addCompletion() }
                            continuation.yield(.text(choice: index, text, logprobs: lp))
                        }
                        if case let .object(delta)? = co["delta"], case let .array(calls)? = delta["tool_calls"] {
                            for call in calls {
                                guard case let .object(c) = call, case let .int(t)? = c["index"], WireLimits.toolIndices.contains(t) else { continue }
                                var id = "", name = "", args = ""
                                if case let .string(v)? = c["id"] { id = v }
                                if case let .object(fn)? = c["function"] {
                                    if case let .string(v)? = fn["name"] { name = v }
                                    if case let .string(v)? = fn["arguments"] { args = v }
                                }
                                continuation.yield(.toolCall(choice: index, toolIndex: t, id: id, name: name, arguments: args))
                            }
                        }
                        if case let .string(reason)? = co["finish_reason"], finished.insert(index).inserted {
                            continuation.yield(.finish(choice: index, reason: reason))
                        }
                    }
                }
            }
            // What is left is one unfinished event; an upstream that never ends one must not grow memory.
            if pending.count > Self.maxEventBytes {
                throw APIError(status: 502, message: "The upstream model server sent an event larger than \(Self.maxEventBytes) bytes.", type: "server_error", code: "upstream_error")
            }
        }
        continuation.yield(.usage(usage ?? request.meter.usage))
    }

    static let maxEventBytes = 4 << 20

    /// A text completion's legacy logprobs (parallel `tokens` / `token_logprobs` / `top_logprobs`
    /// arrays) as the chat-style entries engines report, comma-joined; nil when there are none.
    static func chatStyleLogprobs(_ v: JSONValue?) -> String? {
        guard case let .object(l)? = v, case let .array(tokens)? = l["tokens"], !tokens.isEmpty else { return nil }
        var lps: [JSONValue] = [], tops: [JSONValue] = []
        if case let .array(a)? = l["token_logprobs"] { lps = a }
        if case let .array(a)? = l["top_logprobs"] { tops = a }
        var entries: [String] = []
        for (i, t) in tokens.prefix(WireLimits.maxTokensPerDelta).enumerated() {
            guard case let .string(token) = t else { continue }
            var w = JSONWriter(capacity: 96)
            w.objectStart()
            w.field("token", token)
            w.key("logprob")
            switch i < lps.count ? lps[i] : .null {
            case let .double(d): w.value(d)
            case let .int(n): w.value(Double(n))
            default: w.null()
            }
            w.key("top_logprobs"); w.arrayStart()
            if i < tops.count, case let .object(alts) = tops[i] {
                for (alt, lp) in alts.prefix(20) {
                    let value: Double
                    switch lp { case let .double(d): value = d; case let .int(n): value = Double(n); default: continue }
                    w.objectStart(); w.field("token", alt); w.field("logprob", value); w.objectEnd()
                }
            }
            w.arrayEnd()
            w.objectEnd()
            entries.append(w.string)
        }
        return entries.isEmpty ? nil : entries.joined(separator: ",")
    }

    /// Where the first SSE event in `bytes` ends (`\n\n` or `\r\n\r\n`).
    static func findEventEnd(_ bytes: [UInt8]) -> (start: Int, next: Int)? {
        var i = 0
        while i + 1 < bytes.count {
            if bytes[i] == 10 && bytes[i + 1] == 10 { return (i, i + 2) }
            if i + 3 < bytes.count, bytes[i] == 13, bytes[i + 1] == 10, bytes[i + 2] == 13, bytes[i + 3] == 10 { return (i, i + 4) }
            i += 1
        }
        return nil
    }

    /// Upstream 4xx about the request itself pass through (the client can fix them); failures of
    /// the upstream or of our credentials for it are 502 (the client cannot).
    static func mapUpstreamError(status: Int, body: String) -> APIError {
        var message = "upstream answered \(status)"
        var type = "invalid_request_error", param: String?, code: String?
        if case let .object(o)? = try? JSONValue.parse(Array(body.utf8)), case let .object(e)? = o["error"] {
            if case let .string(m)? = e["message"] { message = m }
            if case let .string(t)? = e["type"] { type = t }
            if case let .string(p)? = e["param"] { param = p }
            if case let .string(c)? = e["code"] { code = c }
        }
        switch status {
        case 400, 404, 413, 422:
            return APIError(status: status == 422 ? 400 : status, message: message, type: type, param: param, code: code)
        case 429:
            return APIError(status: 429, message: "The upstream model server is rate limiting: \(message)", type: "requests", code: "upstream_rate_limited",
                            headers: ["Retry-After": "1"])
        default:
            return APIError(status: 502, message: "The upstream model server refused the request (\(status)): \(message)", type: "server_error", code: "upstream_error")
        }
    }
}
