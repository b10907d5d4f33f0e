import Foundation
import Logging
import Synchronization
import XeroCore
import XeroStore

/// Writes what ops need to see into Redis (docs/redis-keys.md): job records, tier gauges, live
/// workers. The router calls it on its hot path, so calls only merge into an in-memory batch;
/// a background thread flushes the batch as one pipeline every `flushMs`. A job that is queued,
/// dispatched and finished within one window costs one HSET. Ops data is not the store of
/// record: if Redis is unreachable the batch is dropped and logged, the router keeps routing.
public final class OpsRecorder: Sendable {
    private struct Batch {
        var jobs: [String: [(String, String)]] = [:]
        var tiers: [String: [(String, String)]] = [:]
        var workers: [String: [(String, String)]] = [:]
        var workerScores: [String: Int64] = [:]
        var removedWorkers: Set<String> = []
        var workerPrefixes: [String: [String]] = [:]
        var routerBeat: (String, Int64)?
        /// Each job's latest place in the per-tier indexes (the last word in a window wins).
        var places: [String: (tier: String, place: JobPlace)] = [:]
        var prunes: [String: (waitingBefore: Int64, runningBefore: Int64)] = [:]
    }

    /// Where a job is, for the per-tier indexes `xero:waiting:<tier>` and `xero:running:<tier>`.
    public enum JobPlace: Sendable {
        case waiting(sinceMs: Int64)
        case running(sinceMs: Int64)
        case gone
    }

    public let jobTTLSeconds: Int
    public let workerTTLSeconds: Int
    private let batch = Locked(Batch())
    private let stopped = Locked(false)

    private let address: RedisAddress
    private let flushMs: Int
    private let logger: Logger
    /// Above this many pending job records the oldest updates are dropped rather than grow memory.
    private let maxPendingJobs = 200_000

    public init(address: RedisAddress, flushMs: Int = 20, jobTTLSeconds: Int = 3600, workerTTLSeconds: Int = 30, logger: Logger) {
        self.address = address
        self.flushMs = flushMs
        self.jobTTLSeconds = jobTTLSeconds
        self.workerTTLSeconds = workerTTLSeconds
        self.logger = logger
        let t = Thread { [self] in self.run() }
        t.name = "ops-recorder"
        t.start()
    }

    public func stop() { stopped.withLock { $0 = true } }

    public func job(_ id: String, _ fields: [(String, String)]) {
        batch.withLock { b in
            if b.jobs.count >= maxPendingJobs && b.jobs[id] == nil { return }
            b.jobs[id, default: []].append(contentsOf: fields)
        }
    }

    /// Moves a job in its tier's indexes: what waits and what runs, listable without a SCAN.
    public func place(_ id: String, tier: String, _ place: JobPlace) {
        batch.withLock { b in
            if b.places.count >= maxPendingJobs && b.places[id] == nil { return }
            b.places[id] = (tier, place)
        }
    }

    /// Drops index entries older than these bounds (a router that died left them behind): nothing
    /// waits past its tier's queue timeout or runs past its request timeout.
    public func pruneIndexes(tier: String, waitingBefore: Int64, runningBefore: Int64) {
        batch.withLock { $0.prunes[tier] = (waitingBefore, runningBefore) }
    }

    /// This router's figures for a tier (`xero:tier:<name>:<router>`: routers never overwrite each other's).
    public func tier(_ name: String, router: String, _ fields: [(String, String)]) {
        batch.withLock { $0.tiers[RedisKeys.tier(name, router: router)] = fields }
    }

    public func worker(_ id: String, lastSeenMs: Int64, _ fields: [(String, String)]) {
        batch.withLock { b in
            b.workers[id] = fields
            b.workerScores[id] = lastSeenMs
            b.removedWorkers.remove(id)
        }
    }

    /// Replaces the set of prefix-block hashes a worker reported.
    public func workerPrefixes(_ id: String, _ hashes: [String]) {
        batch.withLock { $0.workerPrefixes[id] = hashes }
    }

    public func workerGone(_ id: String) {
        batch.withLock { b in
            b.workers[id] = nil
            b.workerScores[id] = nil
            b.removedWorkers.insert(id)
        }
    }

    public func routerAlive(_ id: String, now: Int64) { batch.withLock { $0.routerBeat = (id, now) } }

