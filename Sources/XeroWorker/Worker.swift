import Foundation
import Logging
import Synchronization
import XeroCore
import XeroEngines
import XeroMetrics
import XeroQueue

/// A worker process: takes jobs from the router against credits (one per free slot), runs each
/// on its `Engine`, and publishes the job's events on the job's own channel. Joins and leaves at
/// will: `drain()` stops taking work, finishes what runs, says goodbye.
public final class Worker: Sendable {
    public struct Options: Sendable {
        public var heartbeatMs: Int64 = 1000
        public var joinKey = ""
        /// Merge a job's events that wait to be sent at the same moment into one frame
        /// (`StreamEventBatch`): fast streams pay the per-message CURVE cost once per batch.
        public var coalesceEvents = true
        public init() {}
    }

    static let controlSocket = 0, eventsSocket = 1, monitorSocket = 2

    public let id: String
    public let engine: any Engine
    private let loop: SocketLoop
    private let context: ZMQContext
    private let state: Locked<State>
    private let logger: Logger
    private let options: Options
    private let metrics: WorkerMetrics
    /// Whether the engine keeps a prefix cache (its lookups are counted), asked once.
    private let hasPrefixCache: Bool

    struct State {
        var active: [String: Task<Void, Never>] = [:]
        var helloSent = false
        var channelReady = false
        var draining = false
        var lastHeartbeatMs: Int64 = 0
        /// Prefix-block hashes last reported (sent again only when they change).
        var reportedPrefixes: [UInt64] = []
        var refused: String?
    }

