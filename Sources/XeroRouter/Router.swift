import Crypto
import Foundation
import Logging
import Synchronization
import XeroCore
import XeroMetrics
import XeroQueue
import XeroStore

/// Addresses the router binds. Gateways and workers connect to them.
public struct RouterEndpoints: Sendable {
    /// Gateways PUSH job envelopes and cancellations here (router PULL).
    public var jobs: String
    /// Workers' DEALER sockets talk to this ROUTER socket (hello, credits, heartbeats, done; jobs back).
    public var workers: String
    /// Workers publish stream events here (router XSUB, subscribed to everything).
    public var eventsIn: String
    /// Gateways subscribe here to their own prefix (router XPUB).
    public var eventsOut: String

    public init(jobs: String, workers: String, eventsIn: String, eventsOut: String) {
        self.jobs = jobs
        self.workers = workers
        self.eventsIn = eventsIn
        self.eventsOut = eventsOut
    }

    /// Four consecutive TCP ports from `base` on `host`.
    public static func tcp(host: String = "127.0.0.1", base: Int) -> RouterEndpoints {
        RouterEndpoints(jobs: "tcp://\(host):\(base)", workers: "tcp://\(host):\(base + 1)",
                        eventsIn: "tcp://\(host):\(base + 2)", eventsOut: "tcp://\(host):\(base + 3)")
    }
}

/// The router process: one thread owns its four sockets and the `TierScheduler`; every decision is
/// made there, synchronously, in arrival order. It forwards worker events to gateways (XSUB→XPUB
/// proxy) and answers expired or orphaned jobs itself on the same channels.
public final class Router: Sendable {
    public struct Options: Sendable {
        public var tickMs = 10
        /// A worker silent this long is dropped from dispatch.
        public var workerTimeoutMs: Int64 = 3000
        public var statsEveryMs: Int64 = 100
        /// Workers must present a valid join key (`xero:joinkey:<sha256>`, not revoked) in `hello`.
        public var requireJoinKey = true
        /// Jobs queued at most across tiers (TierScheduler.maxQueued).
        public var maxQueuedJobs = 100_000
        /// Where join keys are checked (nil = no check possible: every hello is refused if required).
        public var redis: RedisAddress?
        /// CURVE on every socket with this router's ZAP handler (the default in every command), or
        /// plain ZeroMQ behind `--insecure-plaintext-fabric`.
        public var security: RouterSecurity = .plaintext
        /// A gateway (or batch runner) not heard from for this long is gone: its jobs are cancelled.
        public var gatewayTimeoutMs: Int64 = 5000
        /// After its start the router waits this long for workers to (re)join before it answers a
        /// job no live worker could serve with an immediate 503 (until then such jobs queue).
        public var workerGraceMs: Int64 = 5000
        /// When a failing worker is taken out of dispatch, and for how long (`WorkerBreaker`).
        public var breaker = WorkerBreaker.Policy()
        public init() {}
    }

    static let jobsSocket = 0, workersSocket = 1, eventsInSocket = 2, eventsOutSocket = 3, zapSocket = 4

    public let id: String
    public let boundEndpoints: RouterEndpoints
    private let loop: SocketLoop
    private let context: ZMQContext

    /// `settlements`: where finished jobs are billed (nil: nothing is accounted).
    public init(config: PlatformConfig, endpoints: RouterEndpoints, ops: OpsRecorder?, settlements: RateLimiter? = nil,
                options: Options = Options(), metrics: RouterMetrics = RouterMetrics(), logger: Logger) throws {
        let context = ZMQContext()
        // The ZAP handler first: libzmq asks it about every CURVE handshake in this context, and a
        // CURVE socket without one would admit any key pair.
        var zap: ZMQSocket?
        if case .curve = options.security {
            let z = try ZMQSocket(context, .rep)
            try z.bind("inproc://zeromq.zap.01")
            zap = z
        }
        let jobs = try ZMQSocket(context, .pull)
        let workers = try ZMQSocket(context, .router)
        let eventsIn = try ZMQSocket(context, .xsub)
        let eventsOut = try ZMQSocket(context, .xpub)
        // Bounded queues (PipeBounds) and message sizes (WireLimits): no peer can make the router
        // allocate without end. A gateway that stops reading its events loses them (XPUB drops at
        // its bound) and fails its own requests on the gap; the other gateways are not affected.
        for s in [jobs, workers] {
            try s.set(.sendHighWaterMark(PipeBounds.control))
            try s.set(.receiveHighWaterMark(PipeBounds.control))
        }
        for s in [eventsIn, eventsOut] {
            try s.set(.sendHighWaterMark(PipeBounds.events))
            try s.set(.receiveHighWaterMark(PipeBounds.events))
        }
        try jobs.set(.maxMessageSize(WireLimits.maxJobFrameBytes))
        try workers.set(.maxMessageSize(WireLimits.maxControlFrameBytes))
        try eventsIn.set(.maxMessageSize(WireLimits.maxEventFrameBytes))
        try eventsOut.set(.maxMessageSize(PipeBounds.subscriptionBytes))
        try workers.set(.routerMandatory)
        try eventsOut.set(.xpubVerbose)
        if case let .curve(server, _) = options.security {
            for (socket, domain) in [(jobs, FabricGuard.jobsDomain), (workers, FabricGuard.workersDomain),
                                     (eventsIn, FabricGuard.eventsInDomain), (eventsOut, FabricGuard.eventsOutDomain)] {
                try socket.secure(.server(server, domain: domain))
            }
            for socket in [jobs, workers, eventsIn] { socket.wantsUserID = true }
        }
        let bound = RouterEndpoints(jobs: try jobs.bind(endpoints.jobs), workers: try workers.bind(endpoints.workers),
                                    eventsIn: try eventsIn.bind(endpoints.eventsIn), eventsOut: try eventsOut.bind(endpoints.eventsOut))
        // XSUB subscribes to every topic: a worker's events flow from its first message on,
        // with no subscription race; gateways filter at the XPUB.
        _ = try eventsIn.send([[1]])

        let id = randomID("router-", length: 8)
        var scheduler = TierScheduler(tiers: config.tiers)
        scheduler.maxQueued = options.maxQueuedJobs
        scheduler.breakerPolicy = options.breaker
        let core = RouterState(id: id, scheduler: scheduler, ops: ops, options: options, metrics: metrics, logger: logger,
                               ticketKey: JobTicket.key(for: options.security))
        core.settlements = settlements
        if case let .curve(_, platformPublicKey) = options.security {
            core.fabric = FabricGuard(platformPublicKey: platformPublicKey, lookupAgent: { [core] key in try core.agentJoinKeyHash(publicKey: key) })
        }
        self.id = id
        self.context = context
        self.boundEndpoints = bound
        self.loop = SocketLoop(
            name: "router", sockets: [jobs, workers, eventsIn, eventsOut] + (zap.map { [$0] } ?? []), tickMs: options.tickMs,
            onMessage: { ctx, socket, frames in core.handle(ctx, socket: socket, frames: frames) },
            onTick: { ctx in core.tick(ctx) })
        logger.info("router listening", metadata: ["jobs": "\(bound.jobs)", "workers": "\(bound.workers)",
                                                     "events_in": "\(bound.eventsIn)", "events_out": "\(bound.eventsOut)"])
    }

