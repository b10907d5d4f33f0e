import XeroCore

/// A client's (gateway, batch runner) view of its routers and of the jobs it holds on them: the
/// ZeroMQ guide's Lazy Pirate across several routers (docs/routing.md, "Keeping a job until it
/// starts" and "Several routers"). Pure state; `StreamHub` drives it from its loop thread and
/// sends what it returns.
///
/// - A job is kept until its first event, on the link it was sent to. No acknowledgement within
///   the ack timeout: sent again on the same link while it is up (routers drop duplicates).
/// - A link is up while its router's notices keep coming (`linkTimeoutMs`); it goes down without
///   them, and restarts when they name a new router id.
/// - When a link goes down or restarts, every job held on it (unstarted, or streaming through it)
///   is handed over: `relocate` to another up link (the same one when it restarted), whose router
///   asks its workers to adopt them. A job not adopted and without an event after
///   `resubmitAfterMs` is submitted again there with `attempt + 4`; a streaming one not adopted
///   within `streamGraceMs` fails with `stream_interrupted`.
struct PendingSubmits: Sendable {
    enum Send: Sendable, Equatable {
        case submit(link: Int, frame: [UInt8])
        case relocate(link: Int, requestIds: [String])
        case fail(requestId: String, APIError)
    }

    struct Entry: Sendable {
        var job: JobEnvelope
        var frame: [UInt8]
        var link: Int
        var sentAtMs: Int64
        var acknowledged = false
        /// How many times it was moved to another router (each adds 4 to its attempt).
        var moves = 0
    }

    struct Handover: Sendable, Equatable {
        /// The link asked to find it (nil: no link was up; asked as soon as one is).
        var target: Int?
        var sinceMs: Int64
        /// It had produced events: it can only be adopted, never run again.
        var started: Bool
    }

    struct Link: Sendable, Equatable {
        /// Its router confirmed our subscription: events for us reach us through it.
        var ready = false
        var routerId: String?
        var lastHeardMs: Int64 = .min / 2
        /// Up at the last check (a change is what triggers a handover).
        var wasUp = false
    }

    static let maxMoves = 3

    var ackTimeoutMs: Int64 = 1000
    var linkTimeoutMs: Int64 = 1000
    var resubmitAfterMs: Int64 = 500
    var streamGraceMs: Int64 = 3000

    private(set) var entries: [String: Entry] = [:]
    /// Started jobs: the link their events come through.
    private(set) var relays: [String: Int] = [:]
    private(set) var handovers: [String: Handover] = [:]
    private(set) var links: [Link]
    private var cursor = 0

    init(links: Int = 1) { self.links = Array(repeating: Link(), count: links) }

    var count: Int { entries.count }
    var anyReady: Bool { links.contains { $0.ready } }

    func isUp(_ link: Int, now: Int64) -> Bool { links[link].ready && now - links[link].lastHeardMs <= linkTimeoutMs }

    /// The next up link after the cursor (round-robin), avoiding `excluding` when another is up;
    /// with none up, the next link at all (its PUSH queues until the router comes).
    mutating func chooseLink(now: Int64, excluding: Int? = nil) -> Int {
        let n = links.count
        for step in 0..<n {
            let i = (cursor + step) % n
            if isUp(i, now: now), i != excluding || n == 1 { cursor = (i + 1) % n; return i }
        }
        if let excluding, isUp(excluding, now: now) { return excluding }
        defer { cursor = (cursor + 1) % n }
        return cursor
    }

    // MARK: Jobs

    /// A new job: kept, and sent on the returned link.
    mutating func add(_ job: JobEnvelope, frame: [UInt8], now: Int64) -> Int {
        let link = chooseLink(now: now)
        entries[job.requestId] = Entry(job: job, frame: frame, link: link, sentAtMs: now)
        return link
    }

    mutating func remove(_ requestId: String) {
        entries[requestId] = nil
        relays[requestId] = nil
        handovers[requestId] = nil
    }

    mutating func acknowledge(_ requestId: String, link: Int) {
        guard entries[requestId]?.link == link else { return }
        entries[requestId]!.acknowledged = true
        handovers[requestId] = nil   // its router has it: nothing to hand over
    }

    /// An event of the job arrived through `link`: someone runs it and this link relays it.
    /// Returns whether it was still waiting to start (its first event).
    @discardableResult
    mutating func event(_ requestId: String, link: Int) -> Bool {
        let first = entries.removeValue(forKey: requestId) != nil
        if first { relays[requestId] = link }
        if !handovers.isEmpty, handovers.removeValue(forKey: requestId) != nil { relays[requestId] = link }
        return first
    }

