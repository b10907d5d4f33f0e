import Crypto
import Foundation
import XeroCore
import XeroJobs
import XeroStore

/// The limiter's pieces in-process against a real Redis (`xerobench limiter REDIS_URL [seconds]`),
/// each as CPU µs per request of this process and of Redis: what bench/run.sh's tenancy rounds
/// measure as a whole, but without the noise of five processes sharing two cores. A third
/// argument runs one case only (for `perf`).
/// - `key_hash`: the API key's SHA-256 in hex, which every request pays (limits on or off);
///   `before` is the Foundation `String(format:)` hex it replaced.
/// - `admit`: a gateway's whole limiter path for one request — admission (from leases, or every
///   one in Redis), the rate-limit headers, the slot release — 64 requests at a time.
/// - `wakeup`: Redis's CPU for a `PING` sent every 5 ms against one sent back to back — what waking
///   an idle process costs, the fixed part of every settlement write.
/// - `settle`: the router's settlement of finished requests at 1,000, 4,000 (the platform's
///   throughput here) and 16,000 a second, written every 5 ms and every 25 ms.
enum LimiterBench {
    static func run(url: String, seconds: Double, only: String?) async throws {
        let redis = try RedisClient(try RedisAddress(url: url))
        if only == nil || only == "key_hash" { keyHash() }
        // The tier bench/run.sh's platform runs: limits on every bucket, high enough never to refuse.
        guard let tier = try PlatformConfig.load(path: "bench/bench-config.yaml").tier(named: "standard") else {
            fatalError("bench/bench-config.yaml (run from the repository root) has no 'standard' tier")
        }
        if only == nil || only == "admit" {
            for leases in [true, false] { try await admit(redis: redis, tier: tier, leases: leases, seconds: seconds) }
        }
        if only == nil || only == "settle" { try await settle(redis: redis, tier: tier, seconds: seconds) }
        if only == nil || only == "wakeup" { try await wakeup(redis: redis) }
    }

