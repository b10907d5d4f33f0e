import Crypto
import Foundation
import Logging
import XeroCore

/// Token-bucket rate limits shared by every gateway: one atomic Lua script per check in Redis.
/// Four buckets per request — requests and tokens, per key and per project — refilled
/// continuously at limit/60 s. A request is admitted only if every bucket can pay; then all pay.
/// Tokens are reserved from the prompt estimate plus `max_tokens` and settled with real usage later.
public struct RateLimiter: Sendable {
    public struct Limits: Sendable, Equatable {
        public var keyRequestsPerMinute: Int?
        public var keyTokensPerMinute: Int?
        public var projectRequestsPerMinute: Int?
        public var projectTokensPerMinute: Int?
        /// Requests of one key running at once (across gateways).
        public var maxConcurrent: Int?
        /// How long a concurrency slot may be held before it is presumed leaked (crashed gateway).
        public var slotTTLMs: Int
        public init(tier: Tier) {
            maxConcurrent = tier.maxConcurrentRequests
            slotTTLMs = tier.requestTimeoutMs + 10_000
            keyRequestsPerMinute = tier.requestsPerMinute
            keyTokensPerMinute = tier.tokensPerMinute
            projectRequestsPerMinute = tier.projectRequestsPerMinute
            projectTokensPerMinute = tier.projectTokensPerMinute
        }
    }

    /// The answer for one request, with what OpenAI's `x-ratelimit-*` headers report (key level).
    public struct Decision: Sendable {
        public var allowed: Bool
        public var retryAfterMs: Int
        public var limitRequests: Int?
        public var remainingRequests: Int?
        public var resetRequestsMs: Int?
        public var limitTokens: Int?
        public var remainingTokens: Int?
        public var resetTokensMs: Int?
        /// Which bucket refused, for the error message.
        public var refusedBy: String?
        public var reservedTokens: Int

        /// The refusing limit as a metric label: `key_requests`, `key_tokens`, `project_requests`,
        /// `project_tokens` or `key_concurrency` (a fixed set, unlike the message's wording).
        public static let limitLabels = ["key_requests", "key_tokens", "project_requests", "project_tokens", "key_concurrency"]
        public var refusedLimit: String {
            guard let r = refusedBy else { return "none" }
            if r.hasPrefix("concurrent") { return "key_concurrency" }
            return (r.hasSuffix("project") ? "project_" : "key_") + (r.hasPrefix("tokens") ? "tokens" : "requests")
        }
    }

    public let redis: RedisClient
    let scripts: ScriptRunner
    private let settlements: WriteQueue<Settlement>
    private let admissions: CallBatcher<AdmissionCall, RedisValue>
    /// This process's share of the shared limits: the slots it holds, and (unless off) leases.
    let leases: LimitLeases

    /// Admission script calls in flight at once (one per Redis connection); calls that find both
    /// lanes busy share the next script call. Measured against 8 lanes in docs/benchmarks.md:
    /// 2 gave the higher throughput (81–85 % of limits-off against 68 %).
    static let admissionLanes = 2

    /// How often queued settlements are written. Each write costs a fixed ~0.4 ms of CPU on this
    /// 2-core VM (the flusher's and the Redis client's wake-ups and Redis's own, whatever the
    /// batch holds) plus ~5 µs a request (`xerobench limiter`, docs/benchmarks.md, "session 14"):
    /// at 5 ms that fixed part was ~20 µs a request at 4,000 req/s, most of what limits cost.
    /// 25 ms makes it ~4 µs. What it trades: usage and refunds land up to 25 ms later, and a
    /// killed router loses up to 25 ms of settlements (docs/tenancy.md, "Billing").
    public static let settleIntervalMs: UInt64 = 25

