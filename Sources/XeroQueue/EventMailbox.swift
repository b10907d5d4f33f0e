import XeroCore

/// One request's incoming events. The hub's loop thread puts events in; the request's task takes
/// everything that has arrived in one go, so a burst of tokens becomes one SSE write instead of one
/// write (and one task wake-up) per token.
public final class EventMailbox: @unchecked Sendable {
    private let lock = Locked(State())
    private struct State {
        var events: [StreamEvent] = []
        var waiter: CheckedContinuation<[StreamEvent], Never>?
        var closed = false
    }

    public func put(_ event: StreamEvent) {
        let waiter = lock.withLock { s -> CheckedContinuation<[StreamEvent], Never>? in
            if s.closed { return nil }
            if let w = s.waiter { s.waiter = nil; return w }
            s.events.append(event)
            return nil
        }
        waiter?.resume(returning: [event])
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
