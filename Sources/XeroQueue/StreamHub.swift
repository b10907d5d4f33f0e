import Foundation
import Logging
import Synchronization
import XeroCore

/// A router client, as gateways and the batch runner use it: one link per router of the
/// deployment (a PUSH for submits, cancels, liveness and relocations; a SUB on `<client-id>/`
/// for events and notices), every event handed to the waiting request's mailbox whichever router
/// relays it. Which router gets a job, and what happens to the jobs of a router that goes away,
/// is `PendingSubmits` (docs/routing.md, "Several routers").
public final class StreamHub: Sendable {
    /// One router's addresses: its jobs (PULL) and events-out (XPUB) sockets.
    public struct RouterLink: Sendable {
        public var jobs: String
        public var eventsOut: String
        public init(jobs: String, eventsOut: String) {
            self.jobs = jobs
            self.eventsOut = eventsOut
        }
    }

    /// Link i has its PUSH at 2i and its SUB at 2i + 1.
    static func jobsSocket(_ link: Int) -> Int { 2 * link }
    static func eventsSocket(_ link: Int) -> Int { 2 * link + 1 }

    public let gatewayID: String
    private let loop: SocketLoop
    private let context: ZMQContext
    private let streams = Locked<[String: EventMailbox]>([:])
    /// Jobs submitted and not yet started, started jobs' relays, handovers, the links' liveness.
    private let links: Locked<PendingSubmits>
    private let linkCount: Int
    private let logger: Logger
    private let prefixLength: Int

    /// Events one request may have waiting before it is failed (`EventMailbox`).
    public let mailboxCapacity: Int

    public convenience init(gatewayID: String, routerJobs: String, routerEventsOut: String, mailboxCapacity: Int = EventMailbox.defaultCapacity,
                            security: FabricSecurity = .plaintext, logger: Logger) throws {
        try self.init(gatewayID: gatewayID, routers: [RouterLink(jobs: routerJobs, eventsOut: routerEventsOut)], mailboxCapacity: mailboxCapacity,
                      security: security, logger: logger)
    }

    public init(gatewayID: String, routers: [RouterLink], mailboxCapacity: Int = EventMailbox.defaultCapacity,
                security: FabricSecurity = .plaintext, logger: Logger) throws {
        precondition(!routers.isEmpty, "a client needs at least one router")
        let context = ZMQContext()
        var sockets: [ZMQSocket] = []
        for r in routers {
            let jobs = try ZMQSocket(context, .push)
            let events = try ZMQSocket(context, .sub)
            for s in [jobs, events] { try s.set(.reconnectInterval(100)) }
            try jobs.set(.sendHighWaterMark(PipeBounds.control))
            try events.set(.receiveHighWaterMark(PipeBounds.events))
            try events.set(.maxMessageSize(WireLimits.maxEventFrameBytes))
            try jobs.secure(security)
            try events.secure(security)
            try events.subscribe(gatewayID + "/")
            try jobs.connect(r.jobs)
            try events.connect(r.eventsOut)
            sockets += [jobs, events]
        }
        self.gatewayID = gatewayID
        self.context = context
        self.logger = logger
        self.prefixLength = gatewayID.utf8.count + 1
        self.mailboxCapacity = mailboxCapacity
        self.linkCount = routers.count
        self.links = Locked(PendingSubmits(links: routers.count))
        let box = HubBox()
        let alive = GatewayMessage.alive(gatewayId: gatewayID).encode()
        let count = routers.count
        loop = SocketLoop(name: "gateway-hub", sockets: sockets, tickMs: Int(Self.checkEveryMs),
                          onMessage: { ctx, socket, frames in box.hub?.deliver(ctx, socket: socket, frames: frames) },
                          onTick: { ctx in
                              // Liveness, every second, to every router: each cancels the jobs of a client it stops hearing from.
                              let now = nowMs()
                              if now - box.lastAliveMs >= 1000 {
                                  box.lastAliveMs = now
                                  for l in 0..<count { ctx.send(socket: Self.jobsSocket(l), frames: [alive]) }
                              }
                              box.hub?.perform(ctx, box.hub?.links.withLock { $0.tick(now: now) } ?? [])
                          })
        box.hub = self
        loop.start()
    }

    /// True once a router confirmed our subscription: events for us will reach us.
    public var isReady: Bool { links.withLock { $0.anyReady } }

    /// Waits up to `timeoutMs` for the event channel to be live.
    public func waitUntilReady(timeoutMs: Int) async -> Bool {
        let deadline = monotonicNs() + UInt64(timeoutMs) * 1_000_000
        while !isReady {
            if monotonicNs() > deadline { return false }
            try? await Task.sleep(nanoseconds: 5_000_000)
        }
        return true
    }

    /// Registers a request's mailbox. Call before `submit`, so no event can arrive unheard.
    public func open(_ requestId: String) -> EventMailbox {
        let box = EventMailbox(capacity: mailboxCapacity)
        streams.withLock { $0[requestId] = box }
        return box
    }

    public func close(_ requestId: String) {
        streams.withLock { $0.removeValue(forKey: requestId) }?.close()
        links.withLock { $0.remove(requestId) }
    }

    /// Delivers an event generated inside the gateway (its own timeout) as if it had arrived.
    public func inject(_ requestId: String, _ event: StreamEvent) {
        streams.withLock { $0[requestId] }?.put(event)
    }

    /// How often links, unacknowledged submits and handovers are checked.
    static let checkEveryMs: Int64 = 100
    public static let ackTimeoutMs: Int64 = 1000

