import Synchronization
import XeroCore

/// THE SIMULATOR — not a model. Answers chat requests with deterministic text at a configurable
/// pace, so the platform can be tested and benchmarked without inference cost. The text starts by
/// quoting the last user message (so tests can tell streams apart), then continues with words
/// drawn from a fixed list by a PRNG seeded from `seed` (or the prompt) and the choice index.
/// Honours `max_tokens` (finish `length`), `stop` (finish `stop`, never emitting the stop string),
/// `n` and `seed`. One simulated token is one word; prompt tokens are counted the same way.
/// Tools: when the request offers tools and `tool_choice` is not `none`, the simulator calls the
/// named function (or the first one) with `{"query": <last user message>}` and finishes with
/// `tool_calls` — deterministic, so the tool-calling path can be tested end to end.
public struct SimEngine: Engine {
    public struct Options: Sendable {
        /// Time to first token, per request.
        public var ttftMs: Double = 0
        /// Time per output token after the first, with one sequence running.
        public var tpotMs: Double = 0
        /// How much slower a decoding step gets per other sequence running at once, as a fraction
        /// of `tpotMs` (0: not at all). A batched engine's step grows with its batch: the built-in
        /// engine on 2 cores measures 4.3 ms at 1 sequence and 20 ms at 8, about 0.52.
        public var tpotGrowth: Double = 0
        /// Tokens in an answer when `max_tokens` does not end it first.
        public var answerTokens: Int = 16
        public var slots: Int = 64
        /// Model ids it claims to serve ("*": any).
        public var models: [String] = ["*"]
        /// A modelled prefix cache of this many prompt blocks (`PromptBlocks`; 0: none). With one,
        /// time to first token grows with the uncached part of the prompt, and the worker reports
        /// the cached prompts' hashes as the built-in engine does (docs/routing.md).
        public var prefixCacheBlocks: Int = 0
        /// Prefill time per uncached prompt token, added to `ttftMs`.
        public var prefillMsPerToken: Double = 0
        public init(ttftMs: Double = 0, tpotMs: Double = 0, answerTokens: Int = 16, slots: Int = 64, models: [String] = ["*"],
                    prefixCacheBlocks: Int = 0, prefillMsPerToken: Double = 0, tpotGrowth: Double = 0) {
            self.tpotGrowth = tpotGrowth
            self.prefixCacheBlocks = prefixCacheBlocks
            self.prefillMsPerToken = prefillMsPerToken
            self.ttftMs = ttftMs
            self.tpotMs = tpotMs
            self.answerTokens = answerTokens
            self.slots = slots
            self.models = models.isEmpty ? ["*"] : models
        }
    }

    public let options: Options
    /// The modelled prefix cache (nil: none).
    let cache: PromptLedger?
    /// Answers being generated now, what `tpotGrowth` scales with (shared by every copy of the engine).
    let running = RunningCount()
    public init(options: Options = Options()) {
        self.options = options
        cache = options.prefixCacheBlocks > 0 ? PromptLedger(capacityBlocks: options.prefixCacheBlocks) : nil
    }

    /// Answers being generated at this moment.
    public var runningAnswers: Int { running.value }

    /// One decoding step's time with `running` answers being generated (at least 1: this one).
    public func stepMs(running: Int) -> Double {
        options.tpotMs * (1 + max(0, options.tpotGrowth) * Double(max(0, running - 1)))
    }

    public func prefixBlockHashes() -> [UInt64] { cache?.hashes() ?? [] }
    /// The modelled cache's budget, in blocks as "bytes" (the worker only reads whether there is one).
    public func kvCacheStats() -> KVCacheStats {
        guard let cache else { return .none }
        return KVCacheStats(bytes: 0, prefixBytes: 0, prefixBudgetBytes: cache.capacityBlocks)
    }

    /// Prompt tokens the modelled cache holds for this request (0 without a cache), recording the
    /// prompt as cached from now on.
    func cachedPromptTokens(_ request: EngineRequest) -> Int {
        guard let cache else { return 0 }
        let blocks = PromptBlocks.hashes(request.chat, partition: request.project)
        guard !blocks.isEmpty else { return 0 }
        let matched = cache.match(blocks)
        cache.record(blocks)
        return Self.promptTokens(request.chat) * matched / (blocks.count + 1)
    }

