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
    public init(redis: RedisClient) { self.redis = redis }

    /// KEYS: bucket keys, then (if ARGV[2] > 0) the key's in-flight ZSET. ARGV: now_ms, max_concurrent
    /// (0 = none), request id, slot expiry ms, then per bucket capacity, cost. Bucket = HASH {t, ts}.
    /// Returns {allowed, retry_ms, refused_index (n+1 = concurrency), then per bucket remaining, reset_ms}.
    static let admitScript = """
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
    """

    /// KEYS: token bucket keys. ARGV: now_ms, delta (actual − reserved; negative refunds), then caps.
    static let settleScript = """
    local now = tonumber(ARGV[1])
    local delta = tonumber(ARGV[2])
    for i = 1, #KEYS do
      local cap = tonumber(ARGV[2 + i])
      local b = redis.call('HMGET', KEYS[i], 't', 'ts')
      local t = tonumber(b[1])
      if t ~= nil then
        local rate = cap / 60000.0
        t = math.min(cap, t + math.max(0, now - tonumber(b[2])) * rate) - delta
        redis.call('HSET', KEYS[i], 't', tostring(math.min(cap, t)), 'ts', tostring(now))
        redis.call('PEXPIRE', KEYS[i], 120000)
      end
    end
    return 1
    """

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
        var args = ["EVAL", Self.admitScript, String(keys.count)] + keys + [String(nowMs()), String(maxc), requestId, String(limits.slotTTLMs)]
        for b in bs { args += [String(b.capacity), String(b.cost)] }
        let reply = try await redis.send(args)
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

    /// Corrects the token buckets by what the request really used (refunds unused reservation) and
    /// frees its concurrency slot.
    public func settle(keyHash: String, project: String, limits: Limits, reserved: Int, actual: Int, requestId: String) async throws {
        if (limits.maxConcurrent ?? 0) > 0 { _ = try await redis.send(["ZREM", RedisKeys.inflight(keyHash), requestId]) }
        let bs = buckets(keyHash: keyHash, project: project, limits: limits, tokens: 0).filter { $0.key.hasSuffix(":tok") }
        guard !bs.isEmpty, actual != reserved else { return }
        let args = ["EVAL", Self.settleScript, String(bs.count)] + bs.map(\.key) + [String(nowMs()), String(actual - reserved)] + bs.map { String($0.capacity) }
        _ = try await redis.send(args)
    }
}
