/// A circuit breaker per worker (docs/routing.md, "Breakers"): a worker whose jobs keep failing is
/// taken out of dispatch for a cooldown, then given one probe job; the probe's success closes the
/// breaker, its failure opens it again for twice as long (up to `maxCooldownMs`).
///
/// Only the worker's own failures count: a crash with jobs on it, a timeout, an engine or upstream
/// 5xx. A client's error (any 4xx: a bad request, a context too long, an upstream's 429) is the
/// request's fault and never counts, and neither does a cancel (sglang #25811 took workers out
/// for their clients' bad requests).
public struct WorkerBreaker: Sendable, Equatable {
    public struct Policy: Sendable, Equatable {
        /// Consecutive failures that open the breaker.
        public var failuresToOpen = 3
        public var cooldownMs: Int64 = 5_000
        public var maxCooldownMs: Int64 = 60_000
        public init() {}
    }

    public enum State: Sendable, Equatable {
        case closed
        /// Out of dispatch until then; afterwards one probe job may go.
        case open(untilMs: Int64)
        /// The probe is out: nothing more until it ends.
        case probing
    }

    /// How a worker's job ended, for the breaker.
    public enum Outcome: Sendable, Equatable {
        case success
        case failure
        /// Neither: cancelled by its client, or refused as the client's fault.
        case neutral

        /// From a worker's `done` report: `done`, `cancelled`, `timeout`, `rejected:<code>` (a
        /// 4xx), `error:<code>` (anything else).
        public init(report outcome: String) {
            if outcome == "done" { self = .success }
            else if outcome == "cancelled" || outcome.hasPrefix("rejected:") || outcome == "error:no_slot" { self = .neutral }
            else { self = .failure }
        }
    }

    public private(set) var state: State = .closed
    public private(set) var consecutiveFailures = 0
    /// Times it opened (for operators).
    public private(set) var trips = 0
    private var cooldownMs: Int64

    public init(policy: Policy = Policy()) { cooldownMs = policy.cooldownMs }

    /// May this worker be sent a job now (it has `inflight` jobs)?
    public func allows(now: Int64, inflight: Int) -> Bool {
        switch state {
        case .closed: return true
        case let .open(until): return now >= until && inflight == 0
        case .probing: return false
        }
    }

    /// A job was sent to it: after a cooldown that job is the probe.
    public mutating func dispatched(now: Int64) {
        if case let .open(until) = state, now >= until { state = .probing }
    }

    public mutating func record(_ outcome: Outcome, now: Int64, policy: Policy) {
        switch outcome {
        case .neutral:
            // A probe that ended neutrally proved nothing: probe again with the next job.
            if state == .probing { state = .open(untilMs: now) }
        case .success:
            consecutiveFailures = 0
            state = .closed
            cooldownMs = policy.cooldownMs
        case .failure:
            consecutiveFailures += 1
            switch state {
            case .probing:
                cooldownMs = min(policy.maxCooldownMs, cooldownMs * 2)
                state = .open(untilMs: now + cooldownMs)
                trips += 1
            case .open: break   // jobs sent before it opened, failing too
            case .closed where consecutiveFailures >= policy.failuresToOpen:
                state = .open(untilMs: now + cooldownMs)
                trips += 1
            case .closed: break
            }
        }
    }

    public var name: String {
        switch state {
        case .closed: "closed"
        case .open: "open"
        case .probing: "probing"
        }
    }
}
