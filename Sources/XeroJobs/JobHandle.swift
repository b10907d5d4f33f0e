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
    private var timer: Task<Void, Never>?
    private let ended = Locked(false)
    /// The job itself is over (its worker or router said so): ending it needs no cancel.
    private let finished = Locked(false)

    init(client: JobClient, account: JobAccount, requestId: String, headers: [(String, String)], holdsSlot: Bool) {
        self.client = client
        self.account = account
        self.requestId = requestId
        self.rateLimitHeaders = headers
        self.holdsSlot = holdsSlot
    }

    func begin(_ mailbox: EventMailbox, timer: Task<Void, Never>) {
        reader = EventReader(mailbox)
        self.timer = timer
    }

    /// True when another event has already arrived (a writer can batch before flushing).
    public var hasBuffered: Bool { reader?.hasBuffered ?? false }

    /// The next event, in order and gap-checked. A terminal event (`.done` / `.error`) is the last.
    /// Cancelling the calling task cancels the job.
    public func next() async throws -> StreamEvent {
        guard var r = reader else { throw APIError.internalError("The job was never submitted.") }
        reader = nil   // one owner of the reader's buffers while it reads (no copy on write)
        let hub = client.hub, requestId = self.requestId
        defer { reader = r }
        let ev = try await withTaskCancellationHandler { try await r.next() } onCancel: { hub.cancel(requestId) }
        if ev.isTerminal, Self.endsTheJob(ev) { finished.withLock { $0 = true } }
        return ev
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
        timer?.cancel()
        client.hub.close(requestId)
        if !finished.withLock({ $0 }) { client.hub.cancel(requestId) }
        if holdsSlot { client.limiter?.release(keyHash: account.keyHash) }
    }

    /// Ends a job that never reached the router: its slot is freed, but there is nothing to cancel.
    func endUnsubmitted() {
        finished.withLock { $0 = true }
        end()
    }

    /// Adds the admission's rate-limit headers to an error for the client; a 429 from a full router
    /// queue (events carry no headers) gets its `Retry-After` here.
    public func addHeaders(to e: inout APIError) {
        for (name, value) in rateLimitHeaders { e.headers[name] = value }
        if e.status == 429, e.headers["Retry-After"] == nil { e.headers["Retry-After"] = "1" }
    }
}
