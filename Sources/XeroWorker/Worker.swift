import Foundation
import Logging
import Synchronization
import XeroCore
import XeroEngines
import XeroMetrics
import XeroQueue

/// A worker process: takes jobs from its routers against credits (one per free slot, spread over
/// the routers by `CreditLedger`), runs each on its `Engine`, and publishes the job's events to
/// the router that relays it. When that router goes away the job is adopted by another (its
/// events so far sent again there), so a router's death does not end the stream
/// (docs/routing.md, "Several routers"). Joins and leaves at will: `drain()` stops taking work,
/// finishes what runs, says goodbye.
public final class Worker: Sendable {
    public struct Options: Sendable {
        /// Heartbeat to every router; each answers with `ack`.
        public var heartbeatMs: Int64 = 250
        /// A router that has not answered for this long is down: its credits are void and its
        /// jobs are adopted by another router.
        public var routerTimeoutMs: Int64 = 1000
        public var joinKey = ""
        /// Merge a job's events that wait to be sent at the same moment into one frame
        /// (`StreamEventBatch`): fast streams pay the per-message CURVE cost once per batch.
        public var coalesceEvents = true
        /// Events kept per job for a handover; past this the job cannot be resumed elsewhere.
        public var maxReplayBytes = 8 * 1024 * 1024
        public init() {}
    }

    /// One router's addresses: its workers (ROUTER) and events-in (XSUB) sockets.
    public struct RouterLink: Sendable {
        public var workers: String
        public var eventsIn: String
        public init(workers: String, eventsIn: String) {
            self.workers = workers
            self.eventsIn = eventsIn
        }
    }

    /// Socket indices: link i has its control DEALER at 2i and its events XPUB at 2i + 1; with
    /// CURVE, handshake monitors follow at 2n + i.
    static func controlSocket(_ link: Int) -> Int { 2 * link }
    static func eventsSocket(_ link: Int) -> Int { 2 * link + 1 }

    public let id: String
    public let engine: any Engine
    private let loop: SocketLoop
    private let context: ZMQContext
    private let state: Locked<State>
    private let logger: Logger
    private let options: Options
    private let metrics: WorkerMetrics
    private let linkCount: Int
    /// Whether the engine keeps a prefix cache (its lookups are counted), asked once.
    private let hasPrefixCache: Bool

    struct LinkState {
        var channelReady = false
        var helloSent = false
        /// The router's id from its acks; a different one means it restarted.
        var routerId: String?
        var lastHeardMs: Int64 = 0
        var helloSentAtMs: Int64 = 0
        /// Prefix-block hashes last reported to this router (sent again when they change, and
        /// after every hello: a router that restarted or joined learns them at once).
        var reportedPrefixes: [UInt64]?
    }

    struct State {
        var active: [String: ActiveJob] = [:]
        var parked: [String: ParkedJob] = [:]
        /// Jobs that ended in the last `recentForMs`, their report sent to their relay, oldest
        /// first. Their last events may not have reached the client: the relay may have died with
        /// them, or be cut off from the client (which then asks `relocate`). Either way they are
        /// handed over like parked jobs. Kept without their payload: the ticket and the events.
        var recent: [ParkedJob] = []
        var links: [LinkState]
        var ledger: CreditLedger
        var draining = false
        /// Said goodbye: no heartbeat, hello or credit any more (a router that answers a late
        /// heartbeat with `identify` must not get the worker back).
        var leaving = false
        var lastHeartbeatMs: Int64 = 0
        var refused: String?

        /// Every job whose relay may still change: running, or parked.
        var runs: [JobRun] { active.values.map(\.run) + parked.values.map(\.run) }

        /// The router behind `link` went away: the jobs it may not have seen the end of wait,
        /// parked, for a router to adopt them.
        mutating func parkRecent(_ link: Int) {
            recent.removeAll { job in
                guard job.run.relay == link else { return false }
                job.run.hold()
                parked[job.run.job.requestId] = job
                return true
            }
        }

        /// A client asks for these: whichever ended recently is parked for the asking router.
        mutating func parkRecent(_ ids: Set<String>) {
            recent.removeAll { job in
                guard ids.contains(job.run.job.requestId) else { return false }
                job.run.hold()
                parked[job.run.job.requestId] = job
                return true
            }
        }
    }

    struct ActiveJob {
        var task: Task<Void, Never>
        let run: JobRun
    }

    /// A job that ended while no router relayed it (its router was down, or a handover was under
    /// way): its slot is free, and its events and report wait for a router to adopt it.
    struct ParkedJob {
        let run: JobRun
        var report: JobReport
        let sinceMs: Int64
    }
    /// How long a parked job waits for a router (clients give up on a handover after 3 s).
    static let parkedForMs: Int64 = 10_000
    /// How long a finished job stays ready for a handover: a client notices a silent router after
    /// 1 s (and asks within its next check), a worker after `routerTimeoutMs`.
    static let recentForMs: Int64 = 2500