    /// `batchAdmissions`: admissions waiting at the same moment share one script call (the
    /// default); off, each is its own call. `leases`: admit locally from leases of the shared
    /// buckets and slots (the default); off, every admission is decided in Redis. `owner` names
    /// this process in the keys' in-flight hashes (its slot leases). Benchmarks compare them, and
    /// settlement intervals.
    public init(redis: RedisClient, batchAdmissions: Bool = true, leases: Bool = true, owner: String = "gw-" + randomID(length: 12),
                settleIntervalMs: UInt64 = RateLimiter.settleIntervalMs, logger: Logger = Logger(label: "xerotier.limits")) {
        self.redis = redis
        let scripts = ScriptRunner(redis: redis)
        self.scripts = scripts
        admissions = CallBatcher(maxBatch: batchAdmissions ? 128 : 1, concurrency: Self.admissionLanes) { try await Self.runAdmissions(scripts, $0) }
        settlements = WriteQueue(name: "settlements", intervalMs: settleIntervalMs, logger: logger) { try await Self.writeSettlements(redis, scripts, $0) }
        self.leases = LimitLeases(owner: owner, scripts: scripts, logger: logger, enabled: leases)
    }

    /// Admission of several requests in one script call, in order (each sees the buckets as the
    /// ones before it left them — exactly what separate calls would have seen). ARGV[1] = now_ms,
    /// ARGV[2] = count; then per request: nkeys, nargs, and its own arguments — max_concurrent
    /// (0 = none), owner (the gateway), slot expiry ms, spare slots wanted, then per bucket
    /// capacity, cost, lease wanted. KEYS: per request its bucket keys, then (if max_concurrent > 0)
    /// the key's in-flight HASH {owner → slots held, owner:exp → expiry ms}. Bucket = HASH {t, ts}.
    /// A lease is granted only out of the upper half of a bucket (spare slots only while more than
    /// half the slots stay free), so near a limit nothing is leased. Returns per request {allowed,
    /// retry_ms, refused_index (n+1 = concurrency), slots granted, slots free after, then per
    /// bucket remaining, reset_ms, lease granted, version}. A bucket's `v` counts the admissions
    /// that wrote it: replies resume in any order (two lanes, callers of one batch), and only the
    /// newest snapshot of a bucket may set what a gateway reports as remaining.
    static let admitScript = LuaScript("""
    local now = tonumber(ARGV[1])
    -- Slots held in an in-flight hash by owners whose lease has not expired (expired ones go).
    local function slots_used(h)
      local f = redis.call('HGETALL', h)
      local vals = {}
      for i = 1, #f, 2 do vals[f[i]] = f[i + 1] end
      local used = 0
      for name, v in pairs(vals) do
        if string.sub(name, -4) ~= ':exp' then
          if (tonumber(vals[name .. ':exp']) or 0) < now then redis.call('HDEL', h, name, name .. ':exp')
          else used = used + tonumber(v) end
        end
      end
      return used
    end
    local function admit(k0, nk, a0)
      local maxc = tonumber(ARGV[a0])
      local n = nk
      local free, h = 0, nil
      if maxc > 0 then
        n = n - 1
        h = KEYS[k0 + nk - 1]
        free = maxc - slots_used(h)
        if free < 1 then
          local out = {0, 1000, n + 1, 0, 0}
          for i = 1, n do out[#out + 1] = 0; out[#out + 1] = 0; out[#out + 1] = 0; out[#out + 1] = 0 end
          return out
        end
      end
      local tokens, caps, costs, versions = {}, {}, {}, {}
      local allowed, retry, refused = 1, 0, 0
      for i = 1, n do
        local cap = tonumber(ARGV[a0 + 1 + 3 * i])
        local cost = tonumber(ARGV[a0 + 2 + 3 * i])
        local rate = cap / 60000.0
        local key = KEYS[k0 + i - 1]
        local b = redis.call('HMGET', key, 't', 'ts', 'v')
        local t = tonumber(b[1])
        local ts = tonumber(b[2])
        versions[i] = (tonumber(b[3]) or 0) + 1
        if t == nil then t = cap; ts = now end
        t = math.min(cap, t + math.max(0, now - ts) * rate)
        tokens[i] = t; caps[i] = cap; costs[i] = cost
        if t < cost then
          allowed = 0
          local wait = math.ceil((math.min(cost, cap) - t) / rate)
          if wait > retry then retry = wait; refused = i end
        end
      end
      local granted, free_after = 0, 0
      if allowed == 1 and maxc > 0 then
        local ttl = tonumber(ARGV[a0 + 2])
        granted = 1 + math.max(0, math.min(tonumber(ARGV[a0 + 3]), free - 1 - math.floor(maxc / 2)))
        local owner = ARGV[a0 + 1]
        redis.call('HINCRBY', h, owner, granted)
        redis.call('HSET', h, owner .. ':exp', now + ttl)
        if redis.call('PTTL', h) < ttl then redis.call('PEXPIRE', h, ttl) end
        free_after = free - granted
      end
      local out = {allowed, retry, refused, granted, free_after}
      for i = 1, n do
        local t = tokens[i]
        local lease = 0
        if allowed == 1 then
          t = t - costs[i]
          lease = math.max(0, math.min(tonumber(ARGV[a0 + 3 + 3 * i]), math.floor(t - caps[i] / 2)))
          t = t - lease
        end
        redis.call('HSET', KEYS[k0 + i - 1], 't', tostring(t), 'ts', tostring(now), 'v', versions[i])
        redis.call('PEXPIRE', KEYS[k0 + i - 1], 120000)
        local rate = caps[i] / 60000.0
        out[#out + 1] = math.floor(math.max(0, t))
        out[#out + 1] = math.ceil((caps[i] - t) / rate)
        out[#out + 1] = lease
        out[#out + 1] = versions[i]
      end
      return out
    end
    local results = {}
    local k0, a = 1, 3
    for r = 1, tonumber(ARGV[2]) do
      local nk, na = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
      results[r] = admit(k0, nk, a + 2)
      k0 = k0 + nk
      a = a + 2 + na
    end
    return results
    """)

