/// Builds the JSON of `chat.completion` and `chat.completion.chunk` objects exactly as OpenAI shapes
/// them, by hand (see `JSONWriter` for why). One value per request holds the shared fields.
public struct ChatResponseWriter: Sendable {
    public let id: String
    public let created: Int
    public let model: String
    /// With `stream_options.include_usage`, every chunk carries `"usage":null` and a last chunk the usage.
    public let includeUsage: Bool

    public init(id: String, created: Int, model: String, includeUsage: Bool = false) {
        self.id = id
        self.created = created
        self.model = model
        self.includeUsage = includeUsage
    }

    private func header(_ w: inout JSONWriter, object: String) {
        w.field("id", id)
        w.field("object", object)
        w.field("created", created)
        w.field("model", model)
        w.key("system_fingerprint"); w.null()
    }

    /// A streaming chunk carrying a tool-call delta.
    public func toolCallChunk(index: Int, toolIndex: Int, id: String, name: String, arguments: String) -> [UInt8] {
        var w = JSONWriter(capacity: 256)
        w.objectStart()
        header(&w, object: "chat.completion.chunk")
        w.key("choices"); w.arrayStart(); w.objectStart()
        w.field("index", index)
        w.key("delta"); w.objectStart()
        w.key("tool_calls"); w.arrayStart(); w.objectStart()
        w.field("index", toolIndex)
        if !id.isEmpty { w.field("id", id); w.field("type", "function") }
        w.key("function"); w.objectStart()
        if !name.isEmpty { w.field("name", name) }
        w.field("arguments", arguments)
        w.objectEnd()
        w.objectEnd(); w.arrayEnd()
        w.objectEnd()
        w.key("logprobs"); w.null()
        w.key("finish_reason"); w.null()
        w.objectEnd(); w.arrayEnd()
        if includeUsage { w.key("usage"); w.null() }
        w.objectEnd()
        return w.bytes
    }

    /// A streaming chunk for one choice. `role` is set on a choice's first chunk only.
    public func chunk(index: Int, role: Bool = false, content: String?, logprobs: String? = nil, finishReason: String? = nil) -> [UInt8] {
        var w = JSONWriter(capacity: 192 + (content?.utf8.count ?? 0))
        w.objectStart()
        header(&w, object: "chat.completion.chunk")
        w.key("choices"); w.arrayStart()
        w.objectStart()
        w.field("index", index)
        w.key("delta"); w.objectStart()
        if role { w.field("role", "assistant") }
        if let content { w.field("content", content) }
        w.objectEnd()
        // `logprobs` holds this chunk's entries; the chunk carries them as OpenAI does.
        w.key("logprobs")
        if let logprobs { w.raw(Array(("{\"content\":[" + logprobs + "],\"refusal\":null}").utf8)) } else { w.null() }
        w.fieldOrNull("finish_reason", finishReason)
        w.objectEnd()
        w.arrayEnd()
        if includeUsage { w.key("usage"); w.null() }
        w.objectEnd()
        return w.bytes
    }

    /// The last chunk when `include_usage` is on: no choices, the real usage.
    public func usageChunk(_ usage: Usage) -> [UInt8] {
        var w = JSONWriter()
        w.objectStart()
        header(&w, object: "chat.completion.chunk")
        w.key("choices"); w.arrayStart(); w.arrayEnd()
        w.key("usage"); Self.writeUsage(usage, to: &w)
        w.objectEnd()
        return w.bytes
    }

    /// The stream's last chunk for a job with SLO hints: no choices, and under `x_xerotier` what
    /// it achieved and what the router predicted, ms (docs/routing.md, "SLO-aware placement").
    /// A field the OpenAI SDKs keep and ignore.
    public func timingChunk(ttftMs: Double?, tpotMs: Double?, predictedTTFTMs: Int, predictedTPOTMs: Int) -> [UInt8] {
        var w = JSONWriter()
        w.objectStart()
        header(&w, object: "chat.completion.chunk")
        w.key("choices"); w.arrayStart(); w.arrayEnd()
        w.key("x_xerotier"); w.objectStart()
        func ms(_ name: String, _ v: Double?) {
            w.key(name)
            if let v { w.value((v * 10).rounded() / 10) } else { w.null() }
        }
        ms("ttft_ms", ttftMs)
        ms("tpot_ms", tpotMs)
        ms("predicted_ttft_ms", predictedTTFTMs >= 0 ? Double(predictedTTFTMs) : nil)
        ms("predicted_tpot_ms", predictedTPOTMs >= 0 ? Double(predictedTPOTMs) : nil)
        w.objectEnd()
        w.objectEnd()
        return w.bytes
    }

