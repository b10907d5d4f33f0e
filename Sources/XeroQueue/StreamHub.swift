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
        loop = SocketLoop(name: "gateway-hub", sockets: [jobs, events], tickMs: 1000,
                          onMessage: { _, socket, frames in box.hub?.deliver(socket: socket, frames: frames) },
                          // Liveness: routers cancel the jobs of a client they stop hearing from.
                          onTick: { ctx in ctx.send(socket: Self.jobsSocket, frames: [alive]) })
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
    }

    /// Delivers an event generated inside the gateway (its own timeout) as if it had arrived.
    public func inject(_ requestId: String, _ event: StreamEvent) {
        streams.withLock { $0[requestId] }?.put(event)
    }

    /// False when the router is not taking jobs and the outgoing queue is full: refuse the request.
    public func submit(_ job: JobEnvelope) -> Bool {
        loop.send(socket: Self.jobsSocket, frames: [GatewayMessage.submit(job).encode()])
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
            // `<gateway-id>/` itself: the router's confirmation of our subscription.
            if !isReady { logger.info("gateway event channel live", metadata: ["gateway": "\(gatewayID)"]) }
            readyFlag.withLock { $0 = true }
            return
        }
        guard topic.count > prefixLength else { return }
        let requestId = String(decoding: topic[prefixLength...], as: UTF8.self)
        guard let box = streams.withLock({ $0[requestId] }) else { return }
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
            logger.warning("request failed: its reader fell too far behind", metadata: ["request": "\(requestId)", "capacity": "\(mailboxCapacity)"])
            cancel(requestId)
        }
    }
}

private final class HubBox: @unchecked Sendable {
    weak var hub: StreamHub?
}