    /// Settlement of a batch of finished requests in one round trip. The caller groups them — the
    /// requests of one key, endpoint, batch and tier share their keys and caps — and sums each
    /// group, so Lua does almost nothing per request unless it finds a duplicate (measured in
    /// docs/benchmarks.md: ~3 µs per request against ~8 when Lua summed them).
    ///
    /// ARGV: now_ms, group count G, marker-set count S, request count N; then per group: k (its
    /// token buckets), endpoint, in a batch (0/1), the k caps, and its sums: delta (actual −
    /// reserved), billed requests, input tokens, output tokens, cost µ$; then per marker set its
    /// request count; then the N request ids, set by set; then per request, in the same order, its
    /// group and its own delta, billed (0/1), input, output, cost (read only to take a duplicate
    /// out of its group's sums). KEYS: per group its k token buckets, its usage HASH, its
    /// project's usage SET, its batch HASH (the usage HASH again when none), its project's usage
    /// HASH of the day (fields prefixed `<endpoint>:`, kept 400 days); then the S marker
    /// SETs. A request already in its marker set was settled before (a duplicate or a retry), and
    /// so is a second copy within the batch: it is skipped, and every request counts once.
    /// Returns how many requests were applied.
    static let finishScript = LuaScript("""
    local now = tonumber(ARGV[1])
    local ngroups, nsets, count = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
    local groups = {}
    local a, kx = 5, 1
    for g = 1, ngroups do
      local k = tonumber(ARGV[a])
      local gr = {k = k, kx = kx, endpoint = ARGV[a + 1], batch = ARGV[a + 2] == '1', caps = {}}
      for i = 1, k do gr.caps[i] = tonumber(ARGV[a + 2 + i]) end
      local t = a + 3 + k
      gr.delta, gr.billed = tonumber(ARGV[t]), tonumber(ARGV[t + 1])
      gr.input, gr.output, gr.cost = tonumber(ARGV[t + 2]), tonumber(ARGV[t + 3]), tonumber(ARGV[t + 4])
      groups[g] = gr
      a = t + 5
      kx = kx + k + 4
    end
    local set0 = kx - 1
    local counts_at = a
    local id0 = a + nsets
    local per0 = id0 + count
    -- Which requests are new: one SMISMEMBER per marker set; a duplicate comes out of its group.
    local seen = {}
    local applied = count
    local first = id0
    for s = 1, nsets do
      local n = tonumber(ARGV[counts_at + s - 1])
      if n > 0 then
        local known = redis.call('SMISMEMBER', KEYS[set0 + s], unpack(ARGV, first, first + n - 1))
        local added, dup = nil, false
        for i = 1, n do
          local id = ARGV[first + i - 1]
          if known[i] == 1 or seen[id] then
            if not dup then
              dup = true
              added = {}
              for j = 1, i - 1 do added[j] = ARGV[first + j - 1] end
            end
            applied = applied - 1
            local b = per0 + (first + i - 1 - id0) * 6
            local gr = groups[tonumber(ARGV[b])]
            gr.delta = gr.delta - tonumber(ARGV[b + 1])
            if ARGV[b + 2] == '1' then
              gr.billed = gr.billed - 1
              gr.input = gr.input - tonumber(ARGV[b + 3])
              gr.output = gr.output - tonumber(ARGV[b + 4])
              gr.cost = gr.cost - tonumber(ARGV[b + 5])
            end
          else
            seen[id] = true
            if dup then added[#added + 1] = id end
          end
        end
        if not dup then redis.call('SADD', KEYS[set0 + s], unpack(ARGV, first, first + n - 1))
        elseif #added > 0 then redis.call('SADD', KEYS[set0 + s], unpack(added)) end
        redis.call('EXPIRE', KEYS[set0 + s], 1200)
        first = first + n
      end
    end
    -- Per bucket (several groups share a project's), per usage hash, per endpoint set.
    local deltas, caps, delta_order = {}, {}, {}
    for _, gr in ipairs(groups) do
      if gr.delta ~= 0 then
        for i = 1, gr.k do
          local key = KEYS[gr.kx + i - 1]
          if deltas[key] == nil then deltas[key] = 0; delta_order[#delta_order + 1] = key end
          deltas[key] = deltas[key] + gr.delta
          caps[key] = gr.caps[i]
        end
      end
      if gr.billed > 0 then
        local function add(h, prefix)
          redis.call('HINCRBY', h, prefix .. 'requests', gr.billed)
          redis.call('HINCRBY', h, prefix .. 'input_tokens', gr.input)
          redis.call('HINCRBY', h, prefix .. 'output_tokens', gr.output)
          redis.call('HINCRBY', h, prefix .. 'cost_micro_usd', gr.cost)
        end
        add(KEYS[gr.kx + gr.k], '')
        redis.call('SADD', KEYS[gr.kx + gr.k + 1], gr.endpoint)
        if gr.batch then add(KEYS[gr.kx + gr.k + 2], 'usage_') end
        add(KEYS[gr.kx + gr.k + 3], gr.endpoint .. ':')
        redis.call('EXPIRE', KEYS[gr.kx + gr.k + 3], 34560000)
      end
    end
    for _, key in ipairs(delta_order) do
      local bk = redis.call('HMGET', key, 't', 'ts')
      local t = tonumber(bk[1])
      if t ~= nil and deltas[key] ~= 0 then
        local cap = caps[key]
        t = math.min(cap, t + math.max(0, now - tonumber(bk[2])) * cap / 60000.0) - deltas[key]
        redis.call('HSET', key, 't', tostring(math.min(cap, t)), 'ts', tostring(now))
        redis.call('PEXPIRE', key, 120000)
      end
    end
    return applied
    """)