    public func start() { loop.start() }

    public func stop() {
        loop.stop()
        context.terminate()
    }
}

/// The router's state. Only the loop thread touches it (handlers and ticks run there), which is
/// what makes the unchecked Sendable sound.
final class RouterState: @unchecked Sendable {
    let id: String
    var scheduler: TierScheduler
    let ops: OpsRecorder?
    let options: Router.Options
    let metrics: RouterMetrics
    let logger: Logger
    var lastStatsMs: Int64 = 0
    /// What was last written to each worker's ops record and when: the stats tick rewrites only
    /// records whose counts moved (operators see them within a tick), heartbeats at most once a second.
    var recorded: [String: (free: Int, inflight: Int, atMs: Int64)] = [:]
    var lastPruneMs: Int64 = 0
    var lastLivenessMs: Int64 = 0
    var lastTickMs: Int64 = 0
    static let stallWarningMs: Int64 = 2000
    var lastRevocationCheckMs: Int64 = 0
    /// CURVE mode: the ZAP judge, and the authenticated identity (ZAP User-Id) each worker said
    /// hello with. A frame whose User-Id is not its worker's is ignored.
    var fabric: FabricGuard?
    var workerUsers: [String: String] = [:]
    /// Jobs finished recently: a job's last events may arrive after its `done` (they travel on
    /// another socket), and must still be accepted from its worker's identity only (CURVE); a
    /// Lazy Pirate duplicate of it is acknowledged, not run again; and its worker may hand it to
    /// us again for a replay to a client that missed its end (docs/routing.md, "A replay goes out
    /// only when its client is subscribed"), which must not finish it twice.
    struct FinishedJob {
        var worker: String
        /// The worker's ZAP User-Id (CURVE only).
        var user: String?
        var client: String
        var attempt: Int
        var atMs: Int64
    }
    var recentlyFinished: [String: FinishedJob] = [:]
    /// Finishes in order, each with its time: a request that finished twice has two, the table only its latest.
    var recentlyFinishedOrder: [(requestId: String, atMs: Int64)] = []
    static let recentlyFinishedCapacity = 100_000
    /// How far back a returning client's finished jobs are replayed (workers keep them 2.5 s).
    static let replayFinishedForMs: Int64 = 3000
    var droppedEvents = 0
    /// Billing: every job the router accepted is settled once, when it ends (docs/seams.md, §4).
    var settlements: RateLimiter?
    /// Gateways and batch runners that said `alive`, with when they last did.
    var gateways: [String: Int64] = [:]
    let startedAtMs = nowMs()
    /// Streaming jobs whose worker died, held for their client's `resume` until the deadline.
    var awaitingResume: [String: (job: JobEnvelope, untilMs: Int64)] = [:]
    static let resumeWaitMs: Int64 = 3000
    /// Seals the tickets it gives workers and opens the ones they adopt with (docs/routing.md, "Handover").
    let ticketKey: SymmetricKey
    /// The demand last told each worker (`RouterMessage.ack`), and whether queues changed since.
    var demandSent: [String: Int] = [:]
    var demandDirty = false
    /// The clients our events-out XPUB reaches, and adoptions waiting for theirs.
    var channels = ClientChannels()

    init(id: String, scheduler: TierScheduler, ops: OpsRecorder?, options: Router.Options, metrics: RouterMetrics, logger: Logger,
         ticketKey: SymmetricKey) {
        self.ticketKey = ticketKey
        self.id = id
        self.scheduler = scheduler
        self.ops = ops
        self.options = options
        self.metrics = metrics
        self.logger = logger
    }

    func handle(_ ctx: LoopContext, socket: Int, frames: [[UInt8]]) {
        switch socket {
        case Router.zapSocket:
            guard fabric != nil else { return }
            ctx.send(socket: Router.zapSocket, frames: fabric!.reply(to: frames, now: nowMs()))
        case Router.eventsInSocket:
            if fabric != nil, !eventIsFromItsWorker(frames, user: ctx.userID(of: socket)) { return }
            ctx.send(socket: Router.eventsOutSocket, frames: frames)
        case Router.jobsSocket:
            if fabric != nil, ctx.userID(of: socket) != FabricGuard.platformUser {
                logger.warning("message on the jobs socket from a non-platform peer dropped", metadata: ["user": "\(ctx.userID(of: socket) ?? "none")"])
                return
            }
            guard frames.count == 1 else {
                logger.warning("bad message from a gateway dropped", metadata: ["error": "\(frames.count) frames, expected 1"])
                return
            }
            do { try handleGateway(ctx, GatewayMessage.decode(frames[0])) } catch {
                logger.warning("bad message from a gateway dropped", metadata: ["error": "\(error)"])
            }
        case Router.workersSocket:
            let worker = String(decoding: frames[0], as: UTF8.self)
            guard frames.count == 2 else {
                logger.warning("bad message from a worker dropped", metadata: ["worker": "\(worker)", "error": "\(frames.count) frames, expected 2"])
                return
            }
            do { try handleWorker(ctx, identity: frames[0], worker: worker, user: ctx.userID(of: socket), WorkerMessage.decode(frames[1])) } catch {
                logger.warning("bad message from a worker dropped", metadata: ["worker": "\(worker)", "error": "\(error)"])
            }
        case Router.eventsOutSocket:
            guard let f = frames.first else { return }
            if f.first == 1 {
                // A gateway (re)subscribed to its prefix: confirm on that prefix so it knows its
                // channel is live before it accepts traffic.
                ctx.send(socket: Router.eventsOutSocket, frames: [Array(f.dropFirst()), Array("subscribed".utf8)])
            }
            if let change = channels.subscription(f) { clientChannelChanged(ctx, change) }
        default: break
        }
    }

