import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import XeroBatch
import XeroCore
import XeroJobs
import XeroQueue
import XeroStore

/// The request context: Hummingbird's core storage, the socket's peer, and what the
/// authentication middlewares found (from which `InferenceContext` / `ManagementContext` are made).
public struct GatewayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    /// The client's address after `--trusted-proxy` (set by the authentication middlewares).
    public var clientIP: String?
    /// Set by `InferenceAuthMiddleware`.
    public var caller: CallerContext?
    /// Set by `ManagementAuthMiddleware`.
    public var management: ManagementCaller?
    /// True when the request arrived on a TLS connection (`Options.tls`): what Secure cookies and
    /// https links go by. Set by the server setup, never from a header a client could send.
    public var isTLS: Bool
    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
        isTLS = ConnectionTransport.isTLS
    }
    /// The socket peer's IP address as text (IPv4 or IPv6).
    public var remoteIP: String? { remoteAddress?.ipAddress }
    /// Bodies are collected explicitly with the gateway's own limit.
    public var maxUploadSize: Int { Int.max }
}

/// The HTTP front door: the OpenAI-compatible routes under `/proj_<id>/<endpoint>/v1`.
/// Stateless: every record it uses lives in Redis, every job goes to the router.
public struct Gateway: Sendable {
    public struct Options: Sendable {
        public var host = "127.0.0.1"
        public var port = 8080
        /// Largest request body; at most `WireLimits.maxPayloadBytes`, since the body travels as a job payload.
        public var maxBodyBytes = 8 * 1024 * 1024
        /// A keep-alive connection with no request in progress is closed after this long. Also bounds
        /// slow headers: nothing reaches a route before a request's head is complete.
        public var idleTimeoutSeconds = 60
        /// From a request's head to its end; a body still arriving then gets 408 and a close.
        public var requestReadTimeoutSeconds = 300
        /// A connection whose client stops reading an answer is closed after this long unwritable.
        public var writeStallSeconds = 30
        /// Open connections per gateway; the next one gets 503 `too_many_connections` at once.
        public var maxConnections = 4096
        /// A request's header block (and any single header field); over it gets 431.
        public var maxHeaderBytes = 64 * 1024
        /// Header fields per request; over it gets 431.
        public var maxHeaderFields = 256
        public var keyCacheMs = 2000
        public var endpointCacheMs = 5000
        /// Token-bucket limits from the tiers (off only for benchmarks that measure their cost).
        public var rateLimits = true
        /// Admissions waiting at the same moment share one script call (`CallBatcher`).
        public var batchAdmissions = true
        /// Admit locally from leases of the shared buckets and slots (docs/tenancy.md, "Leases").
        public var limitLeases = true
        /// The shared directory for the Files API (nil = Files and Batches APIs off).
        public var filesDirectory: String?
        /// Peers whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed (`--trusted-proxy`).
        public var trustedProxies = TrustedProxies()
        /// HTTPS on `port` with these settings (`GatewayTLS.configuration`); nil = plain HTTP.
        public var tls: TLSConfiguration?
        public init() {}
    }

    public let options: Options
    public let hub: StreamHub
    public let auth: Authenticator
    public let config: PlatformConfig
    /// The rate limiter (nil with limits off); `flush` it on shutdown to give its leases back.
    public let limiter: RateLimiter?
    let logger: Logger

    public init(options: Options, config: PlatformConfig, hub: StreamHub, store: TenancyStore, logger: Logger) {
        var options = options
        // A body travels as one job payload; the CLI refuses more, library callers are held to it here.
        options.maxBodyBytes = min(options.maxBodyBytes, WireLimits.maxPayloadBytes)
        self.options = options
        self.config = config
        self.hub = hub
        self.auth = Authenticator(store: store, keyCacheMs: options.keyCacheMs, endpointCacheMs: options.endpointCacheMs)
        self.limiter = options.rateLimits ? RateLimiter(redis: store.redis, batchAdmissions: options.batchAdmissions, leases: options.limitLeases,
                                                        owner: hub.gatewayID, logger: logger) : nil
        self.logger = logger
    }