    struct Bucket {
        enum Scope { case key, project }
        enum Kind { case requests, tokens }
        var key: String
        var capacity: Int
        var cost: Int
        var scope: Scope
        var kind: Kind
        /// For the refusal's message.
        var name: String {
            (kind == .requests ? "requests" : "tokens") + " per minute for this " + (scope == .key ? "key" : "project")
        }
    }

    private func buckets(keyHash: String, project: String, limits: Limits, tokens: Int) -> [Bucket] {
        Self.bucketList(keyHash: keyHash, project: project, limits: limits, tokens: tokens)
    }

    static func bucketList(keyHash: String, project: String, limits: Limits, tokens: Int) -> [Bucket] {
        var b: [Bucket] = []
        // Batch lines have no key: only the project's buckets apply to them.
        let keyHash: String? = keyHash.isEmpty ? nil : keyHash
        if let l = limits.keyRequestsPerMinute, let keyHash { b.append(Bucket(key: RedisKeys.rateBucket("key", keyHash, "req"), capacity: l, cost: 1, scope: .key, kind: .requests)) }
        if let l = limits.keyTokensPerMinute, let keyHash { b.append(Bucket(key: RedisKeys.rateBucket("key", keyHash, "tok"), capacity: l, cost: tokens, scope: .key, kind: .tokens)) }
        if let l = limits.projectRequestsPerMinute { b.append(Bucket(key: RedisKeys.rateBucket("proj", project, "req"), capacity: l, cost: 1, scope: .project, kind: .requests)) }
        if let l = limits.projectTokensPerMinute { b.append(Bucket(key: RedisKeys.rateBucket("proj", project, "tok"), capacity: l, cost: tokens, scope: .project, kind: .tokens)) }
        return b
    }