    func handleGateway(_ ctx: LoopContext, _ msg: GatewayMessage) throws {
        let now = nowMs()
        switch msg {
        case var .submit(job):
            job.attempt = max(1, job.attempt)
            // A client re-submits a job it has no ack for (Lazy Pirate): one we hold already, or
            // just finished, is acknowledged again and not queued twice.
            // A re-submission with a later attempt (a client that moved it after losing its
            // router, and never saw it end) is run again.
            let finishedHere = recentlyFinished[job.requestId].map { job.attempt <= $0.attempt } ?? false
            if scheduler.holds(job.requestId) || finishedHere || awaitingResume[job.requestId] != nil {
                notify(ctx, job.replyTo, .accepted(requestId: job.requestId, routerId: id))
                return
            }
            guard let tier = scheduler.tier(job.tier) else {
                publishError(ctx, job, APIError.internalError("Unknown service tier '\(job.tier)'."))
                return
            }
            if job.queueDeadlineMs <= now {
                publishError(ctx, job, APIError.noCapacity(model: job.model, tier: tier.name, waitedMs: tier.queueTimeoutMs))
                return
            }
            if now - startedAtMs >= options.workerGraceMs, !scheduler.anyWorkerCouldServe(job) {
                // Nothing alive could ever run it: say so now instead of after the queue timeout.
                publishError(ctx, job, APIError.noWorker(model: job.model, tier: tier.name))
                return
            }
            if let refusal = Self.refusal(scheduler.submit(job), tier: tier) {
                publishError(ctx, job, refusal)
                metrics.jobEnded(tier: tier.name, outcome: "refused")
                return
            }
            notify(ctx, job.replyTo, .accepted(requestId: job.requestId, routerId: id))
            ops?.job(job.requestId, [("state", "queued"), ("tier", job.tier), ("project", job.project), ("endpoint", job.endpoint),
                                     ("model", job.model), ("attempt", String(job.attempt)), ("gateway", job.replyTo), ("router", id),
                                     ("accepted_at", String(job.acceptedAtMs)), ("queued_at", String(now))])
            ops?.place(job.requestId, tier: job.tier, .waiting(sinceMs: job.acceptedAtMs))
            dispatch(ctx, now: now)
            if scheduler.inflight[job.requestId] == nil { announceDemand(ctx, for: job) }
        case let .resume(requestId, fromSeq, tokens):
            // The client continues a job whose worker died mid-stream: the same job, one attempt
            // on, replaying what the client has, at the front of its queue.
            guard var job = awaitingResume.removeValue(forKey: requestId)?.job else { return }
            job.attempt += 1
            job.replay = JobEnvelope.Replay(fromSeq: fromSeq, tokens: tokens)
            scheduler.resubmitFront(job)
            ops?.job(requestId, [("state", "queued"), ("attempt", String(job.attempt)), ("replayed_tokens", String(tokens.count))])
            ops?.place(requestId, tier: job.tier, .waiting(sinceMs: job.acceptedAtMs))
            logger.info("job resumed after its worker died", metadata: ["request_id": "\(requestId)", "attempt": "\(job.attempt)",
                                                                        "replayed_tokens": "\(tokens.count)"])
            dispatch(ctx, now: now)
        case let .relocate(ids):
            // A client lost the router relaying these: whichever of our workers runs one adopts it here.
            let unknown = ids.filter { !scheduler.holds($0) }
            guard !unknown.isEmpty else { return }
            let frame = RouterMessage.relocate(unknown).encode()
            for worker in scheduler.workers.keys { ctx.send(socket: Router.workersSocket, frames: [Array(worker.utf8), frame]) }
            logger.info("asked workers to adopt jobs a client lost the relay of", metadata: ["jobs": "\(unknown.count)"])
        case let .alive(gateway):
            if gateways.updateValue(now, forKey: gateway) == nil {
                logger.info("gateway alive", metadata: ["gateway": "\(gateway)"])
            }
        case let .cancel(requestId):
            if let (job, _) = awaitingResume.removeValue(forKey: requestId) {
                // Not to be continued (its client left, or could not replay it): nothing billed.
                settle(job, usage: nil)
                ops?.job(requestId, [("state", "error:worker_lost"), ("finished_at", String(now))])
                jobGone(job, outcome: "failed")
                return
            }
            switch scheduler.cancel(requestId) {
            case let .dequeued(job):
                settle(job, usage: nil)
                ops?.job(requestId, [("state", "cancelled"), ("finished_at", String(now))])
                jobGone(job, outcome: "cancelled")
            case let .running(worker):
                ctx.send(socket: Router.workersSocket, frames: [Array(worker.utf8), RouterMessage.cancel(requestId: requestId).encode()])
            case .unknown: break
            }
        }
    }

