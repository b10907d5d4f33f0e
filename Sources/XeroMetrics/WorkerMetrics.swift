import Prometheus
import XeroCore

/// A worker's instruments: its slots, its engine's KV state, prefix-cache lookups, and how its jobs
/// ended. Model names come from job envelopes (any name an endpoint gives, on the simulator), so
/// they are bounded like other untrusted labels.
public final class WorkerMetrics: Sendable {
    private let metrics: PlatformMetrics
    private let slotsBusy: Gauge, slotsFree: Gauge, kvBytes: Gauge, kvUsage: Gauge
    private let steps: Counter, decodeTokens: Counter, prefillTokens: Counter, busy: Counter
    /// The engine's totals last added to the counters.
    private let counted = Locked(EngineStepStats.none)

    public init(_ metrics: PlatformMetrics = .process) {
        self.metrics = metrics
        slotsBusy = metrics.gauge(MetricCatalog.workerSlotsBusy)
        slotsFree = metrics.gauge(MetricCatalog.workerSlotsFree)
        kvBytes = metrics.gauge(MetricCatalog.kvCacheBytes)
        kvUsage = metrics.gauge(MetricCatalog.kvCacheUsage)
        steps = metrics.counter(MetricCatalog.engineSteps)
        decodeTokens = metrics.counter(MetricCatalog.engineStepTokens, ["decode"])
        prefillTokens = metrics.counter(MetricCatalog.engineStepTokens, ["prefill"])
        busy = metrics.counter(MetricCatalog.engineBusy)
    }

    /// The engine's batch-loop totals now: the counters advance by what is new since the last call
    /// (an engine whose totals went down, a new one, counts from zero again). One engine per
    /// instance: two feeding one would count each other's totals as restarts.
    public func engineSteps(_ now: EngineStepStats) {
        let delta = counted.withLock { last -> EngineStepStats in
            let restarted = now.steps < last.steps || now.decodeTokens < last.decodeTokens || now.prefillTokens < last.prefillTokens
                || now.busySeconds < last.busySeconds
            let base = restarted ? .none : last
            last = now
            return EngineStepStats(steps: now.steps - base.steps, decodeTokens: now.decodeTokens - base.decodeTokens,
                                   prefillTokens: now.prefillTokens - base.prefillTokens, busySeconds: now.busySeconds - base.busySeconds)
        }
        if delta.steps > 0 { steps.increment(by: Int64(delta.steps)) }
        if delta.decodeTokens > 0 { decodeTokens.increment(by: Int64(delta.decodeTokens)) }
        if delta.prefillTokens > 0 { prefillTokens.increment(by: Int64(delta.prefillTokens)) }
        if delta.busySeconds > 0 { busy.increment(by: delta.busySeconds) }
    }

    public func slots(busy: Int, free: Int) {
        slotsBusy.set(Double(busy))
        slotsFree.set(Double(max(0, free)))
    }

    /// `usage`: the prefix cache's bytes over its budget (0 when there is none).
    public func kvCache(bytes: Int, usage: Double) {
        kvBytes.set(Double(bytes))
        kvUsage.set(usage)
    }

    /// A prompt of `queried` tokens of which `hit` came from the prefix cache.
    public func prefixLookup(model: String, queried: Int, hit: Int) {
        let model = metrics.untrusted(model, for: MetricCatalog.prefixCacheQueries)
        metrics.counter(MetricCatalog.prefixCacheQueries, [model]).increment(by: Int64(max(0, queried)))
        metrics.counter(MetricCatalog.prefixCacheHits, [model]).increment(by: Int64(max(0, hit)))
    }

    /// `outcome` as the worker reports it (`done`, `cancelled`, `timeout`, `rejected:<code>`,
    /// `error:<code>`); counted by its kind (`JobReport.kind(ofOutcome:)`).
    public func jobEnded(model: String, outcome: String) {
        let spec = MetricCatalog.workerJobs
        metrics.counter(spec, [metrics.untrusted(model, for: spec), JobReport.kind(ofOutcome: outcome)]).increment()
    }
}