    public func admit(keyHash: String, project: String, limits: Limits, reserveTokens: Int) async throws -> Decision {
        let bs = buckets(keyHash: keyHash, project: project, limits: limits, tokens: reserveTokens)
        var d = Decision(allowed: true, retryAfterMs: 0, reservedTokens: reserveTokens)
        let maxc = keyHash.isEmpty ? 0 : (limits.maxConcurrent ?? 0)
        guard !bs.isEmpty || maxc > 0 else { return d }
        let charges = bs.map { LeaseBook.Charge(key: $0.key, capacity: $0.capacity, cost: $0.cost) }
        let slotKey = maxc > 0 ? RedisKeys.slots(keyHash) : nil
        // Most admissions under load: every bucket's lease covers the cost, a held slot is idle.
        if let local = leases.takeLocally(charges, slotKey: slotKey) {
            Self.reportKeyBuckets(&d, bs, remaining: local.leases.map(\.remaining), resetMs: local.leases.map(\.resetMs))
            if let wants = local.topUp { startTopUp(bs, wants: wants) }
            return d
        }
        let wants = leases.wants(charges, slotKey: slotKey)
        let keys = bs.map(\.key) + (slotKey.map { [$0] } ?? [])
        var args = [String(maxc), leases.owner, String(limits.slotTTLMs), String(wants.spareSlots)]
        for (b, want) in zip(bs, wants.tokens) { args += [String(b.capacity), String(b.cost), String(want)] }
        let a: [Int]
        do {
            let reply = try await admissions.run(AdmissionCall(keys: keys, args: args))
            a = reply.array.map { $0.int ?? 0 }
            guard a.count == 5 + Self.perBucket * bs.count else { throw RedisError("rate limit script: unexpected reply \(reply)") }
        } catch {
            leases.failed(charges, slotKey: slotKey)
            throw error
        }
        d.allowed = a[0] == 1
        d.retryAfterMs = a[1]
        if a[2] > 0 { d.refusedBy = a[2] <= bs.count ? bs[a[2] - 1].name : "concurrent requests for this key (\(maxc))" }
        let buckets = Self.bucketReplies(a, count: bs.count)
        var remaining = buckets.remaining
        if d.allowed {
            remaining = leases.granted(charges, leases: buckets.leases, remaining: remaining, resetMs: buckets.resetMs, versions: buckets.versions)
            if let slotKey { leases.grantedSlots(slotKey, count: a[3], freeAfter: a[4], limit: maxc, ttlMs: limits.slotTTLMs) }
        } else {
            leases.failed(charges, slotKey: slotKey)
        }
        Self.reportKeyBuckets(&d, bs, remaining: remaining, resetMs: buckets.resetMs)
        return d
    }