    public convenience init(id: String = randomWorkerID(), engine: any Engine, routerWorkers: String, routerEventsIn: String,
                            security: FabricSecurity = .plaintext, options: Options = Options(), metrics: WorkerMetrics = WorkerMetrics(),
                            logger: Logger) throws {
        try self.init(id: id, engine: engine, routers: [RouterLink(workers: routerWorkers, eventsIn: routerEventsIn)], security: security,
                      options: options, metrics: metrics, logger: logger)
    }

    public init(id: String = randomWorkerID(), engine: any Engine, routers: [RouterLink],
                security: FabricSecurity = .plaintext, options: Options = Options(), metrics: WorkerMetrics = WorkerMetrics(),
                logger: Logger) throws {
        precondition(!routers.isEmpty, "a worker needs at least one router")
        let context = ZMQContext()
        var sockets: [ZMQSocket] = []
        var monitors: [ZMQSocket] = []
        for (i, link) in routers.enumerated() {
            let control = try ZMQSocket(context, .dealer)
            try control.set(.routingID(id))
            try control.set(.reconnectInterval(100))
            // XPUB, not PUB: it lets the worker see the router's subscription arrive, so it says hello
            // (and gets jobs) only once its events can no longer be dropped for want of a subscriber.
            let events = try ZMQSocket(context, .xpub)
            // Verbose: every connection's subscription is seen, so a connection made again is noticed.
            try events.set(.xpubVerbose)
            try control.set(.sendHighWaterMark(PipeBounds.control))
            try control.set(.receiveHighWaterMark(PipeBounds.control))
            try control.set(.maxMessageSize(WireLimits.maxJobFrameBytes))
            try events.set(.sendHighWaterMark(PipeBounds.events))
            try events.set(.maxMessageSize(PipeBounds.subscriptionBytes))
            try events.set(.reconnectInterval(100))
            try control.secure(security)
            try events.secure(security)
            // With CURVE a refused handshake is silence; the monitor turns it into a clear exit.
            if case .client = security { monitors.append(try control.handshakeFailures(context: context, name: "\(id)-\(i)")) }
            try control.connect(link.workers)
            try events.connect(link.eventsIn)
            sockets += [control, events]
        }
        self.id = id
        self.engine = engine
        self.context = context
        self.logger = logger
        self.options = options
        self.metrics = metrics
        self.linkCount = routers.count
        hasPrefixCache = engine.kvCacheStats().prefixBudgetBytes > 0
        let state = Locked(State(links: Array(repeating: LinkState(), count: routers.count),
                                 ledger: CreditLedger(slots: engine.info.slots, links: routers.count)))
        self.state = state
        let box = WorkerBox()
        let eventSockets = Set((0..<routers.count).map(Self.eventsSocket))
        self.loop = SocketLoop(name: "worker", sockets: sockets + monitors, tickMs: 50,
                               coalescing: options.coalesceEvents ? (eventSockets, StreamEventBatch.coalesce) : nil,
                               onMessage: { ctx, socket, frames in box.worker?.handle(ctx, socket: socket, frames: frames) },
                               onTick: { ctx in box.worker?.tick(ctx) })
        box.worker = self
    }

    public func start() {
        loop.start()
        logger.info("worker started", metadata: ["worker": "\(id)", "engine": "\(engine.info.name)", "slots": "\(engine.info.slots)"])
    }

    public var activeJobs: Int { state.withLock { $0.active.count } }
    public var refusedReason: String? { state.withLock { $0.refused } }

    /// Graceful leave: no new jobs, running ones finish (up to `timeoutSeconds`), then goodbye.
    public func drain(timeoutSeconds: Double = 300) async {
        state.withLock { $0.draining = true; $0.ledger.draining = true }
        for link in 0..<linkCount { sendControl(link, .draining) }
        logger.info("worker draining", metadata: ["worker": "\(id)", "active": "\(activeJobs)"])
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while activeJobs > 0 && Date() < deadline { try? await Task.sleep(nanoseconds: 20_000_000) }
        let leftovers = state.withLock { s in s.active.values.map(\.task) }
        for t in leftovers { t.cancel() }
        state.withLock { $0.leaving = true }
        for link in 0..<linkCount { sendControl(link, .bye) }
        try? await Task.sleep(nanoseconds: 50_000_000) // let goodbye leave the socket
    }

    public func stop() {
        loop.stop()
        context.terminate()
    }

    // MARK: Loop thread