    public struct ToolCall: Sendable, Equatable {
        public var id = ""
        public var name = ""
        public var arguments = ""
    }

    public struct Choice: Sendable {
        public var content: String = ""
        public var toolCalls: [ToolCall] = []
        public var finishReason: String?
        /// Logprob entries (`{"token":..}` objects) as raw JSON, joined into `logprobs.content`.
        public var logprobEntries: [String] = []
        public var wantsLogprobs = false
        public init() {}
    }

    /// The complete non-streaming `chat.completion` object.
    public func completion(choices: [Choice], usage: Usage) -> [UInt8] {
        var w = JSONWriter(capacity: 256 + choices.reduce(0) { $0 + $1.content.utf8.count })
        w.objectStart()
        header(&w, object: "chat.completion")
        w.key("choices"); w.arrayStart()
        for (i, c) in choices.enumerated() {
            w.objectStart()
            w.field("index", i)
            w.key("message"); w.objectStart()
            w.field("role", "assistant")
            // With tool calls and no text, OpenAI sends content null.
            if c.content.isEmpty && !c.toolCalls.isEmpty { w.key("content"); w.null() } else { w.field("content", c.content) }
            w.key("refusal"); w.null()
            if !c.toolCalls.isEmpty {
                w.key("tool_calls"); w.arrayStart()
                for t in c.toolCalls {
                    w.objectStart(); w.field("id", t.id); w.field("type", "function")
                    w.key("function"); w.objectStart(); w.field("name", t.name); w.field("arguments", t.arguments); w.objectEnd()
                    w.objectEnd()
                }
                w.arrayEnd()
            }
            w.objectEnd()
            w.key("logprobs")
            if c.wantsLogprobs {
                w.objectStart()
                w.key("content"); w.arrayStart()
                for e in c.logprobEntries { w.raw(Array(e.utf8)) }
                w.arrayEnd()
                w.key("refusal"); w.null()
                w.objectEnd()
            } else { w.null() }
            w.field("finish_reason", c.finishReason ?? "stop")
            w.objectEnd()
        }
        w.arrayEnd()
        w.key("usage"); Self.writeUsage(usage, to: &w)
        w.objectEnd()
        return w.bytes
    }

    public static func writeUsage(_ u: Usage, to w: inout JSONWriter) {
        w.objectStart()
        w.field("prompt_tokens", u.promptTokens)
        w.field("completion_tokens", u.completionTokens)
        w.field("total_tokens", u.totalTokens)
        w.key("prompt_tokens_details"); w.objectStart(); w.field("cached_tokens", u.cachedTokens); w.objectEnd()
        w.key("completion_tokens_details"); w.objectStart(); w.field("reasoning_tokens", 0); w.objectEnd()
        w.objectEnd()
    }
}

/// Folds a job's events into the choices of a non-streaming answer (gateway and batch runner).
public struct ChatAccumulator: Sendable {
    public private(set) var choices: [ChatResponseWriter.Choice]

    public init(n: Int, logprobs: Bool) {
        choices = (0..<max(1, n)).map { _ in var c = ChatResponseWriter.Choice(); c.wantsLogprobs = logprobs; return c }
    }

    /// Adds a non-terminal event; events for choices beyond `n` are ignored.
    public mutating func add(_ body: StreamEvent.Body) {
        switch body {
        case let .delta(i, text, logprobs, _) where choices.indices.contains(i):
            choices[i].content += text
            if let logprobs { choices[i].wantsLogprobs = true; choices[i].logprobEntries.append(logprobs) }
        case let .toolCall(i, t, id, name, arguments) where choices.indices.contains(i) && WireLimits.toolIndices.contains(t):
            while choices[i].toolCalls.count <= t { choices[i].toolCalls.append(ChatResponseWriter.ToolCall()) }
            if !id.isEmpty { choices[i].toolCalls[t].id = id }
            if !name.isEmpty { choices[i].toolCalls[t].name = name }
            choices[i].toolCalls[t].arguments += arguments
        case let .finish(i, reason) where choices.indices.contains(i):
            choices[i].finishReason = reason
        default: break
        }
    }
}