    func handleWorker(_ ctx: LoopContext, identity: [UInt8], worker: String, user: String?, _ msg: WorkerMessage) throws {
        let now = nowMs()
        if case let .hello(info) = msg {
            guard info.id == worker else {
                ctx.send(socket: Router.workersSocket, frames: [identity, RouterMessage.refused("worker id must equal its routing id").encode()])
                return
            }
            if fabric != nil, let bound = workerUsers[worker], bound != user {
                // Another connection claims a live worker's routing id: never let it take over.
                logger.warning("hello for a worker id held by another identity ignored", metadata: ["worker": "\(worker)", "user": "\(user ?? "none")"])
                return
            }
            let fleet: AgentFleet
            switch fleetOf(user: user, presentedJoinKey: info.joinKey) {
            case let .refused(why):
                logger.warning("worker refused", metadata: ["worker": "\(worker)", "reason": "\(why)"])
                ctx.send(socket: Router.workersSocket, frames: [identity, RouterMessage.refused(why).encode()])
                return
            case let .accepted(f): fleet = f
            }
            if let existing = scheduler.workers[worker], existing.fleet != fleet {
                // A routing id already taken by another fleet's worker: never let one hijack the other.
                logger.warning("worker refused", metadata: ["worker": "\(worker)", "reason": "routing id in use by another fleet"])
                ctx.send(socket: Router.workersSocket, frames: [identity, RouterMessage.refused("worker id in use").encode()])
                return
            }
            let known = scheduler.knows(worker)
            scheduler.join(info, fleet: fleet, now: now)
            if let user { workerUsers[worker] = user }
            logger.info(known ? "worker re-joined" : "worker joined", metadata: ["worker": "\(worker)", "slots": "\(info.slots)",
                                                                               "models": "\(info.models.joined(separator: ","))", "engine": "\(info.engine)"])
            recordWorker(worker, now: now)
            dispatch(ctx, now: now)
            return
        }
        if case let .modelRequest(name, joinKey) = msg {
            // Before hello: a worker started with --model asks for its file. Answered to this
            // connection only, for what its join key's fleet may see.
            let answer: RouterMessage
            switch fleetOf(user: user, presentedJoinKey: joinKey) {
            case let .refused(why): answer = .modelRefused(name: name, reason: why)
            case let .accepted(fleet): answer = grantModel(name, fleet: fleet)
            }
            if case .modelGrant = answer { logger.info("model download granted", metadata: ["worker": "\(worker)", "model": "\(name)"]) }
            ctx.send(socket: Router.workersSocket, frames: [identity, answer.encode()])
            return
        }
        if fabric != nil, let bound = workerUsers[worker], bound != user {
            logger.warning("worker message from another identity ignored", metadata: ["worker": "\(worker)", "user": "\(user ?? "none")"])
            return
        }
        guard scheduler.knows(worker), fabric == nil || workerUsers[worker] != nil else {
            // We restarted, or dropped it as silent: ask who it is.
            if msg != .bye { ctx.send(socket: Router.workersSocket, frames: [identity, RouterMessage.identify.encode()]) }
            return
        }
        scheduler.seen(worker, now: now)
        switch msg {
        case .hello, .modelRequest: break
        case let .credit(n):
            scheduler.credit(worker, n, now: now)
            dispatch(ctx, now: now)
        case let .heartbeat(active):
            scheduler.reportLoad(worker, active: active)
            let demand = scheduler.demand(for: worker)
            demandSent[worker] = demand
            ctx.send(socket: Router.workersSocket, frames: [identity, RouterMessage.ack(routerId: id, demand: demand).encode()])
            if now - (recorded[worker]?.atMs ?? 0) >= 1000 { recordWorker(worker, now: now) }
        case let .reclaim(n):
            let k = scheduler.reclaim(worker, n)
            ctx.send(socket: Router.workersSocket, frames: [identity, RouterMessage.returned(k).encode()])
        case let .adopt(ticket, started):
            adopt(ctx, identity: identity, worker: worker, ticket: ticket, started: started, now: now)
        case let .moved(requestId):
            if scheduler.forget(requestId, worker: worker) != nil {
                ops?.job(requestId, [("relayed_by", "another router")])
                dispatch(ctx, now: now)
            }
        case let .prefixes(hashes):
            // For prefix-aware placement, and recorded for operators.
            scheduler.reportPrefixes(worker, hashes: hashes)
            ops?.workerPrefixes(worker, hashes.map { String($0, radix: 16) })
        case let .started(requestId):
            guard scheduler.markStarted(requestId, worker: worker, now: now) else {
                logger.warning("'started' for a job this worker does not run ignored", metadata: ["worker": "\(worker)", "request_id": "\(requestId)"])
                return
            }
            ops?.job(requestId, [("state", "running"), ("first_token_at", String(now))])
        case let .done(report) where report.outcome == "requeue":
            // Sent against a credit the worker had written off: queued again, unchanged.
            if let job = scheduler.requeue(report.requestId, worker: worker) {
                ops?.job(job.requestId, [("state", "queued")])
                ops?.place(job.requestId, tier: job.tier, .waiting(sinceMs: job.acceptedAtMs))
            }
            dispatch(ctx, now: now)
        case let .done(report) where report.outcome == "duplicate":
            // The worker runs this request already (for another router): this copy never ran.
            scheduler.finish(report.requestId, worker: worker, outcome: .neutral, now: now, returnsCredit: report.returnsCredit)
            dispatch(ctx, now: now)
        case let .done(report):
            if let finished = scheduler.finish(report.requestId, worker: worker, outcome: WorkerBreaker.Outcome(report: report.outcome), now: now,
                                               returnsCredit: report.returnsCredit) {
                // Its time per output token (the worker's clock at both ends) at the jobs it decoded beside.
                if report.outcome == "done", report.completionTokens > 1, report.finishedAtMs > report.firstTokenAtMs, report.firstTokenAtMs > 0 {
                    scheduler.observeTPOT(worker, jobs: finished.tpotJobs,
                                          ms: Double(report.finishedAtMs - report.firstTokenAtMs) / Double(report.completionTokens - 1))
                }
                settle(finished.envelope, usage: Self.billedUsage(report))
                rememberFinished(finished.envelope, worker: worker, now: now)
                ops?.job(report.requestId, [("state", report.outcome == "done" ? "done" : report.outcome), ("finished_at", String(report.finishedAtMs)),
                                            ("prompt_tokens", String(report.promptTokens)), ("completion_tokens", String(report.completionTokens))])
                jobGone(finished.envelope, outcome: JobReport.kind(ofOutcome: report.outcome))
            }
            dispatch(ctx, now: now)
        case .draining:
            scheduler.drain(worker)
            logger.info("worker draining", metadata: ["worker": "\(worker)"])
            recordWorker(worker, now: now)
        case .bye:
            dropWorker(ctx, worker, reason: "said goodbye", now: now)
        }
    }

    var joinKeyConnection: RedisConnection?

    enum JoinKeyCheck { case accepted(AgentFleet), refused(String) }

    /// The Redis connection for the router's rare lookups (join keys, worker keys), on the loop
    /// thread: hellos and handshakes are rare, and it keeps the checks in arrival order.
    func lookupConnection() throws -> RedisConnection {
        guard let address = options.redis else { throw RedisError("this router has no Redis to check keys") }
        if joinKeyConnection == nil || joinKeyConnection!.isBroken { joinKeyConnection = try RedisConnection(address) }
        return joinKeyConnection!
    }

    /// The join-key hash a worker's CURVE public key stands for, if that join key exists and is
    /// not revoked (ZAP).
    func agentJoinKeyHash(publicKey: String) throws -> String? {
        let conn = try lookupConnection()
        do {
            guard let hash = try conn.command(["GET", RedisKeys.curveKey(publicKey)]).string else { return nil }
            let revoked = try conn.command(["HGET", RedisKeys.joinKey(hash: hash), "revoked"]).string
            return revoked == "0" ? hash : nil
        } catch {
            joinKeyConnection = nil
            throw error
        }
    }

