import Foundation
import XeroCore
import XeroGGUF

/// The built-in chat engine: a llama-family GGUF model on the CPU (XeroGGUF, pure Swift). The model
/// is memory-mapped and loaded once per worker, shared by all its slots. Each job renders the chat
/// with the model's template, processes the prompt once (shared by the `n` choices), then samples
/// token by token, streaming text that never splits a UTF-8 character and never shows a stop string.
public final class GGUFEngine: Engine, @unchecked Sendable {
    public let model: LlamaModel
    public let tokenizer: BPETokenizer
    public let template: ChatTemplate
    public let modelID: String
    public let slots: Int
    /// Longest prompt + completion a job may use (the model's context unless configured lower).
    public let contextLength: Int
    /// Sampling used when the client does not say: small models ramble at OpenAI's default
    /// temperature 1, so like llama.cpp and Ollama the engine has its own defaults — here SmolLM2's
    /// recommended temperature 0.2 and top_p 0.9. Anything the client sends wins.
    public var defaultTemperature: Float = 0.2
    public var defaultTopP: Float = 0.9
    /// KV state of recent prompts, shared by this worker's jobs (nil = off).
    public let prefixCache: PrefixCache?

    public init(path: String, modelID: String, slots: Int = 4, contextLength: Int? = nil, prefixCacheBytes: Int = 512 << 20) throws {
        let file = try GGUFFile(path: path)
        model = try LlamaModel(file: file)
        tokenizer = try BPETokenizer(file: file)
        template = try ChatTemplate(file: file)
        self.modelID = modelID
        self.slots = max(1, slots)
        self.contextLength = min(contextLength ?? model.config.contextLength, model.config.contextLength)
        prefixCache = prefixCacheBytes > 0 ? PrefixCache(config: model.config, budgetBytes: prefixCacheBytes) : nil
    }

    public var info: EngineInfo { EngineInfo(name: "gguf", models: [modelID], capabilities: ["chat"], slots: slots) }

    public func prefixBlockHashes() -> [UInt64] { prefixCache?.blockHashes(limit: 1024) ?? [] }

    /// The prompt's token ids, exactly as the model will see them.
    public func promptTokens(_ chat: ChatRequest) -> [Int32] {
        tokenizer.encode(segments: template.render(chat.messages.map { ChatTemplate.Message(role: $0.role, content: $0.content) }))
    }