    public func makeRouter() -> Router<GatewayRequestContext> { makeRoutes().router }

    /// The router and the table of every route on it (for `--print-routes` and the route walk test).
    func makeRoutes() -> (router: Router<GatewayRequestContext>, table: RouteTable<GatewayRequestContext>) {
        let router = Router(context: GatewayRequestContext.self)
        // Outermost: Hummingbird's per-route request counts and durations (swift-metrics, into
        // this process's Prometheus registry) see every answer, errors already mapped.
        router.middlewares.add(MetricsMiddleware())
        router.middlewares.add(OpenAIErrorMiddleware(maxBodyBytes: options.maxBodyBytes))
        let routes = RouteTable(router)
        let client = JobClient(hub: hub, limiter: limiter, logger: logger)
        client.prepareMetrics(tiers: config.tiers)
        let jobs = InferenceJobs(client: client, tiers: Dictionary(uniqueKeysWithValues: config.tiers.map { ($0.name, $0) }))
        let chat = ChatCompletions(jobs: jobs)
        let text = TextCompletions(jobs: jobs)
        let auth = self.auth
        let maxBody = options.maxBodyBytes
        let hub = self.hub
        let registry = ModelRegistry(redis: auth.store.redis)

        routes.get("/health") { _, _ -> Response in
            let ready = hub.isReady
            return Response(status: ready ? .ok : .serviceUnavailable, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(string: ready ? #"{"status":"ok"}"# : #"{"status":"starting"}"#)))
        }

        ManagementRoutes(auth: auth, config: config).register(on: routes, proxies: options.trustedProxies)
        let service = ProjectService(auth: auth, config: config)
        ConsoleRoutes(service: service, users: UserStore(redis: auth.store.redis), registry: registry,
                      proxies: options.trustedProxies).register(on: routes)

        // Every route below is behind one authentication step: handlers get `context.caller`.
        let api = routes.group("/:project/:endpoint/v1")
            .add(middleware: InferenceAuthMiddleware(auth: auth, proxies: options.trustedProxies))
            .group(context: InferenceContext.self)
        if let dir = options.filesDirectory, let store = try? FilesystemFileStore(directory: dir) {
            BatchRoutes(auth: auth, fileStore: store, files: FileRecords(redis: auth.store.redis),
                        batches: BatchStore(redis: auth.store.redis), service: service).register(on: api)
            ModelRoutes(registry: registry, fileStore: store)
                .register(on: ManagementRoutes.group(routes, auth: auth, proxies: options.trustedProxies), public: routes)
        }
        api.post("/chat/completions") { request, context -> Response in
            // Any Content-Type is accepted if the body is JSON: curl's -d without a header sends
            // form encoding, and refusing that would help nobody.
            let body = try await Self.collect(request, limit: maxBody)
            return try await chat.handle(body, caller: context.caller, headers: request.headers)
        }
        api.post("/completions") { request, context -> Response in
            let body = try await Self.collect(request, limit: maxBody)
            return try await text.handle(body, caller: context.caller, headers: request.headers)
        }
        EmbeddingRoutes(jobs: jobs, auth: auth, maxBodyBytes: maxBody).register(on: api)
        // The catalog: the endpoint's own model first, then the registry's models this project
        // sees (its own and the platform's), each saying who owns it.
        api.get("/models") { _, context -> Response in
            let endpoint = context.caller.endpoint
            let others = try await registry.models(visibleTo: endpoint.project).filter { $0.name != endpoint.model }
            var w = JSONWriter()
            w.objectStart()
            w.field("object", "list")
            w.key("data"); w.arrayStart()
            Self.writeModel(endpoint, to: &w)
            for m in others { Self.writeRegistryModel(m, to: &w) }
            w.arrayEnd()
            w.objectEnd()
            return Self.json(w.bytes)
        }
        api.get("/models/:model") { _, context -> Response in
            let caller = context.caller
            let wanted = context.parameters.get("model") ?? ""
            var w = JSONWriter()
            if wanted == caller.endpoint.model {
                Self.writeModel(caller.endpoint, to: &w)
            } else if let m = try await registry.model(wanted), m.isPlatform || m.owner == caller.endpoint.project {
                Self.writeRegistryModel(m, to: &w)
            } else {
                throw APIError.notFound("The model '\(wanted)' does not exist; this endpoint serves '\(caller.endpoint.model)'.", code: "model_not_found")
            }
            return Self.json(w.bytes)
        }
        return (router, routes)
    }

    /// Every route as `METHOD path`, one a line (`xerotier gateway --print-routes`).
    public func routeList() -> [String] {
        makeRoutes().table.entries.map { "\($0.method) \($0.path)" }
    }

    public func makeApplication() -> some ApplicationProtocol {
        Application(router: makeRouter(), server: Self.serverBuilder(http1: http1Configuration(), tls: options.tls),
                    configuration: .init(address: .hostname(options.host, port: options.port), serverName: "xerotier", backlog: 4096),
                    logger: logger)
    }

    /// HTTP/1, or TLS in front of the very same HTTP/1 channel: every limit handler sits after
    /// the codec, so it sees the same decrypted parts either way. TLS connections are marked for
    /// `GatewayRequestContext.isTLS`.
    static func serverBuilder(http1: HTTP1Channel.Configuration, tls: TLSConfiguration?) -> HTTPServerBuilder {
        guard let tls else { return .http1(configuration: http1) }
        return HTTPServerBuilder { responder in
            TLSMarkedChannel(base: try TLSChannel(HTTP1Channel(responder: responder, configuration: http1), tlsConfiguration: tls))
        }
    }

    /// The HTTP/1 channel with the bounds of `Options` (docs/architecture.md, "HTTP limits"): the
    /// idle timeout and header limits are Hummingbird's and NIO's, the rest are handlers of ours
    /// between the codec and the request loop. One counter serves every connection.
    func http1Configuration() -> HTTP1Channel.Configuration {
        let o = options
        let counter = ConnectionCounter(limit: o.maxConnections)
        return HTTP1Channel.Configuration(
            additionalChannelHandlers: [
                ConnectionCapHandler(counter: counter),
                HeaderOverflowHandler(maxHeaderBytes: o.maxHeaderBytes, maxFields: o.maxHeaderFields),
                RequestReadTimeoutHandler(seconds: o.requestReadTimeoutSeconds),
                WriteStallHandler(seconds: o.writeStallSeconds),
            ],
            idleTimeout: .seconds(Int64(o.idleTimeoutSeconds)),
            httpDecoderConfiguration: .init(maxHeaderFieldSize: o.maxHeaderBytes, maxHeaderListSize: o.maxHeaderBytes, maxHeaderFieldCount: o.maxHeaderFields))
    }

    static func collect(_ request: Request, limit: Int) async throws -> [UInt8] {
        if let len = request.headers[.contentLength].flatMap({ Int($0) }), len > limit { throw APIError.payloadTooLarge(limit: limit) }
        do {
            let buffer = try await request.body.collect(upTo: limit)
            return Array(buffer.readableBytesView)
        } catch is NIOTooManyBytesError {
            throw APIError.payloadTooLarge(limit: limit)
        }
    }

    static func writeModel(_ e: Endpoint, to w: inout JSONWriter) {
        w.objectStart()
        w.field("id", e.model)
        w.field("object", "model")
        w.field("created", Int(e.createdAt / 1000))
        w.field("owned_by", "xerotier")
        w.objectEnd()
    }

    static func writeRegistryModel(_ m: ModelRecord, to w: inout JSONWriter) {
        w.objectStart()
        w.field("id", m.name)
        w.field("object", "model")
        w.field("created", Int(m.createdAt))
        w.field("owned_by", m.isPlatform ? "platform" : m.owner)
        w.objectEnd()
    }

    static func json(_ bytes: [UInt8], status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}
