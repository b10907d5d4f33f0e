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

    @Option(help: "Drop a worker from dispatch after this many ms without a heartbeat.")
    var workerTimeoutMs: Int = 3000

    @Flag(help: "Accept workers without a join key (trusted networks and benchmarks only).")
    var noJoinKeys = false

    func run() async throws {
        common.watchParent()
        let logger = common.makeLogger("xerotier.router")
        let config = try configOptions.load()
        let redisAddress = try RedisAddress(url: redis.url)
        // Its connections open lazily; a wrong URL or password stops the router here, not later.
        try RedisConnection(redisAddress).ping()
        let ops = OpsRecorder(address: redisAddress, logger: logger)
        var options = Router.Options()
        options.workerTimeoutMs = Int64(workerTimeoutMs)
        options.requireJoinKey = !noJoinKeys
        options.redis = redisAddress
        options.security = try FabricKeys.router(fabric, redis: redisAddress)
        let router = try Router(config: config, endpoints: .tcp(host: address.routerHost, base: address.routerPort), ops: ops,
                                options: options, logger: logger)
        router.start()
        let sig = await waitForTerminationSignal()
        logger.info("router stopping", metadata: ["signal": "\(sig)"])
        router.stop()
        ops.stop()
    }
}
