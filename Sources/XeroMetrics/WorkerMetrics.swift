import Prometheus
import XeroCore

/// A worker's instruments: its slots, its engine's KV state, prefix-cache lookups, and how its jobs
/// ended. Model names come from job envelopes (any name an endpoint gives, on the simulator), so
/// they are bounded like other untrusted labels.
public final class WorkerMetrics: Sendable {
    private let metrics: PlatformMetrics
    private let slotsBusy: Gauge, slotsFree: Gauge, kvBytes: Gauge, kvUsage: Gauge

    public init(_ metrics: PlatformMetrics = .process) {
        self.metrics = metrics
        slotsBusy = metrics.gauge(MetricCatalog.workerSlotsBusy)
        slotsFree = metrics.gauge(MetricCatalog.workerSlotsFree)
        kvBytes = metrics.gauge(MetricCatalog.kvCacheBytes)
        kvUsage = metrics.gauge(MetricCatalog.kvCacheUsage)
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
