import XeroCore

/// The router's decisions, with no I/O: tier queues, worker credits, placement, deadlines,
/// liveness. Owned by the router's loop thread; every method is synchronous and deterministic
/// given `now`, so the unit tests drive it directly.
///
/// - Priority without starvation: when several tiers have work, smooth weighted round-robin over
///   their `weight`s picks the tier (priority 4 : standard 1 → 4 of every 5 dispatches).
/// - Fairness within a tier: its projects take turns (`TierQueue`), so one project's burst
///   queues behind itself only. Bounded per tier and per project (`max_queued`,
///   `max_queued_per_project`): past a bound a submit is refused, never queued.
/// - Credits: a worker is sent a job only against a credit it granted; each job costs one.
/// - Deadlines: a job still queued at its `queueDeadlineMs` is handed back by `expire` to be
///   answered 503; it is never dispatched.
public struct TierScheduler {
    public struct Worker: Sendable {
        public var info: WorkerInfo
        /// Whose worker it is (from its join key): which projects' jobs it may see.
        public var fleet: AgentFleet = .platform
        public var credits: Int
        public var draining = false
        public var lastSeenMs: Int64
        public var inflight: Set<String> = []
        /// Jobs running on it as it last reported them (every router's), and what this router
        /// sent to it and saw end since that report: its load as placement sees it.
        public var reportedActive = 0
        public var sentSinceReport = 0
        public var endedSinceReport = 0
        /// Its running jobs over time, for its TPOT samples (`JobTime`).
        public var jobTime = JobTime()

        /// Running jobs: the worker's own count (all routers) corrected by this router's
        /// dispatches since, and never below this router's own jobs on it.
        public var running: Int { max(inflight.count, reportedActive + sentSinceReport - endedSinceReport) }

        /// Running jobs over slots.
        public var load: Double { Double(running) / Double(max(1, info.slots)) }

        /// Could it ever run this job: not draining, serves its model, its fleet may see the project.
        public func mayRun(_ job: JobEnvelope) -> Bool { !draining && info.serves(job) && fleet.mayServe(job) }
    }

    public struct InFlight: Sendable {
        public var envelope: JobEnvelope
        public var worker: String
        public var started: Bool
        public var dispatchedAtMs: Int64
        /// Its prompt blocks the worker did not hold, and the jobs running there, when it was
        /// sent: what its measured TTFT and (where `decodeJobs` is unknown) TPOT are fitted against.
        public var uncachedBlocks = 0
        public var runningAtDispatch = 0
        /// The worker's `jobTime` total and the time when it started: the mark its decode's mean
        /// count is taken from.
        public var startMark: (jobTime: Double, atMs: Int64)?
        /// Set when it finishes: the mean jobs running on its worker while it decoded, itself
        /// included (nil where it never reported its start).
        public var decodeJobs: Double?
        /// What its TPOT sample is fitted against: the mean jobs it decoded beside, or where that
        /// is unknown the jobs running when it was sent and itself.
        public var tpotJobs: Double { decodeJobs ?? Double(runningAtDispatch + 1) }
    }

    public struct Dispatch: Sendable, Equatable {
        public var envelope: JobEnvelope
        public var worker: String
        /// For a job with SLO hints: what the chosen worker is predicted to achieve.
        public var prediction: Prediction?
    }

    /// Per worker, its measured TTFT and TPOT (SLO-aware placement).
    public private(set) var timings: [String: WorkerTimings] = [:]

    /// What happens to a worker's jobs when it is lost.
    public struct LostJobs: Sendable {
        /// Not yet started: back at the front of their queue with `attempt + 1`.
        public var requeued: [JobEnvelope] = []
        /// Streaming chat jobs with attempts left: their client may resume them elsewhere
        /// (`StreamEvent.lost`, then `resume`: docs/routing.md, "Mid-stream migration").
        public var interrupted: [JobEnvelope] = []
        /// Out of attempts, or streaming jobs that cannot be continued: the client gets an error.
        public var failed: [JobEnvelope] = []
    }

