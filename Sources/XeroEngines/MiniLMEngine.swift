import Foundation
import XeroCore
import XeroEmbeddings

/// The built-in embedding engine: all-MiniLM-L6-v2 (sentence-transformers) in Swift. Serves
/// embeddings and reranking (cosine similarity of the query's and each document's embedding —
/// a bi-encoder score, documented in docs/architecture.md).
public struct MiniLMEngine: Engine {
    public static let modelID = "all-MiniLM-L6-v2"
    public let encoder: MiniLMEncoder
    public let slots: Int
    /// The model is CPU-bound: its matrix products already use every core, so jobs queue here.
    private let queue = DispatchQueue(label: "minilm")

    public init(directory: String, slots: Int = 4) throws {
        encoder = try MiniLMEncoder(directory: directory)
        self.slots = slots
    }

    public var info: EngineInfo { EngineInfo(name: "minilm", models: [Self.modelID], capabilities: ["embeddings", "rerank"], slots: slots) }

    public func generate(_ request: EngineRequest) -> AsyncThrowingStream<EngineEvent, Error> {
        AsyncThrowingStream { $0.finish(throwing: APIError.invalidRequest("This endpoint's model (\(Self.modelID)) serves embeddings, not chat.", code: "unsupported_operation")) }
    }

    public func embed(_ request: EmbeddingsRequest) async throws -> EmbeddingResult {
        let dim = encoder.config.hidden
        if let d = request.dimensions, d != dim {
            throw APIError.invalidRequest("\(Self.modelID) produces \(dim)-dimensional embeddings; 'dimensions' must be \(dim) or absent.", param: "dimensions", code: "invalid_value")
        }
        let max = encoder.config.maxTokens
        var inputs: [[Int32]] = []
        for (i, input) in request.inputs.enumerated() {
            let ids: [Int32]
            switch input {
            case let .text(s):
                let (tokens, truncated) = encoder.tokenizer.encode(s, maxLength: max)
                if truncated { throw Self.tooLong(i, max) }
                ids = tokens
            case let .tokens(t):
                guard t.count + 2 <= max else { throw Self.tooLong(i, max) }
                guard t.allSatisfy({ $0 < Int32(encoder.config.vocab) }) else {
                    throw APIError.invalidRequest("Invalid 'input[\(i)]': token id outside the model's vocabulary.", param: "input", code: "invalid_value")
                }
                ids = [encoder.tokenizer.cls] + t + [encoder.tokenizer.sep]
            }
            inputs.append(ids)
        }
        let model = self.encoder, batch = inputs
        let vectors = await withCheckedContinuation { cont in queue.async { cont.resume(returning: model.embed(batch)) } }
        return EmbeddingResult(dim: dim, vectors: vectors, promptTokens: inputs.reduce(0) { $0 + $1.count })
    }

    /// Documents longer than the model's window are scored on their first 256 tokens (the
    /// usual practice for rerankers); the query must fit.
    public func rerank(_ request: RerankRequest) async throws -> RerankResult {
        let max = encoder.config.maxTokens
        let (q, qTruncated) = encoder.tokenizer.encode(request.query, maxLength: max)
        if qTruncated { throw APIError.invalidRequest("The query is longer than \(max) tokens.", param: "query", code: "context_length_exceeded") }
        let docs = request.documents.map { encoder.tokenizer.encode($0, maxLength: max).ids }
        let model = self.encoder, batch = [q] + docs
        let vectors = await withCheckedContinuation { cont in queue.async { cont.resume(returning: model.embed(batch)) } }
        let scores = vectors.dropFirst().map { v in zip(v, vectors[0]).reduce(Float(0)) { $0 + $1.0 * $1.1 } }
        return RerankResult(scores: scores, promptTokens: ([q] + docs).reduce(0) { $0 + $1.count })
    }

    static func tooLong(_ i: Int, _ max: Int) -> APIError {
        APIError.invalidRequest("Input \(i) is longer than this model's maximum of \(max) tokens; shorten it (nothing is truncated silently).",
                                param: "input", code: "context_length_exceeded")
    }
}
