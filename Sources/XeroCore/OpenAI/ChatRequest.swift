/// A validated `POST /chat/completions` body. `parse` is the only way in: it checks every field the
/// way OpenAI does and throws the OpenAI-shaped 400 that names the offending parameter.
/// Unknown fields are ignored (as vLLM does) so SDK `extra_body` additions never break a request.
public struct ChatRequest: Sendable, Equatable {
    public struct Message: Sendable, Equatable {
        public var role: String
        /// Text content; array content is flattened to its text parts.
        public var content: String
        public var name: String?
        public var toolCallId: String?
        /// `tool_calls` of an assistant message, as raw JSON, passed through to engines that use it.
        public var toolCallsJSON: [UInt8]?
    }

    public var model: String
    public var messages: [Message]
    public var maxTokens: Int?
    public var temperature: Double?
    public var topP: Double?
    public var topK: Int?
    public var minP: Double?
    public var n: Int
    public var stream: Bool
    public var includeUsage: Bool
    public var stop: [String]
    public var seed: Int?
    public var presencePenalty: Double?
    public var frequencyPenalty: Double?
    public var logprobs: Bool
    public var topLogprobs: Int?
    public var user: String?
    /// `text`, `json_object` or `json_schema`.
    public var responseFormat: String?
    /// The compiled schema of `json_schema` (nil: none given — any JSON object).
    public var jsonSchema: JSONSchema? = nil
    public var toolsJSON: [UInt8]?
    public var toolChoiceJSON: [UInt8]?
    /// Names of the functions in `tools`.
    public var toolNames: [String] = []
    /// `none`, `auto`, `required`, or the name of the one function that must be called.
    public var toolChoice: String?
    /// Set for a text completion (`/v1/completions`, `CompletionRequest`): its prompts replace
    /// `messages`, which are then empty; the model's chat template is not applied.
    public var completion: TextCompletion? = nil
    /// The answer budget the platform set because the client set no `max_tokens` (the tier's
    /// `default_max_tokens`, `RequestDefaults`): a cap, not a demand. An engine shortens it to what
    /// the context has left instead of refusing the request.
    public var defaultMaxTokens: Int? = nil
    /// What the answer may use at most, as far as the request says (admission reserves this).
    public var budget: Int? { maxTokens ?? defaultMaxTokens }
    /// The body field that carries `defaultMaxTokens` from the gateway to the worker.
    public static let defaultMaxTokensField = "xerotier_default_max_tokens"

    public static let roles: Set<String> = ["system", "developer", "user", "assistant", "tool", "function"]
    public static let maxN = 128
    public static let maxStops = 4
    /// No model served here has a longer context; past the model's own context the engine answers
    /// 400 `context_length_exceeded` before any token (docs/architecture.md, "Request ranges").
    public static let maxCompletionTokens = 1 << 20
    public static let maxTopK = 1 << 20
    /// Longest `stop` string, in bytes.
    public static let maxStopBytes = 1024

