import XeroCore

/// The seam between a worker and whatever produces tokens. A worker owns one engine, created once
/// and shared by all its slots; `generate` is called concurrently, once per job.
public protocol Engine: Sendable {
    var info: EngineInfo { get }
    /// Runs one request. The stream yields text pieces per choice, each choice's finish, and ends
    /// with exactly one `.usage`. Ending the iteration early (cancellation) must stop the work.
    /// Failures are thrown as `APIError` so the client sees a precise OpenAI error.
    func generate(_ request: EngineRequest) -> AsyncThrowingStream<EngineEvent, Error>
    /// Unit-length embeddings for every input, in order, computed as one batch.
    func embed(_ request: EmbeddingsRequest) async throws -> EmbeddingResult
    /// Relevance of each document to the query, in document order.
    func rerank(_ request: RerankRequest) async throws -> RerankResult
    /// Hashes of the prompt-prefix blocks this engine holds KV state for (empty: no prefix cache).
    func prefixBlockHashes() -> [UInt64]
    /// The KV state it holds now, for the worker's metrics (zeros: it keeps none in this process).
    func kvCacheStats() -> KVCacheStats
    /// What its batch loop has done since it started, for the worker's metrics (zeros: it has none).
    func stepStats() -> EngineStepStats
}

/// What an engine's KV memory holds.
public struct KVCacheStats: Sendable, Equatable {
    /// Running sequences' and cached prefixes' KV state, bytes.
    public var bytes: Int
    /// The prefix cache's share of `bytes`, and its budget (0: no prefix cache).
    public var prefixBytes: Int
    public var prefixBudgetBytes: Int
    public static let none = KVCacheStats(bytes: 0, prefixBytes: 0, prefixBudgetBytes: 0)
    public init(bytes: Int, prefixBytes: Int, prefixBudgetBytes: Int) {
        self.bytes = bytes
        self.prefixBytes = prefixBytes
        self.prefixBudgetBytes = prefixBudgetBytes
    }
}

public struct EmbeddingResult: Sendable {
    public var dim: Int
    public var vectors: [[Float]]
    public var promptTokens: Int
    public init(dim: Int, vectors: [[Float]], promptTokens: Int) {
        self.dim = dim
        self.vectors = vectors
        self.promptTokens = promptTokens
    }
}

public struct RerankResult: Sendable {
    public var scores: [Float]
    public var promptTokens: Int
    public init(scores: [Float], promptTokens: Int) {
        self.scores = scores
        self.promptTokens = promptTokens
    }
}

extension Engine {
    public func prefixBlockHashes() -> [UInt64] { [] }
    public func kvCacheStats() -> KVCacheStats { .none }
    public func stepStats() -> EngineStepStats { .none }
    public func embed(_ request: EmbeddingsRequest) async throws -> EmbeddingResult {
        throw APIError.invalidRequest("This endpoint's model does not serve embeddings.", code: "unsupported_operation")
    }
    public func rerank(_ request: RerankRequest) async throws -> RerankResult {
        throw APIError.invalidRequest("This endpoint's model does not serve reranking.", code: "unsupported_operation")
    }
}

/// What an engine serves, as the worker advertises it to the router.
public struct EngineInfo: Sendable, Equatable {
    /// `sim`, `gguf`, `openai`.
    public var name: String
    /// Model ids served; `*` = any (the simulator answers for whatever model an endpoint names).
    public var models: [String]
    /// `chat`, `embeddings`, `rerank`.
    public var capabilities: [String]
    /// How many jobs it can run at once.
    public var slots: Int

    public init(name: String, models: [String], capabilities: [String] = ["chat"], slots: Int) {
        self.name = name
        self.models = models
        self.capabilities = capabilities
        self.slots = slots
    }
}

/// One job for an engine: the validated request plus what the platform knows about it.
public struct EngineRequest: Sendable {
    public var requestId: String
    /// The model the endpoint serves (the client's `model` field is informational).
    public var model: String
    public var chat: ChatRequest
    /// The client's JSON body as sent (pass-through engines forward fields the platform does not model).
    public var rawBody: [UInt8]
    /// Wall-clock ms after which the engine should stop (the tier's request timeout).
    public var deadlineMs: Int64
    /// The project the job belongs to. Engines that keep state across jobs (the GGUF prefix
    /// cache) partition it by this, so one project never sees another's.
    public var project: String
    /// What the job has used so far; the engine counts into it as it goes, so a job that is
    /// cancelled or times out is still billed for what it generated (docs/tenancy.md, "Billing").
    public var meter: UsageMeter
    /// A migrated job (docs/routing.md, "Mid-stream migration"): choice 0's tokens the client
    /// already has. The engine feeds them as if it had sampled them — same steps, same sampler
    /// draws — emits nothing for them, and goes on from there. Engines that cannot replay refuse.
    public var replay: [Int32]

    public init(requestId: String, model: String, chat: ChatRequest, rawBody: [UInt8] = [], deadlineMs: Int64 = .max,
                project: String = "", meter: UsageMeter = UsageMeter(), replay: [Int32] = []) {
        self.meter = meter
        self.replay = replay
        self.requestId = requestId
        self.model = model
        self.chat = chat
        self.rawBody = rawBody
        self.deadlineMs = deadlineMs
        self.project = project
    }
}

public enum EngineEvent: Sendable, Equatable {
    /// `tokens`: the ids produced since the choice's previous `.text` (a migration replays them).
    case text(choice: Int, String, logprobs: String? = nil, tokens: [Int32] = [])
    /// A piece of a tool call (`id`/`name` on the first piece of each tool call).
    case toolCall(choice: Int, toolIndex: Int, id: String, name: String, arguments: String)
    case finish(choice: Int, reason: String)
    case usage(Usage)
}
