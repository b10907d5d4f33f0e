import Prometheus
import XeroCore

/// The job client's instruments (gateways and batch runners): per request, its time to first
/// token, inter-token latency, end-to-end latency, tokens and how it ended, by tier and model.
public final class RequestMetrics: Sendable {
    public static let process = RequestMetrics(.process)

    public let metrics: PlatformMetrics
    private let cache = Locked([Key: RequestInstruments]())

    struct Key: Hashable { let tier: String, model: String }

    public init(_ metrics: PlatformMetrics) { self.metrics = metrics }

    /// The instruments of one tier and model, made on first use.
    public func instruments(tier: String, model: String) -> RequestInstruments {
        cache.value(for: Key(tier: tier, model: model)) { RequestInstruments(metrics, tier: tier, model: model) }
    }

    /// Makes the refusal counters of every tier and limit at zero, so a dashboard sees a flat line
    /// (not a missing series) until the first refusal.
    public func prepareRefusals(tiers: [String], limits: [String]) {
        for t in tiers {
            for l in limits { _ = metrics.counter(MetricCatalog.rateLimitRefusals, [t, l]) }
        }
    }

    /// A request a rate limit refused (`limit` names which: requests, tokens, concurrency).
    public func rateLimited(tier: String, model: String, limit: String) {
        metrics.counter(MetricCatalog.rateLimitRefusals, [tier, metrics.untrusted(limit, for: MetricCatalog.rateLimitRefusals)]).increment()
        instruments(tier: tier, model: model).failed(status: 429, code: "rate_limit_exceeded")
    }
}

/// One tier's and model's request instruments.
public final class RequestInstruments: Sendable {
    public let timeToFirstToken: ValueHistogram
    public let interTokenLatency: ValueHistogram
    public let e2eLatency: ValueHistogram
    public let promptTokens: Counter
    public let generationTokens: Counter
    public let inFlight: Gauge
    private let metrics: PlatformMetrics
    private let tier: String, model: String

    init(_ metrics: PlatformMetrics, tier: String, model: String) {
        self.metrics = metrics
        self.tier = tier
        self.model = model
        let labels = [model, tier]
        timeToFirstToken = metrics.histogram(MetricCatalog.timeToFirstToken, labels)
        interTokenLatency = metrics.histogram(MetricCatalog.interTokenLatency, labels)
        e2eLatency = metrics.histogram(MetricCatalog.e2eRequestLatency, labels)
        promptTokens = metrics.counter(MetricCatalog.promptTokens, labels)
        generationTokens = metrics.counter(MetricCatalog.generationTokens, labels)
        inFlight = metrics.gauge(MetricCatalog.requestsInFlight, labels)
    }

    /// A request that ended with its answer; `reason` is its worker's finish reason.
    public func succeeded(reason: String, promptTokens prompt: Int, generationTokens generated: Int) {
        metrics.counter(MetricCatalog.requestSuccess, [model, tier, metrics.untrusted(reason, for: MetricCatalog.requestSuccess)]).increment()
        promptTokens.increment(by: Int64(max(0, prompt)))
        generationTokens.increment(by: Int64(max(0, generated)))
    }

    /// A request that ended in an error (its HTTP status and OpenAI error code).
    public func failed(status: Int, code: String) {
        let spec = MetricCatalog.requestError
        let status = (100...599).contains(status) ? String(status) : "other"
        metrics.counter(spec, [model, tier, status, metrics.untrusted(code, for: spec)]).increment()
    }
}
