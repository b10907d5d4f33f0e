import ArgumentParser
import Foundation
import ServiceLifecycle
import Hummingbird
import XeroCore
import XeroGateway
import XeroQueue
import XeroStore

struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gateway", abstract: "Run an HTTP gateway (OpenAI-compatible API).")

    @OptionGroup var common: CommonOptions
    @OptionGroup var configOptions: ConfigOptions
    @OptionGroup var address: RouterAddressOptions
    @OptionGroup var redis: RedisOptions
    @OptionGroup var fabric: FabricOptions
    @OptionGroup var metrics: MetricsOptions

    @Option(help: "HTTP listen host.")
    var host: String = "127.0.0.1"

    @Option(help: "HTTP listen port.")
    var port: Int = 8080

    @Option(help: "Largest request body accepted, bytes (larger gets 413); at most \(WireLimits.maxPayloadBytes), the largest job payload.")
    var maxBodyBytes: Int = 8 * 1024 * 1024

    @Option(help: "Close a keep-alive connection with no request in progress after this many seconds; also bounds slow request headers.")
    var idleTimeoutSeconds: Int = 60

    @Option(help: "Seconds from a request's head to its end; a body still arriving then gets 408 and the connection is closed.")
    var requestReadTimeoutSeconds: Int = 300

    @Option(help: "Close a connection whose client has stopped reading its answer (socket unwritable) for this many seconds; its job is cancelled.")
    var writeStallSeconds: Int = 30

    @Option(help: "Open connections this gateway holds; one more is answered at once with 503 too_many_connections and closed.")
    var maxConnections: Int = 4096

    @Option(help: "Largest request header block, and largest single header field, in bytes (larger gets 431).")
    var maxHeaderBytes: Int = 64 * 1024

    @Option(help: "Gateway id: the prefix of its event channel (default: random).")
    var id: String?

    @Option(help: "Directory for the Files API, shared with every gateway and the batch runner (default: $XERO_FILES_DIR or ./.xerotier/files).")
    var filesDir: String?

    @Option(help: "Events one request may have waiting for its client (a client that stops reading); past it the request fails with stream_interrupted.")
    var maxBufferedEvents: Int = EventMailbox.defaultCapacity

    @Flag(help: "Turn rate limiting off (benchmarks measure its cost this way).")
    var noRateLimits = false

    @Option(help: "On SIGTERM, let running requests finish for at most this long, then cancel them.")
    var drainSeconds: Double = 30

    @Flag(help: "Run each admission as its own script call instead of batching those that wait together (benchmarks).")
    var noBatchAdmissions = false

    @Flag(help: "Decide every admission in Redis instead of from leases of the shared limits (benchmarks).")
    var noLimitLeases = false

    @Option(help: "A proxy or load balancer (IP or CIDR; repeatable) whose X-Forwarded-For and X-Forwarded-Proto are believed. Without it the socket's peer is the client.")
    var trustedProxy: [String] = []

    @Flag(help: "Print every route (METHOD path) and exit.")
    var printRoutes = false

    @Option(help: "Who may sign up in the web console: open, invite or closed (overrides the config's console.signup).")
    var signup: String?

    @Option(help: "PEM certificate chain (server certificate first): serve HTTPS (TLS 1.2+, HTTP/1.1) on --port instead of HTTP. Needs --tls-key.")
    var tlsCert: String?

    @Option(help: "PEM private key of --tls-cert (unencrypted).")
    var tlsKey: String?

    func validate() throws {
        // The id is the prefix of the gateway's event topic (`<id>/<request id>`): a `/` in it
        // would make its subscription look like another client's.
        if let id, id.isEmpty || id.utf8.count > 64 || id.contains("/") {
            throw ValidationError("--id must be 1 to 64 bytes without '/' (got '\(id)').")
        }
        // A body travels to the worker as one job payload, which every decoder bounds.
        guard (1...WireLimits.maxPayloadBytes).contains(maxBodyBytes) else {
            throw ValidationError("--max-body-bytes \(maxBodyBytes) is outside 1...\(WireLimits.maxPayloadBytes) (WireLimits.maxPayloadBytes, the largest job payload).")
        }
        for (flag, value) in [("--idle-timeout-seconds", idleTimeoutSeconds), ("--request-read-timeout-seconds", requestReadTimeoutSeconds),
                              ("--write-stall-seconds", writeStallSeconds), ("--max-connections", maxConnections), ("--max-header-bytes", maxHeaderBytes)] {
            guard value >= 1 else { throw ValidationError("\(flag) must be at least 1 (got \(value)).") }
        }
        if let signup, ConsoleConfig.Signup(rawValue: signup) == nil { throw ValidationError("--signup must be open, invite or closed (got '\(signup)').") }
        for p in trustedProxy where CIDR(p) == nil {
            throw ValidationError("--trusted-proxy \(p) is not an IPv4/IPv6 address or CIDR block.")
        }
        // Half a TLS setup is a mistake, not a request for plain HTTP.
        guard (tlsCert == nil) == (tlsKey == nil) else {
            throw ValidationError("--tls-cert and --tls-key go together (got only \(tlsCert == nil ? "--tls-key" : "--tls-cert")).")
        }
    }

    func run() async throws {
        common.watchParent()
        let logger = common.makeLogger("xerotier.gateway")
        var config = try configOptions.load()
        if let signup = signup.flatMap(ConsoleConfig.Signup.init(rawValue:)) { config.console.signup = signup }
        var options = Gateway.Options()
        // Before anything connects: a bad certificate or key stops the gateway naming the file.
        if let tlsCert, let tlsKey {
            do { options.tls = try GatewayTLS.configuration(certificatePath: tlsCert, keyPath: tlsKey) } catch {
                throw ValidationError("cannot serve TLS: \(error)")
            }
        }
        let metricsListener = printRoutes ? nil : try await metrics.start(logger: logger)
        let redisClient = try RedisClient(try RedisAddress(url: redis.url), connections: 2)
        let gatewayID = id ?? ("gw-" + String(UInt64.random(in: 0..<UInt64.max), radix: 36))
        let hub = try StreamHub(gatewayID: gatewayID, routers: try address.clientLinks(), mailboxCapacity: maxBufferedEvents,
                                security: try FabricKeys.platformClient(fabric, redis: try RedisAddress(url: redis.url)), logger: logger)
        options.host = host
        options.port = port
        options.maxBodyBytes = maxBodyBytes
        options.idleTimeoutSeconds = idleTimeoutSeconds
        options.requestReadTimeoutSeconds = requestReadTimeoutSeconds
        options.writeStallSeconds = writeStallSeconds
        options.maxConnections = maxConnections
        options.maxHeaderBytes = maxHeaderBytes
        options.rateLimits = !noRateLimits
        options.batchAdmissions = !noBatchAdmissions
        options.limitLeases = !noLimitLeases
        options.filesDirectory = filesDir ?? ProcessInfo.processInfo.environment["XERO_FILES_DIR"] ?? ".xerotier/files"
        options.trustedProxies = TrustedProxies(trustedProxy.compactMap(CIDR.init))
        let gateway = Gateway(options: options, config: config, hub: hub, store: TenancyStore(redis: redisClient), logger: logger)
        if printRoutes {
            print(gateway.routeList().joined(separator: "\n"))
            hub.stop()
            redisClient.close()
            return
        }
        // Revocations and rotations on any gateway evict this gateway's cached key at once.
        let auth = gateway.auth
        let events = KeyEventSubscriber(address: try RedisAddress(url: redis.url),
                                        onMessage: { auth.invalidate(keyHash: $0) }, onReconnect: { auth.invalidateAll() })
        logger.info("gateway starting", metadata: ["gateway": "\(gatewayID)", options.tls == nil ? "http" : "https": "\(host):\(port)"])
        let app = gateway.makeApplication()
        // SIGTERM drains: no new connections, running requests finish — for at most
        // --drain-seconds, after which the rest are cancelled (a request whose router is gone
        // would otherwise hold the process until its own timeout).
        var lifecycle = ServiceGroupConfiguration(services: [app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        lifecycle.maximumGracefulShutdownDuration = .milliseconds(Int64(max(0, drainSeconds) * 1000))
        try await ServiceGroup(configuration: lifecycle).run()
        // Unused leases go back to the shared buckets for the other gateways.
        try? await gateway.limiter?.flush()
        events.stop()
        metricsListener?.stop()
        hub.stop()
        redisClient.close()
    }
}