    /// Whether a job may run once more. Attempts come in blocks of four (a client moving a job to
    /// another router adds 4: docs/routing.md, "Attempts"); within a block a router re-dispatches
    /// or migrates it at most `maxAttempts - 1` times.
    public func mayRetry(_ job: JobEnvelope) -> Bool {
        (job.attempt - 1) % 4 < maxAttempts - 1 && job.attempt < WireLimits.attempts.upperBound
    }

    /// A migrated job (it carries its replay) goes back at the front of its project's queue.
    public mutating func resubmitFront(_ job: JobEnvelope) {
        queues[job.tier]?.prepend(job)
        queuedIds.insert(job.requestId)
        totalQueued += 1
    }

    public let tiers: [Tier]
    /// Placement for tiers whose config names none.
    public var placement: any PlacementPolicy
    /// Per tier, the policy its config names.
    public var placements: [String: any PlacementPolicy] = [:]
    /// Which workers hold which prompt prefixes (prefix-aware placement), by handle.
    private(set) var prefixIndex = PrefixIndex()
    /// The workers that can take a job now, in pools ordered by load (docs/routing.md, "A router
    /// that scales"). Re-filed after every change to a worker (`refile`).
    private(set) var candidateIndex = CandidateIndex()
    /// Dispatches so far: round-robin's turn.
    private var turn = 0
    public var maxAttempts = 3
    private var queues: [String: TierQueue] = [:]
    private var current: [String: Int] = [:]
    public private(set) var workers: [String: Worker] = [:]
    public private(set) var inflight: [String: InFlight] = [:]
    private var cancelledQueued: Set<String> = []
    /// Request ids queued in any tier (a re-submitted duplicate is recognised in O(1)).
    private var queuedIds: Set<String> = []
    public private(set) var stats: [String: TierStats] = [:]
    /// Per worker id, kept across re-joins (a worker that crashes and comes back stays tracked).
    public private(set) var breakers: [String: WorkerBreaker] = [:]
    public var breakerPolicy = WorkerBreaker.Policy()

    public struct TierStats: Sendable, Equatable {
        public var submitted = 0
        public var dispatched = 0
        public var expired = 0
        public var completed = 0
        public var inflight = 0
    }

    public init(tiers: [Tier], placement: any PlacementPolicy = LeastLoadedPlacement()) {
        self.tiers = tiers.sorted { $0.priority > $1.priority }
        self.placement = placement
        for t in tiers {
            queues[t.name] = TierQueue(); current[t.name] = 0; stats[t.name] = TierStats()
            if let p = Placements.policy(for: t) { placements[t.name] = p }
        }
    }

    public func tier(_ name: String) -> Tier? { tiers.first { $0.name == name } }
    public func depth(_ tier: String) -> Int { queues[tier]?.count ?? 0 }
    public func depth(_ tier: String, project: String) -> Int { queues[tier]?.depth(project: project) ?? 0 }
    /// Projects with jobs queued in a tier.
    public func queuedProjects(_ tier: String) -> Int { queues[tier]?.projects ?? 0 }
    public private(set) var totalQueued = 0

    // MARK: Jobs

    /// Jobs queued at most, across tiers: past it a submit is refused (429), never queued.
    public var maxQueued = 100_000

    public enum EnqueueOutcome: Equatable {
        case queued
        case unknownTier
        /// Every tier together holds `maxQueued`.
        case routerFull(Int)
        /// The tier holds its `max_queued`.
        case tierFull(Int)
        /// The job's project holds the tier's `max_queued_per_project`.
        case projectFull(Int)
    }

    /// Queues a job, or says which bound refuses it.
    public mutating func submit(_ job: JobEnvelope) -> EnqueueOutcome {
        guard let tier = tier(job.tier), queues[job.tier] != nil else { return .unknownTier }
        guard totalQueued < maxQueued else { return .routerFull(maxQueued) }
        if let m = tier.maxQueued, queues[job.tier]!.count >= m { return .tierFull(m) }
        if let m = tier.maxQueuedPerProject, queues[job.tier]!.depth(project: job.project) >= m { return .projectFull(m) }
        queues[job.tier]!.append(job)
        queuedIds.insert(job.requestId)
        totalQueued += 1
        stats[job.tier]!.submitted += 1
        return .queued
    }

