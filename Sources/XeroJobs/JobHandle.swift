import XeroCore
import XeroQueue
import XeroStore

/// One running job, from its submission to its end. Its events are read by one task at a time
/// (the route handler, then the response body it hands the handle to), which is what makes the
/// unchecked Sendable sound; `end()` may be called from anywhere, any number of times.
public final class JobHandle: @unchecked Sendable {
    public let requestId: String
    public let account: JobAccount
    /// OpenAI's `x-ratelimit-*` headers for the caller's key, from the admission.
    public let rateLimitHeaders: [(String, String)]
    private let client: JobClient
    private let holdsSlot: Bool
    private var reader: EventReader?
    private var timer: DeadlineTimer.Token?
    private let ended = Locked(false)
    /// The job itself is over (its worker or router said so): ending it needs no cancel.
    private let finished = Locked(false)
    /// Its metrics: events are noted by the reader; how it ended is counted once, by whoever
    /// gets there first (the terminal event, or `end()` for a client that left).
    private let timeline: RequestTimeline
    private let counted = Locked(false)
    private var submitted = false
    /// What a migration would replay: choice 0's token ids as the client received them; nil once
    /// the job cannot be continued exactly (a delta without ids, another choice, a tool call).
    private var replay: [Int32]? = []
    private var migrations = 0
    static let maxMigrations = 2

    init(client: JobClient, account: JobAccount, requestId: String, headers: [(String, String)], holdsSlot: Bool, timeline: RequestTimeline) {
        self.client = client
        self.account = account
        self.requestId = requestId
        self.rateLimitHeaders = headers
        self.holdsSlot = holdsSlot
        self.timeline = timeline
    }

    /// The router's prediction for the worker it chose (jobs with SLO hints; -1 = none yet), once
    /// the first event has been read.
    public var prediction: (ttftMs: Int, tpotMs: Int)? { reader?.prediction }

    /// What the job achieved as this gateway saw it (`RequestTimeline.achieved`).
    public func achieved(completionTokens: Int) -> (ttftMs: Double?, tpotMs: Double?) { timeline.achieved(completionTokens: completionTokens) }

    func begin(_ mailbox: EventMailbox, timer: DeadlineTimer.Token) {
        reader = EventReader(mailbox)
        self.timer = timer
        submitted = true
        timeline.instruments.inFlight.increment()
    }

    /// The request's log line (`--log-format json` makes it one object): who, where, how it ended.
    private func logEnd(status: Int, outcome: String, usage: Usage?) {
        let a = account, ms = timeline.elapsedMs
        client.logger.info("request ended", metadata: [
            "request_id": "\(requestId)", "project": "\(a.project)", "endpoint": "\(a.endpoint)", "tier": "\(a.tier.name)",
            "model": "\(a.model)", "status": "\(status)", "outcome": "\(outcome)", "ms": "\(ms)",
            "prompt_tokens": "\(usage?.promptTokens ?? 0)", "completion_tokens": "\(usage?.completionTokens ?? 0)",
        ].merging(a.batchId.isEmpty ? [:] : ["batch": "\(a.batchId)"]) { $1 })
    }

    /// True the first time only: the request's ending is counted once.
    private func countsEnding() -> Bool { counted.withLock { c in defer { c = true }; return !c } }

    /// True when another event has already arrived (a writer can batch before flushing).
    public var hasBuffered: Bool { reader?.hasBuffered ?? false }