    public func generate(_ request: EngineRequest) -> AsyncThrowingStream<EngineEvent, Error> {
        AsyncThrowingStream { continuation in
            let cancelled = CancelFlag()
            continuation.onTermination = { _ in cancelled.set() }
            // A plain thread: generation blocks for its whole length, which the cooperative pool must not.
            let thread = Thread { [self] in
                do {
                    try self.run(request, cancelled: cancelled) { continuation.yield($0) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    func run(_ request: EngineRequest, cancelled: CancelFlag, emit: (EngineEvent) -> Void) throws {
        let chat = request.chat
        let prompt = promptTokens(chat)
        let context = contextLength
        if prompt.count >= context {
            throw APIError.invalidRequest(
                "This model's maximum context length is \(context) tokens. However, your messages resulted in \(prompt.count) tokens. Please reduce the length of the messages.",
                param: "messages", code: "context_length_exceeded")
        }
        if let m = chat.maxTokens, prompt.count + m > context {
            throw APIError.invalidRequest(
                "This model's maximum context length is \(context) tokens. However, you requested \(prompt.count + m) tokens (\(prompt.count) in the messages, \(m) in the completion). Please reduce the length of the messages or completion.",
                param: "max_tokens", code: "context_length_exceeded")
        }
        let limit = chat.maxTokens ?? (context - prompt.count)
        // Start from the longest cached prefix (another request's system prompt, earlier chat turns).
        let reserve = prompt.count + min(limit, 512)
        let promptCache = prefixCache?.lookup(prompt, reserve: reserve) ?? model.newCache(reserve: reserve)
        let cachedTokens = promptCache.count
        let promptLogits = model.forward(Array(prompt[cachedTokens...]), cache: promptCache)
        prefixCache?.insert(prompt, count: prompt.count, from: promptCache)
        var completion = 0
        for c in 0..<chat.n {
            if cancelled.isSet { return }
            // The last choice takes the prompt's cache; earlier ones work on copies.
            let cache = c == chat.n - 1 ? promptCache : promptCache.copy(prefix: prompt.count)
            var options = SamplingOptions()
            options.temperature = chat.temperature.map(Float.init) ?? defaultTemperature
            options.topP = chat.topP.map(Float.init) ?? (chat.temperature == nil ? defaultTopP : 1)
            options.topK = max(0, chat.topK ?? 0)
            options.minP = Float(chat.minP ?? 0)
            options.seed = chat.seed.map { UInt64(bitPattern: Int64($0)) &+ UInt64(c) &* 0x9E37_79B9_7F4A_7C15 }
            options.presencePenalty = Float(chat.presencePenalty ?? 0)
            options.frequencyPenalty = Float(chat.frequencyPenalty ?? 0)
            options.wantLogprobs = chat.logprobs
            options.topLogprobs = chat.topLogprobs ?? 0
            var sampler = Sampler(options: options)
            var text = UTF8Pieces()
            var stops = StopScanner(stops: chat.stop)
            var logits = promptLogits
            var finish = "length"
            // JSON mode: only tokens that keep the output a valid JSON-object prefix (json_schema
            // gets the same guarantee of a JSON object; the schema itself is not enforced).
            var json = chat.responseFormat == "json_object" || chat.responseFormat == "json_schema" ? JSONConstraint(tokenizer: tokenizer) : nil
            for step in 0..<limit {
                if cancelled.isSet { return }
                var mask: [Bool]?
                if let json {
                    if let forced = json.forcedToken {
                        mask = [Bool](repeating: false, count: tokenizer.vocabSize)
                        mask![Int(forced)] = true
                    } else {
                        mask = json.mask(remaining: min(limit - step, context - cache.count))
                    }
                }
                let token = sampler.sample(&logits, mask: mask)
                json?.advance(token.id)
                // The end token was generated (and computed): it counts, as in llama.cpp and vLLM.
                if tokenizer.endOfGeneration.contains(token.id) { completion += 1; finish = "stop"; break }
                sampler.accept(token.id)
                completion += 1
                let bytes = tokenizer.bytes(of: token.id)
                let piece = stops.feed(text.push(bytes))
                let logprobs = chat.logprobs ? logprobEntry(token, bytes: bytes) : nil
                if !piece.isEmpty || logprobs != nil { emit(.text(choice: c, piece, logprobs: logprobs)) }
                if stops.stopped { finish = "stop"; break }
                if step + 1 == limit || cache.count + 1 >= context { break }
                logits = model.forward([token.id], cache: cache)
            }
            if !stops.stopped {
                var rest = stops.feed(text.flush())
                if stops.stopped { finish = "stop" } else { rest += stops.flush() }
                if !rest.isEmpty { emit(.text(choice: c, rest, logprobs: nil)) }
            }
            emit(.finish(choice: c, reason: finish))
        }
        emit(.usage(Usage(promptTokens: prompt.count, completionTokens: completion, cachedTokens: cachedTokens)))
    }

    /// One OpenAI `logprobs.content` entry.
    func logprobEntry(_ t: SampledToken, bytes: [UInt8]) -> String {
        var w = JSONWriter(capacity: 128)
        func token(_ id: Int32, _ b: [UInt8], _ lp: Float) {
            w.field("token", String(decoding: b, as: UTF8.self))
            w.field("logprob", Double(lp))
            w.key("bytes"); w.arrayStart(); for x in b { w.value(Int(x)) }; w.arrayEnd()
        }
        w.objectStart()
        token(t.id, bytes, t.logprob)
        w.key("top_logprobs"); w.arrayStart()
        for (id, lp) in t.top {
            w.objectStart(); token(id, tokenizer.bytes(of: id), lp); w.objectEnd()
        }
        w.arrayEnd()
        w.objectEnd()
        return w.string
    }
}

/// Set once, read from the generating thread.
final class CancelFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}

/// Turns token bytes into text pieces that end on character boundaries: a character whose bytes
/// arrive in several tokens (an emoji is often 2–4 tokens) is held until it is complete.
public struct UTF8Pieces: Sendable {
    private var pending: [UInt8] = []
    public init() {}

    public mutating func push(_ bytes: [UInt8]) -> String {
        pending.append(contentsOf: bytes)
        let cut = Self.completePrefix(pending)
        guard cut > 0 else { return "" }
        let out = String(decoding: pending[..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return out
    }

    /// What is left at the end (an unfinished sequence becomes U+FFFD, as any decoder would).
    public mutating func flush() -> String {
        defer { pending = [] }
        return pending.isEmpty ? "" : String(decoding: pending, as: UTF8.self)
    }

    /// Length of the longest prefix that does not end inside a multi-byte sequence.
    static func completePrefix(_ b: [UInt8]) -> Int {
        var i = b.count - 1
        var back = 0
        // Walk back over continuation bytes (at most 3) to the lead byte of the last sequence.
        while i >= 0 && back < 4 && b[i] & 0xC0 == 0x80 { i -= 1; back += 1 }
        guard i >= 0 else { return b.count }
        let lead = b[i]
        let need = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
        return b.count - i >= need ? b.count : i
    }
}
