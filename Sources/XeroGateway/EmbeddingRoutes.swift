import Foundation
import HTTPTypes
import Hummingbird
import XeroCore
import XeroJobs
import XeroStore

/// `POST …/v1/embeddings` (OpenAI's shape) and `POST …/v1/rerank` (the vLLM / Jina / Cohere shape).
struct EmbeddingRoutes: Sendable {
    let jobs: InferenceJobs
    let auth: Authenticator
    let maxBodyBytes: Int

    func register(on api: RouterGroup<InferenceContext>) {
        api.post("/embeddings") { req, ctx in
            let caller = ctx.caller
            let body = try await Gateway.collect(req, limit: maxBodyBytes)
            let parsed = try EmbeddingsRequest.parse(body)
            let reserve = Reservation.tokens(for: parsed)
            let r = try await jobs.runToCompletion(kind: .embeddings, caller: caller, reserve: reserve, headers: req.headers, body: body)
            guard case let .vectors(dim, data)? = r.events.first, dim > 0,
                  data.count == dim.multipliedSaturated(by: 4).multipliedSaturated(by: parsed.inputs.count) else {
                throw APIError.badWorkerAnswer("The embedding worker did not return one vector per input.")
            }
            let json = EmbeddingsResponse.json(dim: dim, data: data, count: parsed.inputs.count, base64: parsed.base64,
                                               model: caller.endpoint.model, promptTokens: r.usage.promptTokens)
            var headers = r.headers
            headers[.contentType] = "application/json"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: json)))
        }
        api.post("/rerank") { req, ctx in
            let caller = ctx.caller
            let body = try await Gateway.collect(req, limit: maxBodyBytes)
            let parsed = try RerankRequest.parse(body)
            let reserve = Reservation.tokens(for: parsed)
            let r = try await jobs.runToCompletion(kind: .rerank, caller: caller, reserve: reserve, headers: req.headers, body: body)
            guard case let .vectors(1, data)? = r.events.first, data.count == 4 * parsed.documents.count else {
                throw APIError.badWorkerAnswer("The rerank worker did not return one score per document.")
            }
            let scores = (0..<parsed.documents.count).map { EmbeddingsResponse.float32(data, at: $0) }
            // Highest first; ties keep document order.
            let order = scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
            var w = JSONWriter()
            w.objectStart()
            w.field("id", r.requestId.replacingOccurrences(of: "chatcmpl-", with: "rerank-"))
            w.field("model", caller.endpoint.model)
            w.key("results"); w.arrayStart()
            for i in order.prefix(parsed.topN ?? order.count) {
                w.objectStart(); w.field("index", i); w.field("relevance_score", Double(scores[i]))
                if parsed.returnDocuments { w.key("document"); w.objectStart(); w.field("text", parsed.documents[i]); w.objectEnd() }
                w.objectEnd()
            }
            w.arrayEnd()
            w.key("usage"); w.objectStart(); w.field("total_tokens", r.usage.promptTokens); w.objectEnd()
            w.objectEnd()
            var headers = r.headers
            headers[.contentType] = "application/json"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: w.bytes)))
        }
    }
}