    func handle(_ ctx: LoopContext, socket: Int, frames: [[UInt8]]) {
        if socket >= 2 * linkCount {
            guard let (event, value) = ZMQSocket.monitorEvent(frames) else { return }
            if event == ZMQSocket.handshakeFailedAuth {
                let why = "the router refused this worker's credentials (ZAP \(value)): an unknown or revoked join key"
                logger.error("router refused this worker", metadata: ["reason": "\(why)"])
                state.withLock { $0.refused = why }
            } else {
                logger.warning("handshake with the router failed (is --router-key this deployment's?)", metadata: ["event": "\(event)"])
            }
            return
        }
        let link = socket / 2
        if socket % 2 == 1 {
            // A subscription from the router's XSUB: our event channel to it is live.
            guard frames.first?.first == 1 else { return }
            let first = state.withLock { s -> Bool in
                let f = !s.links[link].channelReady
                s.links[link].channelReady = true
                return f
            }
            if first { sayHello(ctx, link) } else { channelRemade(ctx, link) }
            return
        }
        guard frames.count == 1 else { return }
        let msg: RouterMessage
        do { msg = try RouterMessage.decode(frames[0]) } catch {
            logger.warning("bad message from router dropped", metadata: ["error": "\(error)", "link": "\(link)"])
            return
        }
        heard(ctx, link, msg)
        switch msg {
        case let .job(envelope, ticket): arrived(ctx, link, envelope, ticket: ticket)
        case let .cancel(requestId):
            // Only the router relaying a job may stop it (another may have lost its client's link
            // although this one still reaches it).
            let task = state.withLock { s in s.active[requestId].flatMap { $0.run.relay == link ? $0.task : nil } }
            task?.cancel()
        case .identify:
            // The router does not know us (it restarted, or dropped us): a fresh start with it.
            // Several arrive at once when heartbeats queued while it was away reach the new
            // instance before our hello does: the first is answered, the rest wait for the hello.
            let answered = state.withLock { nowMs() - $0.links[link].helloSentAtMs < 1000 && $0.links[link].routerId == nil }
            if !answered { restart(ctx, link, why: "the router asked who we are") }
        case let .refused(why):
            logger.error("router refused this worker", metadata: ["reason": "\(why)"])
            state.withLock { $0.refused = why }
        case .modelGrant, .modelRefused:
            break   // answers to ModelFetcher's own connection; never asked on this one
        case let .ack(routerId, demand):
            let restarted = state.withLock { s -> Bool in
                defer { s.links[link].routerId = routerId }
                return s.links[link].routerId.map { $0 != routerId } ?? false
            }
            if restarted { restart(ctx, link, why: "the router restarted"); return }
            apply(ctx, state.withLock { s -> [CreditLedger.Action] in
                return s.ledger.demand(link, demand)
            })
        case let .returned(n):
            apply(ctx, state.withLock { $0.ledger.returned(link, n) })
        case let .adopted(requestId): adoptionAnswered(ctx, link, requestId, accepted: true)
        case let .adoptRefused(requestId): adoptionAnswered(ctx, link, requestId, accepted: false)
        case let .relocate(ids):
            let mine = state.withLock { s -> [JobRun] in
                s.parkRecent(Set(ids))
                return ids.compactMap { s.active[$0]?.run ?? s.parked[$0]?.run }
            }
            // Its own relay included (unless an adoption elsewhere is under way): that router asks
            // when its client lost events (the client's channel broke and came back); the replay
            // fills the gap, the client drops what it has.
            for run in mine where run.relay == link ? run.adoptingTo == nil : run.adoptingTo != link { startAdoption(ctx, run, to: link) }
        }
    }

    /// Anything from a router shows its link works; a link we had written off comes back with a
    /// fresh hello (its old credits are void).
    private func heard(_ ctx: LoopContext, _ link: Int, _ msg: RouterMessage) {
        let wasDown = state.withLock { s -> Bool in
            s.links[link].lastHeardMs = nowMs()
            return s.links[link].helloSent && !s.ledger.links[link].up
        }
        if wasDown, msg != .identify {
            logger.info("router link back", metadata: ["link": "\(link)"])
            sayHello(ctx, link)
            // The same router, back after a silence (a healed partition): the jobs it relayed and
            // nobody else adopted are handed back to it, with everything they made meanwhile.
            let stranded = state.withLock { s in s.runs.filter { $0.relay == link && $0.adoptingTo == nil && $0.isHolding } }
            for run in stranded { startAdoption(ctx, run, to: link) }
        }
    }

