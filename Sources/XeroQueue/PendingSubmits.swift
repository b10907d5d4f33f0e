/// The jobs a client (gateway, batch runner) submitted and has not yet seen start, so it can send
/// them again: the ZeroMQ guide's Lazy Pirate over the PUSH link (docs/routing.md, "Keeping a job
/// until it starts"). Pure state; `StreamHub` drives it from its loop thread.
///
/// - A job no router acknowledged within the ack timeout is sent again (the router drops a
///   duplicate of a job it holds and acknowledges it again).
/// - A router that restarted (a new id in its `alive` notices) lost its queue: every job it had
///   not started is sent again at once.
/// - A job leaves at its first event (a worker has it in hand, or it was answered) or when its
///   client is done with it.
struct PendingSubmits: Sendable {
    struct Entry: Sendable {
        var frame: [UInt8]
        var sentAtMs: Int64
        var acknowledged = false
    }

    private(set) var entries: [String: Entry] = [:]
    private(set) var routerId: String?

    var count: Int { entries.count }

    mutating func add(_ requestId: String, frame: [UInt8], now: Int64) {
        entries[requestId] = Entry(frame: frame, sentAtMs: now)
    }

    mutating func remove(_ requestId: String) { entries[requestId] = nil }

    mutating func acknowledge(_ requestId: String) { entries[requestId]?.acknowledged = true }

    /// The frames of jobs unacknowledged for `ackTimeoutMs`, marked as sent now.
    mutating func overdue(now: Int64, ackTimeoutMs: Int64) -> [[UInt8]] {
        var out: [[UInt8]] = []
        for (id, e) in entries where !e.acknowledged && now - e.sentAtMs >= ackTimeoutMs {
            out.append(e.frame)
            entries[id]!.sentAtMs = now
        }
        return out
    }

    /// The router says who it is. Another id than before: it restarted, so every job waiting is
    /// unacknowledged again and due now. Returns whether it restarted.
    mutating func routerIs(_ id: String) -> Bool {
        defer { routerId = id }
        guard let known = routerId, known != id else { return false }
        for key in entries.keys {
            entries[key]!.acknowledged = false
            entries[key]!.sentAtMs = .min / 2
        }
        return true
    }
}