    public var info: EngineInfo { EngineInfo(name: "sim", models: options.models, capabilities: ["chat", "completions"], slots: options.slots) }

    static let words = ["the", "platform", "answers", "quickly", "with", "simulated", "tokens", "while", "workers", "stream",
                        "results", "back", "through", "queues", "and", "gateways", "to", "every", "client", "in", "order"]

    /// The full answer for a choice before `max_tokens` and `stop` apply, as tokens.
    public func tokens(for chat: ChatRequest, choice: Int) -> [String] {
        // A json_schema request gets the schema's shortest value, a character a token: the answer
        // then shows which schema reached the engine (an upstream's, through the openai engine).
        if let schema = chat.jsonSchema, let text = schema.minimal[schema.root] {
            return String(decoding: text, as: UTF8.self).map { String($0) }
        }
        let lastUser = Self.lastText(chat, choice: choice)
        var out: [String] = ["You", " said:"]
        for w in lastUser.split(separator: " ", omittingEmptySubsequences: true).prefix(32) { out.append(" " + w) }
        out.append(".")
        var rng = SplitMix64(seed: UInt64(bitPattern: Int64(chat.seed ?? Self.stableHash(lastUser))) &+ UInt64(choice) &* 0x9E37_79B9_7F4A_7C15)
        // Never more than max_tokens + 1: an answer cut there is the same, and a huge
        // --sim-answer-tokens must not cost every request its building.
        let length = max(min(options.answerTokens, (chat.budget ?? Int.max - 1) + 1), out.count + 1)
        while out.count < length {
            out.append(" " + Self.words[Int(rng.next() % UInt64(Self.words.count))])
        }
        return out
    }

    /// What the answer echoes: the last user message, or a text completion's prompt of that choice.
    static func lastText(_ chat: ChatRequest, choice: Int) -> String {
        guard let completion = chat.completion else { return chat.messages.last { $0.role == "user" }?.content ?? "" }
        switch completion.prompts[min(choice / max(1, chat.n), completion.prompts.count - 1)] {
        case let .text(s): return s
        case let .tokens(t): return t.map(String.init).joined(separator: " ")
        }
    }

    public static func promptTokens(_ chat: ChatRequest) -> Int {
        if let completion = chat.completion {
            return completion.prompts.reduce(0) { total, p in
                switch p {
                case let .text(s): return total + 1 + s.split(whereSeparator: { $0 == " " || $0 == "\n" }).count
                case let .tokens(t): return total + t.count
                }
            }
        }
        return chat.messages.reduce(0) { $0 + 4 + $1.content.split(whereSeparator: { $0 == " " || $0 == "\n" }).count } + 2
    }