    func tick(_ ctx: LoopContext) {
        let now = nowMs()
        let (due, active) = state.withLock { s -> (Bool, Int) in
            let due = now - s.lastHeartbeatMs >= options.heartbeatMs
            if due, s.lastHeartbeatMs > 0, now - s.lastHeartbeatMs > 5 * max(options.heartbeatMs, 200) {
                // The routers drop a worker they do not hear from; say why we were silent.
                logger.warning("worker loop stalled: heartbeat late", metadata: ["ms": "\(now - s.lastHeartbeatMs)"])
            }
            if due { s.lastHeartbeatMs = now }
            return (due && !s.leaving, s.active.count)
        }
        let kv = engine.kvCacheStats()
        metrics.slots(busy: active, free: engine.info.slots - active)
        metrics.kvCache(bytes: kv.bytes, usage: kv.prefixBudgetBytes > 0 ? Double(kv.prefixBytes) / Double(kv.prefixBudgetBytes) : 0)
        metrics.engineSteps(engine.stepStats())
        guard due else { return }
        // Routers that stopped answering: their credits are void, their jobs go elsewhere.
        let silent = state.withLock { s in
            (0..<linkCount).filter { s.ledger.links[$0].up && now - s.links[$0].lastHeardMs > options.routerTimeoutMs }
        }
        for link in silent { linkLost(ctx, link, why: "no answer for \(options.routerTimeoutMs) ms") }
        // Parked jobs no router took within the bound: their clients have given up on them.
        let expired = state.withLock { s -> Int in
            if let keep = s.recent.firstIndex(where: { now - $0.sinceMs < Self.recentForMs }) { s.recent.removeFirst(keep) } else { s.recent = [] }
            let old = s.parked.filter { now - $0.value.sinceMs > Self.parkedForMs }.map(\.key)
            for id in old { s.parked[id] = nil }
            return old.count
        }
        if expired > 0 { logger.warning("finished jobs no router adopted dropped", metadata: ["jobs": "\(expired)"]) }
        let prefixes = engine.prefixBlockHashes()
        let heartbeat = WorkerMessage.heartbeat(active: active).encode()
        var report: [UInt8]?
        for link in 0..<linkCount {
            let (hello, changed) = state.withLock { s -> (Bool, Bool) in
                guard s.links[link].helloSent else { return (false, false) }
                guard s.links[link].reportedPrefixes != prefixes else { return (true, false) }
                s.links[link].reportedPrefixes = prefixes
                return (true, true)
            }
            guard hello else { continue }
            ctx.send(socket: Self.controlSocket(link), frames: [heartbeat])
            if changed {
                if report == nil { report = WorkerMessage.prefixes(prefixes).encode() }
                ctx.send(socket: Self.controlSocket(link), frames: [report!])
            }
        }
    }

    private func sayHello(_ ctx: LoopContext, _ link: Int) {
        let (ready, free, draining, actions) = state.withLock { s -> (Bool, Int, Bool, [CreditLedger.Action]) in
            guard s.links[link].channelReady, !s.leaving else { return (false, 0, s.draining, []) }
            let (free, actions) = s.ledger.linkUp(link)
            s.links[link].helloSent = true
            s.links[link].reportedPrefixes = nil
            s.links[link].lastHeardMs = nowMs()
            s.links[link].helloSentAtMs = nowMs()
            return (true, free, s.draining, actions)
        }
        guard ready else { return }
        let info = engine.info
        let hello = WorkerInfo(id: id, slots: info.slots, freeSlots: free, models: info.models,
                               capabilities: info.capabilities, engine: info.name, host: ProcessInfo.processInfo.hostName,
                               pid: Int(getpid()), joinKey: options.joinKey)
        ctx.send(socket: Self.controlSocket(link), frames: [WorkerMessage.hello(hello).encode()])
        if draining { ctx.send(socket: Self.controlSocket(link), frames: [WorkerMessage.draining.encode()]) }
        apply(ctx, actions)
    }

    /// A second subscription on `link`'s events socket: its connection broke and was made again
    /// (the router restarted, or the network cut it). Our socket kept what was queued, but the
    /// frames the broken connection had taken are gone: the jobs that router relays, and those
    /// that ended lately, are handed back to it for a replay (docs/routing.md, "A replay goes out
    /// only when its client is subscribed").
    private func channelRemade(_ ctx: LoopContext, _ link: Int) {
        let runs = state.withLock { s -> [JobRun] in
            s.parkRecent(link)
            return s.runs.filter { $0.relay == link && $0.adoptingTo == nil }
        }
        if !runs.isEmpty { logger.info("router event channel made again: its jobs replayed", metadata: ["link": "\(link)", "jobs": "\(runs.count)"]) }
        for run in runs { startAdoption(ctx, run, to: link) }
    }

    /// The router behind `link` lost our state (it restarted): its credits are void; say hello
    /// again, and hand it back the jobs it relayed (the new instance adopts them by their tickets).
    private func restart(_ ctx: LoopContext, _ link: Int, why: String) {
        logger.warning("router restarted: joining it again", metadata: ["link": "\(link)", "reason": "\(why)"])
        state.withLock { $0.ledger.linkDown(link); $0.links[link].routerId = nil }
        sayHello(ctx, link)
        let runs = state.withLock { s -> [JobRun] in
            s.parkRecent(link)
            return s.runs.filter { $0.relay == link || $0.adoptingTo == link }
        }
        for run in runs { startAdoption(ctx, run, to: link) }
    }