    /// Top-ups in flight, by number: `flush` waits for them before it gives every lease back.
    private struct TopUps { var next = 0; var running: [Int: Task<Void, Never>] = [:] }
    private let topUps = Locked(TopUps())

    private func startTopUp(_ bs: [Bucket], wants: [Int]) {
        topUps.withLock { t in
            let n = t.next
            t.next += 1
            t.running[n] = Task { [self] in
                await topUp(bs, wants: wants)
                _ = topUps.withLock { $0.running.removeValue(forKey: n) }
            }
        }
    }

    /// Refills leases that run low, off the request path: an admission of nothing (cost 0, no
    /// slot) that asks only for leases. Redis grants them out of the upper half of each bucket,
    /// as for any admission, so near a limit nothing is leased and every admission stays exact.
    private func topUp(_ bs: [Bucket], wants: [Int]) async {
        let charges = bs.map { LeaseBook.Charge(key: $0.key, capacity: $0.capacity, cost: 0) }
        var args = ["0", leases.owner, "0", "0"]
        for (b, want) in zip(bs, wants) { args += [String(b.capacity), "0", String(want)] }
        do {
            let a = try await admissions.run(AdmissionCall(keys: bs.map(\.key), args: args)).array.map { $0.int ?? 0 }
            guard a.count == 5 + Self.perBucket * bs.count, a[0] == 1 else { leases.failed(charges, slotKey: nil); return }
            let buckets = Self.bucketReplies(a, count: bs.count)
            _ = leases.granted(charges, leases: buckets.leases, remaining: buckets.remaining, resetMs: buckets.resetMs, versions: buckets.versions)
        } catch {
            leases.failed(charges, slotKey: nil)
        }
    }

    /// Values per bucket in an admission's reply, after its five leading ones.
    static let perBucket = 4

    /// An admission reply's per-bucket values: what the bucket holds, ms until full, the lease
    /// granted, and the bucket's write version (which orders replies that resume out of order).
    static func bucketReplies(_ a: [Int], count: Int) -> (remaining: [Int], resetMs: [Int], leases: [Int], versions: [Int]) {
        let at = { (field: Int) in (0..<count).map { a[5 + perBucket * $0 + field] } }
        return (at(0), at(1), at(2), at(3))
    }

    /// What OpenAI's `x-ratelimit-*` headers report: the key's own buckets.
    private static func reportKeyBuckets(_ d: inout Decision, _ bs: [Bucket], remaining: [Int], resetMs: [Int]) {
        for (i, b) in bs.enumerated() where b.scope == .key {
            if b.kind == .requests { d.limitRequests = b.capacity; d.remainingRequests = remaining[i]; d.resetRequestsMs = resetMs[i] }
            else { d.limitTokens = b.capacity; d.remainingTokens = remaining[i]; d.resetTokensMs = resetMs[i] }
        }
    }

    /// One request's part of an admission script call.
    struct AdmissionCall: Sendable {
        var keys: [String]
        var args: [String]
    }

    /// Runs the admission calls waiting at the same moment as one script call.
    static func runAdmissions(_ scripts: ScriptRunner, _ calls: [AdmissionCall]) async throws -> [RedisValue] {
        var args = [String(nowMs()), String(calls.count)]
        for c in calls { args += [String(c.keys.count), String(c.args.count)] + c.args }
        let reply = try await scripts.run(Self.admitScript, keys: calls.flatMap(\.keys), args: args)
        if case let .error(e) = reply { throw RedisError("rate limit script: \(e)") }
        guard case let .array(results) = reply, results.count == calls.count else { throw RedisError("rate limit script: unexpected reply \(reply)") }
        return results
    }