    public static func parse(_ body: [UInt8]) throws(APIError) -> ChatRequest {
        let (o, model) = try generationBody(body)
        var f = FieldReader(o)
        guard case let .array(rawMessages)? = o["messages"] else {
            if o["messages"] == nil || o["messages"] == .null {
                throw APIError.invalidRequest("Missing required parameter: 'messages'.", param: "messages", code: "missing_required_parameter")
            }
            throw APIError.invalidRequest("Invalid type for 'messages': expected an array, but got \(o["messages"]!.typeName) instead.", param: "messages", code: "invalid_type")
        }
        guard !rawMessages.isEmpty else {
            throw APIError.invalidRequest("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.", param: "messages", code: "empty_array")
        }
        var messages: [Message] = []
        messages.reserveCapacity(rawMessages.count)
        for (i, raw) in rawMessages.enumerated() {
            messages.append(try parseMessage(raw, at: i))
        }

        // Both are validated, whichever wins: a bad value is a 400 even beside a good one.
        let maxCompletion = try f.int("max_completion_tokens", min: 1, max: maxCompletionTokens)
        let legacyMax = try f.int("max_tokens", min: 1, max: maxCompletionTokens)
        let maxTokens = maxCompletion ?? legacyMax
        let temperature = try f.double("temperature", range: 0...2)
        let topP = try f.double("top_p", range: 0...1)
        let topK = try f.int("top_k", min: -1, max: maxTopK)
        let minP = try f.double("min_p", range: 0...1)
        let n = try f.int("n", min: 1, max: maxN) ?? 1
        let (stream, includeUsage) = try parseStreaming(o)
        let stop = try parseStop(o["stop"])
        let seed = try f.int("seed", min: Int.min)   // any 64-bit integer; engines mix it with wrapping arithmetic
        let presence = try f.double("presence_penalty", range: -2...2)
        let frequency = try f.double("frequency_penalty", range: -2...2)
        let logprobs = try f.bool("logprobs") ?? false
        let topLogprobs = try f.int("top_logprobs", min: 0, max: 20)
        if let topLogprobs, topLogprobs > 0, !logprobs {
            throw APIError.invalidRequest("'top_logprobs' requires 'logprobs' to be true.", param: "top_logprobs", code: "invalid_value")
        }
        let user = try f.string("user", allowEmpty: true)
        var responseFormat: String?
        var jsonSchema: JSONSchema?
        if let rf = o["response_format"], rf != .null {
            guard case let .object(rfo) = rf, case let .string(t)? = rfo["type"] else {
                throw APIError.invalidRequest("Invalid 'response_format': expected an object with a 'type'.", param: "response_format", code: "invalid_type")
            }
            guard ["text", "json_object", "json_schema"].contains(t) else {
                throw APIError.invalidRequest("Invalid value: '\(t)'. Supported values are: 'text', 'json_object' and 'json_schema'.", param: "response_format.type", code: "invalid_value")
            }
            responseFormat = t
            if t == "json_schema" { jsonSchema = try Self.parseJSONSchema(rfo["json_schema"]) }
        }
        var toolsJSON: [UInt8]?
        var toolNames: [String] = []
        if let tools = o["tools"], tools != .null {
            guard case let .array(items) = tools else {
                throw APIError.invalidRequest("Invalid type for 'tools': expected an array, but got \(tools.typeName) instead.", param: "tools", code: "invalid_type")
            }
            for (i, t) in items.enumerated() {
                guard case let .object(to) = t, case .string("function")? = to["type"], case let .object(fn)? = to["function"],
                      case let .string(name)? = fn["name"], !name.isEmpty else {
                    throw APIError.invalidRequest("Invalid 'tools[\(i)]': expected {\"type\": \"function\", \"function\": {\"name\": …}}.", param: "tools[\(i)]", code: "invalid_value")
                }
                toolNames.append(name)
            }
            toolsJSON = tools.encoded()
        }
        let toolChoiceJSON = o["tool_choice"].flatMap { $0 == .null ? nil : $0.encoded() }
        var toolChoice: String?
        switch o["tool_choice"] {
        case nil, .null?: break
        case let .string(c)? where ["none", "auto", "required"].contains(c): toolChoice = c
        case let .object(tc)?:
            guard case let .object(fn)? = tc["function"], case let .string(name)? = fn["name"], toolNames.contains(name) else {
                throw APIError.invalidRequest("Invalid 'tool_choice': it must name a function given in 'tools'.", param: "tool_choice", code: "invalid_value")
            }
            toolChoice = name
        case let v?:
            throw APIError.invalidRequest("Invalid 'tool_choice': \(v.typeName). Expected 'none', 'auto', 'required' or a function.", param: "tool_choice", code: "invalid_value")
        }
        if toolChoice != nil && toolChoice != "none" && toolNames.isEmpty {
            throw APIError.invalidRequest("'tool_choice' is only allowed when 'tools' are specified.", param: "tool_choice", code: "invalid_value")
        }

        var request = ChatRequest(model: model, messages: messages, maxTokens: maxTokens, temperature: temperature, topP: topP, topK: topK,
                                  minP: minP, n: n, stream: stream, includeUsage: includeUsage, stop: stop, seed: seed,
                                  presencePenalty: presence, frequencyPenalty: frequency, logprobs: logprobs, topLogprobs: topLogprobs,
                                  user: user, responseFormat: responseFormat, toolsJSON: toolsJSON, toolChoiceJSON: toolChoiceJSON,
                                  toolNames: toolNames, toolChoice: toolChoice)
        request.defaultMaxTokens = try f.int(defaultMaxTokensField, min: 1, max: maxCompletionTokens)
        request.jsonSchema = jsonSchema
        return request
    }