    /// A router stopped answering: void its credits, and have another router adopt its jobs.
    private func linkLost(_ ctx: LoopContext, _ link: Int, why: String) {
        logger.warning("router link down", metadata: ["link": "\(link)", "reason": "\(why)"])
        let (runs, target) = state.withLock { s -> ([JobRun], Int?) in
            s.ledger.linkDown(link)
            s.parkRecent(link)
            let target = (0..<linkCount).first { s.ledger.links[$0].up }
            return (s.runs.filter { $0.relay == link || $0.adoptingTo == link }, target)
        }
        apply(ctx, state.withLock { $0.ledger.rebalance() })
        for run in runs { run.hold() }
        // With no router up, the jobs wait: the first router back (restarted, or healed) adopts them.
        guard let target else { return }
        for run in runs { startAdoption(ctx, run, to: target) }
    }

    private func apply(_ ctx: LoopContext, _ actions: [CreditLedger.Action]) {
        if !actions.isEmpty { logger.debug("credits moved", metadata: ["actions": "\(actions)"]) }
        for a in actions {
            switch a {
            case let .credit(link, n): ctx.send(socket: Self.controlSocket(link), frames: [WorkerMessage.credit(n).encode()])
            case let .reclaim(link, n): ctx.send(socket: Self.controlSocket(link), frames: [WorkerMessage.reclaim(n).encode()])
            }
        }
    }

    // MARK: Handover (docs/routing.md, "Handover")

    private func startAdoption(_ ctx: LoopContext, _ run: JobRun, to link: Int) {
        guard !run.ticket.isEmpty else { return }   // a router that gives no tickets: nothing to present
        let started = run.beginAdoption(to: link)
        ctx.send(socket: Self.controlSocket(link), frames: [WorkerMessage.adopt(ticket: run.ticket, started: started).encode()])
    }

    private func adoptionAnswered(_ ctx: LoopContext, _ link: Int, _ requestId: String, accepted: Bool) {
        // Under the state lock, as a job's end is: it is either still running (its report will
        // go to the new relay) or parked (its report goes now).
        enum Outcome { case none, switched(old: Int?, topic: [UInt8], replay: [[UInt8]], report: JobReport?, startedSinceAsked: Bool), refused(JobRun, running: Bool) }
        let outcome: Outcome = state.withLock { s in
            let running = s.active[requestId]?.run
            guard let run = running ?? s.parked[requestId]?.run, run.adoptingTo == link else { return .none }
            guard accepted else {
                if running == nil { s.parked[requestId] = nil }
                return .refused(run, running: running != nil)
            }
            let (old, replay, startedSinceAsked) = run.switchRelay(to: link)
            let report = running == nil ? s.parked.removeValue(forKey: requestId)?.report : nil
            return .switched(old: old, topic: run.topic, replay: replay, report: report, startedSinceAsked: startedSinceAsked)
        }
        switch outcome {
        case .none: return
        case let .switched(old, topic, replay, report, startedSinceAsked):
            // Everything so far to the new relay first: events made from here on go there after
            // these (the job's task reads the relay in the same critical section that keeps them).
            if let old, old != link { ctx.send(socket: Self.controlSocket(old), frames: [WorkerMessage.moved(requestId: requestId).encode()]) }
            // Its first event came while it was held, so no `started` went out with it.
            if startedSinceAsked { ctx.send(socket: Self.controlSocket(link), frames: [WorkerMessage.started(requestId: requestId).encode()]) }
            for frame in replay { ctx.send(socket: Self.eventsSocket(link), frames: [topic, frame]) }
            if let report { ctx.send(socket: Self.controlSocket(link), frames: [WorkerMessage.done(report).encode()]) }
            logger.info("job adopted by another router", metadata: ["request_id": "\(requestId)", "link": "\(link)", "events_replayed": "\(replay.count)",
                                                                    "finished": "\(report != nil)"])
        case let .refused(run, running):
            // That router runs the request elsewhere. With our relay gone, this run is the one
            // nobody will see: stop it quietly.
            let relayUp = run.abandonAdoption().map { r in state.withLock { $0.ledger.links[r].up } } ?? false
            if !relayUp {
                run.silence()
                if running { state.withLock { $0.active[requestId]?.task }?.cancel() }
                logger.info("job stopped: another router runs it", metadata: ["request_id": "\(requestId)"])
            }
        }
    }

    // MARK: Jobs

    private func sendControl(_ link: Int, _ m: WorkerMessage) { loop.send(socket: Self.controlSocket(link), frames: [m.encode()]) }

    /// Longest a job may run here, whatever deadline its envelope names.
    static let maxJobMs: Int64 = 7 * 86_400_000

