import Foundation
import Logging
import Synchronization
import XeroCore

/// A router client, as gateways and the batch runner use it: pushes job envelopes to the router and
/// receives every event addressed to this client (SUB on `<client-id>/`), handing each to the
/// waiting request's mailbox.
public final class StreamHub: Sendable {
    static let jobsSocket = 0, eventsSocket = 1

    public let gatewayID: String
    private let loop: SocketLoop
    private let context: ZMQContext
    private let streams = Locked<[String: EventMailbox]>([:])
    /// Jobs submitted and not yet started (no event yet): kept to re-submit (Lazy Pirate).
    private let pending = Locked(PendingSubmits())
    private let readyFlag = Locked(false)
    private let logger: Logger
    private let prefixLength: Int

    /// Events one request may have waiting before it is failed (`EventMailbox`).
    public let mailboxCapacity: Int

    public init(gatewayID: String, routerJobs: String, routerEventsOut: String, mailboxCapacity: Int = EventMailbox.defaultCapacity,
                security: FabricSecurity = .plaintext, logger: Logger) throws {
        let context = ZMQContext()
        let jobs = try ZMQSocket(context, .push)
        let events = try ZMQSocket(context, .sub)
        for s in [jobs, events] { try s.set(.reconnectInterval(100)) }
        try jobs.set(.sendHighWaterMark(PipeBounds.control))
        try events.set(.receiveHighWaterMark(PipeBounds.events))
        try events.set(.maxMessageSize(WireLimits.maxEventFrameBytes))
        try jobs.secure(security)
        try events.secure(security)
        try events.subscribe(gatewayID + "/")
        try jobs.connect(routerJobs)
        try events.connect(routerEventsOut)
        self.gatewayID = gatewayID
        self.context = context
        self.logger = logger
        self.prefixLength = gatewayID.utf8.count + 1
        self.mailboxCapacity = mailboxCapacity
        let box = HubBox()
        let alive = GatewayMessage.alive(gatewayId: gatewayID).encode()
        loop = SocketLoop(name: "gateway-hub", sockets: [jobs, events], tickMs: Int(Self.resubmitCheckMs),
                          onMessage: { _, socket, frames in box.hub?.deliver(socket: socket, frames: frames) },
                          onTick: { ctx in
                              // Liveness, every second: routers cancel the jobs of a client they stop hearing from.
                              let now = nowMs()
                              if now - box.lastAliveMs >= 1000 { box.lastAliveMs = now; ctx.send(socket: Self.jobsSocket, frames: [alive]) }
                              for frame in box.hub?.overdueSubmits() ?? [] { ctx.send(socket: Self.jobsSocket, frames: [frame]) }
                          })
        box.hub = self
        loop.start()
    }

