import CZeroMQ
import Foundation
import XeroCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A thread that owns a set of ZeroMQ sockets and is the only code that touches them.
/// Other threads hand it outgoing messages through `send(socket:frames:)` (a mutex-guarded
/// queue plus an eventfd that wakes `zmq_poll`); incoming messages are handed to `onMessage`
/// on the loop thread, which may reply at once through the `LoopContext` without a hop.
public final class SocketLoop: Sendable {
    public typealias MessageHandler = @Sendable (LoopContext, _ socket: Int, _ frames: [[UInt8]]) -> Void
    public typealias TickHandler = @Sendable (LoopContext) -> Void
    /// Rewrites the messages for one socket that wait at the same moment (e.g. merges events into
    /// batches); applied once per loop pass, so nothing waits for it: it only sees what piled up.
    public typealias Coalescer = @Sendable (_ messages: [[[UInt8]]]) -> [[[UInt8]]]

    private struct Outgoing { var socket: Int; var frames: [[UInt8]] }
    private struct Shared {
        var outbox: [Outgoing] = []
        var stopping = false
        /// Messages waiting in the loop's backlogs (published by the loop thread after each pass).
        var backlogged = 0
    }

    public let name: String
    private let owned: OwnedSockets
    private let shared = Locked(Shared())
    private let wakeFD: Int32
    private let onMessage: MessageHandler
    private let onTick: TickHandler?
    private let tickMs: Int
    private let coalescing: (sockets: Set<Int>, merge: Coalescer)?
    private let stopped = Locked<Bool>(false)
    private let finished = DispatchSemaphoreLite()
    /// Bound on messages waiting to leave (outbox plus backlogs), across the loop's sockets.
    public let maxQueued: Int

    /// `sockets` are handed over: from here on only the loop thread uses them.
    public init(name: String, sockets: [ZMQSocket], tickMs: Int = 50, maxQueued: Int = 1_000_000,
                coalescing: (sockets: Set<Int>, merge: Coalescer)? = nil,
                onMessage: @escaping MessageHandler, onTick: TickHandler? = nil) {
        self.coalescing = coalescing
        self.name = name
        self.maxQueued = max(1, maxQueued)
        self.owned = OwnedSockets(sockets)
        self.wakeFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        self.onMessage = onMessage
        self.onTick = onTick
        self.tickMs = tickMs
    }

    public func start() {
        let thread = Thread { [self] in self.run() }
        thread.name = name
        thread.start()
    }

    /// Queues a message for `socket` (an index into the sockets given at init). Thread-safe.
    /// Returns false (and queues nothing) when `maxQueued` messages already wait to leave: the
    /// peer is not taking them, and the caller must refuse its own client rather than grow memory.
    @discardableResult
    public func send(socket: Int, frames: [[UInt8]]) -> Bool {
        let (accepted, wasEmpty) = shared.withLock { s -> (Bool, Bool) in
            guard s.outbox.count + s.backlogged < maxQueued else { return (false, false) }
            let e = s.outbox.isEmpty
            s.outbox.append(Outgoing(socket: socket, frames: frames))
            return (true, e)
        }
        if wasEmpty { wake() }
        return accepted
    }

    /// Stops the loop, closes its sockets and waits until the thread is gone.
    public func stop() {
        let already = stopped.withLock { s -> Bool in let was = s; s = true; return was }
        if already { return }
        shared.withLock { $0.stopping = true }
        wake()
        finished.wait()
        close(wakeFD)
    }

    private func wake() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    /// Sends what other threads queued, in order; each coalesced socket's messages are rewritten
    /// together and go out where that socket's first one stood.
    private func send(_ outbox: [Outgoing], _ ctx: LoopContext) {
        guard let (coalesced, merge) = coalescing, outbox.count > 1 else {
            for m in outbox { ctx.send(socket: m.socket, frames: m.frames) }
            return
        }
        var pending: [Int: [[[UInt8]]]] = [:]
        for m in outbox where coalesced.contains(m.socket) { pending[m.socket, default: []].append(m.frames) }
        for m in outbox {
            guard coalesced.contains(m.socket) else { ctx.send(socket: m.socket, frames: m.frames); continue }
            guard let messages = pending.removeValue(forKey: m.socket) else { continue }
            for frames in merge(messages) { ctx.send(socket: m.socket, frames: frames) }
        }
    }