    /// Queues a job. Returns false for an unknown tier or when a bound refuses it.
    public mutating func enqueue(_ job: JobEnvelope) -> Bool { submit(job) == .queued }

    /// Whether this router holds the request now, queued or running.
    public func holds(_ requestId: String) -> Bool { queuedIds.contains(requestId) || inflight[requestId] != nil }

    public enum CancelOutcome: Equatable { case dequeued(JobEnvelope), running(worker: String), unknown }

    /// A client went away: drop the job if queued, or say which worker must stop it.
    public mutating func cancel(_ requestId: String) -> CancelOutcome {
        if let f = inflight[requestId] { return .running(worker: f.worker) }
        guard queuedIds.contains(requestId) else { return .unknown }
        for (t, _) in queues {
            let removed = queues[t]!.removeAll { $0.requestId == requestId }
            totalQueued -= removed.count
            if let job = removed.first { queuedIds.remove(requestId); return .dequeued(job) }
        }
        return .unknown
    }

    /// Every job of a gateway that is gone (`replyTo`): its queued jobs, removed, and the running
    /// ones with the worker that must be told to stop.
    public mutating func abandon(replyTo: String) -> (dequeued: [JobEnvelope], running: [(requestId: String, worker: String)]) {
        var dequeued: [JobEnvelope] = []
        for (t, _) in queues {
            let removed = queues[t]!.removeAll { $0.replyTo == replyTo }
            totalQueued -= removed.count
            for j in removed { queuedIds.remove(j.requestId) }
            dequeued += removed
        }
        let running = inflight.values.filter { $0.envelope.replyTo == replyTo }
            .map { (requestId: $0.envelope.requestId, worker: $0.worker) }
            .sorted { $0.requestId < $1.requestId }
        return (dequeued, running)
    }

    /// Marks a job as having produced output: it can no longer be re-dispatched. Only the worker
    /// running it can say so; returns false for anyone else (the message is ignored).
    /// `now`: when the router heard it — the job's time to first token on that worker, as this
    /// router measures it from dispatch (one clock), is a sample of its TTFT model.
    @discardableResult
    public mutating func markStarted(_ requestId: String, worker: String, now: Int64? = nil) -> Bool {
        guard let f = inflight[requestId], f.worker == worker else { return false }
        if !f.started, let now, now >= f.dispatchedAtMs {
            timings[worker, default: WorkerTimings()].ttft.add(x: Double(f.uncachedBlocks), y: Double(now - f.dispatchedAtMs))
            if var w = workers[worker] {
                Self.advanceJobTime(&w, now: now)
                inflight[requestId]!.startMark = (w.jobTime.total, now)
                workers[worker] = w
            }
        }
        inflight[requestId]!.started = true
        return true
    }

    /// A finished job's time per output token (from its worker's report: first token to finish,
    /// over the tokens after the first), a sample of the worker's TPOT model at the jobs it ran
    /// beside, itself included (`InFlight.tpotJobs`).
    public mutating func observeTPOT(_ worker: String, jobs: Double, ms: Double) {
        guard workers[worker] != nil else { return }
        timings[worker, default: WorkerTimings()].tpot.add(x: jobs, y: ms)
    }

    /// Brings a worker's `jobTime` to `now` at its current count.
    private static func advanceJobTime(_ w: inout Worker, now: Int64) {
        w.jobTime.advance(to: now, jobs: Double(w.running))
    }

