import ArgumentParser
import Foundation
import XeroRouter
import XeroStore

struct RouterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "router", abstract: "Run a router: tier queues, credits, deadlines.")

    @OptionGroup var common: CommonOptions
    @OptionGroup var configOptions: ConfigOptions
    @OptionGroup var address: RouterAddressOptions
    @OptionGroup var redis: RedisOptions
    @OptionGroup var fabric: FabricOptions
    @OptionGroup var metrics: MetricsOptions

    @Option(help: "Drop a worker from dispatch after this many ms without a heartbeat.")
    var workerTimeoutMs: Int = 3000

    @Option(help: "Cancel the jobs of a gateway or batch runner after this many ms without its liveness message.")
    var gatewayTimeoutMs: Int = 5000

    @Option(help: "After start, wait this many ms for workers to (re)join before answering a job no live worker could serve with an immediate 503.")
    var workerGraceMs: Int = 5000

    @Option(help: "Consecutive failures (crashes, timeouts, 5xx) that take a worker out of dispatch.")
    var breakerFailures: Int = 3

    @Option(help: "How long a tripped worker stays out before a probe job, ms (doubles after each failed probe, up to 60 s).")
    var breakerCooldownMs: Int = 5000

    @Flag(help: "Accept workers without a join key (trusted networks and benchmarks only).")
    var noJoinKeys = false

    func run() async throws {
        common.watchParent()
        let logger = common.makeLogger("xerotier.router")
        let config = try configOptions.load()
        // First: a port that cannot be bound stops the process before it touches anything.
        let metricsListener = try await metrics.start(logger: logger)
        let redisAddress = try RedisAddress(url: redis.url)
        // Its connections open lazily; a wrong URL or password stops the router here, not later.
        try RedisConnection(redisAddress).ping()
        let ops = OpsRecorder(address: redisAddress, logger: logger)
        var options = Router.Options()
        options.workerTimeoutMs = Int64(workerTimeoutMs)
        options.gatewayTimeoutMs = Int64(max(1000, gatewayTimeoutMs))
        options.requireJoinKey = !noJoinKeys
        options.workerGraceMs = Int64(max(0, workerGraceMs))
        options.breaker.failuresToOpen = max(1, breakerFailures)
        options.breaker.cooldownMs = Int64(max(100, breakerCooldownMs))
        options.breaker.maxCooldownMs = max(options.breaker.cooldownMs, 60_000)
        options.redis = redisAddress
        options.security = try FabricKeys.router(fabric, redis: redisAddress)
        // Jobs are billed here, from their workers' final reports (docs/tenancy.md, "Billing").
        let redisClient = try RedisClient(redisAddress, connections: 1)
        let settlements = RateLimiter(redis: redisClient, logger: logger)
        let router = try Router(config: config, endpoints: .tcp(host: address.routerHost, base: address.routerPort), ops: ops,
                                settlements: settlements, options: options, logger: logger)
        router.start()
        let sig = await waitForTerminationSignal()
        logger.info("router stopping", metadata: ["signal": "\(sig)"])
        router.stop()
        metricsListener?.stop()
        // What is still queued is written before the process goes (Redis permitting).
        if (try? await settlements.flush()) == nil {
            logger.error("settlements not written at exit", metadata: ["waiting": "\(settlements.waiting)"])
        }
        ops.stop()
        redisClient.close()
    }
}
