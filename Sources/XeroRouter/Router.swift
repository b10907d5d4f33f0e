import Foundation
import Logging
import Synchronization
import XeroCore
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
        public init() {}
    }

    static let jobsSocket = 0, workersSocket = 1, eventsInSocket = 2, eventsOutSocket = 3

    public let id: String
    public let boundEndpoints: RouterEndpoints
    private let loop: SocketLoop
    private let context: ZMQContext

    public init(config: PlatformConfig, endpoints: RouterEndpoints, ops: OpsRecorder?, options: Options = Options(), logger: Logger) throws {
        let context = ZMQContext()
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
        let bound = RouterEndpoints(jobs: try jobs.bind(endpoints.jobs), workers: try workers.bind(endpoints.workers),
                                    eventsIn: try eventsIn.bind(endpoints.eventsIn), eventsOut: try eventsOut.bind(endpoints.eventsOut))
        // XSUB subscribes to every topic: a worker's events flow from its first message on,
        // with no subscription race; gateways filter at the XPUB.
        _ = try eventsIn.send([[1]])

        let id = randomID("router-", length: 8)
        var scheduler = TierScheduler(tiers: config.tiers)
        scheduler.maxQueued = options.maxQueuedJobs
        let core = RouterState(id: id, scheduler: scheduler, ops: ops, options: options, logger: logger)
        self.id = id
        self.context = context
        self.boundEndpoints = bound
        self.loop = SocketLoop(
            name: "router", sockets: [jobs, workers, eventsIn, eventsOut], tickMs: options.tickMs,
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
    let logger: Logger
    var lastStatsMs: Int64 = 0
    var lastLivenessMs: Int64 = 0

    init(id: String, scheduler: TierScheduler, ops: OpsRecorder?, options: Router.Options, logger: Logger) {
        self.id = id
        self.scheduler = scheduler
        self.ops = ops
        self.options = options
        self.logger = logger
    }

    func handle(_ ctx: LoopContext, socket: Int, frames: [[UInt8]]) {
        switch socket {
        case Router.eventsInSocket:
            ctx.send(socket: Router.eventsOutSocket, frames: frames)
        case Router.jobsSocket:
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
            do { try handleWorker(ctx, identity: frames[0], worker: worker, WorkerMessage.decode(frames[1])) } catch {
                logger.warning("bad message from a worker dropped", metadata: ["worker": "\(worker)", "error": "\(error)"])
            }
        case Router.eventsOutSocket:
            // A gateway (re)subscribed to its prefix: confirm on that prefix so it knows its
            // channel is live before it accepts traffic.
            guard let f = frames.first, f.first == 1 else { return }
            let topic = Array(f.dropFirst())
            ctx.send(socket: Router.eventsOutSocket, frames: [topic, Array("subscribed".utf8)])
        default: break
        }
    }

    func handleGateway(_ ctx: LoopContext, _ msg: GatewayMessage) throws {
        let now = nowMs()
        switch msg {
        case var .submit(job):
            job.attempt = max(1, job.attempt)
            guard let tier = scheduler.tier(job.tier) else {
                publishError(ctx, job, APIError.internalError("Unknown service tier '\(job.tier)'."))
                return
            }
            if job.queueDeadlineMs <= now {
                publishError(ctx, job, APIError.noCapacity(model: job.model, tier: tier.name, waitedMs: tier.queueTimeoutMs))
                return
            }
            guard scheduler.enqueue(job) else {
                publishError(ctx, job, APIError.overloaded("The router's queues are full (\(scheduler.maxQueued) jobs); retry shortly."))
                return
            }
            ops?.job(job.requestId, [("state", "queued"), ("tier", job.tier), ("project", job.project), ("endpoint", job.endpoint),
                                     ("model", job.model), ("attempt", String(job.attempt)), ("gateway", job.replyTo),
                                     ("accepted_at", String(job.acceptedAtMs)), ("queued_at", String(now))])
            dispatch(ctx, now: now)
        case let .cancel(requestId):
            switch scheduler.cancel(requestId) {
            case .dequeued:
                ops?.job(requestId, [("state", "cancelled"), ("finished_at", String(now))])
            case let .running(worker):
                ctx.send(socket: Router.workersSocket, frames: [Array(worker.utf8), RouterMessage.cancel(requestId: requestId).encode()])
            case .unknown: break
            }
        }
    }

    func handleWorker(_ ctx: LoopContext, identity: [UInt8], worker: String, _ msg: WorkerMessage) throws {
        let now = nowMs()
        if case let .hello(info) = msg {
            guard info.id == worker else {
                ctx.send(socket: Router.workersSocket, frames: [identity, RouterMessage.refused("worker id must equal its routing id").encode()])
                return
            }
            var fleet = AgentFleet.platform
            if options.requireJoinKey {
                switch checkJoinKey(info.joinKey) {
                case let .refused(why):
                    logger.warning("worker refused", metadata: ["worker": "\(worker)", "reason": "\(why)"])
                    ctx.send(socket: Router.workersSocket, frames: [identity, RouterMessage.refused(why).encode()])
                    return
                case let .accepted(f): fleet = f
                }
            }
            if let existing = scheduler.workers[worker], existing.fleet != fleet {
                // A routing id already taken by another fleet's worker: never let one hijack the other.
                logger.warning("worker refused", metadata: ["worker": "\(worker)", "reason": "routing id in use by another fleet"])
                ctx.send(socket: Router.workersSocket, frames: [identity, RouterMessage.refused("worker id in use").encode()])
                return
            }
            let known = scheduler.knows(worker)
            scheduler.join(info, fleet: fleet, now: now)
            logger.info(known ? "worker re-joined" : "worker joined", metadata: ["worker": "\(worker)", "slots": "\(info.slots)",
                                                                               "models": "\(info.models.joined(separator: ","))", "engine": "\(info.engine)"])
            recordWorker(worker, now: now)
            dispatch(ctx, now: now)
            return
        }
        guard scheduler.knows(worker) else {
            // We restarted, or dropped it as silent: ask who it is.
            if msg != .bye { ctx.send(socket: Router.workersSocket, frames: [identity, RouterMessage.identify.encode()]) }
            return
        }
        scheduler.seen(worker, now: now)
        switch msg {
        case .hello: break
        case let .credit(n):
            scheduler.credit(worker, n, now: now)
            dispatch(ctx, now: now)
        case .heartbeat:
            recordWorker(worker, now: now)
        case let .prefixes(hashes):
            // Recorded for operators and for prefix-aware placement (a later policy).
            ops?.workerPrefixes(worker, hashes.map { String($0, radix: 16) })
        case let .started(requestId):
            guard scheduler.markStarted(requestId, worker: worker) else {
                logger.warning("'started' for a job this worker does not run ignored", metadata: ["worker": "\(worker)", "request": "\(requestId)"])
                return
            }
            ops?.job(requestId, [("state", "running"), ("first_token_at", String(now))])
        case let .done(report):
            if scheduler.finish(report.requestId, worker: worker) != nil {
                ops?.job(report.requestId, [("state", report.outcome == "done" ? "done" : report.outcome), ("finished_at", String(report.finishedAtMs)),
                                            ("prompt_tokens", String(report.promptTokens)), ("completion_tokens", String(report.completionTokens))])
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

    private var joinKeyConnection: RedisConnection?

    enum JoinKeyCheck { case accepted(AgentFleet), refused(String) }

    /// Whether a join key is acceptable and which fleet its workers belong to. A blocking Redis
    /// read on the loop thread: hellos are rare (a worker joining), and it keeps the check in
    /// arrival order.
    func checkJoinKey(_ joinKey: String) -> JoinKeyCheck {
        guard !joinKey.isEmpty else { return .refused("a join key is required (worker --join-key)") }
        guard let address = options.redis else { return .refused("this router cannot check join keys (no Redis)") }
        do {
            if joinKeyConnection == nil || joinKeyConnection!.isBroken { joinKeyConnection = try RedisConnection(address) }
            let h = try joinKeyConnection!.command(["HGETALL", RedisKeys.joinKey(hash: APIKey.hash(joinKey))]).hash
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

    func tick(_ ctx: LoopContext) {
        let now = nowMs()
        for job in scheduler.expire(now: now) {
            let tier = scheduler.tier(job.tier)
            publishError(ctx, job, APIError.noCapacity(model: job.model, tier: job.tier, waitedMs: tier?.queueTimeoutMs ?? 0))
            ops?.job(job.requestId, [("state", "expired"), ("finished_at", String(now))])
        }
        if now - lastLivenessMs >= 250 {
            lastLivenessMs = now
            for w in scheduler.silentWorkers(now: now, timeoutMs: options.workerTimeoutMs) {
                dropWorker(ctx, w, reason: "no heartbeat for \(options.workerTimeoutMs) ms", now: now)
            }
        }
        if now - lastStatsMs >= options.statsEveryMs {
            lastStatsMs = now
            for t in scheduler.tiers {
                let s = scheduler.stats[t.name]!
                ops?.tier(t.name, [("depth", String(scheduler.depth(t.name))), ("inflight", String(s.inflight)),
                                   ("submitted_total", String(s.submitted)), ("dispatched_total", String(s.dispatched)),
                                   ("completed_total", String(s.completed)), ("expired_total", String(s.expired)),
                                   ("updated_at", String(now))])
            }
            ops?.routerAlive(id, now: now)
        }
    }

    func dispatch(_ ctx: LoopContext, now: Int64) {
        for d in scheduler.dispatch(now: now) {
            let sent = ctx.send(socket: Router.workersSocket, frames: [Array(d.worker.utf8), RouterMessage.job(d.envelope).encode()])
            if sent {
                ops?.job(d.envelope.requestId, [("state", "dispatched"), ("worker", d.worker), ("attempt", String(d.envelope.attempt)),
                                                ("dispatched_at", String(now))])
            } else {
                // The worker's connection is gone: drop it; its jobs (this one included) are re-queued.
                dropWorker(ctx, d.worker, reason: "unreachable", now: now)
            }
        }
    }

    func dropWorker(_ ctx: LoopContext, _ worker: String, reason: String, now: Int64) {
        let lost = scheduler.remove(worker)
        logger.warning("worker removed", metadata: ["worker": "\(worker)", "reason": "\(reason)",
                                                     "requeued": "\(lost.requeued.count)", "failed": "\(lost.failed.count)"])
        for job in lost.requeued {
            ops?.job(job.requestId, [("state", "queued"), ("attempt", String(job.attempt)), ("requeued_from", worker)])
        }
        for job in lost.failed {
            publishError(ctx, job, APIError.workerLost())
            ops?.job(job.requestId, [("state", "error:worker_lost"), ("finished_at", String(now))])
        }
        ops?.workerGone(worker)
        dispatch(ctx, now: now)
    }

    func publishError(_ ctx: LoopContext, _ job: JobEnvelope, _ error: APIError) {
        // seq is far past any worker's so the gateway never mistakes it for a gap.
        let ev = StreamEvent(requestId: job.requestId, attempt: job.attempt, seq: Int(Int32.max), body: .error(error))
        ctx.send(socket: Router.eventsOutSocket, frames: [Array(job.topic.utf8), ev.encode()])
    }

    func recordWorker(_ worker: String, now: Int64) {
        guard let w = scheduler.workers[worker] else { return }
        ops?.worker(worker, lastSeenMs: now, [
            ("slots", String(w.info.slots)), ("free", String(w.credits)), ("inflight", String(w.inflight.count)),
            ("models", w.info.models.joined(separator: ",")), ("capabilities", w.info.capabilities.joined(separator: ",")),
            ("engine", w.info.engine), ("host", w.info.host), ("pid", String(w.info.pid)),
            ("state", w.draining ? "draining" : "ready"), ("last_heartbeat", String(now)), ("router", id), ("fleet", w.fleet.description),
        ])
    }
}