    /// A worker finished a job (any outcome). Returns the job, and gives the worker its credit back.
    /// `outcome` (from its report) feeds the worker's breaker.
    @discardableResult
    public mutating func finish(_ requestId: String, worker: String, outcome: WorkerBreaker.Outcome = .success, now: Int64 = 0,
                                returnsCredit: Bool = true) -> InFlight? {
        guard var f = inflight[requestId], f.worker == worker else { return nil }
        recordHealth(worker, outcome, now: now)
        inflight[requestId] = nil
        stats[f.envelope.tier]?.inflight -= 1
        stats[f.envelope.tier]?.completed += 1
        if var w = workers[worker] {
            if let mark = f.startMark { f.decodeJobs = w.jobTime.mean(since: mark.jobTime, fromMs: mark.atMs, to: now) }
            w.inflight.remove(requestId)
            w.endedSinceReport += 1
            Self.advanceJobTime(&w, now: now)
            if !w.draining && returnsCredit { w.credits += 1 }
            workers[worker] = w
            refile(worker)
        }
        return f
    }

    // MARK: What workers report for placement

    /// A heartbeat: the jobs running on the worker now, across every router.
    public mutating func reportLoad(_ worker: String, active: Int) {
        guard var w = workers[worker] else { return }
        w.reportedActive = max(0, active)
        w.sentSinceReport = 0
        w.endedSinceReport = 0
        workers[worker] = w
        refile(worker)
    }

    /// The prompt-prefix hashes a worker holds (replacing its previous report).
    public mutating func reportPrefixes(_ worker: String, hashes: [UInt64]) {
        guard workers[worker] != nil, let h = candidateIndex.handles[worker] else { return }
        prefixIndex.report(worker: h, hashes: hashes)
        refile(worker)
    }

    /// Prompt blocks a worker reported holding (ops, tests).
    public func heldBlocks(_ worker: String) -> Int {
        candidateIndex.handles[worker].map { prefixIndex.reportedCount($0) } ?? 0
    }

    /// Per worker holding a prefix of `blocks`: how many leading blocks it holds.
    public func prefixMatches(_ blocks: [UInt64], now: Int64) -> [String: Int] {
        var index = prefixIndex
        index.expire(now: now)
        var out: [String: Int] = [:]
        index.forEachHolder(blocks, now: now) { out[candidateIndex.ids[Int($0)]] = $1 }
        return out
    }

    // MARK: Several routers (docs/routing.md, "Several routers")

    /// A job this router sent to a worker that held no credit for it (it had written this router
    /// off for a moment): back at the front of its project's queue, unchanged, and the credit the
    /// dispatch took is the worker's again.
    @discardableResult
    public mutating func requeue(_ requestId: String, worker: String) -> JobEnvelope? {
        guard let f = inflight[requestId], f.worker == worker, !f.started else { return nil }
        inflight[requestId] = nil
        stats[f.envelope.tier]?.inflight -= 1
        stats[f.envelope.tier]?.dispatched -= 1
        if var w = workers[worker] {
            w.inflight.remove(requestId)
            w.endedSinceReport += 1
            if !w.draining { w.credits += 1 }
            workers[worker] = w
            refile(worker)
        }
        queues[f.envelope.tier]?.prepend(f.envelope)
        queuedIds.insert(requestId)
        totalQueued += 1
        return f.envelope
    }

    /// A worker's job is relayed by another router now: forgotten, with no credit back (the
    /// credit follows the job) and no report.
    @discardableResult
    public mutating func forget(_ requestId: String, worker: String) -> JobEnvelope? {
        guard let f = inflight[requestId], f.worker == worker else { return nil }
        inflight[requestId] = nil
        stats[f.envelope.tier]?.inflight -= 1
        workers[worker]?.inflight.remove(requestId)
        refile(worker)
        return f.envelope
    }

    public enum Adoption: Equatable {
        /// This router relays it now (`dropped`: a queued copy of the same request, from a
        /// client's re-submission, was removed: the running one wins).
        case adopted(dropped: JobEnvelope?)
        /// Already running here on that worker: nothing changes.
        case alreadyHere
        /// Running here on another worker: that run stays, this one must stop.
        case refused
    }

