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
    /// KV state of recent prompts, shared by this worker's jobs of the same project — partitioned
    /// by `EngineRequest.project`, so no project can probe another's prompts (nil = off).
    public let prefixCache: PrefixCache?
    /// What the worker reports of that cache to the routers, as prompt block hashes (nil = off).
    let ledger: PromptLedger?
    /// Runs every sequence of this worker in shared forward passes.
    private(set) var scheduler: BatchScheduler!
    /// Prompt tokens processed per step while others decode (a newcomer's prompt is chunked).
    public let prefillChunk: Int

    public init(path: String, modelID: String, slots: Int = 8, contextLength: Int? = nil, prefixCacheBytes: Int = 512 << 20,
                prefillChunk: Int = 64) throws {
        (model, tokenizer, template) = try Self.open(path: path)
        self.modelID = modelID
        self.slots = max(1, slots)
        self.contextLength = min(contextLength ?? model.config.contextLength, model.config.contextLength)
        prefixCache = prefixCacheBytes > 0 ? PrefixCache(config: model.config, budgetBytes: prefixCacheBytes) : nil
        // The cache's budget in prompt blocks: KV bytes per token (keys and values, F16, every
        // layer) times the ~64 tokens of a 256-byte block.
        let bytesPerBlock = model.config.layers * model.config.kvDim * 2 * 2 * (PromptBlocks.blockBytes / 4)
        ledger = prefixCacheBytes > 0 ? PromptLedger(capacityBlocks: prefixCacheBytes / max(1, bytesPerBlock)) : nil
        self.prefillChunk = max(2, prefillChunk)
        scheduler = BatchScheduler(engine: self)
    }

    /// Everything the engine builds from a file, or the reason it cannot: the one check that both
    /// loading and the model registry's upload use, so an upload is refused exactly when a worker
    /// would refuse the file.
    static func open(path: String) throws -> (LlamaModel, BPETokenizer, ChatTemplate) {
        let file = try GGUFFile(path: path)
        return (try LlamaModel(file: file), try BPETokenizer(file: file), try ChatTemplate(file: file))
    }

    /// What the registry records of a file the engine can run (throws the engine's reason otherwise).
    public static func inspect(path: String) throws -> GGUFModelInfo {
        let (model, _, _) = try open(path: path)
        let file = model.file
        return GGUFModelInfo(architecture: file.architecture ?? "", tensorTypes: Set(file.tensors.values.map { "\($0.type)" }).sorted(),
                             contextLength: model.config.contextLength,
                             parameters: file.tensors.values.reduce(0) { $0 + $1.elementCount })
    }

    public var info: EngineInfo { EngineInfo(name: "gguf", models: [modelID], capabilities: ["chat"], slots: slots) }

    /// The prompts the prefix cache holds, as `PromptBlocks` hashes (what routers compare), not
    /// the cache's own token-block hashes: a router has no tokenizer (docs/routing.md).
    public func prefixBlockHashes() -> [UInt64] { ledger?.hashes() ?? [] }

    public func kvCacheStats() -> KVCacheStats {
        let prefix = prefixCache?.usedBytes ?? 0
        return KVCacheStats(bytes: KVCache.liveBytes + prefix, prefixBytes: prefix, prefixBudgetBytes: prefixCache?.budgetBytes ?? 0)
    }

    /// The prompt's token ids, exactly as the model will see them.
    public func promptTokens(_ chat: ChatRequest) -> [Int32] {
        tokenizer.encode(segments: template.render(chat.messages.map { ChatTemplate.Message(role: $0.role, content: $0.content) }))
    }

    public func generate(_ request: EngineRequest) -> AsyncThrowingStream<EngineEvent, Error> {
        ledger?.record(PromptBlocks.hashes(request.chat, partition: request.project))
        return AsyncThrowingStream { continuation in
            let cancelled = Locked(false)
            continuation.onTermination = { _ in cancelled.withLock { $0 = true } }
            let job: BatchJob
            do {
                job = try self.admit(request, cancelled: cancelled, emit: { continuation.yield($0) },
                                     end: { error in continuation.finish(throwing: error) })
            } catch {
                continuation.finish(throwing: error)
                return
            }
            scheduler.submit(job)
        }
    }

    /// Checks a request against the context and prepares its job (prompt, prefix-cache hit).
    func admit(_ request: EngineRequest, cancelled: Locked<Bool>, emit: @escaping @Sendable (EngineEvent) -> Void,
               end: @escaping @Sendable (Error?) -> Void) throws -> BatchJob {
        let chat = request.chat
        let prompt = promptTokens(chat)
        let context = contextLength
        if prompt.count >= context {
            throw APIError.invalidRequest(
                "This model's maximum context length is \(context) tokens. However, your messages resulted in \(prompt.count) tokens. Please reduce the length of the messages.",
                param: "messages", code: "context_length_exceeded")
        }
        // Written as a subtraction: `max_tokens` comes from the client (batch lines skip the
        // gateway), and prompt + max_tokens must not be able to overflow.
        if let m = chat.maxTokens, m > context - prompt.count {
            throw APIError.invalidRequest(
                "This model's maximum context length is \(context) tokens. However, you requested \(prompt.count.addingSaturated(m)) tokens (\(prompt.count) in the messages, \(m) in the completion). Please reduce the length of the messages or completion.",
                param: "max_tokens", code: "context_length_exceeded")
        }
        if !request.replay.isEmpty {
            guard chat.n == 1 else { throw APIError.invalidRequest("Only a single-choice request can be continued.", code: "bad_replay") }
            guard request.replay.count < context - prompt.count, request.replay.allSatisfy({ $0 >= 0 && Int($0) < tokenizer.vocabSize }) else {
                throw APIError.invalidRequest("The replayed tokens do not fit this model.", code: "bad_replay")
            }
        }
        request.meter.setPrompt(prompt.count)
        return BatchJob(chat: chat, prompt: prompt, limit: chat.maxTokens ?? (context - prompt.count), project: request.project,
                        meter: request.meter, cancelled: cancelled, replay: request.replay, emit: emit, end: end)
    }

    /// The sampling state of one choice, from its request.
    func makeChoice(_ job: BatchJob, index c: Int, cache: KVCache, logits: [Float]) -> BatchSequence {
        let chat = job.chat
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
        let seq = BatchSequence(job: job, choice: c, cache: cache, sampler: Sampler(options: options), stops: StopScanner(stops: chat.stop))
        seq.logits = logits
        if c == 0 { seq.replay = job.replay[...] }
        // JSON mode: only tokens that keep the output a valid JSON-object prefix (json_schema
        // gets the same guarantee of a JSON object; the schema itself is not enforced).
        if chat.responseFormat == "json_object" || chat.responseFormat == "json_schema" { seq.json = JSONConstraint(tokenizer: tokenizer) }
        return seq
    }

    /// Samples the next token of a choice from its logits and emits its text. Returns false when
    /// the choice has finished (its finish event sent).
    func step(_ seq: BatchSequence) -> Bool {
        let job = seq.job, chat = job.chat
        var mask: [Bool]?
        if let json = seq.json {
            if let forced = json.forcedToken {
                mask = [Bool](repeating: false, count: tokenizer.vocabSize)
                mask![Int(forced)] = true
            } else {
                mask = json.mask(remaining: min(job.limit - seq.generated, contextLength - seq.cache.count))
            }
        }
        var token = seq.sampler.sample(&seq.logits, mask: mask)
        // A migration replays what the client already has: the sampler drew as the first run's
        // did (its random stream stays in step), and the replayed token stands in for its pick.
        let replayed = seq.replay.popFirst()
        if let replayed { token.id = replayed }
        seq.json?.advance(token.id)
        seq.generated += 1
        job.addCompletionToken()
        // The end token was generated (and computed): it counts, as in llama.cpp and vLLM.
        if tokenizer.endOfGeneration.contains(token.id) { return finish(seq, "stop") }
        seq.sampler.accept(token.id)
        let bytes = tokenizer.bytes(of: token.id)
        let piece = seq.stops.feed(seq.text.push(bytes))
        seq.unreported.append(token.id)
        if replayed != nil {
            // Its text reached the client with the first run (or is held back here as it was there).
            seq.unreported = []
            seq.next = token.id
            return true
        }
        let logprobs = chat.logprobs ? logprobEntry(token, bytes: bytes) : nil
        if !piece.isEmpty || logprobs != nil {
            job.emit(.text(choice: seq.choice, piece, logprobs: logprobs, tokens: seq.unreported))
            seq.unreported = []
        }
        if seq.stops.stopped { return finish(seq, "stop") }
        if seq.generated >= job.limit || seq.cache.count + 1 >= contextLength { return finish(seq, "length") }
        seq.next = token.id
        return true
    }

    func finish(_ seq: BatchSequence, _ reason: String) -> Bool {
        var reason = reason
        if !seq.stops.stopped {
            var rest = seq.stops.feed(seq.text.flush())
            if seq.stops.stopped { reason = "stop" } else { rest += seq.stops.flush() }
            if !rest.isEmpty { seq.job.emit(.text(choice: seq.choice, rest, logprobs: nil)) }
        }
        seq.job.emit(.finish(choice: seq.choice, reason: reason))
        seq.job.choiceFinished()
        return false
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

/// One request in the batch: its prompt, its choices' shared bookkeeping, and how to reach its client.
final class BatchJob: @unchecked Sendable {
    let chat: ChatRequest
    let prompt: [Int32]
    let limit: Int
    /// The prefix-cache partition (the job's project).
    let project: String
    let meter: UsageMeter
    let cancelled: Locked<Bool>
    /// Choice 0's tokens to replay (a migration).
    let replay: [Int32]
    let emit: @Sendable (EngineEvent) -> Void
    let end: @Sendable (Error?) -> Void
    var cachedTokens = 0
    private var completion = 0
    private var choicesLeft: Int

    init(chat: ChatRequest, prompt: [Int32], limit: Int, project: String, meter: UsageMeter, cancelled: Locked<Bool>, replay: [Int32] = [],
         emit: @escaping @Sendable (EngineEvent) -> Void, end: @escaping @Sendable (Error?) -> Void) {
        self.replay = replay
        self.chat = chat
        self.meter = meter
        self.prompt = prompt
        self.limit = limit
        self.project = project
        self.cancelled = cancelled
        self.emit = emit
        self.end = end
        choicesLeft = chat.n
    }

    func addCompletionToken() {
        completion += 1
        meter.addCompletion()
    }

    /// After the last choice: usage (prompt counted once), then the end of the stream.
    func choiceFinished() {
        choicesLeft -= 1
        if choicesLeft == 0 {
            emit(.usage(Usage(promptTokens: prompt.count, completionTokens: completion, cachedTokens: cachedTokens)))
            end(nil)
        }
    }
}

/// A sequence in the running batch: a job's prompt being processed (`pending` tokens left), or
/// one of its choices decoding (`next` is the token to feed).
final class BatchSequence {
    let job: BatchJob
    let choice: Int
    var cache: KVCache
    var pending: ArraySlice<Int32> = []
    /// Its prompt's first chunk has run (the prefix cache was looked up for it).
    var prefillStarted = false
    /// Steps in a row it had prompt left and got no prefill budget.
    var passedOver = 0
    var next: Int32?
    var logits: [Float] = []
    var sampler: Sampler
    var stops: StopScanner
    var text = UTF8Pieces()
    var json: JSONConstraint?
    var generated = 0
    /// Tokens still to replay (a migration), and tokens whose text has not been emitted yet.
    var replay: ArraySlice<Int32> = []
    var unreported: [Int32] = []

    init(job: BatchJob, choice: Int, cache: KVCache, sampler: Sampler, stops: StopScanner) {
        self.job = job
        self.choice = choice
        self.cache = cache
        self.sampler = sampler
        self.stops = stops
    }
}

/// Continuous batching: one thread runs every sequence of the engine in shared forward passes.
/// A new job joins at the next step; its prompt is processed in chunks of `prefillChunk` tokens
/// beside the others' decoding, so it does not stall them; a finished or cancelled sequence
/// leaves at once and its KV cache is freed with it.
final class BatchScheduler: @unchecked Sendable {
    unowned let engine: GGUFEngine
    private let condition = NSCondition()
    private var waiting: [BatchJob] = []
    private var running: [BatchSequence] = []

    init(engine: GGUFEngine) {
        self.engine = engine
        let thread = Thread { [unowned self] in self.loop() }
        thread.name = "gguf-batch"
        thread.stackSize = 4 << 20
        thread.start()
    }

    func submit(_ job: BatchJob) {
        condition.lock()
        waiting.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Sequences in the batch (for tests and reporting).
    var activeSequences: Int { condition.lock(); defer { condition.unlock() }; return running.count }

    private func loop() {
        while true {
            condition.lock()
            while waiting.isEmpty && running.isEmpty { condition.wait() }
            // Admit newcomers while there are slots (a job needs one per choice once decoding).
            while let job = waiting.first, running.count + job.chat.n <= engine.slots || running.isEmpty {
                waiting.removeFirst()
                running.append(prefillSequence(job))
            }
            var batch = running
            condition.unlock()

            // Leave at once when cancelled.
            batch.removeAll { $0.job.cancelled.withLock { $0 } }
            guard !batch.isEmpty else { sync(batch); continue }
            var segments: [(tokens: [Int32], cache: KVCache)] = []
            var members: [BatchSequence] = []
            var prefillBudget = engine.prefillChunk
            var prefills: [BatchSequence] = []
            for seq in batch {
                if let next = seq.next {
                    segments.append(([next], seq.cache)); members.append(seq)
                } else if !seq.pending.isEmpty {
                    prefills.append(seq)
                }
            }
            for seq in prefillOrder(prefills) where prefillBudget >= 2 {
                if !seq.prefillStarted {
                    if waitsForSharedPrefill(seq, in: batch) { continue }
                    startPrefill(seq)
                }
                // Chunks keep at least two tokens, so each sees the batch arithmetic of a cold run:
                // a lone last token rides along with this chunk (one over the budget).
                var take = min(seq.pending.count, prefillBudget)
                if seq.pending.count - take == 1 { take = seq.pending.count }
                segments.append((Array(seq.pending.prefix(take)), seq.cache)); members.append(seq)
                prefillBudget -= take
                seq.passedOver = 0
            }
            for seq in prefills where !members.contains(where: { $0 === seq }) { seq.passedOver += 1 }
            guard !segments.isEmpty else { sync(batch); continue }
            let outs = engine.model.forward(segments)
            var next: [BatchSequence] = []
            for (seq, (segment, logits)) in zip(members, zip(segments, outs)) {
                if seq.next != nil {
                    seq.logits = logits
                    seq.next = nil
                    if engine.step(seq) { next.append(seq) }
                } else {
                    seq.pending = seq.pending.dropFirst(segment.tokens.count)
                    if !seq.pending.isEmpty { next.append(seq); continue }
                    // Prompt done: remember it, then fork the choices (the last takes the cache).
                    engine.prefixCache?.insert(seq.job.prompt, count: seq.job.prompt.count, from: seq.cache, partition: seq.job.project)
                    let n = seq.job.chat.n
                    for c in 0..<n {
                        let cache = c == n - 1 ? seq.cache : seq.cache.copy(prefix: seq.cache.count)
                        let choice = engine.makeChoice(seq.job, index: c, cache: cache, logits: logits)
                        if engine.step(choice) { next.append(choice) }
                    }
                }
            }
            // Sequences that did not run this step (prefill waiting for budget) stay.
            for seq in batch where !members.contains(where: { $0 === seq }) { next.append(seq) }
            sync(next)
        }
    }

    /// Replaces the running set with `kept` plus whatever arrived meanwhile is still waiting.
    private func sync(_ kept: [BatchSequence]) {
        condition.lock()
        running = kept
        condition.unlock()
    }

    /// A newly admitted job: its whole prompt pending. Its KV cache comes at its first chunk
    /// (`startPrefill`).
    private func prefillSequence(_ job: BatchJob) -> BatchSequence {
        job.meter.setPrompt(job.prompt.count, cached: 0)
        let seq = BatchSequence(job: job, choice: -1, cache: engine.model.newCache(reserve: 0), sampler: Sampler(options: SamplingOptions()),
                                stops: StopScanner(stops: []))
        seq.pending = job.prompt[...]
        return seq
    }

    /// The prompt's first chunk is about to run: the prefix cache is looked up now, not at
    /// admission, so a prompt that an earlier sequence was computing meanwhile is found cached.
    private func startPrefill(_ seq: BatchSequence) {
        let job = seq.job
        let reserve = job.prompt.count + min(job.limit, 512)
        seq.cache = engine.prefixCache?.lookup(job.prompt, reserve: reserve, partition: job.project) ?? engine.model.newCache(reserve: reserve)
        job.cachedTokens = seq.cache.count
        job.meter.setPrompt(job.prompt.count, cached: seq.cache.count)
        seq.pending = job.prompt[seq.cache.count...]
        seq.prefillStarted = true
    }

    /// Steps a prompt may be passed over before it goes first whatever its length.
    static let maxPassedOver = 64

    /// Which prompts get this step's prefill budget first: the fewest tokens left to compute (for
    /// one not started, its prompt less what the cache holds of it), so a prompt whose prefix is
    /// cached starts at once instead of queueing behind cold ones (SGLang's longest-prefix-match
    /// ordering, in effect). One passed over for `maxPassedOver` steps goes first: none starves.
    /// Ties keep admission order. Reordering never changes a sequence's numbers (chunks are
    /// computed alike in any batch).
    private func prefillOrder(_ prefills: [BatchSequence]) -> [BatchSequence] {
        guard prefills.count > 1 else { return prefills }
        let keyed = prefills.enumerated().map { i, seq -> (seq: BatchSequence, starved: Bool, left: Int, i: Int) in
            var left = seq.pending.count
            if !seq.prefillStarted, let cache = engine.prefixCache {
                left = max(2, seq.job.prompt.count - cache.cachedLength(seq.job.prompt, partition: seq.job.project))
            }
            return (seq, seq.passedOver >= Self.maxPassedOver, left, i)
        }
        return keyed.sorted { a, b in
            if a.starved != b.starved { return a.starved }
            if a.left != b.left { return a.left < b.left }
            return a.i < b.i
        }.map(\.seq)
    }

    /// Tokens of this prompt an earlier sequence must be computing (beyond what is cached) for this
    /// one to wait for it rather than compute them too.
    static let sharedPrefillToWait = 64

    /// Whether a sequence should wait a step: another one of the same project is computing a
    /// prefix of its prompt that the cache does not hold yet. That one finishes its prompt (and
    /// caches it) while this one waits; this one's lookup then finds it. Two concurrent requests
    /// with one system prompt compute it once.
    private func waitsForSharedPrefill(_ seq: BatchSequence, in batch: [BatchSequence]) -> Bool {
        guard let cache = engine.prefixCache else { return false }
        let prompt = seq.job.prompt
        var cached: Int?
        for other in batch where other !== seq && other.prefillStarted && !other.pending.isEmpty && other.job.project == seq.job.project {
            let theirs = other.job.prompt
            var shared = 0
            let n = min(theirs.count, prompt.count)
            while shared < n && theirs[shared] == prompt[shared] { shared += 1 }
            guard shared - other.job.cachedTokens >= Self.sharedPrefillToWait else { continue }
            if cached == nil { cached = cache.cachedLength(prompt, partition: seq.job.project) }
            if shared - cached! >= Self.sharedPrefillToWait { return true }
        }
        return false
    }
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

/// A GGUF file as the model registry describes it.
public struct GGUFModelInfo: Sendable, Equatable {
    public var architecture: String
    /// ggml type names, e.g. `q4_1`, `f32`.
    public var tensorTypes: [String]
    public var contextLength: Int
    public var parameters: Int
}
