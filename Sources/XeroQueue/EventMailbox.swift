import XeroCore

/// One request's incoming events. The hub's loop thread puts events in; the request's task takes
/// everything that has arrived in one go, so a burst of tokens becomes one SSE write instead of one
/// write (and one task wake-up) per token.
///
/// Bounded: a request whose reader falls `capacity` events behind (a client that stopped reading)
/// is failed visibly — its buffered events are replaced by one `stream_interrupted` error — rather
/// than growing the gateway's memory without end or dropping tokens silently.
public final class EventMailbox: @unchecked Sendable {
    public static let defaultCapacity = 65_536

    private let lock = Locked(State())
    private let capacity: Int
    private struct State {
        var events: [StreamEvent] = []
        var waiter: CheckedContinuation<[StreamEvent], Never>?
        var closed = false
        var overflowed = false
    }

    public init(capacity: Int = EventMailbox.defaultCapacity) { self.capacity = max(1, capacity) }

    /// Returns false when this event overflowed the mailbox: the request has been failed and
    /// its job should be cancelled. Later events are ignored.
    @discardableResult
    public func put(_ event: StreamEvent) -> Bool { put([event]) }

    /// Puts several events (one frame's batch) in order, waking the reader once.
    @discardableResult
    public func put(_ batch: [StreamEvent]) -> Bool {
        guard let last = batch.last else { return true }
        var overflowNow = false
        let (waiter, handed) = lock.withLock { s -> (CheckedContinuation<[StreamEvent], Never>?, [StreamEvent]) in
            if s.closed || s.overflowed { return (nil, []) }
            if let w = s.waiter { s.waiter = nil; return (w, batch) }
            if s.events.count + batch.count > capacity {
                s.overflowed = true
                overflowNow = true
                s.events = [StreamEvent(requestId: last.requestId, attempt: last.attempt, seq: WireLimits.outOfBandSeq,
                                        body: .error(.streamInterrupted("the client fell more than \(capacity) events behind")))]
                return (nil, [])
            }
            s.events.append(contentsOf: batch)
            return (nil, [])
        }
        waiter?.resume(returning: handed)
        return !overflowNow
    }

    /// Everything waiting, or — if nothing is — the next arrival. Empty when closed or cancelled.
    public func take() async -> [StreamEvent] {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (cont: CheckedContinuation<[StreamEvent], Never>) in
                let ready = lock.withLock { s -> [StreamEvent]? in
                    if !s.events.isEmpty { defer { s.events.removeAll(keepingCapacity: true) }; return s.events }
                    if s.closed || Task.isCancelled { return [] }
                    s.waiter = cont
                    return nil
                }
                if let ready { cont.resume(returning: ready) }
            }
        } onCancel: {
            close()
        }
    }

    public func close() {
        let waiter = lock.withLock { s -> CheckedContinuation<[StreamEvent], Never>? in
            s.closed = true
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: [])
    }
}
