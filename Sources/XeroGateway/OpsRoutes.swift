import Hummingbird
import XeroCore
import XeroStore

/// The operator's views (`/manage/v1/ops/…`, admin only; `xeroctl ops`): tier queues, workers, the
/// jobs that wait or run in a tier, one job. Read from the ops records routers write to Redis
/// (docs/redis-keys.md, "Operations"): `xeroctl` stays HTTP-only and never needs Redis itself.
struct OpsRoutes: Sendable {
    let redis: RedisClient
    let config: PlatformConfig

    static let maxJobs = 1000

    func register(on admin: RouterGroup<ManagementContext>) {
        admin.get("/ops/queues") { _, _ in Gateway.json(try await queues()) }
        admin.get("/ops/workers") { _, _ in Gateway.json(try await Self.workers(redis, fleet: nil)) }
        admin.get("/ops/jobs") { req, _ in
            let q = req.uri.queryParameters
            let state = q.get("state") ?? "waiting"
            guard state == "waiting" || state == "running" else {
                throw APIError.invalidRequest("'state' must be waiting or running.", param: "state")
            }
            var tiers = config.tiers.map(\.name)
            if let t = q.get("tier") {
                guard tiers.contains(t) else { throw APIError.invalidRequest("No tier '\(t)' (tiers: \(tiers.joined(separator: ", "))).", param: "tier") }
                tiers = [t]
            }
            var limit = 100
            if let l = q.get("limit") {
                guard let v = Int(l), (1...Self.maxJobs).contains(v) else {
                    throw APIError.invalidRequest("'limit' must be between 1 and \(Self.maxJobs).", param: "limit")
                }
                limit = v
            }
            return Gateway.json(try await jobs(tiers: tiers, state: state, limit: limit))
        }
        admin.get("/ops/jobs/:id") { _, ctx in
            let id = ctx.parameters.get("id") ?? ""
            let record = id.utf8.count <= 200 ? try await redis.send(["HGETALL", RedisKeys.job(id)]).hash : [:]
            guard !record.isEmpty else { throw APIError.notFound("No record of job '\(id)' (records are kept for an hour).", code: "job_not_found") }
            var w = JSONWriter()
            Self.writeJob(id: id, record, now: nowMs(), &w)
            return Gateway.json(w.bytes)
        }
    }

    /// Each tier summed over the live routers' own records, and how many jobs its indexes hold; the
    /// live routers.
    func queues() async throws -> [UInt8] {
        let now = nowMs()
        let routerReply = try await redis.send(["ZRANGE", RedisKeys.routers, "0", "-1", "WITHSCORES"]).array.compactMap(\.string)
        var live: [String] = []
        var r = 0
        while r + 1 < routerReply.count {
            if now - (Int64(routerReply[r + 1]) ?? 0) <= 30_000 { live.append(routerReply[r]) }
            r += 2
        }
        var cmds: [[String]] = []
        for t in config.tiers {
            for router in live { cmds.append(["HGETALL", RedisKeys.tier(t.name, router: router)]) }
            cmds.append(["ZCARD", RedisKeys.waiting(t.name)])
            cmds.append(["ZCARD", RedisKeys.running(t.name)])
        }
        let replies = try await redis.pipeline(strings: cmds)
        let per = live.count + 2
        var w = JSONWriter()
        w.objectStart(); w.field("object", "list"); w.key("data"); w.arrayStart()
        for (i, t) in config.tiers.enumerated() {
            let records = (0..<live.count).map { replies[per * i + $0].hash }.filter { !$0.isEmpty }
            w.objectStart()
            w.field("tier", t.name)
            for k in ["depth", "inflight", "submitted_total", "dispatched_total", "completed_total", "expired_total"] {
                w.field(k, records.reduce(0) { $0 + (Int($1[k] ?? "") ?? 0) })
            }
            w.field("waiting_indexed", replies[per * i + live.count].int ?? 0)
            w.field("running_indexed", replies[per * i + live.count + 1].int ?? 0)
            w.field("routers", records.count)
            let freshest = records.compactMap { $0["updated_at"].flatMap(Int64.init) }.max()
            w.key("updated_ms_ago"); if let u = freshest { w.value(Int(now - u)) } else { w.null() }
            w.objectEnd()
        }
        w.arrayEnd()
        w.key("routers"); w.arrayStart()
        let routers = routerReply
        var i = 0
        while i + 1 < routers.count {
            w.objectStart(); w.field("id", routers[i]); w.field("last_seen_ms_ago", Int(now - (Int64(routers[i + 1]) ?? now))); w.objectEnd()
            i += 2
        }
        w.arrayEnd()
        w.objectEnd()
        return w.bytes
    }

