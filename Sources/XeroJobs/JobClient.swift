import Foundation
import Logging
import XeroCore
import XeroMetrics
import XeroQueue
import XeroStore

/// Who a job is for and where it may run: what a gateway knows once it authenticated the caller,
/// or what a batch names for its lines.
public struct JobAccount: Sendable {
    /// SHA-256 of the caller's API key; empty for batch lines (only the project's limits apply).
    public var keyHash: String
    public var project: String
    public var endpoint: String
    public var fleet: EndpointFleet
    public var model: String
    public var tier: Tier
    /// The batch a line belongs to; empty otherwise.
    public var batchId: String

    public init(keyHash: String, project: String, endpoint: String, fleet: EndpointFleet, model: String, tier: Tier, batchId: String = "") {
        self.keyHash = keyHash
        self.project = project
        self.endpoint = endpoint
        self.fleet = fleet
        self.model = model
        self.tier = tier
        self.batchId = batchId
    }
}

/// The one way to run a job (docs/seams.md, "The job client"): admit it against the rate limits,
/// submit it with its billing, hand its events out in order, and end it — freeing the key's
/// concurrency slot at once and cancelling the job if it still runs. Every inference route and
/// the batch runner use this; settlement is the router's, from the worker's final report.
public final class JobClient: Sendable {
    public let hub: StreamHub
    public let limiter: RateLimiter?
    public let ids: RequestIDs
    /// Every job's timings, tokens and ending (docs/operations.md, "Metrics").
    public let metrics: RequestMetrics
    let logger: Logger

    public init(hub: StreamHub, limiter: RateLimiter?, ids: RequestIDs = RequestIDs(), metrics: RequestMetrics = .process, logger: Logger) {
        self.hub = hub
        self.limiter = limiter
        self.ids = ids
        self.metrics = metrics
        self.logger = logger
    }

    /// Zero counters for each refusal this client can count, per tier (see `prepareRefusals`).
    public func prepareMetrics(tiers: [Tier]) {
        if limiter != nil { metrics.prepareRefusals(tiers: tiers.map(\.name), limits: RateLimiter.Decision.limitLabels) }
    }

    /// Times a job may be given, other than its tier's.
    public struct Deadlines: Sendable {
        public var queueMs: Int64?
        public var requestMs: Int64?
        public init(queueMs: Int64? = nil, requestMs: Int64? = nil) {
            self.queueMs = queueMs
            self.requestMs = requestMs
        }
    }