    /// False when no router is taking jobs and the outgoing queue is full: refuse the request.
    /// The job is kept until its first event arrives, sent again if its router does not
    /// acknowledge it, and handed over to another router if its router goes away first.
    public func submit(_ job: JobEnvelope) -> Bool {
        let frame = GatewayMessage.submit(job).encode()
        let link = links.withLock { $0.add(job, frame: frame, now: nowMs()) }
        let sent = loop.send(socket: Self.jobsSocket(link), frames: [frame])
        if !sent { links.withLock { $0.remove(job.requestId) } }
        return sent
    }

    /// Submits kept and not yet started (for tests and operators).
    public var pendingSubmits: Int { links.withLock { $0.count } }

    /// Continues a job whose worker died mid-stream (after its router's `lost`): sent to every
    /// router, only the one holding it acts.
    public func resume(_ requestId: String, fromSeq: Int, tokens: [Int32]) {
        let frame = GatewayMessage.resume(requestId: requestId, fromSeq: fromSeq, tokens: tokens).encode()
        for l in 0..<linkCount { loop.send(socket: Self.jobsSocket(l), frames: [frame]) }
    }

    /// The client went away: the router holding the job drops it if queued, or tells its worker
    /// to stop. Sent to every router: only the one that holds it acts.
    public func cancel(_ requestId: String) {
        let frame = GatewayMessage.cancel(requestId: requestId).encode()
        for l in 0..<linkCount { loop.send(socket: Self.jobsSocket(l), frames: [frame]) }
    }

    public func stop() {
        loop.stop()
        context.terminate()
    }

    /// Loop thread: sends what the link state decided.
    fileprivate func perform(_ ctx: LoopContext, _ sends: [PendingSubmits.Send]) {
        for send in sends {
            switch send {
            case let .submit(link, frame):
                ctx.send(socket: Self.jobsSocket(link), frames: [frame])
            case let .relocate(link, ids):
                logger.warning("a router went away: asking another to take over its jobs", metadata: ["link": "\(link)", "jobs": "\(ids.count)"])
                for part in WireLimits.relocateParts(ids) {
                    ctx.send(socket: Self.jobsSocket(link), frames: [GatewayMessage.relocate(part).encode()])
                }
            case let .fail(id, error):
                logger.warning("request failed: its router went away and no other took it over", metadata: ["request_id": "\(id)"])
                inject(id, StreamEvent(requestId: id, attempt: 0, seq: WireLimits.outOfBandSeq, body: .error(error)))
            }
        }
    }

    /// Loop thread: route one incoming event to its request.
    private func deliver(_ ctx: LoopContext, socket: Int, frames: [[UInt8]]) {
        guard socket % 2 == 1, frames.count == 2 else { return }
        let link = socket / 2
        let topic = frames[0]
        if topic.count == prefixLength {
            // `<gateway-id>/` itself: the router's notices, or its confirmation of our subscription.
            if RouterNotice.looksLikeNotice(frames[1]) {
                guard let notice = try? RouterNotice.decode(frames[1]) else {
                    logger.warning("invalid router notice dropped")
                    return
                }
                heard(ctx, link, notice)
                return
            }
            let first = links.withLock { l -> Bool in
                let was = l.links[link].ready
                l.confirmed(link, now: nowMs())
                return !was
            }
            if first { logger.info("gateway event channel live", metadata: ["gateway": "\(gatewayID)", "link": "\(link)"]) }
            return
        }
        guard topic.count > prefixLength else { return }
        let requestId = String(decoding: topic[prefixLength...], as: UTF8.self)
        guard let box = streams.withLock({ $0[requestId] }) else { return }
        // Someone runs it and this link relays it: nothing to re-submit any more.
        links.withLock { _ = $0.event(requestId, link: link) }
        let events: [StreamEvent]
        do { events = try StreamEventBatch.decodeFrame(frames[1]) } catch {
            logger.warning("invalid event dropped", metadata: ["topic": "\(gatewayID)/\(requestId)", "error": "\(error)"])
            return
        }
        guard events[0].requestId == requestId else {
            logger.warning("event for another request dropped", metadata: ["topic": "\(gatewayID)/\(requestId)", "event_request": "\(events[0].requestId)"])
            return
        }
        if !box.put(events) {
            logger.warning("request failed: its reader fell too far behind", metadata: ["request_id": "\(requestId)", "capacity": "\(mailboxCapacity)"])
            cancel(requestId)
        }
    }

    /// Loop thread: a notice from the router on `link`. A router id other than the link's last one
    /// means it restarted and lost what it held: its jobs are handed over to it again.
    private func heard(_ ctx: LoopContext, _ link: Int, _ notice: RouterNotice) {
        let now = nowMs()
        switch notice {
        case let .accepted(requestId, routerId):
            // The router is checked first: a restart hands over every job but this one.
            let sends = links.withLock { l -> [PendingSubmits.Send] in
                let s = l.heard(link, routerId: routerId, now: now)
                l.acknowledge(requestId, link: link)
                return s
            }
            if !sends.isEmpty { logger.warning("router restarted", metadata: ["router": "\(routerId)", "link": "\(link)"]) }
            perform(ctx, sends)
        case let .alive(routerId):
            let sends = links.withLock { $0.heard(link, routerId: routerId, now: now) }
            if !sends.isEmpty { logger.warning("router restarted", metadata: ["router": "\(routerId)", "link": "\(link)"]) }
            perform(ctx, sends)
        case let .adopted(requestId, routerId):
            perform(ctx, links.withLock { l -> [PendingSubmits.Send] in
                let s = l.heard(link, routerId: routerId, now: now)
                l.adopted(requestId, link: link)
                return s
            })
        }
    }
}

private final class HubBox: @unchecked Sendable {
    weak var hub: StreamHub?
    /// Loop thread only.
    var lastAliveMs: Int64 = 0
}