    /// The jobs of `tiers` in one state, oldest first, from the per-tier index and their records.
    /// An index entry whose record says the job moved on (the index is written in batches) is left out.
    func jobs(tiers: [String], state: String, limit: Int) async throws -> [UInt8] {
        let index = state == "waiting" ? RedisKeys.waiting : RedisKeys.running
        let lists = try await redis.pipeline(strings: tiers.map { ["ZRANGE", index($0), "0", String(limit - 1), "WITHSCORES"] })
        var found: [(id: String, tier: String, since: Int64)] = []
        for (tier, reply) in zip(tiers, lists) {
            let a = reply.array.compactMap(\.string)
            var i = 0
            while i + 1 < a.count { found.append((a[i], tier, Int64(a[i + 1]) ?? 0)); i += 2 }
        }
        found.sort { $0.since < $1.since }
        found = Array(found.prefix(limit))
        let records = found.isEmpty ? [] : try await redis.pipeline(strings: found.map { ["HGETALL", RedisKeys.job($0.id)] })
        let now = nowMs()
        let states: Set<String> = state == "waiting" ? ["queued"] : ["dispatched", "running"]
        var w = JSONWriter()
        w.objectStart(); w.field("object", "list"); w.field("state", state); w.key("data"); w.arrayStart()
        for (job, reply) in zip(found, records) {
            let h = reply.hash
            guard let s = h["state"], states.contains(s) else { continue }
            Self.writeJob(id: job.id, h, now: now, &w)
        }
        w.arrayEnd(); w.objectEnd()
        return w.bytes
    }

    static let jobTimes = ["accepted_at", "queued_at", "dispatched_at", "first_token_at", "finished_at"]
    static let jobCounts: Set<String> = ["attempt", "prompt_tokens", "completion_tokens"]

    /// A job record: its fields, times as epoch ms plus `age_ms` since it was accepted.
    static func writeJob(id: String, _ h: [String: String], now: Int64, _ w: inout JSONWriter) {
        w.objectStart()
        w.field("id", id)
        for k in h.keys.sorted() {
            if jobCounts.contains(k) || jobTimes.contains(k), let v = Int(h[k]!) { w.field(k, v) } else { w.field(k, h[k]!) }
        }
        if let a = h["accepted_at"].flatMap(Int64.init) { w.field("age_ms", Int(now - a)) }
        w.objectEnd()
    }

    /// Live workers as the routers record them; `fleet` keeps only that fleet's (a project's agents).
    static func workers(_ redis: RedisClient, fleet: String?) async throws -> [UInt8] {
        let ids = try await redis.send(["ZRANGE", RedisKeys.workers, "0", "-1", "WITHSCORES"]).array.compactMap(\.string)
        var pairs: [(id: String, seen: Int)] = []
        var i = 0
        while i + 1 < ids.count { pairs.append((ids[i], Int(ids[i + 1]) ?? 0)); i += 2 }
        let records = pairs.isEmpty ? [] : try await redis.pipeline(strings: pairs.map { ["HGETALL", RedisKeys.worker($0.id)] })
        var w = JSONWriter(); w.objectStart(); w.field("object", "list"); w.key("data"); w.arrayStart()
        for (p, reply) in zip(pairs, records) {
            let h = reply.hash
            if h.isEmpty { continue }   // its record expired: a worker gone silent, not yet swept
            if let fleet, h["fleet"] != fleet { continue }
            w.objectStart(); w.field("id", p.id); w.field("last_heartbeat", p.seen)
            for k in h.keys.sorted() where k != "last_heartbeat" {
                if ["slots", "free", "inflight", "pid", "prefix_blocks", "breaker_trips"].contains(k), let v = Int(h[k]!) { w.field(k, v) } else { w.field(k, h[k]!) }
            }
            w.objectEnd()
        }
        w.arrayEnd(); w.objectEnd()
        return w.bytes
    }
}