    private func run() {
        let sockets = owned.sockets
        let ctx = LoopContext(sockets: sockets, maxBacklog: maxQueued)
        var items = sockets.map { zmq_pollitem_t(socket: $0.raw, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0) }
        let pollIn = Int16(ZMQ_POLLIN), pollOut = Int16(ZMQ_POLLOUT)
        items.append(zmq_pollitem_t(socket: nil, fd: wakeFD, events: Int16(ZMQ_POLLIN), revents: 0))
        var nextTick = monotonicMs() + Int64(tickMs)
        while true {
            // Watch for writability only where messages are waiting for a peer or for room.
            for i in 0..<sockets.count { items[i].events = ctx.backlog[i].isEmpty ? pollIn : (pollIn | pollOut) }
            let timeout = max(0, nextTick - monotonicMs())
            let rc = zmq_poll(&items, Int32(items.count), Int(timeout))
            if rc < 0 && zmq_errno() != EINTR { break }
            // Outgoing first, so replies queued by other threads go out promptly.
            if items[items.count - 1].revents != 0 {
                var buf: UInt64 = 0
                _ = read(wakeFD, &buf, 8)
            }
            let (outbox, stopping) = shared.withLock { s -> ([Outgoing], Bool) in
                let o = s.outbox
                s.outbox.removeAll(keepingCapacity: true)
                return (o, s.stopping)
            }
            for i in 0..<sockets.count where !ctx.backlog[i].isEmpty && items[i].revents & pollOut != 0 { ctx.flush(i) }
            send(outbox, ctx)
            if stopping { break }
            for i in 0..<sockets.count where items[i].revents & Int16(ZMQ_POLLIN) != 0 {
                // Drain a bounded batch per socket per wake so one busy socket cannot starve the others.
                for _ in 0..<1024 {
                    guard let frames = try? sockets[i].receive() else { break }
                    onMessage(ctx, i, frames)
                }
            }
            let now = monotonicMs()
            if now >= nextTick {
                onTick?(ctx)
                nextTick = now + Int64(tickMs)
            }
            let waiting = ctx.backlogCount
            shared.withLock { $0.backlogged = waiting }
        }
        for s in sockets { s.close() }
        finished.signal()
    }
}

/// The loop thread's handle to its sockets, given to handlers. Use only inside a handler.
public final class LoopContext {
    let sockets: [ZMQSocket]
    /// Messages a socket could not take yet (no peer connected, or its queue full), in order.
    /// Nothing is dropped: they go out, in order, when the socket becomes writable.
    var backlog: [[[[UInt8]]]]
    /// Messages in all backlogs; at `maxBacklog` a send is refused instead of queued.
    private(set) var backlogCount = 0
    let maxBacklog: Int
    init(sockets: [ZMQSocket], maxBacklog: Int = 1_000_000) {
        self.sockets = sockets
        self.maxBacklog = maxBacklog
        backlog = Array(repeating: [], count: sockets.count)
    }

    /// Sends on the loop thread, or queues behind earlier unsent messages. Returns false when the
    /// message cannot be routed (a ROUTER socket's peer is gone) or the backlogs are full; it is
    /// then dropped and the caller answers for it.
    @discardableResult
    public func send(socket: Int, frames: [[UInt8]]) -> Bool {
        if !backlog[socket].isEmpty {
            guard backlogCount < maxBacklog else { return false }
            backlog[socket].append(frames)
            backlogCount += 1
            return true
        }
        switch (try? sockets[socket].send(frames)) ?? .unroutable {
        case .sent: return true
        case .wouldBlock:
            guard backlogCount < maxBacklog else { return false }
            backlog[socket].append(frames)
            backlogCount += 1
            return true
        case .unroutable: return false
        }
    }

    /// The ZAP User-Id of the message being handled on `socket` (its authenticated sender), for
    /// sockets created with `wantsUserID`; nil on plain sockets.
    public func userID(of socket: Int) -> String? { sockets[socket].lastUserID }

    /// Sends as much of a socket's backlog as it will take now.
    func flush(_ socket: Int) {
        var sent = 0
        for frames in backlog[socket] {
            let r = (try? sockets[socket].send(frames)) ?? .unroutable
            if r == .wouldBlock { break }
            sent += 1 // sent, or unroutable and dropped
        }
        backlog[socket].removeFirst(sent)
        backlogCount -= sent
    }
}

/// Moves sockets onto the loop thread. Sound because only that thread touches them after init
/// (ZeroMQ allows migrating a socket between threads with a full memory barrier: thread start).
private final class OwnedSockets: @unchecked Sendable {
    let sockets: [ZMQSocket]
    init(_ s: [ZMQSocket]) { sockets = s }
}

/// Monotonic milliseconds.
@inline(__always) func monotonicMs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// A one-shot semaphore without Dispatch (avoids Dispatch's Sendable quirks on Linux).
final class DispatchSemaphoreLite: Sendable {
    private let state = Locked(false)
    func signal() { state.withLock { $0 = true } }
    func wait() {
        while !state.withLock({ $0 }) { usleep(1000) }
    }
}
