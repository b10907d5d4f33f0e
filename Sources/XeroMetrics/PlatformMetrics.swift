import enum CoreMetrics.MetricsSystem
import Prometheus
import XeroCore

/// The process's metrics: one Prometheus registry that the platform's instruments and, through
/// swift-metrics, any library's are made in, rendered in the text exposition format for the
/// `--metrics-port` listener. Families come from `MetricCatalog` only.
///
/// Instruments are looked up on hot paths (a request's ending, a dispatch), and the registry
/// validates names, labels and help text on every lookup: so each instrument is made once and
/// kept here by family and label values.
public final class PlatformMetrics: Sendable {
    /// The registry of this process (one per process, like its logger's handler).
    public static let process = PlatformMetrics()

    public let registry: PrometheusCollectorRegistry
    private let labels = BoundedLabels()
    private let counters = Locked([Series: Counter]())
    private let gauges = Locked([Series: Gauge]())
    private let histograms = Locked([Series: ValueHistogram]())

    struct Series: Hashable {
        let family: String
        let values: [String]
    }

    public init() { registry = PrometheusCollectorRegistry() }

    public func counter(_ spec: MetricSpec, _ values: [String] = []) -> Counter {
        counters.value(for: Series(family: spec.name, values: values)) {
            registry.makeCounter(descriptor: descriptor(spec), labels: zipped(spec, values))
        }
    }

    public func gauge(_ spec: MetricSpec, _ values: [String] = []) -> Gauge {
        gauges.value(for: Series(family: spec.name, values: values)) {
            registry.makeGauge(descriptor: descriptor(spec), labels: zipped(spec, values))
        }
    }

    public func histogram(_ spec: MetricSpec, _ values: [String] = []) -> ValueHistogram {
        histograms.value(for: Series(family: spec.name, values: values)) {
            registry.makeValueHistogram(descriptor: descriptor(spec), labels: zipped(spec, values), buckets: spec.buckets)
        }
    }

    /// A label value that came from another process (a worker's finish reason or error code):
    /// cleaned, and past `BoundedLabels.maxValues` distinct ones per family, `other` — a hostile
    /// worker cannot grow the registry without bound.
    public func untrusted(_ value: String, for spec: MetricSpec) -> String { labels.admit(value, family: spec.name) }

    /// The exposition (`text/plain; version=0.0.4`).
    public func exposition() -> [UInt8] { registry.emitToBuffer() }

    /// Sends swift-metrics (the libraries' metrics, e.g. Hummingbird's per-route counters) to this
    /// registry. Once per process; later calls do nothing.
    public func bootstrapSwiftMetrics() {
        Self.bootstrapped.withLock { done in
            guard !done else { return }
            done = true
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        }
    }

    private static let bootstrapped = Locked(false)

    private func descriptor(_ spec: MetricSpec) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: spec.name, unitName: "", helpText: spec.help)
    }

    private func zipped(_ spec: MetricSpec, _ values: [String]) -> [(String, String)] {
        precondition(values.count == spec.labels.count, "\(spec.name) takes labels \(spec.labels)")
        return Array(zip(spec.labels, values))
    }
}
