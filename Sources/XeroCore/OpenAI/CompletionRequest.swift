/// A validated `POST /completions` body (OpenAI's legacy text completions). `parse` checks every
/// field as OpenAI does and returns the generation as a `ChatRequest` whose `completion` is set and
/// whose `messages` are empty: sampling, `n`, stops and limits then take the very same path as a
/// chat request through the job client, the router, the worker and the engine (docs/completions.md).
public struct TextCompletion: Sendable, Equatable {
    public enum Prompt: Sendable, Equatable {
        case text(String)
        /// Token ids, given by the client (checked against the model's vocabulary by the engine).
        case tokens([Int32])
    }

    /// One or more prompts; each gets `n` choices, numbered prompt by prompt (OpenAI's order).
    public var prompts: [Prompt]
    /// The prompt's text comes first in each choice's text.
    public var echo: Bool
    /// How many alternatives per token `logprobs` reports (nil: no logprobs). With `echo`, the
    /// prompt's tokens are scored too.
    public var logprobs: Int?

    public init(prompts: [Prompt], echo: Bool = false, logprobs: Int? = nil) {
        self.prompts = prompts
        self.echo = echo
        self.logprobs = logprobs
    }

    /// Choices in the answer: every prompt's `n`.
    public func choiceCount(n: Int) -> Int { prompts.count * n }

    /// The prompt text the router hashes for prefix-aware placement (token prompts: none).
    public var promptText: String? {
        guard prompts.count == 1, case let .text(s) = prompts[0] else { return nil }
        return s
    }
}

public enum CompletionRequest {
    /// OpenAI caps `logprobs` for completions at 5.
    public static let maxLogprobs = 5
    /// Prompts in one request: every choice of every prompt must fit the wire's choice indices.
    public static let maxPrompts = WireLimits.choices.upperBound
    /// Token ids in one prompt (no model served here has a longer context).
    public static let maxPromptTokens = 1 << 20
    /// OpenAI's default answer length for completions, when neither the client nor the tier sets one.
    public static let defaultMaxTokens = 16

    public static func parse(_ body: [UInt8]) throws(APIError) -> ChatRequest {
        let (o, model) = try ChatRequest.generationBody(body)
        var f = FieldReader(o)
        let prompts = try parsePrompt(o["prompt"])
        if let suffix = o["suffix"], suffix != .null, suffix != .string("") {
            throw APIError.invalidRequest("'suffix' is not supported by this endpoint's model (it has no fill-in-the-middle mode).", param: "suffix", code: "unsupported_parameter")
        }
        let maxTokens = try f.int("max_tokens", min: 0, max: ChatRequest.maxCompletionTokens)
        let temperature = try f.double("temperature", range: 0...2)
        let topP = try f.double("top_p", range: 0...1)
        let topK = try f.int("top_k", min: -1, max: ChatRequest.maxTopK)
        let minP = try f.double("min_p", range: 0...1)
        let n = try f.int("n", min: 1, max: ChatRequest.maxN) ?? 1
        if let bestOf = try f.int("best_of", min: 1, max: ChatRequest.maxN), bestOf != n {
            throw APIError.invalidRequest("'best_of' other than 'n' is not supported; every generated choice is returned.", param: "best_of", code: "unsupported_parameter")
        }
        guard prompts.count * n <= WireLimits.choices.upperBound else {
            throw APIError.invalidRequest("\(prompts.count) prompts × n=\(n) is \(prompts.count * n) choices; at most \(WireLimits.choices.upperBound) fit one request.", param: "n", code: "invalid_value")
        }
        let (stream, includeUsage) = try ChatRequest.parseStreaming(o)
        let stop = try ChatRequest.parseStop(o["stop"])
        let seed = try f.int("seed", min: Int.min)
        let presence = try f.double("presence_penalty", range: -2...2)
        let frequency = try f.double("frequency_penalty", range: -2...2)
        let logprobs = try f.int("logprobs", min: 0, max: maxLogprobs)
        let echo = try f.bool("echo") ?? false
        let user = try f.string("user", allowEmpty: true)
        // `max_tokens: 0` is only meaningful with `echo` (score the prompt, generate nothing).
        if maxTokens == 0 && !echo {
            throw APIError.invalidRequest("Invalid 'max_tokens': 0 is only allowed with 'echo'.", param: "max_tokens", code: "invalid_value")
        }
        var request = ChatRequest(model: model, messages: [], maxTokens: maxTokens, temperature: temperature, topP: topP, topK: topK,
                                  minP: minP, n: n, stream: stream, includeUsage: includeUsage, stop: stop, seed: seed,
                                  presencePenalty: presence, frequencyPenalty: frequency, logprobs: logprobs != nil, topLogprobs: logprobs,
                                  user: user, responseFormat: nil, toolsJSON: nil, toolChoiceJSON: nil)
        request.completion = TextCompletion(prompts: prompts, echo: echo, logprobs: logprobs)
        request.defaultMaxTokens = try f.int(ChatRequest.defaultMaxTokensField, min: 1, max: ChatRequest.maxCompletionTokens)
        return request
    }

    /// A string, an array of strings, an array of token ids, or an array of such arrays.
    static func parsePrompt(_ v: JSONValue?) throws(APIError) -> [TextCompletion.Prompt] {
        func tokens(_ items: [JSONValue], param: String) throws(APIError) -> [Int32] {
            guard items.count <= maxPromptTokens else {
                throw APIError.invalidRequest("Invalid '\(param)': more than \(maxPromptTokens) tokens.", param: param, code: "invalid_value")
            }
            var out: [Int32] = []
            out.reserveCapacity(items.count)
            for item in items {
                guard case let .int(t) = item, t >= 0, t <= Int(Int32.max) else {
                    throw APIError.invalidRequest("Invalid '\(param)': token ids must be integers between 0 and \(Int32.max).", param: param, code: "invalid_value")
                }
                out.append(Int32(t))
            }
            guard !out.isEmpty else {
                throw APIError.invalidRequest("Invalid '\(param)': a token prompt must not be empty.", param: param, code: "invalid_value")
            }
            return out
        }
        switch v {
        case nil, .null?:
            throw APIError.invalidRequest("Missing required parameter: 'prompt'.", param: "prompt", code: "missing_required_parameter")
        case let .string(s)?:
            return [.text(s)]
        case let .array(items)?:
            guard !items.isEmpty else {
                throw APIError.invalidRequest("Invalid 'prompt': empty array.", param: "prompt", code: "empty_array")
            }
            if case .int = items[0] { return [.tokens(try tokens(items, param: "prompt"))] }
            guard items.count <= maxPrompts else {
                throw APIError.invalidRequest("Invalid 'prompt': at most \(maxPrompts) prompts per request.", param: "prompt", code: "array_above_max_length")
            }
            var out: [TextCompletion.Prompt] = []
            for (i, item) in items.enumerated() {
                switch item {
                case let .string(s): out.append(.text(s))
                case let .array(ids): out.append(.tokens(try tokens(ids, param: "prompt[\(i)]")))
                default:
                    throw APIError.invalidRequest("Invalid type for 'prompt[\(i)]': expected a string or an array of token ids, but got \(item.typeName) instead.", param: "prompt[\(i)]", code: "invalid_type")
                }
            }
            return out
        case let v?:
            throw APIError.invalidRequest("Invalid type for 'prompt': expected a string, an array of strings, an array of token ids or an array of such arrays, but got \(v.typeName) instead.", param: "prompt", code: "invalid_type")
        }
    }
}
