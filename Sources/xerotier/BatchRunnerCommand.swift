import ArgumentParser
import Foundation
import XeroBatch
import XeroJobs
import XeroQueue
import XeroStore

struct BatchRunnerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "batch-runner",
                                                    abstract: "Run batches: validate, feed the batch tier, write output files. State in Redis; restart at will.")

    @OptionGroup var common: CommonOptions
    @OptionGroup var configOptions: ConfigOptions
    @OptionGroup var address: RouterAddressOptions
    @OptionGroup var redis: RedisOptions
    @OptionGroup var fabric: FabricOptions
    @OptionGroup var metrics: MetricsOptions

    @Option(help: "Directory of the Files API, the same the gateways use (default: $XERO_FILES_DIR or ./.xerotier/files).")
    var filesDir: String?

    @Option(help: "Batch lines in flight at most.")
    var maxInFlight: Int = 32

    func run() async throws {
        common.watchParent()
        let logger = common.makeLogger("xerotier.batch")
        let config = try configOptions.load()
        let metricsListener = try await metrics.start(logger: logger)
        let client = try RedisClient(try RedisAddress(url: redis.url), connections: 2)
        let hub = try StreamHub(gatewayID: "batch-" + String(UInt64.random(in: 0..<UInt64.max), radix: 36),
                                routers: try address.clientLinks(),
                                security: try FabricKeys.platformClient(fabric, redis: try RedisAddress(url: redis.url)), logger: logger)
        let jobs = JobClient(hub: hub, limiter: RateLimiter(redis: client, logger: logger), logger: logger)
        jobs.prepareMetrics(tiers: config.tiers)
        var options = BatchRunner.Options()
        options.maxInFlight = maxInFlight
        let runner = BatchRunner(store: BatchStore(redis: client), files: FileRecords(redis: client),
                                 fileStore: try FilesystemFileStore(directory: filesDir ?? ProcessInfo.processInfo.environment["XERO_FILES_DIR"] ?? ".xerotier/files"),
                                 jobs: jobs,
                                 config: config, options: options, logger: logger)
        let task = Task { await runner.run() }
        logger.info("batch runner started", metadata: ["max_in_flight": "\(maxInFlight)"])
        let sig = await waitForTerminationSignal()
        logger.info("batch runner stopping", metadata: ["signal": "\(sig)"])
        runner.stop()
        _ = await task.value
        hub.stop()
        metricsListener?.stop()
        client.close()
    }
}