    /// One finished job to account for (docs/tenancy.md, "Billing").
    public struct Settlement: Sendable {
        public var requestId: String
        public var project: String
        public var endpoint: String
        public var tier: Tier
        /// The key's hash (empty for batch lines: only the project's buckets apply).
        public var keyHash: String
        public var reserved: Int
        /// nil: the job failed before it used anything — the reservation is refunded, nothing billed.
        public var usage: Usage?
        public var batchId: String
        /// When the job was accepted (its envelope's `acceptedAtMs`, the same in every copy of it):
        /// which marker set records that it was settled (`RedisKeys.settled`).
        public var acceptedAtMs: Int64

        public init(requestId: String, project: String, endpoint: String, tier: Tier, keyHash: String, reserved: Int, usage: Usage?,
                    batchId: String = "", acceptedAtMs: Int64) {
            self.acceptedAtMs = acceptedAtMs
            self.requestId = requestId
            self.project = project
            self.endpoint = endpoint
            self.tier = tier
            self.keyHash = keyHash
            self.reserved = reserved
            self.usage = usage
            self.batchId = batchId
        }
    }

    /// Ends a job's accounting: corrects the token buckets by what it really used (refunding the
    /// unused reservation) and adds its usage and cost to the project's, endpoint's and batch's
    /// counters — once per request id, however often it is called. Queued and written in batches
    /// (one script call at most every 5 ms); kept and retried while Redis refuses.
    public func settle(_ s: Settlement) {
        settlements.add(s)
    }

    /// Frees a request's concurrency slot. Separate from settlement: a client that leaves frees
    /// its slot at once, its usage is settled when the worker reports. The slot stays this
    /// gateway's (idle, for the next request) while the key is far from its limit; otherwise it
    /// goes back to the key's in-flight hash within a few milliseconds.
    public func release(keyHash: String) {
        leases.release(RedisKeys.slots(keyHash))
    }

    /// Writes every queued settlement and gives back every unused lease now; throws if Redis
    /// refused (they stay queued).
    public func flush() async throws {
        for task in topUps.withLock({ Array($0.running.values) }) { await task.value }
        let returned = await leases.returnAll()
        guard await settlements.flush(), returned else { throw RedisError("settlements could not be written; kept for retry") }
    }

    /// Admissions this process decided from its leases, without a Redis call.
    public var localAdmissions: Int { leases.localAdmissions }

    /// Settlements and lease returns not yet written.
    public var waiting: Int { settlements.waiting + leases.waiting }

    /// One script call for a batch of settlements (`finishScript`): grouped by key, endpoint,
    /// batch and tier, each group's keys and caps sent once; marker sets by accepted time.
    static func writeSettlements(_ redis: RedisClient, _ scripts: ScriptRunner, _ batch: [Settlement]) async throws {
        let call = settlementCall(batch, nowMs: nowMs())
        let reply = try await scripts.run(Self.finishScript, keys: call.keys, args: call.args, durably: true)
        if case let .error(e) = reply { throw RedisError("settlement script: \(e)") }
    }

