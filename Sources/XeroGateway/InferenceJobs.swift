import Foundation
import HTTPTypes
import Hummingbird
import XeroCore
import XeroJobs
import XeroQueue
import XeroStore

/// The gateway's side of `JobClient`: the caller's account from the authenticated context, SLO
/// hints from the request headers, and the response headers a job's answer carries.
struct InferenceJobs: Sendable {
    let client: JobClient
    let tiers: [String: Tier]

    func account(for caller: CallerContext) throws -> JobAccount {
        guard let tier = tiers[caller.endpoint.tier] else {
            throw APIError.internalError("Endpoint '\(caller.endpoint.slug)' names tier '\(caller.endpoint.tier)', which this gateway does not know.")
        }
        return JobAccount(keyHash: caller.key.hash, project: caller.project, endpoint: caller.endpoint.slug, fleet: caller.endpoint.fleet,
                          model: caller.endpoint.model, tier: tier)
    }

    static func slo(_ headers: HTTPFields) -> (ttftMs: Int, tpotMs: Int) {
        // Out-of-range hints are ignored rather than refused: they are hints.
        func hint(_ name: String) -> Int {
            guard let v = headers[HTTPField.Name(name)!].flatMap({ Int($0) }), WireLimits.sloMs.contains(v) else { return 0 }
            return v
        }
        return (hint("X-SLO-TTFT-Ms"), hint("X-SLO-TPOT-Ms"))
    }

    /// The rate-limit headers and the request id, for the client's response.
    static func responseHeaders(_ handle: JobHandle) -> HTTPFields {
        var h: HTTPFields = [:]
        for (name, value) in handle.rateLimitHeaders { h[HTTPField.Name(name)!] = value }
        h[HTTPField.Name("x-request-id")!] = handle.requestId
        return h
    }

    /// The router's prediction for a job with SLO hints (docs/routing.md, "SLO-aware placement"):
    /// `x-xerotier-predicted-ttft-ms` / `-tpot-ms`, where the chosen worker has been measured.
    static func addPrediction(_ handle: JobHandle, to h: inout HTTPFields) {
        guard let p = handle.prediction else { return }
        if p.ttftMs >= 0 { h[HTTPField.Name("x-xerotier-predicted-ttft-ms")!] = String(p.ttftMs) }
        if p.tpotMs >= 0 { h[HTTPField.Name("x-xerotier-predicted-tpot-ms")!] = String(p.tpotMs) }
    }

    /// What a job achieved, ms, with one decimal: `x-xerotier-ttft-ms` / `-tpot-ms` (non-streaming answers).
    static func addAchieved(_ handle: JobHandle, completionTokens: Int, to h: inout HTTPFields) {
        let a = handle.achieved(completionTokens: completionTokens)
        if let t = a.ttftMs { h[HTTPField.Name("x-xerotier-ttft-ms")!] = Formatting.oneDecimal(t) }
        if let t = a.tpotMs { h[HTTPField.Name("x-xerotier-tpot-ms")!] = Formatting.oneDecimal(t) }
    }

    /// Runs a job that answers in one piece (embeddings, rerank).
    func runToCompletion(kind: JobEnvelope.Kind, caller: CallerContext, reserve: Int, headers: HTTPFields, body: [UInt8])
        async throws -> (requestId: String, events: [StreamEvent.Body], usage: Usage, headers: HTTPFields) {
        let r = try await client.runToCompletion(try account(for: caller), kind: kind, payload: body, reserve: reserve, slo: Self.slo(headers))
        return (r.handle.requestId, r.events, r.usage, Self.responseHeaders(r.handle))
    }
}
