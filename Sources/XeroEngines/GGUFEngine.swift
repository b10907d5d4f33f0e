import Foundation
import XeroCore
import XeroGGUF

/// The built-in chat engine: a llama-family GGUF model on the CPU (XeroGGUF, pure Swift). The model
/// is memory-mapped and loaded once per worker, shared by all its slots. Each job renders the chat
/// with the model's template, processes the prompt once (shared by the `n` choices), then samples
/// token by token, streaming text that never splits a UTF-8 character and never shows a stop string.
public final class GGUFEngine: Engine, @unchecked Sendable {
    public let model: LlamaModel
    public let tokenizer: any Tokenizer
    /// The model's chat template; nil for a file without one (a base model: text completions only).
    public private(set) var template: ChatTemplate?
    public let modelID: String
    public let slots: Int
    /// Longest prompt + completion a job may use (the model's context unless configured lower).
    public let contextLength: Int
    /// Sampling for a request that says nothing about it (greedy + a light frequency penalty).
    public var sampling = SamplingDefaults()

    /// Replaces the system prompt the template adds to a conversation without one (set before
    /// serving). SmolLM2's own ("You are a helpful AI assistant named SmolLM…") sends its greedy
    /// answer to the seed's question into a loop; `xerotier up` uses "You are a helpful assistant.".
    public func setDefaultSystemPrompt(_ prompt: String) {
        template = template?.withDefaultSystem(prompt.isEmpty ? nil : prompt)
    }
    /// KV state of recent prompts, shared by this worker's jobs of the same project — partitioned
    /// by `EngineRequest.project`, so no project can probe another's prompts (nil = off).
    public let prefixCache: PrefixCache?
    /// What the worker reports of that cache to the routers, as prompt block hashes (nil = off).
    let ledger: PromptLedger?
    /// The vocabulary laid out for JSON mode's masks (built once at load).
    let vocabIndex: VocabIndex
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
        vocabIndex = VocabIndex(tokenizer: tokenizer)
        scheduler = BatchScheduler(engine: self)
    }

    /// Everything the engine builds from a file, or the reason it cannot: the one check that both
    /// loading and the model registry's upload use, so an upload is refused exactly when a worker
    /// would refuse the file.
    static func open(path: String) throws -> (LlamaModel, any Tokenizer, ChatTemplate?) {
        let file = try GGUFFile(path: path)
        return (try LlamaModel(file: file), try Tokenizers.load(file), try ChatTemplate.ifPresent(in: file))
    }

    /// What the registry records of a file the engine can run (throws the engine's reason otherwise).
    public static func inspect(path: String) throws -> GGUFModelInfo {
        let (model, _, _) = try open(path: path)
        let file = model.file
        return GGUFModelInfo(architecture: file.architecture ?? "", tensorTypes: Set(file.tensors.values.map { "\($0.type)" }).sorted(),
                             contextLength: model.config.contextLength,
                             parameters: file.tensors.values.reduce(0) { $0 + $1.elementCount })
    }

    public var info: EngineInfo { EngineInfo(name: "gguf", models: [modelID], capabilities: ["chat", "completions"], slots: slots) }

    /// The prompts the prefix cache holds, as `PromptBlocks` hashes (what routers compare), not
    /// the cache's own token-block hashes: a router has no tokenizer (docs/routing.md).
    public func prefixBlockHashes() -> [UInt64] { ledger?.hashes() ?? [] }

    public func stepStats() -> EngineStepStats { scheduler.stats.withLock { $0 } }

    public func kvCacheStats() -> KVCacheStats {
        let prefix = prefixCache?.usedBytes ?? 0
        return KVCacheStats(bytes: KVCache.liveBytes + prefix, prefixBytes: prefix, prefixBudgetBytes: prefixCache?.budgetBytes ?? 0)
    }

    /// The prompt's token ids, exactly as the model will see them (a model without a chat
    /// template has none: it answers text completions only).
    public func promptTokens(_ chat: ChatRequest) throws -> [Int32] {
        guard let template else {
            throw APIError.invalidRequest("This endpoint's model '\(modelID)' has no chat template, so it cannot answer chat completions; send the text to /v1/completions instead.",
                                          param: "messages", code: "no_chat_template")
        }
        return tokenizer.encode(segments: template.render(chat.messages.map { ChatTemplate.Message(role: $0.role, content: $0.content) }))
    }

    /// A text completion's prompts as token ids: text as llama-server's `/completion` takes it
    /// (special-token text becomes its token, BOS added when the model's tokenizer says so), token
    /// prompts as given (each id checked against the vocabulary).
    public func promptTokens(_ completion: TextCompletion) throws -> [[Int32]] {
        try completion.prompts.enumerated().map { i, p in
            switch p {
            case let .text(s): return tokenizer.encode(s, parseSpecial: true)
            case let .tokens(t):
                guard let bad = t.first(where: { Int($0) >= tokenizer.vocabSize }) else { return t }
                throw APIError.invalidRequest("Token id \(bad) is outside this model's vocabulary of \(tokenizer.vocabSize).",
                                              param: completion.prompts.count == 1 ? "prompt" : "prompt[\(i)]", code: "invalid_value")
            }
        }
    }

    public func generate(_ request: EngineRequest) -> AsyncThrowingStream<EngineEvent, Error> {
        ledger?.record(PromptBlocks.hashes(request.chat, partition: request.project))
        return AsyncThrowingStream { continuation in
            let cancelled = Locked(false)
            continuation.onTermination = { _ in cancelled.withLock { $0 = true } }
            let jobs: [BatchJob]
            do {
                jobs = try self.admit(request, cancelled: cancelled, emit: { continuation.yield($0) },
                                      end: { error in continuation.finish(throwing: error) })
            } catch {
                continuation.finish(throwing: error)
                return
            }
            for job in jobs { scheduler.submit(job) }
        }
    }

    /// Checks a request against the context and prepares its jobs: one per prompt (a chat has
    /// one; a text completion one per prompt, sharing one usage report).
    func admit(_ request: EngineRequest, cancelled: Locked<Bool>, emit: @escaping @Sendable (EngineEvent) -> Void,
               end: @escaping @Sendable (Error?) -> Void) throws -> [BatchJob] {
        let chat = request.chat
        let prompts = try chat.completion.map(promptTokens) ?? [promptTokens(chat)]
        for prompt in prompts { try check(prompt, chat, replay: request.replay) }
        let group = JobGroup(choices: prompts.count * chat.n, meter: request.meter, emit: emit, end: end)
        group.setPrompts(prompts.map(\.count))
        return prompts.enumerated().map { i, prompt in
            var addedBOS = false
            if case .text? = chat.completion?.prompts[i], tokenizer.addBOS, let bos = tokenizer.bos { addedBOS = prompt.first == bos }
            return BatchJob(chat: chat, prompt: prompt, limit: chat.maxTokens ?? min(chat.defaultMaxTokens ?? Int.max, contextLength - prompt.count), project: request.project,
                            group: group, index: i, cancelled: cancelled, replay: request.replay, addedBOS: addedBOS)
        }
    }

    /// One prompt against the context, `max_tokens` and a migration's replay.
    func check(_ prompt: [Int32], _ chat: ChatRequest, replay: [Int32]) throws {
        let context = contextLength
        let param = chat.completion == nil ? "messages" : "prompt"
        if prompt.count >= context {
            throw APIError.invalidRequest(
                "This model's maximum context length is \(context) tokens. However, your messages resulted in \(prompt.count) tokens. Please reduce the length of the messages.",
                param: param, code: "context_length_exceeded")
        }
        // Written as a subtraction: `max_tokens` comes from the client (batch lines skip the
        // gateway), and prompt + max_tokens must not be able to overflow.
        if let m = chat.maxTokens, m > context - prompt.count {
            throw APIError.invalidRequest(
                "This model's maximum context length is \(context) tokens. However, you requested \(prompt.count.addingSaturated(m)) tokens (\(prompt.count) in the messages, \(m) in the completion). Please reduce the length of the messages or completion.",
                param: "max_tokens", code: "context_length_exceeded")
        }
        if !replay.isEmpty {
            guard chat.n == 1, chat.completion == nil else { throw APIError.invalidRequest("Only a single-choice chat request can be continued.", code: "bad_replay") }
            guard replay.count < context - prompt.count, replay.allSatisfy({ $0 >= 0 && Int($0) < tokenizer.vocabSize }) else {
                throw APIError.invalidRequest("The replayed tokens do not fit this model.", code: "bad_replay")
            }
        }
    }

    /// The sampling state of one choice, from its request.
    func makeChoice(_ job: BatchJob, index local: Int, cache: KVCache, logits: [Float]) -> BatchSequence {
        let chat = job.chat
        let c = job.choiceBase + local
        var options = sampling.options(for: chat)
        options.seed = chat.seed.map { UInt64(bitPattern: Int64($0)) &+ UInt64(c) &* 0x9E37_79B9_7F4A_7C15 }
        options.wantLogprobs = chat.logprobs
        options.topLogprobs = chat.topLogprobs ?? 0
        let seq = BatchSequence(job: job, choice: c, cache: cache, sampler: Sampler(options: options), stops: StopScanner(stops: chat.stop))
        seq.logits = logits
        if c == 0 { seq.replay = job.replay[...] }
        if chat.completion?.echo == true { echoPrompt(seq) }
        // JSON mode: only tokens that keep the output a valid prefix of a JSON object, or of a
        // value the request's schema accepts (docs/completions.md, "json_schema").
        if let schema = chat.jsonSchema { seq.json = GrammarConstraint(SchemaGrammar(schema: schema), vocab: vocabIndex) }
        else if chat.responseFormat == "json_object" || chat.responseFormat == "json_schema" { seq.json = GrammarConstraint(JSONGrammar(), vocab: vocabIndex) }
        return seq
    }

    /// The next token of a choice — its JSON-mode mask and the sampler's draw — or nil when it
    /// must stop for length. Touches only the sequence's own state, so the sequences of a batch
    /// pick in parallel (`BatchScheduler`) and `step` does the rest in order.
    func pick(_ seq: BatchSequence) -> SampledToken? {
        let job = seq.job
        var mask: [Bool]?
        if let json = seq.json {
            if let forced = json.forcedToken {
                mask = [Bool](repeating: false, count: tokenizer.vocabSize)
                mask![Int(forced)] = true
            } else {
                mask = json.mask(remaining: min(job.limit - seq.generated, contextLength - seq.cache.count))
            }
        }
        if job.limit == 0 { return nil }   // `max_tokens: 0` with `echo`: the prompt only
        // A constraint that allows nothing (its answer cannot be finished in the budget left): stop
        // here rather than let the sampler pick from an all-masked distribution.
        if let mask, !mask.contains(true) { return nil }
        return seq.sampler.sample(&seq.logits, mask: mask)
    }

    /// Takes the picked token (picked now when not given), emits its text. Returns false when the
    /// choice has finished (its finish event sent).
    func step(_ seq: BatchSequence, picked: SampledToken?? = nil) -> Bool {
        let job = seq.job, chat = job.chat
        guard var token = picked ?? pick(seq) else { return finish(seq, "length") }
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

    /// `echo`: the prompt's text first in the choice (a leading BOS the tokenizer added is not
    /// text). With `logprobs`, one event per prompt token carrying its score, computed at prefill;
    /// the first token has none (nothing precedes it).
    func echoPrompt(_ seq: BatchSequence) {
        let job = seq.job
        var pieces = UTF8Pieces()
        let first = job.addedBOS ? 1 : 0
        if job.chat.completion?.logprobs != nil {
            for i in first..<job.prompt.count {
                let t = job.prompt[i], bytes = tokenizer.bytes(of: t)
                let entry = i > 0 && i - 1 < job.promptLogprobs.count ? job.promptLogprobs[i - 1]
                    : logprobEntry(SampledToken(id: t, logprob: .nan, top: []), bytes: bytes)
                job.emit(.text(choice: seq.choice, pieces.push(bytes), logprobs: entry))
            }
        } else {
            var text = ""
            for t in job.prompt[first...] {
                text += pieces.push(tokenizer.bytes(of: t))
                if text.utf8.count >= 16 << 10 { job.emit(.text(choice: seq.choice, text, logprobs: nil)); text = "" }
            }
            if !text.isEmpty { job.emit(.text(choice: seq.choice, text, logprobs: nil)) }
        }
        let rest = pieces.flush()
        if !rest.isEmpty { job.emit(.text(choice: seq.choice, rest, logprobs: nil)) }
    }

    /// The scores of a prompt chunk's tokens, appended to `promptLogprobs` (entry i scores prompt
    /// token i + 1): `logits` holds every position of the chunk, and position i scores the token
    /// after it (the chunk's last position scores the next chunk's first token, `next`).
    func scorePrompt(_ job: BatchJob, chunk: ArraySlice<Int32>, logits: [Float], next: Int32?) {
        let V = model.config.vocab, k = job.chat.completion?.logprobs ?? 0
        let targets = Array(chunk.dropFirst()) + (next.map { [$0] } ?? [])
        for (i, target) in targets.enumerated() {
            let scored = Sampler.score(Array(logits[(i * V)..<((i + 1) * V)]), token: target, top: k)
            job.promptLogprobs.append(logprobEntry(scored, bytes: tokenizer.bytes(of: target)))
        }
    }

    /// One OpenAI `logprobs.content` entry (a NaN logprob is written as null: an unscored token).
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

/// What one request's jobs share: its client, its usage meter and its one usage report. A chat
/// is one job; a text completion with several prompts is one job per prompt.
final class JobGroup: @unchecked Sendable {
    let meter: UsageMeter
    let emit: @Sendable (EngineEvent) -> Void
    let end: @Sendable (Error?) -> Void
    private var choicesLeft: Int
    private var prompt = 0
    private var cached: [Int] = []
    private var completion = 0

    init(choices: Int, meter: UsageMeter, emit: @escaping @Sendable (EngineEvent) -> Void, end: @escaping @Sendable (Error?) -> Void) {
        choicesLeft = choices
        self.meter = meter
        self.emit = emit
        self.end = end
    }

    /// Before the jobs run: each prompt counts once, however many choices it has.
    func setPrompts(_ counts: [Int]) {
        prompt = counts.reduce(0, +)
        cached = [Int](repeating: 0, count: counts.count)
        meter.setPrompt(prompt)
    }

    func setCached(job: Int, _ n: Int) {
        cached[job] = n
        meter.setPrompt(prompt, cached: cached.reduce(0, +))
    }

    func addCompletionToken() {
        completion += 1
        meter.addCompletion()
    }

    /// After the last choice of the last job: usage, then the end of the stream.
    func choiceFinished() {
        choicesLeft -= 1
        if choicesLeft == 0 {
            emit(.usage(Usage(promptTokens: prompt, completionTokens: completion, cachedTokens: cached.reduce(0, +))))
            end(nil)
        }
    }
}

/// One prompt in the batch: its tokens, its choices' shared bookkeeping, and its request's group.
final class BatchJob: @unchecked Sendable {
    let chat: ChatRequest
    let prompt: [Int32]
    let limit: Int
    /// The prefix-cache partition (the job's project).
    let project: String
    let group: JobGroup
    /// Which of its request's prompts (0 for a chat): its choices are numbered from `index * n`.
    let index: Int
    let cancelled: Locked<Bool>
    /// Choice 0's tokens to replay (a migration).
    let replay: [Int32]
    /// The tokenizer put a BOS before the prompt's text (not echoed: it is not text).
    let addedBOS: Bool
    /// Entry i scores prompt token i + 1 (`echo` with `logprobs`), filled at prefill.
    var promptLogprobs: [String] = []
    var cachedTokens = 0 { didSet { group.setCached(job: index, cachedTokens) } }

    init(chat: ChatRequest, prompt: [Int32], limit: Int, project: String, group: JobGroup, index: Int = 0, cancelled: Locked<Bool>,
         replay: [Int32] = [], addedBOS: Bool = false) {
        self.chat = chat
        self.prompt = prompt
        self.limit = limit
        self.project = project
        self.group = group
        self.index = index
        self.cancelled = cancelled
        self.replay = replay
        self.addedBOS = addedBOS
    }

    var choiceBase: Int { index * chat.n }
    var meter: UsageMeter { group.meter }
    /// Its prompt is scored token by token: every prefill position's logits are kept, and the
    /// prefix cache (which holds no logits) is not used.
    var scoresPrompt: Bool { chat.completion.map { $0.echo && $0.logprobs != nil } ?? false }
    func emit(_ event: EngineEvent) { group.emit(event) }
    func addCompletionToken() { group.addCompletionToken() }
    func choiceFinished() { group.choiceFinished() }
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
    var json: (any TokenConstraint)?
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
    /// Totals of the forward passes run (`GGUFEngine.stepStats`).
    let stats = Locked(EngineStepStats.none)

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
            var allPositions = Set<Int>()
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
                if seq.job.scoresPrompt { allPositions.insert(segments.count - 1) }
                prefillBudget -= take
                seq.passedOver = 0
            }
            for seq in prefills where !members.contains(where: { $0 === seq }) { seq.passedOver += 1 }
            guard !segments.isEmpty else { sync(batch); continue }
            let started = DispatchTime.now().uptimeNanoseconds
            let outs = engine.model.forward(segments, allPositions: allPositions)
            let busy = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            let decoding = members.indices.filter { members[$0].next != nil }
            let prefillTokens = segments.reduce(0) { $0 + $1.tokens.count } - decoding.count
            stats.withLock {
                $0.steps += 1
                $0.decodeTokens += decoding.count
                $0.prefillTokens += prefillTokens
                $0.busySeconds += busy
            }
            // The decoding sequences draw their tokens in parallel (a draw at temperature > 0 is
            // ~0.25 ms on a 49k vocabulary); what they emit stays in order.
            for i in decoding { members[i].logits = outs[i] }
            var picks = [SampledToken?](repeating: nil, count: members.count)
            picks.withUnsafeMutableBufferPointer { pb in
                let pb = pb.baseAddress!
                Parallel.chunks(decoding.count, minChunk: 2) { range in
                    for d in range { pb[decoding[d]] = engine.pick(members[decoding[d]]) }
                }
            }
            var next: [BatchSequence] = []
            for (i, (seq, (segment, out))) in zip(members, zip(segments, outs)).enumerated() {
                var logits = out
                if allPositions.contains(i) {
                    engine.scorePrompt(seq.job, chunk: segment.tokens[...], logits: out, next: seq.pending.dropFirst(segment.tokens.count).first)
                    logits = Array(out.suffix(engine.model.config.vocab))
                }
                if seq.next != nil {
                    seq.next = nil
                    if engine.step(seq, picked: .some(picks[i])) { next.append(seq) }
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
        job.cachedTokens = 0
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
        let cache = job.scoresPrompt ? nil : engine.prefixCache
        seq.cache = cache?.lookup(job.prompt, reserve: reserve, partition: job.project) ?? engine.model.newCache(reserve: reserve)
        job.cachedTokens = seq.cache.count
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
