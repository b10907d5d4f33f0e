/// Which clients (gateways, batch runners) this router's events-out XPUB reaches now, and the
/// adoptions waiting for one (docs/routing.md, "A replay goes out only when its client is
/// subscribed"). PUB/SUB drops what is published before a subscription arrives, and a worker adopting a
/// job to a restarted router can be quicker than the client's SUB reconnecting: such an adoption
/// is answered only once the client is subscribed. Pure state; the router feeds it the XPUB's
/// subscription frames and its ticks.
struct ClientChannels {
    /// An `adopt` not answered yet, kept as it came (the router runs it again when its client is here).
    struct Adoption: Equatable {
        var identity: [UInt8]
        var worker: String
        var requestId: String
        var client: String
        var ticket: [UInt8]
        var started: Bool
        var sinceMs: Int64
    }

    enum Change: Equatable {
        /// `client` is subscribed. `returned`: it was subscribed before, so this is a new
        /// connection of its SUB (which subscribes once per connection): whatever was published
        /// to it since the old one broke is lost, even if the old one's end was never seen (a
        /// partition shows no end). `ready`: the adoptions that waited for it, oldest first.
        case subscribed(client: String, returned: Bool, ready: [Adoption])
        case unsubscribed(client: String)
    }

    /// A request may run on two workers (it was re-submitted after its router died): each one's
    /// adoption is its own.
    struct Key: Hashable {
        var requestId: String
        var worker: String
    }

    /// Bounds: subscriptions come from platform peers only with CURVE, from anyone without it;
    /// a worker (a tenant's agent, perhaps) holds at most `maxWaitingPerWorker` of the waiting.
    static let maxClients = 65_536
    static let maxWaiting = 16_384
    static let maxWaitingPerWorker = 1024
    var waitMs: Int64 = 5000

    private(set) var subscribed: Set<String> = []
    /// Every client that ever subscribed here (its next subscription is a return).
    private(set) var seen: Set<String> = []
    private(set) var waiting: [Key: Adoption] = [:]
    private var perWorker: [String: Int] = [:]

    func isSubscribed(_ client: String) -> Bool { subscribed.contains(client) }

    /// A frame from the events-out XPUB: `1` + topic subscribes, `0` + topic ends it. Only a
    /// client's own prefix (`<client>/`) counts; anything else is ignored.
    mutating func subscription(_ frame: [UInt8]) -> Change? {
        guard frame.count >= 3, frame.first == 0 || frame.first == 1, frame.last == UInt8(ascii: "/") else { return nil }
        let name = frame[1..<(frame.count - 1)]
        guard !name.contains(UInt8(ascii: "/")) else { return nil }
        let client = String(decoding: name, as: UTF8.self)
        if frame[0] == 0 {
            guard subscribed.remove(client) != nil else { return nil }
            return .unsubscribed(client: client)
        }
        let returned = seen.contains(client)
        if !returned {
            guard subscribed.count < Self.maxClients else { return nil }
            // Past the bound the oldest knowledge goes: a return is then taken for a first visit.
            if seen.count >= Self.maxClients { seen = subscribed }
            seen.insert(client)
        }
        subscribed.insert(client)
        let ready = waiting.values.filter { $0.client == client }.sorted { ($0.sinceMs, $0.requestId, $0.worker) < ($1.sinceMs, $1.requestId, $1.worker) }
        for a in ready { remove(a) }
        return .subscribed(client: client, returned: returned, ready: ready)
    }

    /// Keeps an adoption until its client subscribes. False when too many wait, in all or from
    /// its worker (refuse it). A second `adopt` of the same request by the same worker replaces the first.
    mutating func wait(_ adoption: Adoption) -> Bool {
        let key = Key(requestId: adoption.requestId, worker: adoption.worker)
        if waiting[key] != nil {
            waiting[key] = adoption
            return true
        }
        guard waiting.count < Self.maxWaiting, perWorker[adoption.worker, default: 0] < Self.maxWaitingPerWorker else { return false }
        waiting[key] = adoption
        perWorker[adoption.worker, default: 0] += 1
        return true
    }

    /// Adoptions whose client did not come within `waitMs`: to be refused.
    mutating func expired(now: Int64) -> [Adoption] {
        guard !waiting.isEmpty else { return [] }
        let old = waiting.values.filter { now - $0.sinceMs > waitMs }.sorted { ($0.requestId, $0.worker) < ($1.requestId, $1.worker) }
        for a in old { remove(a) }
        return old
    }

    private mutating func remove(_ a: Adoption) {
        guard waiting.removeValue(forKey: Key(requestId: a.requestId, worker: a.worker)) != nil else { return }
        let n = perWorker[a.worker, default: 1] - 1
        perWorker[a.worker] = n > 0 ? n : nil
    }
}
