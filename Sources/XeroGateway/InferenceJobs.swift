import Foundation
import HTTPTypes
import Hummingbird
import Logging
import XeroCore
import XeroQueue
import XeroStore

/// What every inference route does around its job: rate-limit admission (with settlement when
/// the job ends), the job envelope, submission, and — for answers that are not streamed — waiting
/// for the job's events with the gateway's own safety deadline.
struct InferenceJobs: Sendable {
    let hub: StreamHub
    let tiers: [String: Tier]
    let ids: RequestIDs
    let limiter: RateLimiter?
    let logger: Logger

    struct Admission: Sendable {
        let headers: HTTPFields
        /// Settles the reservation with the job's real usage (nil: failed, nothing billed). Call once.
        let settle: @Sendable (Usage?) -> Void
    }

    /// An error event becomes the client's error with the rate-limit headers; a 429 from a full
    /// router queue (events carry no headers) gets its `Retry-After` here.
    static func addHeaders(_ headers: HTTPFields, to e: inout APIError) {
        for f in headers { e.headers[f.name.rawName] = f.value }
        if e.status == 429, e.headers["Retry-After"] == nil { e.headers["Retry-After"] = "1" }
    }

    func tier(for caller: CallerContext) throws -> Tier {
        guard let tier = tiers[caller.endpoint.tier] else {
            throw APIError.internalError("Endpoint '\(caller.endpoint.slug)' names tier '\(caller.endpoint.tier)', which this gateway does not know.")
        }
        return tier
    }

    func admit(caller: CallerContext, tier: Tier, reserve: Int, requestId: String) async throws -> Admission {
        let limits = RateLimiter.Limits(tier: tier)
        var headers: HTTPFields = [:]
        if let limiter {
            let decision: RateLimiter.Decision
            do { decision = try await limiter.admit(keyHash: caller.key.hash, project: caller.project, limits: limits, reserveTokens: reserve, requestId: requestId) } catch {
                throw APIError.unavailable("The rate limiter is unreachable; retry shortly.")
            }
            headers = ChatCompletions.rateLimitHeaders(decision)
            guard decision.allowed else {
                let retry = max(1, (decision.retryAfterMs + 999) / 1000)
                var e = APIError(status: 429, message: "Rate limit reached: \(decision.refusedBy ?? "limit") (tier '\(tier.name)'). Retry after \(retry) s.",
                                 type: "requests", code: "rate_limit_exceeded")
                e.headers = ["Retry-After": String(retry)]
                for f in headers { e.headers[f.name.rawName] = f.value }
                throw e
            }
        }
        let logger = self.logger, limiter = self.limiter
        return Admission(headers: headers, settle: { usage in
            guard let limiter else { return }
            Task {
                do {
                    try await limiter.finish(keyHash: caller.key.hash, project: caller.project, endpoint: caller.endpoint.slug, tier: tier,
                                             limits: limits, reserved: reserve, usage: usage, requestId: requestId)
                } catch {
                    logger.warning("usage settlement failed", metadata: ["error": "\(error)"])
                }
            }
        })
    }

    func envelope(kind: JobEnvelope.Kind, requestId: String, caller: CallerContext, tier: Tier, now: Int64, headers: HTTPFields, body: [UInt8]) -> JobEnvelope {
        JobEnvelope(requestId: requestId, replyTo: hub.gatewayID, kind: kind, tier: tier.name, project: caller.project,
                    fleet: caller.endpoint.fleet, endpoint: caller.endpoint.slug, model: caller.endpoint.model, acceptedAtMs: now,
                    queueDeadlineMs: now + Int64(tier.queueTimeoutMs), requestDeadlineMs: now + Int64(tier.requestTimeoutMs),
                    sloTTFTMs: headers[HTTPField.Name("X-SLO-TTFT-Ms")!].flatMap { Int($0) } ?? 0,
                    sloTPOTMs: headers[HTTPField.Name("X-SLO-TPOT-Ms")!].flatMap { Int($0) } ?? 0,
                    payload: body)
    }

    /// Opens the job's mailbox and submits it, with the gateway's own safety net: if neither the
    /// router nor the worker has ended the job a little after its request timeout, the client gets
    /// a timeout error — never a hang. Cancel the returned timer when the job ends.
    func submit(_ job: JobEnvelope, tier: Tier) async throws -> (EventMailbox, Task<Void, Never>) {
        guard await hub.waitUntilReady(timeoutMs: 2000) else {
            throw APIError.unavailable("This gateway is not connected to a router yet; retry shortly.")
        }
        let hub = self.hub, requestId = job.requestId
        let box = hub.open(requestId)
        guard hub.submit(job) else {
            hub.close(requestId)
            throw APIError.overloaded("This gateway's queue to the router is full; retry shortly.", code: "gateway_overloaded")
        }
        let timer = Task {
            try? await Task.sleep(nanoseconds: UInt64(tier.requestTimeoutMs + 5000) * 1_000_000)
            if Task.isCancelled { return }
            hub.inject(requestId, StreamEvent(requestId: requestId, attempt: 0, seq: WireLimits.outOfBandSeq,
                                              body: .error(APIError.timeout(tier: tier.name, ms: tier.requestTimeoutMs))))
        }
        return (box, timer)
    }

    /// Admits, submits and waits for a job that answers in one piece (embeddings, rerank). Returns
    /// its non-terminal events and usage; throws the job's error. Settles the admission.
    func runToCompletion(kind: JobEnvelope.Kind, caller: CallerContext, reserve: Int, headers: HTTPFields, body: [UInt8])
        async throws -> (requestId: String, events: [StreamEvent.Body], usage: Usage, headers: HTTPFields) {
        let tier = try tier(for: caller)
        let requestId = ids.next()
        let admission = try await admit(caller: caller, tier: tier, reserve: reserve, requestId: requestId)
        let job = envelope(kind: kind, requestId: requestId, caller: caller, tier: tier, now: nowMs(), headers: headers, body: body)
        let (box, timer): (EventMailbox, Task<Void, Never>)
        do { (box, timer) = try await submit(job, tier: tier) } catch {
            admission.settle(nil)
            throw error
        }
        let hub = self.hub
        defer { timer.cancel(); hub.close(requestId) }
        var reader = EventReader(box)
        var collected: [StreamEvent.Body] = []
        while true {
            let ev: StreamEvent
            do { ev = try await withTaskCancellationHandler { try await reader.next() } onCancel: { hub.cancel(requestId) } } catch {
                hub.cancel(requestId)
                admission.settle(nil)
                throw error
            }
            switch ev.body {
            case let .done(usage):
                admission.settle(usage)
                var h = admission.headers
                h[HTTPField.Name("x-request-id")!] = requestId
                return (requestId, collected, usage, h)
            case var .error(e):
                admission.settle(nil)
                if e.code == APIError.streamInterruptedCode { hub.cancel(requestId) }
                Self.addHeaders(admission.headers, to: &e)
                throw e
            default:
                collected.append(ev.body)
            }
        }
    }
}