    /// The fleet a worker's connection stands for. With CURVE the handshake proved the join key
    /// (the User-Id names its hash); on a plain fabric the worker presents the key itself.
    func fleetOf(user: String?, presentedJoinKey: String) -> JoinKeyCheck {
        guard options.requireJoinKey || fabric != nil else { return .accepted(.platform) }
        let joinKeyHash: String? = fabric == nil ? (presentedJoinKey.isEmpty ? nil : APIKey.hash(presentedJoinKey))
            : user.flatMap { $0.hasPrefix(FabricGuard.agentPrefix) ? String($0.dropFirst(FabricGuard.agentPrefix.count)) : nil }
        return checkJoinKey(hash: joinKeyHash)
    }

    /// Whether a join key is acceptable and which fleet its workers belong to.
    func checkJoinKey(hash: String?) -> JoinKeyCheck {
        guard let hash else { return .refused("a join key is required (worker --join-key)") }
        guard options.redis != nil else { return .refused("this router cannot check join keys (no Redis)") }
        do {
            let h = try lookupConnection().command(["HGETALL", RedisKeys.joinKey(hash: hash)]).hash
            if h.isEmpty { return .refused("unknown join key") }
            if h["revoked"] == "1" { return .refused("join key revoked") }
            var slug: String?
            if h["fleet"] == nil, let p = h["project"], !p.isEmpty {
                slug = try joinKeyConnection!.command(["HGET", RedisKeys.project(p), "slug"]).string
            }
            return .accepted(TenancyStore.fleet(of: h, projectSlug: slug))
        } catch {
            joinKeyConnection = nil
            return .refused("cannot check the join key: \(error)")
        }
    }

    /// An event is passed on only from the worker its job was given to (by ZAP User-Id). Anything
    /// else — an outsider cannot get here at all, but another worker can — is dropped.
    func eventIsFromItsWorker(_ frames: [[UInt8]], user: String?) -> Bool {
        guard frames.count == 2, let slash = frames[0].lastIndex(of: UInt8(ascii: "/")) else { return false }
        let requestId = String(decoding: frames[0][(slash + 1)...], as: UTF8.self)
        let ownerUser = scheduler.inflight[requestId].flatMap { workerUsers[$0.worker] } ?? recentlyFinished[requestId]?.user
        if let ownerUser, let user, ownerUser == user { return true }
        droppedEvents += 1
        if droppedEvents % 1000 == 1 {
            logger.warning("events for a job the sender does not run dropped", metadata: ["user": "\(user ?? "none")", "request_id": "\(requestId)",
                                                                                        "dropped_total": "\(droppedEvents)"])
        }
        return false
    }

    /// Keeps the finished job's worker and its identity (`FinishedJob`). The identity, not only
    /// the worker id: a draining worker says `done` and `bye` on its control socket while its last
    /// events are still on the events socket, and those must pass after the worker is gone.
    func rememberFinished(_ job: JobEnvelope, worker: String, now: Int64) {
        let requestId = job.requestId
        recentlyFinished[requestId] = FinishedJob(worker: worker, user: workerUsers[worker], client: job.replyTo, attempt: job.attempt, atMs: now)
        recentlyFinishedOrder.append((requestId, now))
        if recentlyFinishedOrder.count > Self.recentlyFinishedCapacity {
            let old = recentlyFinishedOrder.prefix(Self.recentlyFinishedCapacity / 2)
            // A pruned finish takes its record only if no later finish replaced it.
            for (id, at) in old where recentlyFinished[id]?.atMs == at { recentlyFinished[id] = nil }
            recentlyFinishedOrder.removeFirst(old.count)
        }
    }

    /// Revoked join keys: their workers are dropped (unstarted jobs re-queued, started ones fail)
    /// and their frames ignored from then on (libzmq cannot disconnect one peer of a ROUTER).
    func checkRevocations(_ ctx: LoopContext, now: Int64) {
        let agents = workerUsers.filter { $0.value.hasPrefix(FabricGuard.agentPrefix) }
        guard !agents.isEmpty, let conn = try? lookupConnection() else { return }
        let order = Array(agents)
        guard let replies = try? conn.pipeline(order.map { [Array("HGET".utf8), Array(RedisKeys.joinKey(hash: String($0.value.dropFirst(FabricGuard.agentPrefix.count))).utf8), Array("revoked".utf8)] }) else {
            joinKeyConnection = nil
            return
        }
        for (i, (worker, user)) in order.enumerated() where replies[i].string != "0" {
            logger.warning("join key revoked: worker dropped", metadata: ["worker": "\(worker)", "user": "\(user)"])
            workerUsers[worker] = "revoked"   // never matches a User-Id again
            fabric?.forget()
            if scheduler.knows(worker) { dropWorker(ctx, worker, reason: "join key revoked", now: now) }
        }
    }