    /// A job from the router behind `link`.
    private func arrived(_ ctx: LoopContext, _ link: Int, _ job: JobEnvelope, ticket: [UInt8]) {
        let run = JobRun(job: job, ticket: ticket, relay: link, maxReplayBytes: options.maxReplayBytes)
        enum Decision { case run(Task<Void, Never>), requeue, duplicate(JobRun) }
        // The task is recorded in the same critical section that decides to run it: a job that
        // ends at once removes itself only after it was recorded (else its slot would leak).
        let decision: Decision = state.withLock { s in
            if let existing = s.active[job.requestId] { return .duplicate(existing.run) }
            // Only against a credit this router holds: never more jobs than slots.
            guard s.ledger.jobArrived(from: link) == .run else { return .requeue }
            let t = Task { [self] in await self.run(run) }
            s.active[job.requestId] = ActiveJob(task: t, run: run)
            return .run(t)
        }
        let report = { (outcome: String) in
            WorkerMessage.done(JobReport(requestId: job.requestId, attempt: job.attempt, outcome: outcome, firstTokenAtMs: 0,
                                         finishedAtMs: nowMs(), promptTokens: 0, completionTokens: 0, returnsCredit: true))
        }
        switch decision {
        case let .duplicate(existing) where job.attempt > existing.job.attempt:
            // A later attempt of a run we still have: the platform gave ours up (we were cut off,
            // and the job was migrated). Ours is stopped quietly; the new one is handed back, to
            // come again once our slot is free.
            logger.info("stale run stopped: a later attempt arrived", metadata: ["request_id": "\(job.requestId)", "attempt": "\(job.attempt)"])
            existing.silence()
            state.withLock { $0.active[job.requestId]?.task }?.cancel()
            ctx.send(socket: Self.controlSocket(link), frames: [report("requeue").encode()])
        case let .duplicate(existing):
            // We run this request already, for another router (or its restarted self): this copy
            // is not run; if the run's relay is gone, the router that sent it adopts it.
            logger.info("duplicate delivery ignored", metadata: ["request_id": "\(job.requestId)", "link": "\(link)"])
            ctx.send(socket: Self.controlSocket(link), frames: [report("duplicate").encode()])
            let relayUp = existing.relay.map { r in state.withLock { $0.ledger.links[r].up } } ?? false
            if !relayUp, existing.adoptingTo == nil { startAdoption(ctx, existing, to: link) }
        case .requeue:
            logger.info("job sent against no credit: handed back", metadata: ["request_id": "\(job.requestId)", "link": "\(link)"])
            ctx.send(socket: Self.controlSocket(link), frames: [report("requeue").encode()])
        case let .run(task):
            // The tier's request timeout: cancel the job at its deadline and say why. Clamped, so an
            // absurd deadline neither overflows the sleep nor pins a slot forever. The timer ends with
            // the job: left sleeping, it would hold the job (and its payload) until the deadline.
            let remaining = min(job.requestDeadlineMs.subtractingReportingOverflow(nowMs()).partialValue, Self.maxJobMs)
            run.armDeadline(DeadlineTimer.shared.schedule(afterMs: remaining) { [self] in
                guard !task.isCancelled, state.withLock({ $0.active[job.requestId] != nil }) else { return }
                run.timedOut.withLock { $0 = true }
                task.cancel()
            })
        }
    }