    public init(id: String = randomWorkerID(), engine: any Engine, routerWorkers: String, routerEventsIn: String,
                security: FabricSecurity = .plaintext, options: Options = Options(), metrics: WorkerMetrics = WorkerMetrics(),
                logger: Logger) throws {
        let context = ZMQContext()
        let control = try ZMQSocket(context, .dealer)
        try control.set(.routingID(id))
        try control.set(.reconnectInterval(100))
        // XPUB, not PUB: it lets the worker see the router's subscription arrive, so it says hello
        // (and gets jobs) only once its events can no longer be dropped for want of a subscriber.
        let events = try ZMQSocket(context, .xpub)
        try control.set(.sendHighWaterMark(PipeBounds.control))
        try control.set(.receiveHighWaterMark(PipeBounds.control))
        try control.set(.maxMessageSize(WireLimits.maxJobFrameBytes))
        try events.set(.sendHighWaterMark(PipeBounds.events))
        try events.set(.maxMessageSize(PipeBounds.subscriptionBytes))
        try events.set(.reconnectInterval(100))
        try control.secure(security)
        try events.secure(security)
        // With CURVE a refused handshake is silence; the monitor turns it into a clear exit.
        var monitor: ZMQSocket?
        if case .client = security { monitor = try control.handshakeFailures(context: context, name: id) }
        try control.connect(routerWorkers)
        try events.connect(routerEventsIn)
        self.id = id
        self.engine = engine
        self.context = context
        self.logger = logger
        self.options = options
        self.metrics = metrics
        hasPrefixCache = engine.kvCacheStats().prefixBudgetBytes > 0
        let state = Locked(State())
        self.state = state
        let box = WorkerBox()
        self.loop = SocketLoop(name: "worker", sockets: [control, events] + (monitor.map { [$0] } ?? []), tickMs: 100,
                               coalescing: options.coalesceEvents ? (Self.eventsSocket, StreamEventBatch.coalesce) : nil,
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
        state.withLock { $0.draining = true }
        sendControl(.draining)
        logger.info("worker draining", metadata: ["worker": "\(id)", "active": "\(activeJobs)"])
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while activeJobs > 0 && Date() < deadline { try? await Task.sleep(nanoseconds: 20_000_000) }
        let leftovers = state.withLock { s in s.active.values.map { $0 } }
        for t in leftovers { t.cancel() }
        sendControl(.bye)
        try? await Task.sleep(nanoseconds: 50_000_000) // let goodbye leave the socket
    }

    public func stop() {
        loop.stop()
        context.terminate()
    }

    // MARK: Loop thread

    func handle(_ ctx: LoopContext, socket: Int, frames: [[UInt8]]) {
        if socket == Self.monitorSocket {
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
        if socket == Self.eventsSocket {
            // A subscription from the router's XSUB: our event channel is live.
            guard frames.first?.first == 1 else { return }
            let first = state.withLock { s -> Bool in
                let f = !s.channelReady
                s.channelReady = true
                return f
            }
            if first { sayHello(ctx) }
            return
        }
        guard frames.count == 1 else { return }
        let msg: RouterMessage
        do { msg = try RouterMessage.decode(frames[0]) } catch {
            logger.warning("bad message from router dropped", metadata: ["error": "\(error)"])
            return
        }
        switch msg {
        case let .job(envelope): startJob(envelope)
        case let .cancel(requestId): state.withLock { $0.active[requestId] }?.cancel()
        case .identify: sayHello(ctx)
        case let .refused(why):
            logger.error("router refused this worker", metadata: ["reason": "\(why)"])
            state.withLock { $0.refused = why }
        case .modelGrant, .modelRefused:
            break   // answers to ModelFetcher's own connection; never asked on this one
        }
    }

    func tick(_ ctx: LoopContext) {
        let now = nowMs()
        let (due, active, ready) = state.withLock { s -> (Bool, Int, Bool) in
            let due = now - s.lastHeartbeatMs >= options.heartbeatMs
            if due, s.lastHeartbeatMs > 0, now - s.lastHeartbeatMs > 5 * options.heartbeatMs {
                // The router drops a worker it does not hear from; say why we were silent.
                logger.warning("worker loop stalled: heartbeat late", metadata: ["ms": "\(now - s.lastHeartbeatMs)"])
            }
            if due { s.lastHeartbeatMs = now }
            return (due, s.active.count, s.helloSent)
        }
        let kv = engine.kvCacheStats()
        metrics.slots(busy: active, free: engine.info.slots - active)
        metrics.kvCache(bytes: kv.bytes, usage: kv.prefixBudgetBytes > 0 ? Double(kv.prefixBytes) / Double(kv.prefixBudgetBytes) : 0)
        guard due && ready else { return }
        ctx.send(socket: Self.controlSocket, frames: [WorkerMessage.heartbeat(active: active).encode()])
        let prefixes = engine.prefixBlockHashes()
        let changed = state.withLock { s -> Bool in
            guard s.reportedPrefixes != prefixes else { return false }
            s.reportedPrefixes = prefixes
            return true
        }
        if changed { ctx.send(socket: Self.controlSocket, frames: [WorkerMessage.prefixes(prefixes).encode()]) }
    }

    private func sayHello(_ ctx: LoopContext) {
        let (ready, free, draining) = state.withLock { s -> (Bool, Int, Bool) in
            (s.channelReady, engine.info.slots - s.active.count, s.draining)
        }
        guard ready else { return }
        let info = engine.info
        let hello = WorkerInfo(id: id, slots: info.slots, freeSlots: draining ? 0 : max(0, free), models: info.models,
                               capabilities: info.capabilities, engine: info.name, host: ProcessInfo.processInfo.hostName,
                               pid: Int(getpid()), joinKey: options.joinKey)
        ctx.send(socket: Self.controlSocket, frames: [WorkerMessage.hello(hello).encode()])
        if draining { ctx.send(socket: Self.controlSocket, frames: [WorkerMessage.draining.encode()]) }
        state.withLock { $0.helloSent = true }
    }

    // MARK: Jobs

    private func sendControl(_ m: WorkerMessage) { loop.send(socket: Self.controlSocket, frames: [m.encode()]) }

    private func publish(_ topic: [UInt8], _ event: StreamEvent) { loop.send(socket: Self.eventsSocket, frames: [topic, event.encode()]) }

    /// Longest a job may run here, whatever deadline its envelope names.
    static let maxJobMs: Int64 = 7 * 86_400_000

    private func startJob(_ job: JobEnvelope) {
        let run = JobRun(job: job)
        // A job beyond our slots, or one we already run, was never asked for: refuse it visibly
        // (the router only sends against credits, so this means a confused or hostile router).
        // The task is recorded in the same critical section that decides to run it: a job that
        // ends at once removes itself only after it was recorded (else its slot would leak).
        let slots = engine.info.slots
        var task: Task<Void, Never>?
        let refusal: String? = state.withLock { s in
            if s.active[job.requestId] != nil { return "duplicate" }
            if s.active.count >= slots { return "no free slot" }
            let t = Task { [self] in await self.run(run) }
            s.active[job.requestId] = t
            task = t
            return nil
        }
        guard let task else {
            let refusal = refusal ?? "refused"
            logger.warning("job refused", metadata: ["request_id": "\(job.requestId)", "reason": "\(refusal)"])
            if refusal != "duplicate" {
                emit(run, .error(APIError.unavailable("The worker had no free slot for this request; retry.")))
                sendControl(.done(JobReport(requestId: job.requestId, attempt: job.attempt, outcome: "error:no_slot", firstTokenAtMs: 0,
                                            finishedAtMs: nowMs(), promptTokens: 0, completionTokens: 0)))
            }
            return
        }
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

    private func run(_ run: JobRun) async {
        let job = run.job
        do {
            switch job.kind {
            case .chatCompletion:
                try await runChat(run)
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
        state.withLock { _ = $0.active.removeValue(forKey: job.requestId) }
        run.disarmDeadline()
        metrics.jobEnded(model: job.model, outcome: run.outcome)
        logger.info("job ended", metadata: [
            "request_id": "\(job.requestId)", "project": "\(job.project)", "endpoint": "\(job.endpoint)", "tier": "\(job.tier)",
            "worker": "\(id)", "model": "\(job.model)", "attempt": "\(job.attempt)", "outcome": "\(run.outcome)",
            "prompt_tokens": "\(usage.promptTokens)", "completion_tokens": "\(usage.completionTokens)", "cached_tokens": "\(usage.cachedTokens)",
        ])
        if job.kind == .chatCompletion, hasPrefixCache {
            metrics.prefixLookup(model: job.model, queried: usage.promptTokens, hit: usage.cachedTokens)
        }
        sendControl(.done(JobReport(requestId: job.requestId, attempt: job.attempt, outcome: run.outcome, firstTokenAtMs: run.firstTokenAt,
                                    finishedAtMs: nowMs(), promptTokens: usage.promptTokens, completionTokens: usage.completionTokens)))
    }

    private func runChat(_ run: JobRun) async throws {
        let job = run.job
        let chat = try ChatRequest.parse(job.payload)
        let request = EngineRequest(requestId: job.requestId, model: job.model, chat: chat, rawBody: job.payload, deadlineMs: job.requestDeadlineMs,
                                    project: job.project, meter: run.meter)
        for try await ev in engine.generate(request) {
            try Task.checkCancellation()
            switch ev {
            case let .text(choice, text, logprobs): emit(run, .delta(index: choice, text: text, logprobs: logprobs))
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
        if run.seq == 0 {
            run.firstTokenAt = nowMs()
            sendControl(.started(requestId: run.job.requestId))
        }
        publish(run.topic, StreamEvent(requestId: run.job.requestId, attempt: run.job.attempt, seq: run.seq, body: body))
        run.seq += 1
    }
}

/// Per-job bookkeeping. Used by the job's own task only (the timer touches just `timedOut`).
final class JobRun: @unchecked Sendable {
    let job: JobEnvelope
    let topic: [UInt8]
    var seq = 0
    var firstTokenAt: Int64 = 0
    /// What the job used so far (the engine counts into it; its final `.usage` replaces it).
    let meter = UsageMeter()
    var outcome = "done"
    let timedOut = Locked(false)
    /// The deadline timer, and whether the job already ended (then a timer armed late is cancelled at once).
    private let deadline = Locked<(ended: Bool, timer: DeadlineTimer.Token?)>((false, nil))
    init(job: JobEnvelope) { self.job = job; topic = Array(job.topic.utf8) }

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
