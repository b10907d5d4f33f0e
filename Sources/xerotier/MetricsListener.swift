import ArgumentParser
import Foundation
import Hummingbird
import Logging
import NIOCore
import XeroMetrics

/// `--metrics-port`, on every process: Prometheus metrics on a listener of their own, never on
/// the public API port (docs/operations.md, "Metrics").
struct MetricsOptions: ParsableArguments {
    @Option(help: "Serve Prometheus metrics (GET /metrics) on this port, apart from any public port. Off when not given.")
    var metricsPort: Int?

    @Option(help: "Address the metrics listener binds. It has no authentication: keep it on a private interface.")
    var metricsHost: String = "127.0.0.1"

    func validate() throws {
        if let metricsPort, !(1...65535).contains(metricsPort) {
            throw ValidationError("--metrics-port \(metricsPort) is outside 1...65535.")
        }
    }

    /// Starts the listener when asked (nil otherwise); throws when its port cannot be bound, so a
    /// process never runs unobserved by mistake.
    func start(logger: Logger) async throws -> MetricsListener? {
        PlatformMetrics.process.bootstrapSwiftMetrics()
        guard let metricsPort else { return nil }
        return try await MetricsListener.start(host: metricsHost, port: metricsPort, metrics: .process, logger: logger)
    }
}

/// The running metrics listener: one route, the registry's exposition.
final class MetricsListener: Sendable {
    private let task: Task<Void, Error>

    private init(task: Task<Void, Error>) { self.task = task }

    static func start(host: String, port: Int, metrics: PlatformMetrics, logger: Logger) async throws -> MetricsListener {
        let router = Router()
        router.get("/metrics") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(bytes: metrics.exposition())))
        }
        let started = Started()
        let app = Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: nil),
                              onServerRunning: { _ in started.resolve(nil) }, logger: logger)
        let task = Task {
            do { try await app.run() } catch {
                started.resolve(error)
                throw error
            }
        }
        if let error = await started.wait() {
            throw ValidationError("cannot serve metrics on \(host):\(port): \(error)")
        }
        logger.info("metrics listening", metadata: ["url": "http://\(host):\(port)/metrics"])
        return MetricsListener(task: task)
    }

    func stop() { task.cancel() }

    /// The listener's first word: running (nil) or the error that stopped it.
    private final class Started: @unchecked Sendable {
        private let lock = NSLock()
        private var result: Error??
        private var waiter: CheckedContinuation<Error?, Never>?

        func resolve(_ error: Error?) {
            lock.lock()
            guard result == nil else { lock.unlock(); return }
            result = .some(error)
            let w = waiter
            waiter = nil
            lock.unlock()
            w?.resume(returning: error)
        }

        func wait() async -> Error? {
            await withCheckedContinuation { cont in
                lock.lock()
                if let r = result { lock.unlock(); cont.resume(returning: r); return }
                waiter = cont
                lock.unlock()
            }
        }
    }
}
