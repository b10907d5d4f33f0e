import ArgumentParser
import Foundation
import Hummingbird
import XeroGateway
import XeroQueue
import XeroStore

struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gateway", abstract: "Run an HTTP gateway (OpenAI-compatible API).")

    @OptionGroup var common: CommonOptions
    @OptionGroup var configOptions: ConfigOptions
    @OptionGroup var address: RouterAddressOptions
    @OptionGroup var redis: RedisOptions

    @Option(help: "HTTP listen host.")
    var host: String = "127.0.0.1"

    @Option(help: "HTTP listen port.")
    var port: Int = 8080

    @Option(help: "Largest request body accepted, bytes (larger gets 413).")
    var maxBodyBytes: Int = 8 * 1024 * 1024

    @Option(help: "Gateway id: the prefix of its event channel (default: random).")
    var id: String?

    @Option(help: "Directory for the Files API, shared with every gateway and the batch runner (default: $XERO_FILES_DIR or ./.xerotier/files).")
    var filesDir: String?

    @Option(help: "Events one request may have waiting for its client (a client that stops reading); past it the request fails with stream_interrupted.")
    var maxBufferedEvents: Int = EventMailbox.defaultCapacity

    @Flag(help: "Turn rate limiting off (benchmarks measure its cost this way).")
    var noRateLimits = false

    func run() async throws {
        common.watchParent()
        let logger = common.makeLogger("xerotier.gateway")
        let config = try configOptions.load()
        let redisClient = try RedisClient(try RedisAddress(url: redis.url), connections: 2)
        let gatewayID = id ?? ("gw-" + String(UInt64.random(in: 0..<UInt64.max), radix: 36))
        let hub = try StreamHub(gatewayID: gatewayID, routerJobs: "tcp://\(address.routerHost):\(address.routerPort)",
                                routerEventsOut: "tcp://\(address.routerHost):\(address.routerPort + 3)",
                                mailboxCapacity: maxBufferedEvents, logger: logger)
        var options = Gateway.Options()
        options.host = host
        options.port = port
        options.maxBodyBytes = maxBodyBytes
        options.rateLimits = !noRateLimits
        options.filesDirectory = filesDir ?? ProcessInfo.processInfo.environment["XERO_FILES_DIR"] ?? ".xerotier/files"
        let gateway = Gateway(options: options, config: config, hub: hub, store: TenancyStore(redis: redisClient), logger: logger)
        // Revocations and rotations on any gateway evict this gateway's cached key at once.
        let auth = gateway.auth
        let events = KeyEventSubscriber(address: try RedisAddress(url: redis.url),
                                        onMessage: { auth.invalidate(keyHash: $0) }, onReconnect: { auth.invalidateAll() })
        logger.info("gateway starting", metadata: ["gateway": "\(gatewayID)", "http": "\(host):\(port)"])
        let app = gateway.makeApplication()
        try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
        events.stop()
        hub.stop()
        redisClient.close()
    }
}