    private func run(_ run: JobRun) async {
        let job = run.job
        do {
            switch job.kind {
            case .chatCompletion:
                try await runChat(run, try ChatRequest.parse(job.payload))
            case .textCompletion:
                try await runChat(run, try CompletionRequest.parse(job.payload))
            case .embeddings:
                let result = try await engine.embed(try EmbeddingsRequest.parse(job.payload))
                try Task.checkCancellation()
                emit(run, .vectors(dim: result.dim, data: Self.float32LE(result.vectors.flatMap { $0 })))
                run.meter.set(Usage(promptTokens: result.promptTokens, completionTokens: 0))
                emit(run, .done(run.meter.usage))
            case .rerank:
                let result = try await engine.rerank(try RerankRequest.parse(job.payload))
                try Task.checkCancellation()
                emit(run, .vectors(dim: 1, data: Self.float32LE(result.scores)))
                run.meter.set(Usage(promptTokens: result.promptTokens, completionTokens: 0))
                emit(run, .done(run.meter.usage))
            }
        } catch let e as APIError {
            // A 4xx is the request's fault, not the worker's: the router's breaker ignores it.
            run.outcome = (e.status < 500 ? "rejected:" : "error:") + (e.code ?? e.type)
            emit(run, .error(e))
        } catch {
            if run.timedOut.withLock({ $0 }) {
                run.outcome = "timeout"
                emit(run, .error(APIError.timeout(tier: job.tier, ms: Int(job.requestDeadlineMs - job.acceptedAtMs))))
            } else if Task.isCancelled || error is CancellationError {
                run.outcome = "cancelled"
                emit(run, .error(APIError(status: 499, message: "The request was cancelled.", type: "cancelled", code: "cancelled")))
            } else {
                run.outcome = "error:internal"
                logger.error("engine failed", metadata: ["request_id": "\(job.requestId)", "error": "\(error)"])
                emit(run, .error(APIError.internalError()))
            }
        }
        // However it ended, the report carries what it used: the engine's final count, or what the
        // meter saw up to the cancel, timeout or failure. The router bills from this report.
        let usage = run.meter.usage
        // The slot is free: the ledger says whether its credit goes back with the report (to the
        // router relaying the job) or to another router that has work.
        // Decided under the state lock, as handovers are: either its relay is settled (the report
        // goes there) or the job is parked for whichever router adopts it.
        var report = JobReport(requestId: job.requestId, attempt: job.attempt, outcome: run.outcome, firstTokenAtMs: run.firstTokenAt,
                               finishedAtMs: nowMs(), promptTokens: usage.promptTokens, completionTokens: usage.completionTokens)
        run.releasePayload()
        let (relay, returnsCredit, actions) = state.withLock { s -> (Int?, Bool, [CreditLedger.Action]) in
            _ = s.active.removeValue(forKey: job.requestId)
            guard let relay = run.relay, !run.isHolding else {
                if run.relay != nil { s.parked[job.requestId] = ParkedJob(run: run, report: report, sinceMs: nowMs()) }
                let (_, actions) = s.ledger.jobEnded(relay: nil)
                return (nil, false, actions)
            }
            let (back, actions) = s.ledger.jobEnded(relay: relay)
            var kept = report
            kept.returnsCredit = false   // if it must be sent again, its credit was already settled
            s.recent.append(ParkedJob(run: run, report: kept, sinceMs: nowMs()))
            return (relay, back, actions)
        }
        report.returnsCredit = returnsCredit
        run.disarmDeadline()
        metrics.jobEnded(model: job.model, outcome: run.outcome)
        logger.info("job ended", metadata: [
            "request_id": "\(job.requestId)", "project": "\(job.project)", "endpoint": "\(job.endpoint)", "tier": "\(job.tier)",
            "worker": "\(id)", "model": "\(job.model)", "attempt": "\(job.attempt)", "outcome": "\(run.outcome)",
            "prompt_tokens": "\(usage.promptTokens)", "completion_tokens": "\(usage.completionTokens)", "cached_tokens": "\(usage.cachedTokens)",
        ])
        if job.kind == .chatCompletion || job.kind == .textCompletion, hasPrefixCache {
            metrics.prefixLookup(model: job.model, queried: usage.promptTokens, hit: usage.cachedTokens)
        }
        if let relay { sendControl(relay, .done(report)) }
        for a in actions {
            switch a {
            case let .credit(link, n): sendControl(link, .credit(n))
            case let .reclaim(link, n): sendControl(link, .reclaim(n))
            }
        }
    }

    /// A generation: a chat request, or a text completion (`chat.completion` set).
    private func runChat(_ run: JobRun, _ chat: ChatRequest) async throws {
        let job = run.job
        let request = EngineRequest(requestId: job.requestId, model: job.model, chat: chat, rawBody: job.payload, deadlineMs: job.requestDeadlineMs,
                                    project: job.project, meter: run.meter, replay: job.replay?.tokens ?? [])
        for try await ev in engine.generate(request) {
            try Task.checkCancellation()
            switch ev {
            case let .text(choice, text, logprobs, tokens): emit(run, .delta(index: choice, text: text, logprobs: logprobs, tokens: tokens))
            case let .toolCall(choice, t, id, name, args): emit(run, .toolCall(index: choice, toolIndex: t, id: id, name: name, arguments: args))
            case let .finish(choice, reason): emit(run, .finish(index: choice, reason: reason))
            case let .usage(u): run.meter.set(u)   // the engine's final word
            }
        }
        try Task.checkCancellation()
        emit(run, .done(run.meter.usage))
    }

    static func float32LE(_ values: [Float]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(values.count * 4)
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
        return out
    }

    private func emit(_ run: JobRun, _ body: StreamEvent.Body) {
        let first = run.firstTokenAt == 0
        if first { run.firstTokenAt = nowMs() }
        let frame = StreamEvent(requestId: run.job.requestId, attempt: run.job.attempt, seq: run.seq, body: body).encode()
        run.seq += 1
        // Kept for a handover, and sent to whoever relays the job now (none while it is silenced).
        guard let relay = run.record(frame) else { return }
        if first { sendControl(relay, .started(requestId: run.job.requestId)) }
        loop.send(socket: Self.eventsSocket(relay), frames: [run.topic, frame])
    }
}