    func tick(_ ctx: LoopContext) {
        let now = nowMs()
        // A loop that could not run for a long time (a blocking lookup, a starved machine) would
        // blame its workers for the silence it caused: say so, and hear them before judging.
        if lastTickMs > 0, now - lastTickMs > Self.stallWarningMs {
            logger.warning("router loop stalled", metadata: ["ms": "\(now - lastTickMs)"])
            lastLivenessMs = now
        }
        lastTickMs = now
        if now - lastAliveNoticeMs >= Self.aliveNoticeEveryMs {
            lastAliveNoticeMs = now
            for gateway in gateways.keys { notify(ctx, gateway, .alive(routerId: id)) }
        }
        if fabric != nil, now - lastRevocationCheckMs >= 500 {
            lastRevocationCheckMs = now
            checkRevocations(ctx, now: now)
        }
        for (id, held) in awaitingResume where held.untilMs <= now {
            // Its client did not resume it: it ends as any job whose worker was lost.
            awaitingResume[id] = nil
            publishError(ctx, held.job, APIError.workerLost())
            ops?.job(id, [("state", "error:worker_lost"), ("finished_at", String(now))])
            jobGone(held.job, outcome: "failed")
        }
        for job in scheduler.expire(now: now) {
            let tier = scheduler.tier(job.tier)
            publishError(ctx, job, APIError.noCapacity(model: job.model, tier: job.tier, waitedMs: tier?.queueTimeoutMs ?? 0))
            ops?.job(job.requestId, [("state", "expired"), ("finished_at", String(now))])
            jobGone(job, outcome: "expired")
        }
        if now - lastLivenessMs >= 250 {
            lastLivenessMs = now
            for w in scheduler.silentWorkers(now: now, timeoutMs: options.workerTimeoutMs) {
                dropWorker(ctx, w, reason: "no heartbeat for \(options.workerTimeoutMs) ms", now: now)
            }
            abandonSilentGateways(ctx, now: now)
            refuseStaleAdoptions(ctx, now: now)
        }
        if demandDirty {
            demandDirty = false
            refreshDemand(ctx)
        }
        if now - lastStatsMs >= options.statsEveryMs {
            lastStatsMs = now
            for t in scheduler.tiers {
                let s = scheduler.stats[t.name]!
                ops?.tier(t.name, router: id, [("depth", String(scheduler.depth(t.name))), ("inflight", String(s.inflight)),
                                   ("submitted_total", String(s.submitted)), ("dispatched_total", String(s.dispatched)),
                                   ("completed_total", String(s.completed)), ("expired_total", String(s.expired)),
                                   ("updated_at", String(now))])
                metrics.tier(t.name, waiting: scheduler.depth(t.name), running: s.inflight)
            }
            recordWorkerCounts()
            for (worker, w) in scheduler.workers where recorded[worker].map({ ($0.free, $0.inflight) != (w.credits, w.inflight.count) }) ?? true {
                recordWorker(worker, now: now)
            }
            ops?.routerAlive(id, now: now)
            if now - lastPruneMs >= 10_000 {
                lastPruneMs = now
                for t in scheduler.tiers {
                    // A minute of slack past the tier's own bounds: only what no router can still hold.
                    ops?.pruneIndexes(tier: t.name, waitingBefore: now - Int64(t.queueTimeoutMs) - 60_000,
                                      runningBefore: now - Int64(t.requestTimeoutMs) - 60_000)
                }
            }
        }
    }

    func dispatch(_ ctx: LoopContext, now: Int64) {
        demandDirty = true
        for d in scheduler.dispatch(now: now) {
            let ticket = JobTicket(envelope: d.envelope, worker: d.worker).seal(with: ticketKey)
            let sent = ctx.send(socket: Router.workersSocket, frames: [Array(d.worker.utf8), RouterMessage.job(d.envelope.forWorker, ticket: ticket).encode()])
            if sent {
                logger.debug("job dispatched", metadata: ["request_id": "\(d.envelope.requestId)", "project": "\(d.envelope.project)",
                                                          "endpoint": "\(d.envelope.endpoint)", "tier": "\(d.envelope.tier)", "worker": "\(d.worker)"])
                metrics.dispatched(tier: d.envelope.tier, model: d.envelope.model,
                                   waitedSeconds: Double(now.subtractingReportingOverflow(d.envelope.acceptedAtMs).partialValue) / 1000)
                ops?.job(d.envelope.requestId, [("state", "dispatched"), ("worker", d.worker), ("attempt", String(d.envelope.attempt)),
                                                ("dispatched_at", String(now))])
                ops?.place(d.envelope.requestId, tier: d.envelope.tier, .running(sinceMs: now))
                if let p = d.prediction {
                    // Sent before the worker can answer, on the same socket as its events: the
                    // gateway has it when the first event comes (docs/routing.md, "SLO-aware placement").
                    let ev = StreamEvent(requestId: d.envelope.requestId, attempt: d.envelope.attempt, seq: WireLimits.outOfBandSeq,
                                         body: .placed(predictedTTFTMs: min(p.ttftMs ?? -1, WireLimits.sloMs.upperBound),
                                                       predictedTPOTMs: min(p.tpotMs ?? -1, WireLimits.sloMs.upperBound)))
                    ctx.send(socket: Router.eventsOutSocket, frames: [Array(d.envelope.topic.utf8), ev.encode()])
                }
            } else {
                // The worker's connection is gone: drop it; its jobs (this one included) are re-queued.
                dropWorker(ctx, d.worker, reason: "unreachable", now: now)
            }
        }
    }

    func dropWorker(_ ctx: LoopContext, _ worker: String, reason: String, now: Int64) {
        let lost = scheduler.remove(worker, now: now)
        workerUsers[worker] = nil
        recorded[worker] = nil
        demandSent[worker] = nil
        logger.warning("worker removed", metadata: ["worker": "\(worker)", "reason": "\(reason)",
                                                     "requeued": "\(lost.requeued.count)", "failed": "\(lost.failed.count)"])
        for job in lost.requeued {
            ops?.job(job.requestId, [("state", "queued"), ("attempt", String(job.attempt)), ("requeued_from", worker)])
            ops?.place(job.requestId, tier: job.tier, .waiting(sinceMs: job.acceptedAtMs))
        }
        for job in lost.failed {
            publishError(ctx, job, APIError.workerLost())
            ops?.job(job.requestId, [("state", "error:worker_lost"), ("finished_at", String(now))])
            jobGone(job, outcome: "failed")
        }
        for job in lost.interrupted {
            // Its client may continue it on another worker (it knows what it has streamed): tell
            // it, and hold the job (unsettled) until it resumes, cancels, or the wait runs out.
            awaitingResume[job.requestId] = (job, now + Self.resumeWaitMs)
            let ev = StreamEvent(requestId: job.requestId, attempt: job.attempt, seq: WireLimits.outOfBandSeq, body: .lost(APIError.workerLost()))
            ctx.send(socket: Router.eventsOutSocket, frames: [Array(job.topic.utf8), ev.encode()])
            ops?.job(job.requestId, [("state", "migrating"), ("lost_worker", worker)])
        }
        ops?.workerGone(worker)
        dispatch(ctx, now: now)
    }

    /// Ends a job the router answers itself (unknown tier, queue timeout or full, worker lost): the
    /// client gets `error`, and nothing is billed — the reservation is refunded.
    /// The client's error for a submit the scheduler did not queue (nil: queued).
    static func refusal(_ outcome: TierScheduler.EnqueueOutcome, tier: Tier) -> APIError? {
        switch outcome {
        case .queued: return nil
        case .unknownTier: return APIError.internalError("Unknown service tier '\(tier.name)'.")
        case let .routerFull(n): return APIError.overloaded("The router's queues are full (\(n) jobs); retry shortly.")
        case let .tierFull(n): return APIError.overloaded("The '\(tier.name)' tier's queue is full (\(n) jobs); retry shortly.")
        case let .projectFull(n):
            return APIError.overloaded("This project has \(n) requests queued in the '\(tier.name)' tier, its limit; retry shortly.",
                                       code: "project_queue_full")
        }
    }

