/// Several events of one request in one frame. CURVE encrypts per message, so a fast stream sent
/// one token a message spends its time on crypto; a worker's send loop merges the events of one
/// request that are waiting at the same moment into a batch (`coalesce`). Each event keeps its own
/// `seq`, so the gateway's gap and duplicate checks see exactly what they would have seen unbatched.
///
/// Frame: kind `B`, version, `count` (u32, 2…`maxEvents`), then `count` encoded `StreamEvent`s back
/// to back. Merging needs no decoding: the events are concatenated as they were encoded.
public enum StreamEventBatch {
    static let wireKind: UInt8 = 0x42 // "B"
    /// Most events one batch may hold.
    public static let maxEvents = 1024
    /// A batch stops growing at this many bytes (a large vectors event travels alone).
    public static let maxBytes = 256 * 1024

    /// The events of one event frame: a single event, or every event of a batch, in order. A batch
    /// must hold events of one request only (its topic names one request).
    public static func decodeFrame(_ bytes: [UInt8]) throws -> [StreamEvent] {
        guard bytes.first == wireKind else { return [try StreamEvent.decode(bytes)] }
        var r = WireReader(bytes)
        try r.header(expecting: wireKind)
        let count = Int(try r.u32())
        guard (2...maxEvents).contains(count) else { throw WireError.invalid("batch of \(count) events outside 2…\(maxEvents)") }
        var events: [StreamEvent] = []
        events.reserveCapacity(count)
        for _ in 0..<count {
            let e = try StreamEvent.decode(from: &r)
            if let first = events.first, first.requestId != e.requestId {
                throw WireError.invalid("batch mixes requests \(first.requestId) and \(e.requestId)")
            }
            events.append(e)
        }
        guard r.isAtEnd else { throw WireError.invalid("trailing bytes after event batch") }
        return events
    }

    /// One batch frame from already encoded events (2…`maxEvents` of them).
    public static func encode(_ encodedEvents: [[UInt8]]) -> [UInt8] {
        precondition((2...maxEvents).contains(encodedEvents.count), "a batch holds 2…\(maxEvents) events")
        var w = WireWriter(capacity: 6 + encodedEvents.reduce(0) { $0 + $1.count })
        w.u8(wireKind); w.u8(wireVersion); w.u32(UInt32(encodedEvents.count))
        for e in encodedEvents { w.raw(e) }
        return w.bytes
    }

    /// Merges `[topic, event]` messages waiting to be sent: the events of one topic become as few
    /// batches as the bounds allow, in their order, placed where the topic's first event stood.
    /// Messages of different topics keep their relative order; anything that is not a two-frame
    /// event message passes through untouched.
    public static func coalesce(_ messages: [[[UInt8]]]) -> [[[UInt8]]] {
        guard messages.count > 1 else { return messages }
        var order: [Slot] = []          // output in order: a message as it was, or a group
        var groups: [Group] = []
        var open: [[UInt8]: Int] = [:]  // topic → its group still taking events
        order.reserveCapacity(messages.count)
        for (i, m) in messages.enumerated() {
            guard m.count == 2, m[1].first == StreamEvent.wireKind else { order.append(.message(i)); continue }
            if let g = open[m[0]], groups[g].events.count < maxEvents, groups[g].bytes + m[1].count <= maxBytes {
                groups[g].events.append(m[1])
                groups[g].bytes += m[1].count
            } else {
                open[m[0]] = groups.count
                order.append(.group(groups.count))
                groups.append(Group(topic: m[0], events: [m[1]], bytes: m[1].count))
            }
        }
        guard order.count < messages.count else { return messages }
        return order.map { slot in
            switch slot {
            case let .message(i): return messages[i]
            case let .group(g):
                let group = groups[g]
                return group.events.count == 1 ? [group.topic, group.events[0]] : [group.topic, encode(group.events)]
            }
        }
    }

    private enum Slot { case message(Int), group(Int) }
    private struct Group { var topic: [UInt8]; var events: [[UInt8]]; var bytes: Int }
}