    /// `response_format.json_schema`: `{name, schema?, strict?, description?}` as OpenAI defines it.
    /// No `schema` means any JSON object (as `json_object`).
    static func parseJSONSchema(_ v: JSONValue?) throws(APIError) -> JSONSchema? {
        let param = "response_format.json_schema"
        guard case let .object(o)? = v else {
            throw APIError.invalidRequest("Missing required parameter: 'response_format.json_schema'.", param: param, code: "missing_required_parameter")
        }
        guard case let .string(name)? = o["name"], (1...64).contains(name.utf8.count),
              name.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 | 0x20 >= 97 && $0 | 0x20 <= 122) || $0 == 95 || $0 == 45 }) else {
            throw APIError.invalidRequest("Invalid 'response_format.json_schema.name': 1 to 64 letters, digits, '_' or '-'.", param: param + ".name", code: "invalid_value")
        }
        var strict = false
        switch o["strict"] {
        case nil, .null?: break
        case let .bool(b)?: strict = b
        case let x?: throw APIError.invalidRequest("Invalid type for 'response_format.json_schema.strict': expected a boolean, but got \(x.typeName) instead.", param: param + ".strict", code: "invalid_type")
        }
        guard let schema = o["schema"], schema != .null else { return nil }
        return try JSONSchema.compile(schema, strict: strict, param: param + ".schema")
    }

    /// A generation request's body: a JSON object with a `model` (chat and text completions).
    static func generationBody(_ body: [UInt8]) throws(APIError) -> (object: [String: JSONValue], model: String) {
        guard case let .object(o) = try JSONValue.parse(body) else {
            throw APIError.invalidRequest("The request body must be a JSON object.")
        }
        var f = FieldReader(o)
        guard let model = try f.string("model") else {
            throw APIError.invalidRequest("you must provide a model parameter", param: "model", code: "missing_required_parameter")
        }
        return (o, model)
    }

    /// `stream` and `stream_options.include_usage` (the options only with `stream`).
    static func parseStreaming(_ o: [String: JSONValue]) throws(APIError) -> (stream: Bool, includeUsage: Bool) {
        var f = FieldReader(o)
        let stream = try f.bool("stream") ?? false
        guard let so = o["stream_options"], so != .null else { return (stream, false) }
        guard stream else {
            throw APIError.invalidRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.", param: "stream_options", code: "invalid_value")
        }
        guard case let .object(soo) = so else {
            throw APIError.invalidRequest("Invalid type for 'stream_options': expected an object, but got \(so.typeName) instead.", param: "stream_options", code: "invalid_type")
        }
        var sf = FieldReader(soo, prefix: "stream_options.")
        return (stream, try sf.bool("include_usage") ?? false)
    }

    /// `stop`: a string or up to `maxStops` non-empty strings.
    static func parseStop(_ value: JSONValue?) throws(APIError) -> [String] {
            var stop: [String] = []
            switch value {
            case nil, .null?: break
            case let .string(s)?: stop = [s]
            case let .array(items)?:
                guard items.count <= maxStops else {
                    throw APIError.invalidRequest("Invalid 'stop': array too long. Expected an array with maximum length \(maxStops), but got an array with length \(items.count) instead.", param: "stop", code: "array_above_max_length")
                }
                for item in items {
                    guard case let .string(s) = item else {
                        throw APIError.invalidRequest("Invalid type for 'stop': expected a string or an array of strings.", param: "stop", code: "invalid_type")
                    }
                    stop.append(s)
                }
            case let v?:
                throw APIError.invalidRequest("Invalid type for 'stop': expected a string or an array of strings, but got \(v.typeName) instead.", param: "stop", code: "invalid_type")
            }
            if stop.contains("") {
                throw APIError.invalidRequest("Invalid 'stop': stop sequences must not be empty.", param: "stop", code: "invalid_value")
            }
            if stop.contains(where: { $0.utf8.count > maxStopBytes }) {
                throw APIError.invalidRequest("Invalid 'stop': each stop sequence may be at most \(maxStopBytes) bytes.", param: "stop", code: "invalid_value")
            }
        return stop
    }

    private static func parseMessage(_ raw: JSONValue, at i: Int) throws(APIError) -> Message {
        let p = "messages[\(i)]"
        guard case let .object(m) = raw else {
            throw APIError.invalidRequest("Invalid type for '\(p)': expected an object, but got \(raw.typeName) instead.", param: p, code: "invalid_type")
        }
        guard case let .string(role)? = m["role"] else {
            throw APIError.invalidRequest("Missing required parameter: '\(p).role'.", param: "\(p).role", code: "missing_required_parameter")
        }
        guard roles.contains(role) else {
            throw APIError.invalidRequest("Invalid value: '\(role)'. Supported values are: 'system', 'developer', 'user', 'assistant', 'tool' and 'function'.", param: "\(p).role", code: "invalid_value")
        }
        var content = ""
        switch m["content"] {
        case let .string(s)?: content = s
        case let .array(parts)?:
            for (j, part) in parts.enumerated() {
                guard case let .object(po) = part, case let .string(type)? = po["type"] else {
                    throw APIError.invalidRequest("Invalid '\(p).content[\(j)]': expected an object with a 'type'.", param: "\(p).content[\(j)]", code: "invalid_type")
                }
                guard type == "text" || type == "input_text" else {
                    throw APIError.invalidRequest("Content part type '\(type)' is not supported by this endpoint's model; only text parts are.", param: "\(p).content[\(j)].type", code: "invalid_value")
                }
                guard case let .string(text)? = po["text"] else {
                    throw APIError.invalidRequest("Missing required parameter: '\(p).content[\(j)].text'.", param: "\(p).content[\(j)].text", code: "missing_required_parameter")
                }
                content += text
            }
        case nil, .null?:
            // Only an assistant message that calls tools may omit its content.
            guard role == "assistant", m["tool_calls"] != nil else {
                throw APIError.invalidRequest("Missing required parameter: '\(p).content'.", param: "\(p).content", code: "missing_required_parameter")
            }
        case let v?:
            throw APIError.invalidRequest("Invalid type for '\(p).content': expected a string or an array of content parts, but got \(v.typeName) instead.", param: "\(p).content", code: "invalid_type")
        }
        var name: String?
        if case let .string(s)? = m["name"] { name = s }
        var toolCallId: String?
        if case let .string(s)? = m["tool_call_id"] { toolCallId = s }
        if role == "tool", toolCallId == nil {
            throw APIError.invalidRequest("Missing required parameter: '\(p).tool_call_id'.", param: "\(p).tool_call_id", code: "missing_required_parameter")
        }
        let toolCalls = m["tool_calls"].flatMap { $0 == .null ? nil : $0.encoded() }
        return Message(role: role, content: content, name: name, toolCallId: toolCallId, toolCallsJSON: toolCalls)
    }
}

