import Prometheus

/// The router's instruments: how long jobs waited, its tier queues' depth and running jobs, its
/// workers, and how jobs ended. Called on the router's loop thread.
public final class RouterMetrics: Sendable {
    private let metrics: PlatformMetrics

    public init(_ metrics: PlatformMetrics = .process) { self.metrics = metrics }

    /// A job dispatched to a worker `seconds` after it arrived at its gateway.
    public func dispatched(tier: String, model: String, waitedSeconds seconds: Double) {
        metrics.histogram(MetricCatalog.requestQueueTime, [model, tier]).record(max(0, seconds))
    }

    public func tier(_ name: String, waiting: Int, running: Int) {
        metrics.gauge(MetricCatalog.requestsWaiting, [name]).set(Double(waiting))
        metrics.gauge(MetricCatalog.requestsRunning, [name]).set(Double(running))
    }

    public func workers(ready: Int, draining: Int, tripped: Int) {
        for (state, n) in [("ready", ready), ("draining", draining), ("tripped", tripped)] {
            metrics.gauge(MetricCatalog.routerWorkers, [state]).set(Double(n))
        }
    }

    /// `outcome`: done, cancelled, expired, refused, failed (the router's words, a fixed set).
    public func jobEnded(tier: String, outcome: String) {
        metrics.counter(MetricCatalog.routerJobs, [tier, outcome]).increment()
    }
}