    /// A worker asks this router to relay a job another router dispatched (its ticket was opened
    /// and names the worker). The job runs on that worker; it costs no credit here, and its end
    /// returns one here like any job.
    public mutating func adopt(_ job: JobEnvelope, worker: String, started: Bool, now: Int64) -> Adoption {
        if let f = inflight[job.requestId] { return f.worker == worker ? .alreadyHere : .refused }
        guard workers[worker] != nil else { return .refused }
        var dropped: JobEnvelope?
        if case let .dequeued(queued) = cancel(job.requestId) { dropped = queued }
        workers[worker]!.inflight.insert(job.requestId)
        refile(worker)
        inflight[job.requestId] = InFlight(envelope: job, worker: worker, started: started, dispatchedAtMs: now)
        stats[job.tier]?.inflight += 1
        return .adopted(dropped: dropped)
    }

    /// Gives back up to `n` unspent credits of a worker; returns how many it had.
    public mutating func reclaim(_ worker: String, _ n: Int) -> Int {
        guard var w = workers[worker] else { return 0 }
        let k = min(max(0, n), w.credits)
        w.credits -= k
        workers[worker] = w
        refile(worker)
        return k
    }

    /// How many queued jobs this worker could run now (model, fleet; the same lookahead as
    /// dispatch), capped at its slots: what the router tells it as its demand.
    public func demand(for worker: String) -> Int {
        guard totalQueued > 0, let w = workers[worker], !w.draining else { return 0 }
        var n = 0
        for t in tiers {
            guard let q = queues[t.name], !q.isEmpty else { continue }
            n += q.count(lookahead: Self.lookahead, budget: 512, limit: w.info.slots - n) { w.mayRun($0) }
            if n >= w.info.slots { return w.info.slots }
        }
        return n
    }

    /// Jobs whose queue deadline has passed (and cancelled ones), removed from their queues.
    public mutating func expire(now: Int64) -> [JobEnvelope] {
        var out: [JobEnvelope] = []
        for t in tiers {
            guard let q = queues[t.name], !q.isEmpty else { continue }
            // Cheap check first: most of the time nothing at all is due.
            guard q.anyDue(now: now) else { continue }
            let gone = queues[t.name]!.removeAll { $0.queueDeadlineMs <= now }
            totalQueued -= gone.count
            for j in gone { queuedIds.remove(j.requestId) }
            stats[t.name]!.expired += gone.count
            out += gone
        }
        return out
    }

    // MARK: Workers

    /// A worker said hello (first time, or again after a router restart).
    public mutating func join(_ info: WorkerInfo, fleet: AgentFleet = .platform, now: Int64) {
        var w = workers[info.id] ?? Worker(info: info, credits: 0, lastSeenMs: now)
        w.info = info
        w.fleet = fleet
        w.lastSeenMs = now
        w.draining = false
        // Free slots it reports, minus jobs we sent that it has not seen yet (hello is validated:
        // 0 ≤ freeSlots ≤ slots ≤ WireLimits.slots, so none of this can overflow).
        w.credits = max(0, min(info.freeSlots, info.slots) - w.inflight.count)
        // Its running jobs (every router's) until its first heartbeat says otherwise.
        w.reportedActive = max(0, info.slots - min(info.freeSlots, info.slots))
        w.sentSinceReport = 0
        w.endedSinceReport = 0
        workers[info.id] = w
        candidateIndex.join(info, fleet: fleet)
        refile(info.id)
    }

    public func knows(_ worker: String) -> Bool { workers[worker] != nil }

    public mutating func credit(_ worker: String, _ n: Int, now: Int64) {
        guard var w = workers[worker] else { return }
        w.lastSeenMs = now
        // Never more credits than free slots, whatever the worker claims.
        if !w.draining { w.credits = max(0, min(w.credits.addingSaturated(max(0, n)), w.info.slots - w.inflight.count)) }
        workers[worker] = w
        refile(worker)
    }

    public mutating func seen(_ worker: String, now: Int64) { workers[worker]?.lastSeenMs = now }

    public mutating func drain(_ worker: String) {
        workers[worker]?.draining = true
        workers[worker]?.credits = 0
        if let h = candidateIndex.handles[worker] { prefixIndex.remove(worker: h) }   // affinity never points at a draining worker
        refile(worker)
    }