    /// Admits and submits a job. Throws the client's error: 429 (limits, with `Retry-After` and the
    /// rate-limit headers), 503 (limiter or router unreachable), 429 `gateway_overloaded`.
    /// With `waitForLimits` (batch lines) a limit refusal waits it out instead of failing — until
    /// `waitUntilMs` (wall clock), after which the refusal is thrown.
    /// `prefixBlocks`: the prompt's block hashes (`PromptBlocks`), for prefix-aware placement.
    public func start(_ account: JobAccount, kind: JobEnvelope.Kind, payload: [UInt8], reserve: Int, requestId: String? = nil,
                      prefixBlocks: [UInt64] = [], slo: (ttftMs: Int, tpotMs: Int) = (0, 0), deadlines: Deadlines = Deadlines(), waitForLimits: Bool = false,
                      waitUntilMs: Int64 = .max) async throws -> JobHandle {
        let arrivedNs = DispatchTime.now().uptimeNanoseconds
        let requestId = requestId ?? ids.next()
        let tier = account.tier
        let instruments = metrics.instruments(tier: tier.name, model: account.model)
        /// An error before the job exists is counted here; afterwards the handle counts how it ends.
        func refused(_ e: APIError) -> APIError {
            instruments.failed(status: e.status, code: e.code ?? e.type)
            return e
        }
        let limits = RateLimiter.Limits(tier: tier)
        var headers: [(String, String)] = []
        var holdsSlot = false
        if let limiter {
            while true {
                let decision: RateLimiter.Decision
                do {
                    decision = try await limiter.admit(keyHash: account.keyHash, project: account.project, limits: limits,
                                                       reserveTokens: reserve)
                } catch {
                    throw refused(APIError.unavailable("The rate limiter is unreachable; retry shortly."))
                }
                headers = RateLimitHeaders.fields(decision)
                if decision.allowed {
                    holdsSlot = limits.maxConcurrent != nil && !account.keyHash.isEmpty
                    break
                }
                if waitForLimits, nowMs() < waitUntilMs {
                    logger.info("batch line waits on a rate limit", metadata: ["request_id": "\(requestId)", "limit": "\(decision.refusedBy ?? "limit")",
                                                                              "retry_ms": "\(decision.retryAfterMs)"])
                    try await Task.sleep(nanoseconds: UInt64(min(max(decision.retryAfterMs, 50), 60_000)) * 1_000_000)
                    continue
                }
                let retry = max(1, (decision.retryAfterMs + 999) / 1000)
                var e = APIError(status: 429, message: "Rate limit reached: \(decision.refusedBy ?? "limit") (tier '\(tier.name)'). Retry after \(retry) s.",
                                 type: "requests", code: "rate_limit_exceeded")
                e.headers = ["Retry-After": String(retry)]
                for (name, value) in headers { e.headers[name] = value }
                metrics.rateLimited(tier: tier.name, model: account.model, limit: decision.refusedLimit)
                throw e
            }
        }
        let now = nowMs()
        let billing = limiter == nil ? nil : Billing(keyHash: account.keyHash, reservedTokens: reserve, batchId: account.batchId)
        let job = JobEnvelope(requestId: requestId, replyTo: hub.gatewayID, kind: kind, tier: tier.name, project: account.project,
                              fleet: account.fleet, endpoint: account.endpoint, model: account.model, acceptedAtMs: now,
                              queueDeadlineMs: deadlines.queueMs ?? now + Int64(tier.queueTimeoutMs),
                              requestDeadlineMs: deadlines.requestMs ?? now + Int64(tier.requestTimeoutMs), prefixBlocks: prefixBlocks,
                              sloTTFTMs: slo.ttftMs, sloTPOTMs: slo.tpotMs, billing: billing, payload: payload)
        let handle = JobHandle(client: self, account: account, requestId: requestId, headers: headers, holdsSlot: holdsSlot,
                               timeline: RequestTimeline(instruments, arrivedNs: arrivedNs, streamsTokens: kind == .chatCompletion || kind == .textCompletion))
        // Never reached the router: nothing will settle it there, so refund here.
        func refund() {
            handle.endUnsubmitted()
            limiter?.settle(RateLimiter.Settlement(requestId: requestId, project: account.project, endpoint: account.endpoint, tier: tier,
                                                   keyHash: account.keyHash, reserved: reserve, usage: nil, batchId: account.batchId,
                                                   acceptedAtMs: now))
        }
        guard await hub.waitUntilReady(timeoutMs: 2000) else {
            refund()
            throw refused(APIError.unavailable("This gateway is not connected to a router yet; retry shortly."))
        }
        let box = hub.open(requestId)
        guard hub.submit(job) else {
            refund()
            throw refused(APIError.overloaded("This gateway's queue to the router is full; retry shortly.", code: "gateway_overloaded"))
        }
        // The gateway's own safety net: if neither the router nor the worker ended the job a little
        // after its deadline, the client gets a timeout — never a hang — and the job is cancelled.
        let hub = self.hub
        let waitMs = max(0, job.requestDeadlineMs - now) + 5000
        handle.begin(box, timer: DeadlineTimer.shared.schedule(afterMs: waitMs) {
            hub.inject(requestId, StreamEvent(requestId: requestId, attempt: 0, seq: WireLimits.outOfBandSeq,
                                              body: .error(APIError.timeout(tier: tier.name, ms: Int(waitMs - 5000)))))
        })
        return handle
    }

    /// Admits, submits and waits for a job that answers in one piece (embeddings, rerank): its
    /// non-terminal events and usage, or its error (with the rate-limit headers).
    public func runToCompletion(_ account: JobAccount, kind: JobEnvelope.Kind, payload: [UInt8], reserve: Int,
                                slo: (ttftMs: Int, tpotMs: Int) = (0, 0)) async throws -> (handle: JobHandle, events: [StreamEvent.Body], usage: Usage) {
        let handle = try await start(account, kind: kind, payload: payload, reserve: reserve, slo: slo)
        defer { handle.end() }
        var collected: [StreamEvent.Body] = []
        while true {
            let ev = try await handle.next()
            switch ev.body {
            case let .done(usage): return (handle, collected, usage)
            case var .error(e):
                handle.addHeaders(to: &e)
                throw e
            default: collected.append(ev.body)
            }
        }
    }
}