    /// A notice to one client, on its own topic `<client-id>/`.
    func notify(_ ctx: LoopContext, _ client: String, _ notice: RouterNotice) {
        ctx.send(socket: Router.eventsOutSocket, frames: [Array((client + "/").utf8), notice.encode()])
    }

    var lastAliveNoticeMs: Int64 = 0
    static let aliveNoticeEveryMs: Int64 = 250

    func publishError(_ ctx: LoopContext, _ job: JobEnvelope, _ error: APIError) {
        settle(job, usage: nil)
        // seq is far past any worker's so the gateway never mistakes it for a gap.
        let ev = StreamEvent(requestId: job.requestId, attempt: job.attempt, seq: Int(Int32.max), body: .error(error))
        ctx.send(socket: Router.eventsOutSocket, frames: [Array(job.topic.utf8), ev.encode()])
    }

    /// What a worker's final report bills (docs/tenancy.md, "Billing"): what it generated when the
    /// job finished, was cancelled or timed out; nothing when it failed (a failure is the platform's).
    static func billedUsage(_ report: JobReport) -> Usage? {
        guard report.outcome == "done" || report.outcome == "cancelled" || report.outcome == "timeout" else { return nil }
        return Usage(promptTokens: report.promptTokens, completionTokens: report.completionTokens)
    }

    /// Queues a finished job's settlement (once per request id: the script skips repeats).
    func settle(_ job: JobEnvelope, usage: Usage?) {
        guard let billing = job.billing, let settlements, let tier = scheduler.tier(job.tier) else { return }
        settlements.settle(RateLimiter.Settlement(requestId: job.requestId, project: job.project, endpoint: job.endpoint, tier: tier,
                                                  keyHash: billing.keyHash, reserved: billing.reservedTokens, usage: usage,
                                                  batchId: billing.batchId, acceptedAtMs: job.acceptedAtMs))
    }

    /// Gateways not heard from for `gatewayTimeoutMs`: nobody reads their jobs' answers any more,
    /// so the jobs are cancelled — queued ones at once (refunded), running ones at their worker
    /// (settled from its report, like any cancel).
    func abandonSilentGateways(_ ctx: LoopContext, now: Int64) {
        for (gateway, seen) in gateways where now - seen > options.gatewayTimeoutMs {
            gateways[gateway] = nil
            let gone = scheduler.abandon(replyTo: gateway)
            for job in gone.dequeued {
                settle(job, usage: nil)
                ops?.job(job.requestId, [("state", "cancelled"), ("finished_at", String(now))])
                jobGone(job, outcome: "cancelled")
            }
            for (requestId, worker) in gone.running {
                ctx.send(socket: Router.workersSocket, frames: [Array(worker.utf8), RouterMessage.cancel(requestId: requestId).encode()])
            }
            logger.warning("gateway gone: its jobs cancelled", metadata: ["gateway": "\(gateway)", "queued": "\(gone.dequeued.count)",
                                                                       "running": "\(gone.running.count)"])
        }
    }

    // MARK: Several routers (docs/routing.md, "Several routers")

    /// A job queued here with no worker holding a credit for it: tell the workers that could run
    /// it, and that were told no demand, at once (the rest rides on the next heartbeat's `ack`).
    func announceDemand(_ ctx: LoopContext, for job: JobEnvelope) {
        for (id, w) in scheduler.workers where w.credits == 0 && (demandSent[id] ?? 0) == 0 && w.mayRun(job) {
            sendDemand(ctx, worker: id, scheduler.demand(for: id))
        }
    }

    /// After queues changed (at most once a tick): every worker whose demand moved hears it.
    func refreshDemand(_ ctx: LoopContext) {
        for id in scheduler.workers.keys {
            let d = scheduler.demand(for: id)
            if d != (demandSent[id] ?? 0) { sendDemand(ctx, worker: id, d) }
        }
    }

    func sendDemand(_ ctx: LoopContext, worker: String, _ demand: Int) {
        demandSent[worker] = demand
        ctx.send(socket: Router.workersSocket, frames: [Array(worker.utf8), RouterMessage.ack(routerId: id, demand: demand).encode()])
    }

    /// A worker asks this router to relay a job another router dispatched to it. The ticket must
    /// open with the deployment's key and name this worker (whose connection, with CURVE, was
    /// already checked against the identity it said hello with).
    func adopt(_ ctx: LoopContext, identity: [UInt8], worker: String, ticket sealed: [UInt8], started: Bool, now: Int64) {
        guard let ticket = JobTicket.open(sealed, with: ticketKey), ticket.worker == worker else {
            logger.warning("adoption with a ticket that does not open or names another worker refused", metadata: ["worker": "\(worker)"])
            return
        }
        let job = ticket.envelope
        let ours = scheduler.inflight[job.requestId]?.worker == worker
        // A finish here counts only for the run it ended or an earlier one: a client that moved the
        // job (attempt + 4) had it run again, and that run is adopted as any other.
        if !ours, let done = recentlyFinished[job.requestId], job.attempt <= done.attempt {
            guard done.worker == worker else {
                // It finished here on another worker (this run was cut off and the job moved on):
                // the client has its answer; this run is not taken back, nor finished again.
                ctx.send(socket: Router.workersSocket, frames: [identity, RouterMessage.adoptRefused(requestId: job.requestId).encode()])
                logger.info("adoption refused: the request finished here on another worker", metadata: ["request_id": "\(job.requestId)", "worker": "\(worker)"])
                return
            }
            // Finished here already, handed back for a replay to a client that missed its end:
            // the replay goes on; its repeated `done` finds nothing to finish, so nothing is
            // counted or settled twice.
            ctx.send(socket: Router.workersSocket, frames: [identity, RouterMessage.adopted(requestId: job.requestId).encode()])
            notify(ctx, job.replyTo, .adopted(requestId: job.requestId, routerId: id))
            return
        }
        guard ours || channels.isSubscribed(job.replyTo) else {
            // Its client's channel is not here (yet): the `adopted` notice and the replay would be
            // dropped. Answered when the client subscribes (`clientChannelChanged`), refused after
            // a while. (A job we relay already is answered at once: the client's next
            // subscription replays it.)
            let waiting = ClientChannels.Adoption(identity: identity, worker: worker, requestId: job.requestId, client: job.replyTo,
                                                  ticket: sealed, started: started, sinceMs: now)
            if !channels.wait(waiting) {
                ctx.send(socket: Router.workersSocket, frames: [identity, RouterMessage.adoptRefused(requestId: job.requestId).encode()])
                logger.warning("adoption refused: too many wait for their client", metadata: ["request_id": "\(job.requestId)", "worker": "\(worker)"])
            }
            return
        }
        switch scheduler.adopt(job, worker: worker, started: started, now: now) {
        case .refused:
            ctx.send(socket: Router.workersSocket, frames: [identity, RouterMessage.adoptRefused(requestId: job.requestId).encode()])
            logger.info("adoption refused: the request runs here on another worker", metadata: ["request_id": "\(job.requestId)", "worker": "\(worker)"])
        case .alreadyHere:
            ctx.send(socket: Router.workersSocket, frames: [identity, RouterMessage.adopted(requestId: job.requestId).encode()])
        case let .adopted(dropped):
            ctx.send(socket: Router.workersSocket, frames: [identity, RouterMessage.adopted(requestId: job.requestId).encode()])
            notify(ctx, job.replyTo, .adopted(requestId: job.requestId, routerId: id))
            if dropped != nil { ops?.place(job.requestId, tier: job.tier, .running(sinceMs: now)) }
            ops?.job(job.requestId, [("state", started ? "running" : "dispatched"), ("worker", worker), ("relayed_by", id)])
            logger.info("job adopted", metadata: ["request_id": "\(job.requestId)", "worker": "\(worker)", "started": "\(started)",
                                                  "dropped_queued_copy": "\(dropped != nil)"])
        }
    }

