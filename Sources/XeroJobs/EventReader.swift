import XeroCore
import XeroQueue

/// Reads a request's events in order, keeping to the first attempt that spoke, and checks that
/// none is missing: events of an attempt carry seq 0, 1, 2, …; a gap (a bound dropped some on
/// the way) ends the request with `stream_interrupted` instead of showing an answer with a hole.
/// Terminal events made by a router or this gateway carry `WireLimits.outOfBandSeq`.
public struct EventReader: Sendable {
    let mailbox: EventMailbox
    public private(set) var attempt: Int?
    /// The seq the next event of the attempt must carry (what a migration continues from).
    public private(set) var nextSeq = 0
    private var pending: [StreamEvent] = []
    private var index = 0
    /// The router's prediction for the worker it placed the job on (`StreamEvent.placed`).
    public private(set) var prediction: (ttftMs: Int, tpotMs: Int)?

    public init(_ mailbox: EventMailbox, attempt: Int? = nil) {
        self.mailbox = mailbox
        self.attempt = attempt
    }

    /// A migration: from now on only `attempt` counts, continuing at the same seq.
    public mutating func follow(attempt: Int) { self.attempt = attempt }

    /// True when another event has already arrived (a writer can batch before flushing).
    public var hasBuffered: Bool { index < pending.count }

    public mutating func next() async throws -> StreamEvent {
        while true {
            if index >= pending.count {
                pending = await mailbox.take()
                index = 0
                if pending.isEmpty {
                    if Task.isCancelled { throw CancellationError() }
                    throw APIError.internalError("The event stream ended without a result.")
                }
            }
            let ev = pending[index]
            index += 1
            if ev.seq == WireLimits.outOfBandSeq {
                if ev.isTerminal { return ev }
                if case let .placed(ttft, tpot) = ev.body { prediction = (ttft, tpot) }
                continue   // a notice, not part of the answer
            }
            // A re-dispatched job speaks with a new attempt number; never mix two attempts.
            if let attempt, ev.attempt != attempt { continue }
            if attempt == nil { attempt = ev.attempt }
            if ev.seq < nextSeq { continue }   // a duplicate
            if ev.seq > nextSeq {
                let e = APIError.streamInterrupted("events \(nextSeq)…\(ev.seq - 1) were lost")
                return StreamEvent(requestId: ev.requestId, attempt: ev.attempt, seq: WireLimits.outOfBandSeq, body: .error(e))
            }
            nextSeq += 1
            return ev
        }
    }
}