    /// True once the router confirmed our subscription: events for us will reach us.
    public var isReady: Bool { readyFlag.withLock { $0 } }

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
        pending.withLock { $0.remove(requestId) }
    }

    /// Delivers an event generated inside the gateway (its own timeout) as if it had arrived.
    public func inject(_ requestId: String, _ event: StreamEvent) {
        streams.withLock { $0[requestId] }?.put(event)
    }

    /// How often unacknowledged submits are checked, and how long one may go unacknowledged
    /// before it is sent again.
    static let resubmitCheckMs: Int64 = 100
    public static let ackTimeoutMs: Int64 = 1000

    /// False when the router is not taking jobs and the outgoing queue is full: refuse the request.
    /// The job is kept until its first event arrives and sent again if the router does not
    /// acknowledge it within `ackTimeoutMs`, or restarts before it started (a router that is
    /// replaced loses its queue). The router drops a duplicate of a job it holds.
    public func submit(_ job: JobEnvelope) -> Bool {
        let frame = GatewayMessage.submit(job).encode()
        pending.withLock { $0.add(job.requestId, frame: frame, now: nowMs()) }
        let sent = loop.send(socket: Self.jobsSocket, frames: [frame])
        if !sent { pending.withLock { $0.remove(job.requestId) } }
        return sent
    }

    /// Submits kept and not yet started (for tests and operators).
    public var pendingSubmits: Int { pending.withLock { $0.count } }

    /// Loop thread: the frames of submits to send again now.
    fileprivate func overdueSubmits() -> [[UInt8]] {
        let now = nowMs()
        let due = pending.withLock { $0.overdue(now: now, ackTimeoutMs: Self.ackTimeoutMs) }
        if !due.isEmpty { logger.info("re-submitting jobs the router did not acknowledge", metadata: ["jobs": "\(due.count)"]) }
        return due
    }

    /// The client went away: the router drops the job if queued, or tells its worker to stop.
    public func cancel(_ requestId: String) {
        loop.send(socket: Self.jobsSocket, frames: [GatewayMessage.cancel(requestId: requestId).encode()])
    }

    public func stop() {
        loop.stop()
        context.terminate()
    }

    /// Loop thread: route one incoming event to its request.
    private func deliver(socket: Int, frames: [[UInt8]]) {
        guard socket == Self.eventsSocket, frames.count == 2 else { return }
        let topic = frames[0]
        if topic.count == prefixLength {
            // `<gateway-id>/` itself: the router's notices, or its confirmation of our subscription.
            if RouterNotice.looksLikeNotice(frames[1]) {
                guard let notice = try? RouterNotice.decode(frames[1]) else {
                    logger.warning("invalid router notice dropped")
                    return
                }
                heard(notice)
                return
            }
            if !isReady { logger.info("gateway event channel live", metadata: ["gateway": "\(gatewayID)"]) }
            readyFlag.withLock { $0 = true }
            return
        }
        guard topic.count > prefixLength else { return }
        let requestId = String(decoding: topic[prefixLength...], as: UTF8.self)
        guard let box = streams.withLock({ $0[requestId] }) else { return }
        // Its first event: a worker (or the router) has it in hand; nothing to re-submit any more.
        pending.withLock { $0.remove(requestId) }
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
}

extension StreamHub {
    /// Loop thread: an acknowledgement marks its job; a router id other than the last one means
    /// the router restarted and lost its queue: every job it had not started goes again.
    fileprivate func heard(_ notice: RouterNotice) {
        switch notice {
        case let .accepted(requestId, routerId):
            // The router is checked first: a restart resets every acknowledgement but this one.
            routerIs(routerId)
            pending.withLock { $0.acknowledge(requestId) }
        case let .alive(routerId):
            routerIs(routerId)
        }
    }

    /// A router id other than the last one: the router restarted and lost what it held.
    private func routerIs(_ routerId: String) {
        // Every acknowledgement passes here: the waiting set is built only after a restart.
        guard let waiting = pending.withLock({ p in p.routerIs(routerId) ? Set(p.entries.keys) : nil }) else { return }
        let lost = waiting.count
        if lost > 0 { logger.warning("router restarted: re-submitting the jobs it had not started", metadata: ["router": "\(routerId)", "jobs": "\(lost)"]) }
        // Jobs already started lost their relay: the new router does not know them, so no further
        // event of theirs would arrive. Fail them now rather than at the timeout. (The restart is
        // seen in the new router's first notice, before any job it dispatches can start.)
        let running = streams.withLock { Array($0.keys) }.filter { !waiting.contains($0) }
        for id in running {
            inject(id, StreamEvent(requestId: id, attempt: 0, seq: WireLimits.outOfBandSeq,
                                   body: .error(APIError.streamInterrupted("the router restarted while this request was running; retry it"))))
        }
        if !running.isEmpty { logger.warning("router restarted: failing the requests it was relaying", metadata: ["requests": "\(running.count)"]) }
    }
}

private final class HubBox: @unchecked Sendable {
    weak var hub: StreamHub?
    /// Loop thread only.
    var lastAliveMs: Int64 = 0
}