/// Per-job bookkeeping. `seq`, `firstTokenAt`, `outcome` belong to the job's own task; the
/// relay (which router its events go to), the replay buffer and the adoption in progress are
/// shared with the loop thread and guarded by `relayState`.
final class JobRun: @unchecked Sendable {
    /// Its payload is dropped when the job ends (`released()`): a finished job is kept for a
    /// handover only by its ticket and its events.
    private(set) var job: JobEnvelope
    let topic: [UInt8]
    /// The dispatching router's sealed ticket: what another router needs to take over the relay.
    let ticket: [UInt8]
    /// From 0, or where the run it continues stopped (a migration).
    var seq: Int
    var firstTokenAt: Int64 = 0
    /// What the job used so far (the engine counts into it; its final `.usage` replaces it).
    let meter = UsageMeter()
    var outcome = "done"
    let timedOut = Locked(false)
    /// The deadline timer, and whether the job already ended (then a timer armed late is cancelled at once).
    private let deadline = Locked<(ended: Bool, timer: DeadlineTimer.Token?)>((false, nil))

    struct RelayState {
        /// The router link its events go to; nil once silenced (another router runs it).
        var relay: Int?
        /// A link asked to adopt it, not answered yet.
        var adoptingTo: Int?
        /// Every event frame sent so far, in order, for a handover (dropped past the bound).
        var sent: [[UInt8]] = []
        var sentBytes = 0
        var resumable = true
        var started = false
        /// What the pending adoption told the router (`started` when it was asked).
        var askedStarted = false
        /// Its relay is down or a handover is under way: events are only kept, and go out with
        /// the replay once a router has adopted it.
        var holding = false
    }
    private let relayState: Locked<RelayState>
    private let maxReplayBytes: Int

    init(job: JobEnvelope, ticket: [UInt8] = [], relay: Int = 0, maxReplayBytes: Int = 8 * 1024 * 1024) {
        self.job = job
        self.ticket = ticket
        self.maxReplayBytes = maxReplayBytes
        seq = job.replay?.fromSeq ?? 0
        topic = Array(job.topic.utf8)
        relayState = Locked(RelayState(relay: relay))
    }

    /// Task, at its end, before the run is kept for a handover.
    func releasePayload() { job.payload = [] }

    var relay: Int? { relayState.withLock { $0.relay } }
    var isHolding: Bool { relayState.withLock { $0.holding } }
    var adoptingTo: Int? { relayState.withLock { $0.adoptingTo } }

    /// Task: keeps an event for a handover and says where to send it now (nil: nowhere).
    func record(_ frame: [UInt8]) -> Int? {
        relayState.withLock { r in
            r.started = true
            if r.resumable {
                r.sentBytes += frame.count
                if r.sentBytes > maxReplayBytes { r.resumable = false; r.sent = [] } else { r.sent.append(frame) }
            }
            return r.holding ? nil : r.relay
        }
    }

    /// Loop: an adoption was asked of `link`; returns whether the job has produced events.
    func beginAdoption(to link: Int) -> Bool {
        relayState.withLock { r in r.adoptingTo = link; r.holding = true; r.askedStarted = r.started; return r.started }
    }

    /// Loop: its relay went down; keep its events until a router adopts it.
    func hold() { relayState.withLock { $0.holding = true } }

    /// Loop: `link` adopted it. Returns the old relay, the events to send the new one first
    /// (none when the job is past its replay bound: the client then sees the gap), and whether
    /// it started after the adoption was asked (the router does not know yet).
    func switchRelay(to link: Int) -> (old: Int?, replay: [[UInt8]], startedSinceAsked: Bool) {
        relayState.withLock { r in
            let old = r.relay
            r.relay = link
            r.adoptingTo = nil
            r.holding = false
            return (old, r.resumable ? r.sent : [], r.started && !r.askedStarted)
        }
    }

    /// Loop: the adoption was refused; returns the relay it keeps.
    func abandonAdoption() -> Int? {
        relayState.withLock { r in r.adoptingTo = nil; r.holding = false; return r.relay }
    }

    /// Loop: nobody relays this run any more (another router runs the request): nothing it makes
    /// goes anywhere, and its report is not sent.
    func silence() { relayState.withLock { $0.relay = nil; $0.sent = [] } }

    func armDeadline(_ timer: DeadlineTimer.Token) {
        let ended = deadline.withLock { d -> Bool in
            d.timer = timer
            return d.ended
        }
        if ended { DeadlineTimer.shared.cancel(timer) }
    }

    func disarmDeadline() {
        let timer = deadline.withLock { d -> DeadlineTimer.Token? in
            d.ended = true
            defer { d.timer = nil }
            return d.timer
        }
        if let timer { DeadlineTimer.shared.cancel(timer) }
    }
}

public func randomWorkerID() -> String {
    "worker-" + String(UInt64.random(in: 0..<UInt64.max), radix: 36)
}

/// Lets the loop's handlers reach the worker that owns the loop (set once, right after init).
private final class WorkerBox: @unchecked Sendable {
    weak var worker: Worker?
}
