import Foundation
import XeroCore
import Synchronization

/// Async Redis for server code. Each of its connections is owned by one thread; callers queue
/// commands and await replies. A thread takes every command waiting when it wakes and sends them
/// as one pipeline, so load turns into batching by itself. A broken connection is re-opened on the
/// next batch; the batch in flight fails with `RedisError`.
public final class RedisClient: Sendable {
    private struct Pending {
        var commands: [[[UInt8]]]
        var continuation: CheckedContinuation<[RedisValue], Error>
    }
    private struct Queue {
        var pending: [Pending] = []
        var stopped = false
    }

    public let address: RedisAddress
    private let queue = Locked(Queue())
    private let condition = NSCondition()

    public init(_ address: RedisAddress, connections: Int = 2) throws {
        self.address = address
        // Fail fast when the server is not there or refuses our credentials.
        try RedisConnection(address).ping()
        for i in 0..<max(1, connections) {
            let t = Thread { [self] in self.serve() }
            t.name = "redis-\(i)"
            t.start()
        }
    }

    public func close() {
        queue.withLock { $0.stopped = true }
        condition.lock(); condition.broadcast(); condition.unlock()
    }

    /// Runs one command; a Redis error reply is returned as `.error`, not thrown.
    public func send(_ args: [String]) async throws -> RedisValue {
        try await pipeline([args.map { Array($0.utf8) }])[0]
    }

    public func send(bytes args: [[UInt8]]) async throws -> RedisValue {
        try await pipeline([args])[0]
    }

    /// Runs the commands back to back on one connection (atomic only if wrapped in MULTI/EXEC).
    public func pipeline(_ commands: [[[UInt8]]]) async throws -> [RedisValue] {
        try await withCheckedThrowingContinuation { cont in
            let ok = queue.withLock { q -> Bool in
                if q.stopped { return false }
                q.pending.append(Pending(commands: commands, continuation: cont))
                return true
            }
            guard ok else { cont.resume(throwing: RedisError("redis client closed")); return }
            condition.lock(); condition.signal(); condition.unlock()
        }
    }

    public func pipeline(strings commands: [[String]]) async throws -> [RedisValue] {
        try await pipeline(commands.map { $0.map { Array($0.utf8) } })
    }

    /// How long a durable write waits for a replica to confirm it (`WAIT 1 ms`).
    public static let replicaWaitMs = 100

    /// Writes no one may lose (billing settlements, batch results). Behind Sentinel (replicas
    /// exist) the write is followed by `WAIT 1 100` on the same connection, so it returns once a
    /// replica holds it too — or after 100 ms, counted in `unreplicatedWrites` (asynchronous
    /// replication: a failover right then could lose it; docs/architecture.md, "Redis").
    /// Without Sentinel it is a plain `send`.
    public func sendDurably(_ args: [String]) async throws -> RedisValue {
        guard address.sentinel != nil else { return try await send(args) }
        let replies = try await pipeline(strings: [args, ["WAIT", "1", String(Self.replicaWaitMs)]])
        if replies.count == 2, (replies[1].int ?? 0) < 1 { unreplicated.withLock { $0 += 1 } }
        return replies[0]
    }

    private let unreplicated = Locked(0)
    /// Durable writes that no replica had confirmed within `replicaWaitMs`.
    public var unreplicatedWrites: Int { unreplicated.withLock { $0 } }

    private func serve() {
        var conn: RedisConnection?
        while true {
            condition.lock()
            var batch: [Pending] = []
            var stopped = false
            while true {
                (batch, stopped) = queue.withLock { q in
                    let b = Array(q.pending.prefix(512))
                    q.pending.removeFirst(b.count)
                    return (b, q.stopped)
                }
                if !batch.isEmpty || stopped { break }
                condition.wait()
            }
            condition.unlock()
            if batch.isEmpty && stopped { return }
            do {
                if conn == nil || conn!.isBroken { conn = try RedisConnection(address) }
                let replies = try conn!.pipeline(batch.flatMap { $0.commands })
                var i = 0
                for p in batch {
                    p.continuation.resume(returning: Array(replies[i..<(i + p.commands.count)]))
                    i += p.commands.count
                }
            } catch {
                conn = nil
                for p in batch { p.continuation.resume(throwing: error) }
            }
        }
    }
}
