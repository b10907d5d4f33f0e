import Foundation
import HTTPTypes
import Hummingbird
import XeroCore
import XeroStore

/// `POST …/v1/embeddings` (OpenAI's shape) and `POST …/v1/rerank` (the vLLM / Jina / Cohere shape).
struct EmbeddingRoutes: Sendable {
    let jobs: InferenceJobs
    let auth: Authenticator
    let maxBodyBytes: Int

    func register(on api: RouterGroup<GatewayRequestContext>) {
        api.post("/embeddings") { req, ctx in
            let caller = try await Gateway.authenticate(req, ctx, auth, scope: KeyRecord.inference)
            let body = try await Gateway.collect(req, limit: maxBodyBytes)
            let parsed = try EmbeddingsRequest.parse(body)
            let reserve = parsed.inputs.reduce(0) { total, input in
                switch input { case let .text(s): return total + s.utf8.count / 3 + 2; case let .tokens(t): return total + t.count + 2 }
            }
            let r = try await jobs.runToCompletion(kind: .embeddings, caller: caller, reserve: reserve, headers: req.headers, body: body)
            guard case let .vectors(dim, data)? = r.events.first, dim > 0, data.count == dim * 4 * parsed.inputs.count else {
                throw APIError.internalError("The embedding worker returned no vectors.")
            }
            var w = JSONWriter(capacity: data.count * 3)
            w.objectStart()
            w.field("object", "list")
            w.key("data"); w.arrayStart()
            for i in 0..<parsed.inputs.count {
                let slice = Array(data[(i * dim * 4)..<((i + 1) * dim * 4)])
                w.objectStart(); w.field("object", "embedding"); w.field("index", i)
                w.key("embedding")
                if parsed.base64 {
                    w.value(Data(slice).base64EncodedString())
                } else {
                    w.arrayStart()
                    for j in 0..<dim {
                        let bits = UInt32(slice[4 * j]) | UInt32(slice[4 * j + 1]) << 8 | UInt32(slice[4 * j + 2]) << 16 | UInt32(slice[4 * j + 3]) << 24
                        w.value(Double(Float(bitPattern: bits)))
                    }
                    w.arrayEnd()
                }
                w.objectEnd()
            }
            w.arrayEnd()
            w.field("model", caller.endpoint.model)
            w.key("usage"); w.objectStart(); w.field("prompt_tokens", r.usage.promptTokens); w.field("total_tokens", r.usage.promptTokens); w.objectEnd()
            w.objectEnd()
            var headers = r.headers
            headers[.contentType] = "application/json"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: w.bytes)))
        }
        api.post("/rerank") { req, ctx in
            let caller = try await Gateway.authenticate(req, ctx, auth, scope: KeyRecord.inference)
            let body = try await Gateway.collect(req, limit: maxBodyBytes)
            let parsed = try RerankRequest.parse(body)
            let reserve = ([parsed.query] + parsed.documents).reduce(0) { $0 + $1.utf8.count / 3 + 2 }
            let r = try await jobs.runToCompletion(kind: .rerank, caller: caller, reserve: reserve, headers: req.headers, body: body)
            guard case let .vectors(1, data)? = r.events.first, data.count == 4 * parsed.documents.count else {
                throw APIError.internalError("The rerank worker returned no scores.")
            }
            let scores = (0..<parsed.documents.count).map { j -> Float in
                Float(bitPattern: UInt32(data[4 * j]) | UInt32(data[4 * j + 1]) << 8 | UInt32(data[4 * j + 2]) << 16 | UInt32(data[4 * j + 3]) << 24)
            }
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