    /// A client's channel came or went (docs/routing.md, "A replay goes out only when its client
    /// is subscribed"): adoptions that waited for it go on; if it came back (a new connection),
    /// what was published meanwhile is gone, so its running jobs' workers replay them to us.
    func clientChannelChanged(_ ctx: LoopContext, _ change: ClientChannels.Change) {
        let now = nowMs()
        switch change {
        case let .unsubscribed(client):
            logger.info("client's event channel gone", metadata: ["client": "\(client)"])
        case let .subscribed(client, returned, ready):
            for a in ready {
                adopt(ctx, identity: a.identity, worker: a.worker, ticket: a.ticket, started: a.started, now: now)
            }
            guard returned else { return }
            // Its running jobs, and those that ended while it was away (their workers keep them
            // 2.5 s), except the ones just adopted (their replay is under way).
            let adopted = Set(ready.map(\.requestId))
            var byWorker: [String: [String]] = [:]
            for (id, f) in scheduler.inflight where f.envelope.replyTo == client && !adopted.contains(id) { byWorker[f.worker, default: []].append(id) }
            for (id, at) in recentlyFinishedOrder.reversed() {
                guard now - at <= Self.replayFinishedForMs else { break }
                // Only a request's latest finish counts (an earlier one of it is skipped).
                guard let f = recentlyFinished[id], f.atMs == at, f.client == client else { continue }
                byWorker[f.worker, default: []].append(id)
            }
            for (worker, ids) in byWorker {
                for part in WireLimits.relocateParts(ids) {
                    ctx.send(socket: Router.workersSocket, frames: [Array(worker.utf8), RouterMessage.relocate(part).encode()])
                }
            }
            logger.info("client's event channel back: its jobs replayed", metadata: ["client": "\(client)",
                                                                                            "jobs": "\(byWorker.values.map(\.count).reduce(0, +))"])
        }
    }

    /// Adoptions whose client never subscribed here: refused (the worker stops the run only if
    /// nobody else relays it; a client that reaches it through another router has moved it there).
    func refuseStaleAdoptions(_ ctx: LoopContext, now: Int64) {
        for a in channels.expired(now: now) {
            ctx.send(socket: Router.workersSocket, frames: [a.identity, RouterMessage.adoptRefused(requestId: a.requestId).encode()])
            logger.warning("adoption refused: its client did not subscribe here", metadata: ["request_id": "\(a.requestId)", "worker": "\(a.worker)",
                                                                                            "client": "\(a.client)"])
        }
    }

    /// A job the router held is over: counted by how it ended, and out of its tier's indexes.
    func jobGone(_ job: JobEnvelope, outcome: String) {
        metrics.jobEnded(tier: job.tier, outcome: outcome)
        ops?.place(job.requestId, tier: job.tier, .gone)
    }

    func recordWorkerCounts() {
        var ready = 0, draining = 0, tripped = 0
        for (id, w) in scheduler.workers {
            if w.draining { draining += 1 } else if scheduler.breakers[id].map({ $0.state != .closed }) ?? false { tripped += 1 } else { ready += 1 }
        }
        metrics.workers(ready: ready, draining: draining, tripped: tripped)
    }

    func recordWorker(_ worker: String, now: Int64) {
        guard let w = scheduler.workers[worker] else { recorded[worker] = nil; return }
        recorded[worker] = (w.credits, w.inflight.count, now)
        ops?.worker(worker, lastSeenMs: now, [
            ("slots", String(w.info.slots)), ("free", String(w.credits)), ("inflight", String(w.inflight.count)),
            ("models", w.info.models.joined(separator: ",")), ("capabilities", w.info.capabilities.joined(separator: ",")),
            ("engine", w.info.engine), ("host", w.info.host), ("pid", String(w.info.pid)),
            ("state", w.draining ? "draining" : "ready"), ("last_heartbeat", String(now)), ("router", id), ("fleet", w.fleet.description),
            ("breaker", scheduler.breakers[worker]?.name ?? "closed"), ("breaker_trips", String(scheduler.breakers[worker]?.trips ?? 0)),
        ])
    }
}

/// How the router's sockets are secured.
public enum RouterSecurity: Sendable {
    /// Plain ZeroMQ (`--insecure-plaintext-fabric`): benchmarks only; anyone who can reach the
    /// ports can read and inject everything.
    case plaintext
    /// CURVE with the deployment's server key pair; `platformPublicKey` is the key gateways and
    /// batch runners present; workers present keys derived from their join keys.
    case curve(server: CurveKeyPair, platformPublicKey: String)
}