    public func generate(_ request: EngineRequest) -> AsyncThrowingStream<EngineEvent, Error> {
        let options = self.options
        let chat = request.chat
        // A text completion has every prompt's `n` choices; with `echo` each answer starts with its prompt.
        let choices = chat.completion?.choiceCount(n: chat.n) ?? chat.n
        let echo = chat.completion?.echo == true
        let answers = (0..<choices).map { tokens(for: chat, choice: $0) }
        let toolName = chat.toolNames.isEmpty || chat.toolChoice == "none" ? nil
            : (chat.toolChoice.flatMap { chat.toolNames.contains($0) ? $0 : nil } ?? chat.toolNames[0])
        let meter = request.meter
        let cached = cachedPromptTokens(request)
        let prefillMs = options.ttftMs + options.prefillMsPerToken * Double(Self.promptTokens(chat) - cached)
        let running = self.running
        return AsyncThrowingStream { continuation in
            let task = Task {
                running.add(1)
                defer { running.add(-1) }
                meter.setPrompt(Self.promptTokens(chat))
                if prefillMs > 0 { try? await Task.sleep(nanoseconds: UInt64(prefillMs * 1_000_000)) }
                if let toolName {
                    let lastUser = chat.messages.last { $0.role == "user" }?.content ?? ""
                    var args = JSONWriter()
                    args.objectStart(); args.field("query", lastUser); args.objectEnd()
                    let text = args.string
                    let cut = text.index(text.startIndex, offsetBy: text.count / 2)
                    for c in 0..<chat.n {
                        let id = "call_\(String(UInt64(bitPattern: Int64(Self.stableHash(request.requestId + String(c)))), radix: 36))"
                        continuation.yield(.toolCall(choice: c, toolIndex: 0, id: id, name: toolName, arguments: String(text[..<cut])))
                        continuation.yield(.toolCall(choice: c, toolIndex: 0, id: "", name: "", arguments: String(text[cut...])))
                        continuation.yield(.finish(choice: c, reason: "tool_calls"))
                    }
                    meter.addCompletion(2 * chat.n)
                    continuation.yield(.usage(Usage(promptTokens: Self.promptTokens(chat), completionTokens: 2 * chat.n)))
                    continuation.finish()
                    return
                }
                if echo { for c in 0..<choices { continuation.yield(.text(choice: c, Self.lastText(chat, choice: c))) } }
                var scanners = (0..<choices).map { _ in StopScanner(stops: chat.stop) }
                var finished = [Bool](repeating: false, count: choices)
                var completion = 0
                var step = 0
                let limit = chat.budget ?? Int.max
                if limit == 0 {   // `max_tokens: 0` with `echo`: the prompt only
                    for c in 0..<choices { continuation.yield(.finish(choice: c, reason: "length")); finished[c] = true }
                }
                // A simulated token's id is its position in the answer. A migration replays the
                // first ones: fed through the stop scanner as before, counted, not emitted, no wait.
                let replay = request.replay
                var unreported = [[Int32]](repeating: [], count: choices)
                while finished.contains(false) {
                    if Task.isCancelled { continuation.finish(throwing: CancellationError()); return }
                    let replaying = step < replay.count
                    if replaying, step >= answers[0].count || replay[step] != Int32(step) {
                        continuation.finish(throwing: APIError.invalidRequest("The replayed tokens are not this answer's.", code: "bad_replay"))
                        return
                    }
                    if step > replay.count, options.tpotMs > 0 {
                        try? await Task.sleep(nanoseconds: UInt64(min(stepMs(running: running.value), 60_000) * 1_000_000))
                    }
                    for c in 0..<choices where !finished[c] {
                        if step >= answers[c].count {
                            let rest = scanners[c].flush()
                            if !rest.isEmpty { continuation.yield(.text(choice: c, rest)) }
                            continuation.yield(.finish(choice: c, reason: "stop"))
                            finished[c] = true
                            continue
                        }
                        completion += 1
                        meter.addCompletion()
                        let out = scanners[c].feed(answers[c][step])
                        unreported[c].append(Int32(step))
                        if replaying { unreported[c] = []; continue }
                        if !out.isEmpty {
                            continuation.yield(.text(choice: c, out, tokens: unreported[c]))
                            unreported[c] = []
                        }
                        if scanners[c].stopped {
                            continuation.yield(.finish(choice: c, reason: "stop"))
                            finished[c] = true
                        } else if step + 1 >= limit {
                            let rest = scanners[c].flush()
                            if !rest.isEmpty { continuation.yield(.text(choice: c, rest)) }
                            continuation.yield(.finish(choice: c, reason: "length"))
                            finished[c] = true
                        }
                    }
                    step += 1
                }
                continuation.yield(.usage(Usage(promptTokens: Self.promptTokens(chat), completionTokens: completion, cachedTokens: cached)))
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// FNV-1a: stable across runs and processes (Swift's hashValue is randomised per process).
    static func stableHash(_ s: String) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 { h ^= UInt64(b); h = h &* 0x100_0000_01b3 }
        return Int(truncatingIfNeeded: h >> 1)
    }
}

/// A count shared by the copies of an engine value and its generating tasks.
final class RunningCount: Sendable {
    private let count = Atomic<Int>(0)
    func add(_ n: Int) { count.add(n, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}
