import Foundation
import Logging
import XeroCore

/// Writes that may wait a few milliseconds and must not be lost to a Redis outage: callers `add`
/// items, one flusher writes everything waiting every `intervalMs` in one call, and a write Redis
/// refuses keeps its items queued (in order, ahead of newer ones) and is retried with backoff.
/// Bounded: beyond `capacity` waiting items the oldest are dropped and counted (logged), so an
/// outage costs at most that, never the process's memory.
public final class WriteQueue<Item: Sendable>: Sendable {
    public typealias Write = @Sendable ([Item]) async throws -> Void

    private struct State {
        var items: [Item] = []
        /// Items ever removed from the front (written or dropped): `items[0]` is item number `front`.
        var front = 0
        var flushing = false
        var dropped = 0

        /// A batch to write: its first item's number and the items.
        func take(_ n: Int) -> (Int, [Item]) { (front, Array(items.prefix(n))) }

        /// Removes what a write of `count` items starting at number `first` covered (some of them
        /// may have been dropped meanwhile).
        mutating func written(first: Int, count: Int) {
            let n = min(items.count, max(0, first + count - front))
            items.removeFirst(n)
            front += n
        }
    }

    private let state = Locked(State())
    private let write: Write
    private let intervalMs: UInt64
    private let capacity: Int
    private let maxBatch: Int
    private let name: String
    private let logger: Logger

    public init(name: String, intervalMs: UInt64 = 5, capacity: Int = 100_000, maxBatch: Int = 512, logger: Logger, write: @escaping Write) {
        self.name = name
        self.intervalMs = intervalMs
        self.capacity = max(1, capacity)
        self.maxBatch = max(1, maxBatch)
        self.logger = logger
        self.write = write
    }

    /// Items waiting (not yet written).
    public var waiting: Int { state.withLock { $0.items.count } }
    /// Items dropped because the queue was full (Redis unreachable for long).
    public var dropped: Int { state.withLock { $0.dropped } }

    public func add(_ item: Item) {
        let start = state.withLock { s -> Bool in
            if s.items.count >= capacity {
                s.items.removeFirst()
                s.front += 1
                s.dropped += 1
                if s.dropped % 1000 == 1 { logger.error("write queue full: oldest dropped", metadata: ["queue": "\(name)", "dropped_total": "\(s.dropped)"]) }
            }
            s.items.append(item)
            if s.flushing { return false }
            s.flushing = true
            return true
        }
        if start { Task { await self.run() } }
    }

    /// Writes everything waiting now (tests, shutdown). Returns false if Redis refused.
    @discardableResult
    public func flush() async -> Bool {
        while true {
            let (first, batch) = state.withLock { $0.take(maxBatch) }
            if batch.isEmpty { return true }
            do { try await write(batch) } catch { return false }
            state.withLock { $0.written(first: first, count: batch.count) }
        }
    }

    private func run() async {
        var backoffMs: UInt64 = 50
        var more = false
        while true {
            // A full batch leaves more waiting: write on at once rather than a batch per interval.
            if !more { try? await Task.sleep(nanoseconds: intervalMs * 1_000_000) }
            let (first, batch) = state.withLock { s -> (Int, [Item]) in
                if s.items.isEmpty { s.flushing = false }
                return s.take(maxBatch)
            }
            if batch.isEmpty { return }
            do {
                try await write(batch)
                // Remove what was written; anything added meanwhile stays for the next round.
                state.withLock { $0.written(first: first, count: batch.count) }
                backoffMs = 50
                more = batch.count == maxBatch
            } catch {
                logger.warning("write failed; kept and retried", metadata: ["queue": "\(name)", "items": "\(batch.count)", "error": "\(error)"])
                try? await Task.sleep(nanoseconds: backoffMs * 1_000_000)
                backoffMs = min(backoffMs * 2, 2000)
                more = false
            }
        }
    }
}