    /// The next event, in order and gap-checked. A terminal event (`.done` / `.error`) is the last.
    /// Cancelling the calling task cancels the job.
    public func next() async throws -> StreamEvent {
        guard var r = reader else { throw APIError.internalError("The job was never submitted.") }
        reader = nil   // one owner of the reader's buffers while it reads (no copy on write)
        let hub = client.hub, requestId = self.requestId
        defer { reader = r }
        var ev = try await withTaskCancellationHandler { try await r.next() } onCancel: { hub.cancel(requestId) }
        // Its worker died mid-stream: continue it elsewhere from what the client has, if that can
        // be exact; the client sees one unbroken stream (docs/routing.md, "Mid-stream migration").
        while case let .lost(e) = ev.body {
            guard let tokens = replay, migrations < Self.maxMigrations, let attempt = r.attempt else {
                hub.cancel(requestId)   // the router ends it now instead of waiting for a resume
                ev = StreamEvent(requestId: requestId, attempt: ev.attempt, seq: WireLimits.outOfBandSeq, body: .error(e))
                break
            }
            migrations += 1
            r.follow(attempt: attempt + 1)
            hub.resume(requestId, fromSeq: r.nextSeq, tokens: tokens)
            client.logger.info("request continues on another worker", metadata: ["request_id": "\(requestId)", "replayed_tokens": "\(tokens.count)"])
            ev = try await withTaskCancellationHandler { try await r.next() } onCancel: { hub.cancel(requestId) }
        }
        noteForReplay(ev.body)
        switch ev.body {
        case let .done(usage):
            if countsEnding() { logEnd(status: 200, outcome: timeline.succeeded(usage), usage: usage) }
        case let .error(e):
            if countsEnding() { logEnd(status: e.status, outcome: timeline.failed(status: e.status, code: e.code ?? e.type), usage: nil) }
        default: timeline.saw(ev.body)
        }
        if ev.isTerminal, Self.endsTheJob(ev) { finished.withLock { $0 = true } }
        return ev
    }

    /// Keeps choice 0's token ids for a migration, or gives up on one that could not be exact.
    private func noteForReplay(_ body: StreamEvent.Body) {
        guard replay != nil else { return }
        switch body {
        case let .delta(index, text, _, tokens):
            if index != 0 || (tokens.isEmpty && !text.isEmpty) || replay!.count + tokens.count > WireLimits.maxReplayTokens { replay = nil }
            else { replay!.append(contentsOf: tokens) }
        case .toolCall, .vectors: replay = nil
        case let .finish(index, _) where index != 0: replay = nil
        default: break
        }
    }

    /// A terminal event that means no worker runs the job any more: its `done`, or an error its
    /// worker or router sent. The gateway's own timeout (attempt 0) and a stream this gateway
    /// could not follow (`stream_interrupted`) leave the job running: it must be cancelled.
    static func endsTheJob(_ ev: StreamEvent) -> Bool {
        switch ev.body {
        case .done: return true
        case let .error(e): return ev.attempt > 0 && e.code != APIError.streamInterruptedCode
        default: return false
        }
    }

    /// Ends the job for this client: frees the key's concurrency slot now, stops listening, and
    /// cancels the job unless it is already over. Its usage is settled by the router when the
    /// worker reports (also after a cancel), never here.
    public func end() {
        let first = ended.withLock { e -> Bool in defer { e = true }; return !e }
        guard first else { return }
        if let timer { DeadlineTimer.shared.cancel(timer) }
        // Ended before its last event: its client left (or the route stopped reading).
        if countsEnding() { logEnd(status: 499, outcome: timeline.failed(status: 499, code: "client_closed"), usage: nil) }
        if submitted { timeline.instruments.inFlight.decrement() }
        client.hub.close(requestId)
        if !finished.withLock({ $0 }) { client.hub.cancel(requestId) }
        if holdsSlot { client.limiter?.release(keyHash: account.keyHash) }
    }

    /// Ends a job that never reached the router: its slot is freed, but there is nothing to cancel.
    func endUnsubmitted() {
        finished.withLock { $0 = true }
        _ = countsEnding()   // the job client counts the refusal it throws
        end()
    }

    /// Adds the admission's rate-limit headers to an error for the client; a 429 from a full router
    /// queue (events carry no headers) gets its `Retry-After` here.
    public func addHeaders(to e: inout APIError) {
        for (name, value) in rateLimitHeaders { e.headers[name] = value }
        if e.status == 429, e.headers["Retry-After"] == nil { e.headers["Retry-After"] = "1" }
    }
}