    /// Removes a worker; its unstarted jobs are re-queued at the front, started ones fail. Lost
    /// with jobs on it (a crash, a cut link) counts against its breaker.
    public mutating func remove(_ worker: String, now: Int64 = 0) -> LostJobs {
        guard let w = workers.removeValue(forKey: worker) else { return LostJobs() }
        if let h = candidateIndex.handles[worker] { prefixIndex.remove(worker: h) }
        candidateIndex.leave(worker)
        timings[worker] = nil
        if !w.inflight.isEmpty { recordHealth(worker, .failure, now: now) }
        var lost = LostJobs()
        for id in w.inflight.sorted().reversed() {
            guard var f = inflight.removeValue(forKey: id) else { continue }
            stats[f.envelope.tier]?.inflight -= 1
            if !f.started && mayRetry(f.envelope) {
                f.envelope.attempt += 1
                queues[f.envelope.tier]?.prepend(f.envelope)   // may pass maxQueued: these were accepted already
                queuedIds.insert(id)
                totalQueued += 1
                lost.requeued.append(f.envelope)
            } else if f.started && f.envelope.kind == .chatCompletion && mayRetry(f.envelope) {
                lost.interrupted.append(f.envelope)
            } else {
                lost.failed.append(f.envelope)
            }
        }
        return lost
    }

    private mutating func recordHealth(_ worker: String, _ outcome: WorkerBreaker.Outcome, now: Int64) {
        breakers[worker, default: WorkerBreaker(policy: breakerPolicy)].record(outcome, now: now, policy: breakerPolicy)
    }

    /// Files a worker's current state in the candidate index (after any change to its credits,
    /// load, draining, breaker or held blocks).
    private mutating func refile(_ id: String) {
        guard let w = workers[id], let h = candidateIndex.handles[id] else { return }
        candidateIndex.update(h, ready: w.credits > 0 && !w.draining, load: w.load, held: prefixIndex.reportedCount(h),
                              guarded: breakers[id].map { $0.state != .closed } ?? false)
    }

    /// Workers silent for longer than `timeoutMs`.
    public func silentWorkers(now: Int64, timeoutMs: Int64) -> [String] {
        workers.values.filter { now - $0.lastSeenMs > timeoutMs }.map(\.info.id).sorted()
    }

    // MARK: Dispatch

    /// Matches queued jobs to worker credits, as many as possible, tier by weighted turn.
    public mutating func dispatch(now: Int64) -> [Dispatch] {
        var out: [Dispatch] = []
        prefixIndex.expire(now: now)
        while candidateIndex.readyCount > 0 {
            // Tiers that have a job some worker with a credit can take right now.
            // (Tiers by index: a `Tier` copy per dispatch retains its strings.)
            var eligible: [(tier: Int, at: TierQueue.Position, worker: String)] = []  // in priority order
            for t in tiers.indices {
                guard let q = queues[tiers[t].name], !q.isEmpty else { continue }
                if let (at, worker) = firstServable(in: q, policy: placements[tiers[t].name] ?? placement, now: now) { eligible.append((t, at, worker)) }
            }
            guard !eligible.isEmpty else { break }
            // Weight-0 tiers (batch) only take capacity no weighted tier can use right now.
            if eligible.contains(where: { tiers[$0.tier].weight > 0 }) { eligible.removeAll { tiers[$0.tier].weight == 0 } }
            // Smooth weighted round-robin among the eligible tiers.
            let total = eligible.reduce(0) { $0 + tiers[$1.tier].weight }
            var best = 0
            for (i, e) in eligible.enumerated() {
                current[tiers[e.tier].name]! += tiers[e.tier].weight
                if current[tiers[e.tier].name]! > current[tiers[eligible[best].tier].name]! { best = i }
            }
            let pick = eligible[best]
            let tierName = tiers[pick.tier].name
            current[tierName]! -= total
            let job = queues[tierName]!.remove(at: pick.at)
            queuedIds.remove(job.requestId)
            totalQueued -= 1
            let handle = candidateIndex.handles[pick.worker]!
            let runningAtDispatch = workers[pick.worker]!.running
            let uncached = job.prefixBlocks.count - prefixIndex.depth(of: handle, job.prefixBlocks, now: now)
            let prediction = job.sloTTFTMs > 0 || job.sloTPOTMs > 0 ? predict(workers[pick.worker]!, uncachedBlocks: uncached) : nil
            Self.sent(job, to: &workers[pick.worker]!)
            Self.advanceJobTime(&workers[pick.worker]!, now: now)
            breakers[pick.worker]?.dispatched(now: now)
            prefixIndex.placed(worker: handle, blocks: job.prefixBlocks, now: now)
            refile(pick.worker)
            turn &+= 1
            inflight[job.requestId] = InFlight(envelope: job, worker: pick.worker, started: false, dispatchedAtMs: now,
                                               uncachedBlocks: uncached, runningAtDispatch: runningAtDispatch)
            stats[tierName]!.dispatched += 1
            stats[tierName]!.inflight += 1
            out.append(Dispatch(envelope: job, worker: pick.worker, prediction: prediction))
        }
        return out
    }