/// Typed, optional field access with OpenAI-style error messages.
struct FieldReader {
    let o: [String: JSONValue]
    let prefix: String
    init(_ o: [String: JSONValue], prefix: String = "") { self.o = o; self.prefix = prefix }

    private func typeError(_ k: String, _ expected: String, _ v: JSONValue) -> APIError {
        APIError.invalidRequest("Invalid type for '\(prefix)\(k)': expected \(expected), but got \(v.typeName) instead.", param: prefix + k, code: "invalid_type")
    }

    mutating func string(_ k: String, allowEmpty: Bool = false) throws(APIError) -> String? {
        switch o[k] {
        case nil, .null?: return nil
        case let .string(s)?:
            if s.isEmpty && !allowEmpty {
                throw APIError.invalidRequest("Invalid '\(prefix)\(k)': empty string.", param: prefix + k, code: "invalid_value")
            }
            return s
        case let v?: throw typeError(k, "a string", v)
        }
    }

    mutating func bool(_ k: String) throws(APIError) -> Bool? {
        switch o[k] {
        case nil, .null?: return nil
        case let .bool(b)?: return b
        case let v?: throw typeError(k, "a boolean", v)
        }
    }

    mutating func int(_ k: String, min: Int, max: Int = Int.max) throws(APIError) -> Int? {
        let i: Int
        switch o[k] {
        case nil, .null?: return nil
        case let .int(v)?: i = v
        case let .double(d)? where d.rounded() == d && abs(d) < 9e15: i = Int(d)
        case let v?: throw typeError(k, "an integer", v)
        }
        guard i >= min, i <= max else {
            let bound = max == Int.max ? "greater than or equal to \(min)" : "between \(min) and \(max)"
            throw APIError.invalidRequest("Invalid '\(prefix)\(k)': \(i) is not valid; it must be \(bound).", param: prefix + k, code: "invalid_value")
        }
        return i
    }

    mutating func double(_ k: String, range: ClosedRange<Double>) throws(APIError) -> Double? {
        let d: Double
        switch o[k] {
        case nil, .null?: return nil
        case let .int(v)?: d = Double(v)
        case let .double(v)?: d = v
        case let v?: throw typeError(k, "a number", v)
        }
        guard range.contains(d) else {
            throw APIError.invalidRequest("Invalid '\(prefix)\(k)': \(d) is not valid; it must be between \(range.lowerBound) and \(range.upperBound).", param: prefix + k, code: "invalid_value")
        }
        return d
    }
}