    /// User + system CPU seconds of this process.
    static func processCPU() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
    }

    /// Redis's own user + system CPU seconds (`INFO cpu`).
    static func redisCPU(_ redis: RedisClient) async throws -> Double {
        guard case let .bulk(bytes) = try await redis.send(["INFO", "cpu"]) else { return 0 }
        var total = 0.0
        for line in String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline) {
            let kv = line.split(separator: ":")
            if kv.count == 2, kv[0] == "used_cpu_sys" || kv[0] == "used_cpu_user" { total += Double(kv[1]) ?? 0 }
        }
        return total
    }

    static func keyHash() {
        let key = "xero_bench_" + String(repeating: "k7", count: 16)
        func before(_ k: String) -> String { SHA256.hash(data: Array(k.utf8)).map { String(format: "%02x", $0) }.joined() }
        precondition(before(key) == APIKey.hash(key), "the two hex encodings differ")
        for (name, f) in [("before", before), ("after", APIKey.hash)] as [(String, (String) -> String)] {
            let n = 100_000
            var sink = 0
            let t0 = processCPU()
            for _ in 0..<n { sink &+= f(key).utf8.count }
            let us = (processCPU() - t0) / Double(n) * 1e6
            print(String(format: #"{"mode":"limiter","case":"key_hash","version":"%@","cpu_us_per_request":%.2f,"sink":%d}"#, name, us, sink))
        }
    }

    static func admit(redis: RedisClient, tier: Tier, leases: Bool, seconds: Double) async throws {
        let limiter = RateLimiter(redis: redis, leases: leases)
        let limits = RateLimiter.Limits(tier: tier)
        let keyHash = APIKey.hash("xero_bench_" + randomID(length: 32)), project = "proj_bench_" + randomID(length: 8)
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
        let (cpu0, redis0) = (processCPU(), try await redisCPU(redis))
        let done = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<64 {
                group.addTask {
                    var n = 0
                    while DispatchTime.now().uptimeNanoseconds < deadline {
                        let d = try await limiter.admit(keyHash: keyHash, project: project, limits: limits, reserveTokens: 40)
                        precondition(d.allowed, "the bench's limits never refuse")
                        n += RateLimitHeaders.fields(d).count > 0 ? 1 : 0
                        limiter.release(keyHash: keyHash)
                    }
                    return n
                }
            }
            return try await group.reduce(0, +)
        }
        try await limiter.flush()
        let (cpu1, redis1) = (processCPU(), try await redisCPU(redis))
        print(String(format: #"{"mode":"limiter","case":"admit","leases":%@,"requests":%d,"cpu_us_per_request":%.2f,"redis_cpu_us_per_request":%.2f}"#,
                     leases ? "true" : "false", done, (cpu1 - cpu0) / Double(done) * 1e6, (redis1 - redis0) / Double(done) * 1e6))
    }

    /// Settlements paced as the router's arrive (in 5 ms ticks), written every 5 ms (the interval
    /// before session 14) and every `RateLimiter.settleIntervalMs`; the pacing loop's own CPU
    /// (the same loop with no settlements, measured first) is subtracted.
    static func settle(redis: RedisClient, tier: Tier, seconds: Double) async throws {
        let ticks = Int(seconds * 200)
        let idle = try await pacedSettlements(redis: redis, tier: tier, perTick: 0, ticks: ticks, intervalMs: 5)
        for (rate, interval) in [(4000, UInt64(5)), (4000, RateLimiter.settleIntervalMs), (1000, 5), (1000, RateLimiter.settleIntervalMs),
                                 (16000, RateLimiter.settleIntervalMs)] {
            let perTick = rate / 200
            let busy = try await pacedSettlements(redis: redis, tier: tier, perTick: perTick, ticks: ticks, intervalMs: interval)
            let n = Double(perTick * ticks)
            print(String(format: #"{"mode":"limiter","case":"settle","per_s":%d,"interval_ms":%d,"requests":%d,"cpu_us_per_request":%.2f,"redis_cpu_us_per_request":%.2f}"#,
                         rate, Int(interval), perTick * ticks, (busy.cpu - idle.cpu) / n * 1e6, (busy.redis - idle.redis) / n * 1e6))
        }
    }

    /// CPU seconds (this process, Redis) of `ticks` rounds 5 ms apart, each settling `perTick` requests.
    static func pacedSettlements(redis: RedisClient, tier: Tier, perTick: Int, ticks: Int, intervalMs: UInt64) async throws -> (cpu: Double, redis: Double) {
        let limiter = RateLimiter(redis: redis, settleIntervalMs: intervalMs)
        let keyHash = APIKey.hash("xero_bench_" + randomID(length: 32)), project = "proj_bench_" + randomID(length: 8)
        let ids = (0..<perTick * ticks).map { _ in "req_" + randomID(length: 24) }
        let (cpu0, redis0) = (processCPU(), try await redisCPU(redis))
        let start = DispatchTime.now().uptimeNanoseconds
        for t in 0..<ticks {
            for i in 0..<perTick {
                limiter.settle(RateLimiter.Settlement(requestId: ids[t * perTick + i], project: project, endpoint: "ep", tier: tier,
                                                      keyHash: keyHash, reserved: 41, usage: Usage(promptTokens: 9, completionTokens: 1),
                                                      acceptedAtMs: nowMs()))
            }
            let next = start + UInt64(t + 1) * 5_000_000
            let now = DispatchTime.now().uptimeNanoseconds
            if next > now { try await Task.sleep(nanoseconds: next - now) }
        }
        try await limiter.flush()
        let (cpu1, redis1) = (processCPU(), try await redisCPU(redis))
        return (cpu1 - cpu0, redis1 - redis0)
    }

    static func wakeup(redis: RedisClient) async throws {
        for paced in [true, false] {
            let n = 800
            let r0 = try await redisCPU(redis)
            for _ in 0..<n {
                _ = try await redis.send(["PING"])
                if paced { try await Task.sleep(nanoseconds: 5_000_000) }
            }
            let us = (try await redisCPU(redis) - r0) / Double(n) * 1e6
            print(String(format: #"{"mode":"limiter","case":"wakeup","ping_every_ms":%d,"redis_cpu_us_per_ping":%.1f}"#, paced ? 5 : 0, us))
        }
    }
}