    /// A dispatch as the worker's record sees it (one dictionary access for the three changes).
    private static func sent(_ job: JobEnvelope, to w: inout Worker) {
        w.credits -= 1
        w.sentSinceReport += 1
        w.inflight.insert(job.requestId)
    }

    /// How far into a queue the router looks past a job no free worker can serve.
    static let lookahead = 64

    private func firstServable(in q: TierQueue, policy: any PlacementPolicy, now: Int64) -> (TierQueue.Position, String)? {
        let context = PlacementContext(index: prefixIndex, now: now, turn: turn)
        return q.firstServable(lookahead: Self.lookahead) { job in
            // A project's agents see only that project's jobs; platform workers every job whose endpoint allows them.
            var candidates = candidates(for: job, now: now)
            if job.sloTTFTMs > 0 || job.sloTPOTMs > 0 { candidates = meetingSLO(job, candidates, now: now) }
            // No candidate: every policy answers nil (no separate emptiness check: a heap walk per job).
            guard let h = policy.choose(job: job, among: candidates, context: context) else { return nil }
            return candidateIndex.ids[Int(h)]
        }
    }

    /// The workers that may take `job` now: a credit here, not draining, its model and capability,
    /// a fleet its endpoint allows, a breaker that lets it through.
    func candidates(for job: JobEnvelope, now: Int64) -> Candidates {
        Candidates(index: candidateIndex, pools: candidateIndex.pools(for: job)) { [workers, breakers, candidateIndex] h in
            let id = candidateIndex.ids[Int(h)]
            return breakers[id]?.allows(now: now, inflight: workers[id]?.inflight.count ?? 0) ?? true
        }
    }

    // MARK: SLO-aware placement (docs/routing.md, "SLO-aware placement")

    /// What a worker is predicted to achieve for a job: TTFT from the blocks it lacks, TPOT with
    /// this job added to those running there. That TPOT is also what the running jobs will see
    /// once it joins them (`breaksRunningTPOT`).
    /// Unrounded: placement compares these with the hints (14.6 ms misses a 14 ms hint; rounded,
    /// a 15.4 ms prediction met a 15 ms hint, and every job placed on it missed). Reported rounded.
    func predictMs(_ w: Worker, uncachedBlocks: Int) -> (ttft: Double?, tpot: Double?) {
        let t = timings[w.info.id]
        return (t?.ttft.predict(Double(uncachedBlocks)), t?.tpot.predict(Double(w.running + 1)))
    }

    func predict(_ w: Worker, uncachedBlocks: Int) -> Prediction {
        let p = predictMs(w, uncachedBlocks: uncachedBlocks)
        return Prediction(ttftMs: p.ttft.map { Int($0.rounded()) }, tpotMs: p.tpot.map { Int($0.rounded()) })
    }

    /// How many of the least-loaded candidates SLO filtering weighs (besides the prompt's holders).
    /// With no more candidates than this it weighs every one.
    static let sloCandidates = 64

