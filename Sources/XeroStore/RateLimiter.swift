import Crypto
import Foundation
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
    }

    public let redis: RedisClient
    let scripts: ScriptRunner
    private let settlements = Locked(SettlementQueue())
    public init(redis: RedisClient) { self.redis = redis; scripts = ScriptRunner(redis: redis) }

    /// KEYS: bucket keys, then (if ARGV[2] > 0) the key's in-flight ZSET. ARGV: now_ms, max_concurrent
    /// (0 = none), request id, slot expiry ms, then per bucket capacity, cost. Bucket = HASH {t, ts}.
    /// Returns {allowed, retry_ms, refused_index (n+1 = concurrency), then per bucket remaining, reset_ms}.
    static let admitScript = LuaScript("""
    local now = tonumber(ARGV[1])
    local maxc = tonumber(ARGV[2])
    local n = #KEYS
    if maxc > 0 then
      n = n - 1
      local z = KEYS[#KEYS]
      redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
      if redis.call('ZCARD', z) >= maxc then
        local out = {0, 1000, n + 1}
        for i = 1, n do out[#out + 1] = 0; out[#out + 1] = 0 end
        return out
      end
    end
    local tokens, caps, costs = {}, {}, {}
    local allowed, retry, refused = 1, 0, 0
    for i = 1, n do
      local cap = tonumber(ARGV[3 + 2 * i])
      local cost = tonumber(ARGV[4 + 2 * i])
      local rate = cap / 60000.0
      local b = redis.call('HMGET', KEYS[i], 't', 'ts')
      local t = tonumber(b[1])
      local ts = tonumber(b[2])
      if t == nil then t = cap; ts = now end
      t = math.min(cap, t + math.max(0, now - ts) * rate)
      tokens[i] = t; caps[i] = cap; costs[i] = cost
      if t < cost then
        allowed = 0
        local wait = math.ceil((math.min(cost, cap) - t) / rate)
        if wait > retry then retry = wait; refused = i end
      end
    end
    if allowed == 1 and maxc > 0 then
      redis.call('ZADD', KEYS[#KEYS], now + tonumber(ARGV[4]), ARGV[3])
      redis.call('PEXPIRE', KEYS[#KEYS], tonumber(ARGV[4]))
    end
    local out = {allowed, retry, refused}
    for i = 1, n do
      local t = tokens[i]
      if allowed == 1 then t = t - costs[i] end
      redis.call('HSET', KEYS[i], 't', tostring(t), 'ts', tostring(now))
      redis.call('PEXPIRE', KEYS[i], 120000)
      local rate = caps[i] / 60000.0
      out[#out + 1] = math.floor(math.max(0, t))
      out[#out + 1] = math.ceil((caps[i] - t) / rate)
    end
    return out
    """)

    /// Settlement of a batch of finished requests in one round trip. ARGV: now_ms, count, then per
    /// request: k (its token buckets), delta (actual − reserved), request id, endpoint, input tokens,
    /// output tokens, cost µ$, record usage (0/1), then k caps. KEYS, per request in the same order:
    /// its k token buckets, its key's in-flight ZSET, its usage HASH, its project's usage SET.
    static let finishScript = LuaScript("""
    local now = tonumber(ARGV[1])
    local count = tonumber(ARGV[2])
    local a = 3
    local kx = 1
    for r = 1, count do
      local k = tonumber(ARGV[a])
      local delta = tonumber(ARGV[a + 1])
      for i = 1, k do
        local cap = tonumber(ARGV[a + 7 + i])
        local key = KEYS[kx + i - 1]
        local b = redis.call('HMGET', key, 't', 'ts')
        local t = tonumber(b[1])
        if t ~= nil and delta ~= 0 then
          local rate = cap / 60000.0
          t = math.min(cap, t + math.max(0, now - tonumber(b[2])) * rate) - delta
          redis.call('HSET', key, 't', tostring(math.min(cap, t)), 'ts', tostring(now))
          redis.call('PEXPIRE', key, 120000)
        end
      end
      redis.call('ZREM', KEYS[kx + k], ARGV[a + 2])
      if ARGV[a + 7] == '1' then
        local u = KEYS[kx + k + 1]
        redis.call('HINCRBY', u, 'requests', 1)
        redis.call('HINCRBY', u, 'input_tokens', ARGV[a + 4])
        redis.call('HINCRBY', u, 'output_tokens', ARGV[a + 5])
        redis.call('HINCRBY', u, 'cost_micro_usd', ARGV[a + 6])
        redis.call('SADD', KEYS[kx + k + 2], ARGV[a + 3])
      end
      kx = kx + k + 3
      a = a + 8 + k
    end
    return count
    """)

    private struct Bucket { var key: String; var capacity: Int; var cost: Int; var name: String }

    private func buckets(keyHash: String, project: String, limits: Limits, tokens: Int) -> [Bucket] {
        var b: [Bucket] = []
        if let l = limits.keyRequestsPerMinute { b.append(Bucket(key: RedisKeys.rateBucket("key", keyHash, "req"), capacity: l, cost: 1, name: "requests per minute for this key")) }
        if let l = limits.keyTokensPerMinute { b.append(Bucket(key: RedisKeys.rateBucket("key", keyHash, "tok"), capacity: l, cost: tokens, name: "tokens per minute for this key")) }
        if let l = limits.projectRequestsPerMinute { b.append(Bucket(key: RedisKeys.rateBucket("proj", project, "req"), capacity: l, cost: 1, name: "requests per minute for this project")) }
        if let l = limits.projectTokensPerMinute { b.append(Bucket(key: RedisKeys.rateBucket("proj", project, "tok"), capacity: l, cost: tokens, name: "tokens per minute for this project")) }
        return b
    }

    public func admit(keyHash: String, project: String, limits: Limits, reserveTokens: Int, requestId: String) async throws -> Decision {
        let bs = buckets(keyHash: keyHash, project: project, limits: limits, tokens: reserveTokens)
        var d = Decision(allowed: true, retryAfterMs: 0, reservedTokens: reserveTokens)
        let maxc = limits.maxConcurrent ?? 0
        guard !bs.isEmpty || maxc > 0 else { return d }
        let keys = bs.map(\.key) + (maxc > 0 ? [RedisKeys.inflight(keyHash)] : [])
        var args = [String(nowMs()), String(maxc), requestId, String(limits.slotTTLMs)]
        for b in bs { args += [String(b.capacity), String(b.cost)] }
        let reply = try await scripts.run(Self.admitScript, keys: keys, args: args)
        if case let .error(e) = reply { throw RedisError("rate limit script: \(e)") }
        let a = reply.array.map { $0.int ?? 0 }
        guard a.count == 3 + 2 * bs.count else { throw RedisError("rate limit script: unexpected reply \(reply)") }
        d.allowed = a[0] == 1
        d.retryAfterMs = a[1]
        if a[2] > 0 { d.refusedBy = a[2] <= bs.count ? bs[a[2] - 1].name : "concurrent requests for this key (\(maxc))" }
        for (i, b) in bs.enumerated() where b.key.contains(":key:") {
            if b.key.hasSuffix(":req") { d.limitRequests = b.capacity; d.remainingRequests = a[3 + 2 * i]; d.resetRequestsMs = a[4 + 2 * i] }
            else { d.limitTokens = b.capacity; d.remainingTokens = a[3 + 2 * i]; d.resetTokensMs = a[4 + 2 * i] }
        }
        return d
    }

    /// Ends a request's accounting: corrects the token buckets by what it really used (refunding the
    /// unused reservation), frees its concurrency slot and adds its usage and cost to the project's
    /// and endpoint's counters. `usage` nil = the request failed: nothing is billed. Settlements are
    /// queued and written together (one script call per batch, at most every 5 ms), off the
    /// request path; `flush()` forces it.
    public func finish(keyHash: String, project: String, endpoint: String, tier: Tier, limits: Limits, reserved: Int,
                       usage: Usage?, requestId: String) async throws {
        let bs = buckets(keyHash: keyHash, project: project, limits: limits, tokens: 0).filter { $0.key.hasSuffix(":tok") }
        let actual = usage.map { $0.totalTokens } ?? 0
        let cost = usage.map { Double($0.promptTokens) * (tier.priceInputPerMillion ?? 0) + Double($0.completionTokens) * (tier.priceOutputPerMillion ?? 0) } ?? 0
        let keys = bs.map(\.key) + [RedisKeys.inflight(keyHash), RedisKeys.usage(project, endpoint), RedisKeys.usageEndpoints(project)]
        let argv = [String(bs.count), String(actual - reserved), requestId, endpoint,
                    String(usage?.promptTokens ?? 0), String(usage?.completionTokens ?? 0), String(Int(cost.rounded())),
                    usage == nil ? "0" : "1"] + bs.map { String($0.capacity) }
        let first = settlements.withLock { q -> Bool in
            q.items.append((keys, argv))
            if q.flushing { return false }
            q.flushing = true
            return true
        }
        if first {
            try await Task.sleep(nanoseconds: 5_000_000)
            try await flush()
        }
    }

    /// Writes every queued settlement now.
    public func flush() async throws {
        let batch = settlements.withLock { q -> [([String], [String])] in
            defer { q.items.removeAll(keepingCapacity: true); q.flushing = false }
            return q.items
        }
        guard !batch.isEmpty else { return }
        let keys = batch.flatMap(\.0)
        let args = [String(nowMs()), String(batch.count)] + batch.flatMap(\.1)
        let reply = try await scripts.run(Self.finishScript, keys: keys, args: args)
        if case let .error(e) = reply { throw RedisError("settlement script: \(e)") }
    }
}

struct SettlementQueue: Sendable {
    var items: [([String], [String])] = []
    var flushing = false
}

/// A Lua script and its SHA-1, computed once.
struct LuaScript: Sendable {
    let source: String
    let sha: String
    init(_ source: String) {
        self.source = source
        let hex = Array("0123456789abcdef".utf8)
        sha = String(decoding: Insecure.SHA1.hash(data: Array(source.utf8)).flatMap { [hex[Int($0 >> 4)], hex[Int($0 & 0xF)]] }, as: UTF8.self)
    }
}

/// Runs Lua scripts by SHA (`EVALSHA`), loading them on first use or after a Redis restart
/// (`NOSCRIPT`), so a request sends a 40-byte digest instead of the script text.
struct ScriptRunner: Sendable {
    let redis: RedisClient

    func run(_ script: LuaScript, keys: [String], args: [String]) async throws -> RedisValue {
        let reply = try await redis.send(["EVALSHA", script.sha, String(keys.count)] + keys + args)
        if case let .error(e) = reply, e.hasPrefix("NOSCRIPT") {
            return try await redis.send(["EVAL", script.source, String(keys.count)] + keys + args)
        }
        return reply
    }
}