    /// The keys and arguments of `finishScript` for a batch (see there for the layout).
    static func settlementCall(_ batch: [Settlement], nowMs: Int64) -> (keys: [String], args: [String]) {
        struct GroupID: Hashable { var keyHash, project, endpoint, batchId, tier: String }
        struct Group { var keys: [String]; var head: [String]; var delta = 0, billed = 0, input = 0, output = 0, cost = 0 }
        struct Entry { var group: Int; var delta: Int; var usage: Usage?; var cost: Int; var id: String }
        var groupIndex: [GroupID: Int] = [:]
        // Usage per day is filed under the day the batch is written (UTC).
        let day = RedisKeys.day(ms: nowMs)
        var groups: [Group] = []
        var sets: [Int64: Int] = [:], setKeys: [String] = []
        var bySet: [[Entry]] = []
        for s in batch {
            let gid = GroupID(keyHash: s.keyHash, project: s.project, endpoint: s.endpoint, batchId: s.batchId, tier: s.tier.name)
            let g: Int
            if let known = groupIndex[gid] { g = known } else {
                g = groups.count
                groupIndex[gid] = g
                let buckets = tokenBuckets(keyHash: s.keyHash, project: s.project, tier: s.tier)
                let usage = RedisKeys.usage(s.project, s.endpoint)
                groups.append(Group(keys: buckets.map(\.key) + [usage, RedisKeys.usageEndpoints(s.project), s.batchId.isEmpty ? usage : RedisKeys.batch(s.batchId),
                                                                 RedisKeys.usageDay(s.project, day: day)],
                                    head: [String(buckets.count), s.endpoint, s.batchId.isEmpty ? "0" : "1"] + buckets.map { String($0.capacity) }))
            }
            let window = RedisKeys.settledWindow(acceptedAtMs: s.acceptedAtMs)
            let m: Int
            if let known = sets[window] { m = known } else {
                m = setKeys.count
                sets[window] = m
                setKeys.append(RedisKeys.settled(window: window))
                bySet.append([])
            }
            let usage = s.usage
            let cost = usage.map { Int((Double($0.promptTokens) * (s.tier.priceInputPerMillion ?? 0)
                                        + Double($0.completionTokens) * (s.tier.priceOutputPerMillion ?? 0)).rounded()) } ?? 0
            let delta = (usage?.totalTokens ?? 0) - s.reserved
            groups[g].delta += delta
            if let usage {
                groups[g].billed += 1
                groups[g].input += usage.promptTokens
                groups[g].output += usage.completionTokens
                groups[g].cost += cost
            }
            bySet[m].append(Entry(group: g + 1, delta: delta, usage: usage, cost: cost, id: s.requestId))
        }
        var args = [String(nowMs), String(groups.count), String(setKeys.count), String(batch.count)]
        args.reserveCapacity(args.count + groups.count * 12 + setKeys.count + batch.count * 7)
        for g in groups { args += g.head + [String(g.delta), String(g.billed), String(g.input), String(g.output), String(g.cost)] }
        for entries in bySet { args.append(String(entries.count)) }
        for entries in bySet { for e in entries { args.append(e.id) } }
        for entries in bySet {
            for e in entries {
                args += [String(e.group), String(e.delta), e.usage == nil ? "0" : "1", String(e.usage?.promptTokens ?? 0),
                         String(e.usage?.completionTokens ?? 0), String(e.cost)]
            }
        }
        return (groups.flatMap(\.keys) + setKeys, args)
    }

    /// A settlement's token buckets (the key's and the project's, where the tier limits tokens).
    private static func tokenBuckets(keyHash: String, project: String, tier: Tier) -> [Bucket] {
        RateLimiter.bucketList(keyHash: keyHash, project: project, limits: Limits(tier: tier), tokens: 0).filter { $0.kind == .tokens }
    }
}

/// A Lua script and its SHA-1, computed once.
struct LuaScript: Sendable {
    let source: String
    let sha: String
    init(_ source: String) {
        self.source = source
        sha = Formatting.hex(Insecure.SHA1.hash(data: Array(source.utf8)))
    }
}

/// Runs Lua scripts by SHA (`EVALSHA`), loading them on first use or after a Redis restart
/// (`NOSCRIPT`), so a request sends a 40-byte digest instead of the script text.
struct ScriptRunner: Sendable {
    let redis: RedisClient

    /// `durably`: the write is confirmed by a replica where there are any (`RedisClient.sendDurably`).
    func run(_ script: LuaScript, keys: [String], args: [String], durably: Bool = false) async throws -> RedisValue {
        func send(_ a: [String]) async throws -> RedisValue { durably ? try await redis.sendDurably(a) : try await redis.send(a) }
        let reply = try await send(["EVALSHA", script.sha, String(keys.count)] + keys + args)
        if case let .error(e) = reply, e.hasPrefix("NOSCRIPT") {
            return try await send(["EVAL", script.source, String(keys.count)] + keys + args)
        }
        return reply
    }
}