    /// The candidates predicted to meet the job's hints (one not measured yet is presumed to) without
    /// breaking a running job's (`breaksRunningTPOT`); the tier's policy then chooses among them.
    /// Where none can, the one predicted to miss by the least (the largest ratio of prediction to
    /// hint, minimised) among those it would break nothing on is the only candidate; only if every
    /// candidate would break something, the least miss of all. Weighs the `sloCandidates` least
    /// loaded and every holder of the prompt, not every worker.
    ///
    /// Without the guard, jobs nobody could serve within their hint piled onto the fastest workers
    /// (they missed by the least) until every job there missed too: with TPOT growing with load
    /// (THE SIMULATOR's `--sim-tpot-growth 0.52`), 2 fast and 2 slow workers at concurrency 16
    /// attained 4 % with hints against 80 % without (docs/benchmarks.md).
    func meetingSLO(_ job: JobEnvelope, _ candidates: Candidates, now: Int64) -> Candidates {
        var matched: [CandidateIndex.Handle: Int] = [:]
        if !job.prefixBlocks.isEmpty {
            prefixIndex.forEachHolder(job.prefixBlocks, now: now) { h, depth in if candidates.contains(h) { matched[h] = depth } }
        }
        var weighed = candidates.smallest(Self.sloCandidates)
        for h in matched.keys where !weighed.contains(h) { weighed.append(h) }
        guard weighed.count > 1 else { return candidates }
        var meeting: [CandidateIndex.Handle] = []
        var best: (rank: (Int, Double), id: String, handle: CandidateIndex.Handle)?
        for h in weighed {
            let id = candidateIndex.ids[Int(h)]
            guard let w = workers[id] else { continue }
            let p = predictMs(w, uncachedBlocks: job.prefixBlocks.count - (matched[h] ?? 0))
            var miss = 0.0
            if job.sloTTFTMs > 0, let t = p.ttft { miss = max(miss, t / Double(job.sloTTFTMs)) }
            if job.sloTPOTMs > 0, let t = p.tpot { miss = max(miss, t / Double(job.sloTPOTMs)) }
            let breaks = breaksRunningTPOT(w, withJobAdded: p.tpot)
            if miss <= 1, !breaks { meeting.append(h) }
            // Order of the fallback: breaks nothing first, then the least miss, then the id.
            let rank = (breaks ? 1 : 0, miss)
            if best == nil || rank < best!.rank || (rank == best!.rank && id < best!.id) { best = (rank, id, h) }
        }
        guard let best else { return candidates }
        return candidates.narrowed(to: meeting.isEmpty ? [best.handle] : meeting)
    }

    /// Whether one more job on `w` would keep a job this router runs there from its TPOT hint: a
    /// hint the worker meets with that job alone (so it is not hopeless there) and does not with this job
    /// added (`withJobAdded`, the prediction `predictMs` made). A batched engine's every sequence
    /// slows as its batch grows, so the running jobs pay for the new one.
    ///
    /// "Meets alone", not "meets now": once a worker is overloaded, all its jobs miss already,
    /// and a rule that protects only jobs still meeting would keep it full for ever (jobs nobody
    /// can serve go on missing least there). This one sends them elsewhere until it has drained.
    /// Only this router's jobs are known by their hints; O(jobs running on `w`), paid only for jobs
    /// with hints.
    func breaksRunningTPOT(_ w: Worker, withJobAdded after: Double?) -> Bool {
        guard let after, let alone = timings[w.info.id]?.tpot.predict(1) else { return false }
        for id in w.inflight {
            guard let hint = inflight[id]?.envelope.sloTPOTMs, hint > 0 else { continue }
            if alone <= Double(hint), after > Double(hint) { return true }
        }
        return false
    }

    /// Whether any live worker (not draining) could ever run this job: its model, its fleet.
    public func anyWorkerCouldServe(_ job: JobEnvelope) -> Bool {
        workers.values.contains { $0.mayRun(job) }
    }
}