    /// A router says it relays the job now (a worker adopted it there).
    mutating func adopted(_ requestId: String, link: Int) {
        guard entries[requestId] != nil || relays[requestId] != nil else { return }
        entries[requestId] = nil
        relays[requestId] = link
        handovers[requestId] = nil
    }

    // MARK: Links

    /// The router confirmed our subscription on `link`.
    mutating func confirmed(_ link: Int, now: Int64) {
        links[link].ready = true
        links[link].lastHeardMs = now
    }

    /// A notice from the router on `link` naming itself. A different id than before: it
    /// restarted and lost what it held, so its jobs are handed over to it again.
    mutating func heard(_ link: Int, routerId: String, now: Int64) -> [Send] {
        links[link].lastHeardMs = now
        links[link].ready = true
        defer { links[link].routerId = routerId }
        guard let known = links[link].routerId, known != routerId else { return [] }
        return handOver(from: link, to: link, now: now)
    }

    /// Jobs held on `link` go to `target` (or another up link): `relocate` now, the rest in `tick`.
    private mutating func handOver(from link: Int, to target: Int?, now: Int64) -> [Send] {
        let waiting = entries.filter { $0.value.link == link }.map(\.key)
        let streaming = relays.filter { $0.value == link }.map(\.key)
        guard !waiting.isEmpty || !streaming.isEmpty else { return [] }
        let to = target ?? { () -> Int? in
            let l = chooseLink(now: now, excluding: link)
            return isUp(l, now: now) && l != link ? l : nil
        }()
        for id in waiting { handovers[id] = Handover(target: to, sinceMs: now, started: false) }
        for id in streaming {
            relays[id] = nil
            handovers[id] = Handover(target: to, sinceMs: now, started: true)
        }
        guard let to else { return [] }
        return [.relocate(link: to, requestIds: (waiting + streaming).sorted())]
    }

    /// Every check that depends on time: links gone silent, unacknowledged submits, handovers due.
    mutating func tick(now: Int64) -> [Send] {
        var out: [Send] = []
        for i in links.indices {
            let up = isUp(i, now: now)
            defer { links[i].wasUp = up }
            if links[i].wasUp && !up { out += handOver(from: i, to: nil, now: now) }
        }
        // Unacknowledged on a link that is up: the same link again (the router drops duplicates).
        for (id, e) in entries where !e.acknowledged && handovers[id] == nil && now - e.sentAtMs >= ackTimeoutMs && isUp(e.link, now: now) {
            entries[id]!.sentAtMs = now
            out.append(.submit(link: e.link, frame: e.frame))
        }
        guard !handovers.isEmpty else { return out }
        var relocations: [Int: [String]] = [:]
        for (id, h) in handovers {
            if h.target == nil {
                // No link was up when it lost its router: ask the first one that is.
                let l = chooseLink(now: now)
                if isUp(l, now: now) {
                    handovers[id]!.target = l
                    handovers[id]!.sinceMs = now
                    relocations[l, default: []].append(id)
                }
                continue
            }
            if h.started {
                guard now - h.sinceMs >= streamGraceMs else { continue }
                handovers[id] = nil
                out.append(.fail(requestId: id, APIError.streamInterrupted("the router relaying this request went away and no other router could take it over; retry it")))
            } else if now - h.sinceMs >= resubmitAfterMs, var e = entries[id] {
                handovers[id] = nil
                guard e.moves < Self.maxMoves else {
                    entries[id] = nil
                    out.append(.fail(requestId: id, APIError.streamInterrupted("this request lost its router \(Self.maxMoves + 1) times; retry it")))
                    continue
                }
                // Nobody adopted it: it was only queued there (or its worker is gone too). Run it
                // anew there, with an attempt number no other router can be using.
                e.moves += 1
                e.job.attempt += 4
                e.frame = GatewayMessage.submit(e.job).encode()
                e.link = h.target!
                e.sentAtMs = now
                e.acknowledged = false
                entries[id] = e
                out.append(.submit(link: e.link, frame: e.frame))
            } else if entries[id] == nil {
                handovers[id] = nil
            }
        }
        for (l, ids) in relocations.sorted(by: { $0.key < $1.key }) { out.append(.relocate(link: l, requestIds: ids.sorted())) }
        return out
    }
}