    private func run() {
        var conn: RedisConnection?
        var lastError: Int64 = 0
        // Jobs this recorder put in a tier index, and in which (true: running). A job that came and
        // went within one flush window was never written, so its end costs no command: that is most
        // jobs under load, and the index would otherwise double the ops writes.
        var indexed: [String: Bool] = [:]
        while !stopped.withLock({ $0 }) {
            usleep(UInt32(flushMs * 1000))
            let b = batch.withLock { b -> Batch in let out = b; b = Batch(); return out }
            var cmds: [[[UInt8]]] = []
            func cmd(_ parts: [String]) { cmds.append(parts.map { Array($0.utf8) }) }
            for (id, fields) in b.jobs {
                cmd(["HSET", RedisKeys.job(id)] + fields.flatMap { [$0.0, $0.1] })
                cmd(["EXPIRE", RedisKeys.job(id), String(jobTTLSeconds)])
            }
            for (key, fields) in b.tiers {
                cmd(["HSET", key] + fields.flatMap { [$0.0, $0.1] })
                cmd(["EXPIRE", key, "30"])   // a router that is gone stops counting
            }
            for (id, (tier, place)) in b.places {
                let was = indexed[id]
                switch place {
                case let .waiting(since):
                    if was == true { cmd(["ZREM", RedisKeys.running(tier), id]) }
                    if was != false {
                        cmd(["ZADD", RedisKeys.waiting(tier), String(since), id])
                        indexed[id] = false
                    }
                case let .running(since):
                    if was == false { cmd(["ZREM", RedisKeys.waiting(tier), id]) }
                    if was != true {
                        cmd(["ZADD", RedisKeys.running(tier), String(since), id])
                        indexed[id] = true
                    }
                case .gone:
                    guard let was else { continue }
                    cmd(["ZREM", was ? RedisKeys.running(tier) : RedisKeys.waiting(tier), id])
                    indexed[id] = nil
                }
            }
            // Bounded like the batch: jobs the router never reported gone (it cannot happen, but
            // memory must not depend on it) are forgotten; the prune removes them from Redis.
            if indexed.count > maxPendingJobs { indexed.removeAll(keepingCapacity: true) }
            for (tier, bounds) in b.prunes {
                cmd(["ZREMRANGEBYSCORE", RedisKeys.waiting(tier), "-inf", "(" + String(bounds.waitingBefore)])
                cmd(["ZREMRANGEBYSCORE", RedisKeys.running(tier), "-inf", "(" + String(bounds.runningBefore)])
            }
            for (id, fields) in b.workers {
                cmd(["HSET", RedisKeys.worker(id)] + fields.flatMap { [$0.0, $0.1] })
                cmd(["EXPIRE", RedisKeys.worker(id), String(workerTTLSeconds)])
            }
            for (id, hashes) in b.workerPrefixes {
                cmd(["DEL", RedisKeys.workerPrefixes(id)])
                if !hashes.isEmpty {
                    cmd(["SADD", RedisKeys.workerPrefixes(id)] + hashes)
                    cmd(["EXPIRE", RedisKeys.workerPrefixes(id), String(workerTTLSeconds)])
                }
                cmd(["HSET", RedisKeys.worker(id), "prefix_blocks", String(hashes.count)])
            }
            for (id, score) in b.workerScores { cmd(["ZADD", RedisKeys.workers, String(score), id]) }
            for id in b.removedWorkers {
                cmd(["ZREM", RedisKeys.workers, id])
                cmd(["DEL", RedisKeys.worker(id)])
                cmd(["DEL", RedisKeys.workerPrefixes(id)])
            }
            if let (id, at) = b.routerBeat { cmd(["ZADD", RedisKeys.routers, String(at), id]) }
            guard !cmds.isEmpty else { continue }
            do {
                if conn == nil || conn!.isBroken { conn = try RedisConnection(address) }
                let replies = try conn!.pipeline(cmds)
                if let e = replies.first(where: { if case .error = $0 { return true } else { return false } }) {
                    logger.warning("ops write rejected by redis", metadata: ["reply": "\(e)"])
                }
            } catch {
                conn = nil
                let now = nowMs()
                if now - lastError > 5000 {
                    lastError = now
                    logger.error("ops recorder cannot write to redis; dropping this batch", metadata: ["error": "\(error)"])
                }
            }
        }
    }
}
