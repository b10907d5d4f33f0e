import Foundation
import XCTest
import XeroCore
@testable import XeroStore

/// The Lua token buckets against a real redis-server (started by RedisTests' class setup pattern).
final class RateLimiterTests: XCTestCase {
    nonisolated(unsafe) static var redis: RedisServerFixture!
    static var port: Int { redis.port }

    override class func setUp() { redis = RedisServerFixture(portRange: 45001...55000) }
    override class func tearDown() { redis.stop() }

    var tier: Tier {
        var t = Tier(name: "t", priority: 1, weight: 1, queueTimeoutMs: 1000, requestTimeoutMs: 1000)
        t.priceInputPerMillion = 2
        t.priceOutputPerMillion = 3
        return t
    }

    func limitedTier(rpm: Int? = nil, tpm: Int? = nil, projectRPM: Int? = nil, projectTPM: Int? = nil, concurrent: Int? = nil) -> Tier {
        var t = tier
        t.requestsPerMinute = rpm
        t.tokensPerMinute = tpm
        t.projectRequestsPerMinute = projectRPM
        t.projectTokensPerMinute = projectTPM
        t.maxConcurrentRequests = concurrent
        return t
    }

    func limits(rpm: Int? = nil, tpm: Int? = nil, projectRPM: Int? = nil, concurrent: Int? = nil) -> RateLimiter.Limits {
        RateLimiter.Limits(tier: limitedTier(rpm: rpm, tpm: tpm, projectRPM: projectRPM, concurrent: concurrent))
    }

    func settlement(_ id: String, key: String, project: String = "p", endpoint: String = "e", tier: Tier, reserved: Int, usage: Usage?,
                    batch: String = "", acceptedAtMs: Int64 = 1_800_000_000_000) -> RateLimiter.Settlement {
        RateLimiter.Settlement(requestId: id, project: project, endpoint: endpoint, tier: tier, keyHash: key, reserved: reserved,
                               usage: usage, batchId: batch, acceptedAtMs: acceptedAtMs)
    }

    func testBurstThenRefusalWithRetryAfter() async throws {
        let client = try RedisClient(RedisAddress(port: Self.port), connections: 1)
        defer { client.close() }
        let rl = RateLimiter(redis: client)
        let key = randomID(length: 8)
        var admitted = 0
        var last: RateLimiter.Decision?
        for _ in 0..<70 {
            let d = try await rl.admit(keyHash: key, project: "p", limits: limits(rpm: 60), reserveTokens: 10)
            if d.allowed { admitted += 1 } else { last = d }
        }
        XCTAssertEqual(admitted, 60, "the bucket starts full: a minute's worth of burst, no more")
        let refused = try XCTUnwrap(last)
        XCTAssertFalse(refused.allowed)
        XCTAssertGreaterThan(refused.retryAfterMs, 0)
        XCTAssertLessThanOrEqual(refused.retryAfterMs, 1000, "60/min refills one request per second")
        XCTAssertEqual(refused.limitRequests, 60)
        XCTAssertEqual(refused.remainingRequests, 0)
        XCTAssertEqual(refused.refusedBy, "requests per minute for this key")
    }

    func testTokensReserveAndSettle() async throws {
        let client = try RedisClient(RedisAddress(port: Self.port), connections: 1)
        defer { client.close() }
        let rl = RateLimiter(redis: client)
        let key = randomID(length: 8)
        let t = limitedTier(tpm: 1000)
        let l = RateLimiter.Limits(tier: t)
        let d1 = try await rl.admit(keyHash: key, project: "p", limits: l, reserveTokens: 800)
        XCTAssertTrue(d1.allowed)
        XCTAssertEqual(d1.remainingTokens, 200)
        let d2 = try await rl.admit(keyHash: key, project: "p", limits: l, reserveTokens: 500)
        XCTAssertFalse(d2.allowed, "a reservation that does not fit is refused")
        let project = randomID(length: 8)
        rl.settle(settlement("a-\(key)", key: key, project: project, tier: t, reserved: 800, usage: Usage(promptTokens: 40, completionTokens: 60)))
        try await rl.flush()
        let usage = try await client.send(["HGETALL", RedisKeys.usage(project, "e")]).hash
        XCTAssertEqual(usage["input_tokens"], "40")
        XCTAssertEqual(usage["output_tokens"], "60")
        XCTAssertEqual(usage["cost_micro_usd"], "260", "40 × 2 + 60 × 3 micro-dollars")
        let d3 = try await rl.admit(keyHash: key, project: "p", limits: l, reserveTokens: 500)
        XCTAssertTrue(d3.allowed, "settlement refunded the 700 unused tokens")
        XCTAssertLessThanOrEqual(d3.remainingTokens ?? 0, 401)
    }

    func testProjectBucketIsSharedByKeys() async throws {
        let client = try RedisClient(RedisAddress(port: Self.port), connections: 1)
        defer { client.close() }
        let rl = RateLimiter(redis: client)
        let project = randomID(length: 8)
        var ok = 0
        for i in 0..<10 {
            let d = try await rl.admit(keyHash: "k\(i % 3)-\(project)", project: project, limits: limits(projectRPM: 4), reserveTokens: 1)
            if d.allowed { ok += 1 }
        }
        XCTAssertEqual(ok, 4)
    }

    func testConcurrencySlots() async throws {
        let client = try RedisClient(RedisAddress(port: Self.port), connections: 1)
        defer { client.close() }
        let rl = RateLimiter(redis: client)
        let key = randomID(length: 8)
        let l = limits(concurrent: 2)
        let a = try await rl.admit(keyHash: key, project: "p", limits: l, reserveTokens: 1)
        let b = try await rl.admit(keyHash: key, project: "p", limits: l, reserveTokens: 1)
        let c = try await rl.admit(keyHash: key, project: "p", limits: l, reserveTokens: 1)
        XCTAssertTrue(a.allowed)
        XCTAssertTrue(b.allowed)
        XCTAssertFalse(c.allowed)
        rl.release(keyHash: key)
        try await rl.flush()
        let d = try await rl.admit(keyHash: key, project: "p", limits: l, reserveTokens: 1)
        XCTAssertTrue(d.allowed, "a released request frees its slot")
    }

    func testNoLimitsNoRedis() async throws {
        let client = try RedisClient(RedisAddress(port: Self.port), connections: 1)
        defer { client.close() }
        let d = try await RateLimiter(redis: client).admit(keyHash: "k", project: "p", limits: limits(), reserveTokens: 10)
        XCTAssertTrue(d.allowed)
        XCTAssertNil(d.limitRequests)
    }

    /// The same settlement delivered twice (a retry, a duplicate report) counts once: usage,
    /// cost and the token-bucket correction alike.
    func testSettlementIsIdempotentPerRequest() async throws {
        let client = try RedisClient(RedisAddress(port: Self.port), connections: 1)
        defer { client.close() }
        let rl = RateLimiter(redis: client)
        let key = randomID(length: 8), project = randomID(length: 8)
        let t = limitedTier(tpm: 1000)
        // Reserved 100, used 300: each settlement would take 200 more from the bucket.
        _ = try await rl.admit(keyHash: key, project: project, limits: RateLimiter.Limits(tier: t), reserveTokens: 100)
        let s = settlement("dup-\(key)", key: key, project: project, tier: t, reserved: 100, usage: Usage(promptTokens: 100, completionTokens: 200))
        rl.settle(s)
        rl.settle(s)
        try await rl.flush()
        rl.settle(s)
        try await rl.flush()
        let usage = try await client.send(["HGETALL", RedisKeys.usage(project, "e")]).hash
        XCTAssertEqual(usage["requests"], "1")
        let markers = RedisKeys.settled(window: RedisKeys.settledWindow(acceptedAtMs: s.acceptedAtMs))
        let marked = try await client.send(["SISMEMBER", markers, "dup-\(key)"]).int
        XCTAssertEqual(marked, 1, "the request is recorded in its window's marker set")
        let ttl = try await client.send(["TTL", markers]).int ?? -1
        XCTAssertTrue((1...1200).contains(ttl), "the marker set lives 20 minutes after its last write, not forever (\(ttl) s)")
        XCTAssertEqual(usage["input_tokens"], "100")
        XCTAssertEqual(usage["output_tokens"], "200")
        let bucket = try await client.send(["HGET", RedisKeys.rateBucket("key", key, "tok"), "t"]).string.flatMap(Double.init) ?? -1
        // 1000 − 100 reserved − 200 corrected = 700 (plus a few tokens refilled meanwhile); twice would be 500.
        XCTAssertGreaterThanOrEqual(bucket, 699)
        XCTAssertLessThan(bucket, 750)
    }

    /// One flush settles many requests: their usage is summed per endpoint and their bucket
    /// corrections per bucket, exactly as if each had been settled alone.
    func testOneFlushSumsManySettlements() async throws {
        let client = try RedisClient(RedisAddress(port: Self.port), connections: 1)
        defer { client.close() }
        let rl = RateLimiter(redis: client)
        let key = randomID(length: 8), project = randomID(length: 8)
        let t = limitedTier(tpm: 10_000)
        for _ in 0..<10 {
            _ = try await rl.admit(keyHash: key, project: project, limits: RateLimiter.Limits(tier: t), reserveTokens: 100)
        }
        for i in 0..<10 {
            rl.settle(settlement("m\(i)-\(key)", key: key, project: project, endpoint: i % 2 == 0 ? "even" : "odd", tier: t, reserved: 100,
                                 usage: Usage(promptTokens: 10, completionTokens: i)))
        }
        rl.settle(settlement("m0-\(key)", key: key, project: project, endpoint: "even", tier: t, reserved: 100,
                             usage: Usage(promptTokens: 10, completionTokens: 0)))   // a duplicate in the same flush
        try await rl.flush()
        let even = try await client.send(["HGETALL", RedisKeys.usage(project, "even")]).hash
        let odd = try await client.send(["HGETALL", RedisKeys.usage(project, "odd")]).hash
        XCTAssertEqual(even["requests"], "5")
        XCTAssertEqual(even["output_tokens"], "20", "0 + 2 + 4 + 6 + 8")
        XCTAssertEqual(odd["output_tokens"], "25", "1 + 3 + 5 + 7 + 9")
        XCTAssertEqual(odd["input_tokens"], "50")
        XCTAssertEqual(even["cost_micro_usd"], String(50 * 2 + 20 * 3))
        let endpoints = try await client.send(["SMEMBERS", RedisKeys.usageEndpoints(project)]).array.compactMap(\.string).sorted()
        XCTAssertEqual(endpoints, ["even", "odd"])
        // 10 × 100 reserved, 10 × 10 + 45 used: the bucket got back 855 (plus a little refill).
        let bucket = try await client.send(["HGET", RedisKeys.rateBucket("key", key, "tok"), "t"]).string.flatMap(Double.init) ?? -1
        XCTAssertEqual(bucket, 10_000 - 145, accuracy: 20)
    }

    /// One flush with requests of two keys (sharing the project's bucket) accepted in two
    /// marker windows: each key's bucket is corrected by its own requests, the project's by all,
    /// each window's set records its own requests, and a later duplicate in either is skipped.
    func testOneFlushSpansKeysAndMarkerWindows() async throws {
        let client = try RedisClient(RedisAddress(port: Self.port), connections: 1)
        defer { client.close() }
        let rl = RateLimiter(redis: client)
        let keyA = randomID(length: 8), keyB = randomID(length: 8), project = randomID(length: 8)
        let t = limitedTier(tpm: 10_000, projectTPM: 100_000)
        for key in [keyA, keyB] {
            _ = try await rl.admit(keyHash: key, project: project, limits: RateLimiter.Limits(tier: t), reserveTokens: 100)
        }
        let early: Int64 = 1_800_000_000_000, late = early + 300_000
        var all: [RateLimiter.Settlement] = []
        for i in 0..<3 {
            all.append(settlement("a\(i)-\(project)", key: keyA, project: project, tier: t, reserved: 0, usage: Usage(promptTokens: 10, completionTokens: 0),
                                  acceptedAtMs: i == 0 ? early : late))
        }
        for i in 0..<2 {
            all.append(settlement("b\(i)-\(project)", key: keyB, project: project, endpoint: "other", tier: t, reserved: 0,
                                  usage: Usage(promptTokens: 20, completionTokens: 0), acceptedAtMs: early))
        }
        let call = RateLimiter.settlementCall(all, nowMs: late)
        XCTAssertEqual(call.args[1], "2", "two groups: key A on e, key B on other")
        XCTAssertEqual(call.args[2], "2", "two marker windows")
        for s in all { rl.settle(s) }
        try await rl.flush()
        for s in all { rl.settle(s) }   // every one again: all duplicates
        try await rl.flush()
        let e = try await client.send(["HGETALL", RedisKeys.usage(project, "e")]).hash
        let other = try await client.send(["HGETALL", RedisKeys.usage(project, "other")]).hash
        XCTAssertEqual(e["requests"], "3")
        XCTAssertEqual(e["input_tokens"], "30")
        XCTAssertEqual(other["requests"], "2")
        XCTAssertEqual(other["input_tokens"], "40")
        // The same once more under today's date, per endpoint, with a TTL (the day the batch was written).
        let today = try await client.send(["HGETALL", RedisKeys.usageDay(project, day: RedisKeys.day(ms: nowMs()))]).hash
        XCTAssertEqual(today["e:requests"], "3"); XCTAssertEqual(today["e:input_tokens"], "30")
        XCTAssertEqual(today["other:requests"], "2"); XCTAssertEqual(today["other:input_tokens"], "40")
        let ttl = try await client.send(["TTL", RedisKeys.usageDay(project, day: RedisKeys.day(ms: nowMs()))]).int ?? 0
        XCTAssertGreaterThan(ttl, 300 * 86_400)
        func tokens(_ scope: String, _ id: String) async throws -> Double {
            try await client.send(["HGET", RedisKeys.rateBucket(scope, id, "tok"), "t"]).string.flatMap(Double.init) ?? -1
        }
        let a = try await tokens("key", keyA), b = try await tokens("key", keyB), p = try await tokens("proj", project)
        XCTAssertEqual(a, 10_000 - 100 - 30, accuracy: 20, "key A: its reservation and its own 30 tokens")
        XCTAssertEqual(b, 10_000 - 100 - 40, accuracy: 20, "key B: its reservation and its own 40 tokens")
        XCTAssertEqual(p, 100_000 - 200 - 70, accuracy: 50, "the project's bucket: both keys' reservations and all 70 tokens")
        // (Other tests settle in these windows too: only this test's ids are compared.)
        func members(_ at: Int64) async throws -> [String] {
            try await client.send(["SMEMBERS", RedisKeys.settled(window: RedisKeys.settledWindow(acceptedAtMs: at))]).array
                .compactMap(\.string).filter { $0.hasSuffix(project) }.sorted()
        }
        let earlySet = try await members(early), lateSet = try await members(late)
        XCTAssertEqual(earlySet, ["a0-\(project)", "b0-\(project)", "b1-\(project)"])
        XCTAssertEqual(lateSet, ["a1-\(project)", "a2-\(project)"])
    }

    /// A batch line has no key: only the project's buckets apply, and its usage is added to the
    /// batch record as well as to the endpoint.
    func testBatchLinesBillTheProjectAndTheBatch() async throws {
        let client = try RedisClient(RedisAddress(port: Self.port), connections: 1)
        defer { client.close() }
        let rl = RateLimiter(redis: client)
        let project = randomID(length: 8), batch = "batch_" + randomID(length: 8)
        let t = limitedTier(tpm: 10, projectTPM: 1000)
        let d = try await rl.admit(keyHash: "", project: project, limits: RateLimiter.Limits(tier: t), reserveTokens: 600)
        XCTAssertTrue(d.allowed, "no key bucket for a line: the key limit (10) does not apply, the project's (1000) does")
        XCTAssertNil(d.limitTokens)
        let refused = try await rl.admit(keyHash: "", project: project, limits: RateLimiter.Limits(tier: t), reserveTokens: 600)
        XCTAssertFalse(refused.allowed, "the project's bucket holds 400 after the first line")
        rl.settle(settlement("l1-\(batch)", key: "", project: project, endpoint: "ep", tier: t, reserved: 600,
                             usage: Usage(promptTokens: 7, completionTokens: 5), batch: batch))
        try await rl.flush()
        let b = try await client.send(["HGETALL", RedisKeys.batch(batch)]).hash
        XCTAssertEqual(b["usage_requests"], "1")
        XCTAssertEqual(b["usage_input_tokens"], "7")
        XCTAssertEqual(b["usage_output_tokens"], "5")
        XCTAssertEqual(b["usage_cost_micro_usd"], "29", "7 × 2 + 5 × 3")
        let u = try await client.send(["HGETALL", RedisKeys.usage(project, "ep")]).hash
        XCTAssertEqual(u["input_tokens"], "7")
    }

    /// Settlements made while Redis is down stay queued and are applied, once, when it is back.
    func testSettlementsSurviveARedisOutage() async throws {
        let server = RedisServerFixture(portRange: 55001...60000)
        let client = try RedisClient(server.address, connections: 1)
        defer { client.close() }
        let rl = RateLimiter(redis: client)
        let project = randomID(length: 8)
        server.shutdown()
        for i in 0..<3 {
            rl.settle(settlement("out-\(i)", key: "k", project: project, tier: tier, reserved: 0, usage: Usage(promptTokens: 1, completionTokens: 2)))
        }
        do {
            try await rl.flush()
            XCTFail("Redis is down: the flush must report failure")
        } catch {}
        XCTAssertEqual(rl.waiting, 3, "nothing is dropped while Redis is down")
        let back = RedisServerFixture(port: server.port)
        defer { back.shutdown() }
        var applied = false
        for _ in 0..<100 {
            try? await Task.sleep(nanoseconds: 50_000_000)
            if (try? await client.send(["HGET", RedisKeys.usage(project, "e"), "requests"]).string) == "3" { applied = true; break }
        }
        XCTAssertTrue(applied, "the queued settlements were retried and applied")
        XCTAssertEqual(rl.waiting, 0)
        let again = try await client.send(["HGET", RedisKeys.usage(project, "e"), "output_tokens"]).string
        XCTAssertEqual(again, "6")
    }

    // MARK: - Leases: two gateways (two limiters, two owners) on one Redis

    /// Under load most admissions are decided from leases, and the two gateways together admit
    /// exactly what one shared bucket allows: never more, and nothing leased is lost — after the
    /// leases are given back, admitted + what the bucket holds = its capacity + its refill.
    func testLeasesAreExactAcrossGateways() async throws {
        let client = try RedisClient(RedisAddress(port: Self.port), connections: 2)
        defer { client.close() }
        let a = RateLimiter(redis: client, owner: "gw-a"), b = RateLimiter(redis: client, owner: "gw-b")
        let key = randomID(length: 8)
        let l = limits(rpm: 600)
        let start = nowMs()
        let admitted = try await withThrowingTaskGroup(of: Int.self) { group in
            for t in 0..<32 {
                group.addTask {
                    var ok = 0
                    for i in 0..<60 {
                        let rl = (t + i) % 2 == 0 ? a : b
                        if try await rl.admit(keyHash: key, project: "p", limits: l, reserveTokens: 1).allowed { ok += 1 }
                    }
                    return ok
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = nowMs() - start
        try await a.flush()
        try await b.flush()
        XCTAssertGreaterThan(a.localAdmissions + b.localAdmissions, 0, "leases admitted some requests without Redis")
        let refill = Double(elapsed) * 600 / 60_000
        XCTAssertLessThanOrEqual(Double(admitted), 600 + refill + 1, "never more than the shared bucket allows")
        let bucket = try await client.send(["HMGET", RedisKeys.rateBucket("key", key, "req"), "t", "ts"]).array.compactMap { $0.string.flatMap(Double.init) }
        XCTAssertEqual(bucket.count, 2)
        let heldSinceStart = 600 + (bucket[1] - Double(start)) * 600 / 60_000
        XCTAssertEqual(Double(admitted) + bucket[0], heldSinceStart, accuracy: 2,
                       "every token is either admitted or back in the bucket (\(admitted) admitted, \(bucket[0]) left)")
    }

    /// Small limits lease nothing (only the upper half of a bucket is leased): alternating
    /// between two gateways, a 5-per-minute key admits exactly 5.
    func testSmallLimitsStayExactAcrossGateways() async throws {
        let client = try RedisClient(RedisAddress(port: Self.port), connections: 1)
        defer { client.close() }
        let a = RateLimiter(redis: client, owner: "gw-a"), b = RateLimiter(redis: client, owner: "gw-b")
        let key = randomID(length: 8)
        var ok = 0
        for i in 0..<12 {
            if try await (i % 2 == 0 ? a : b).admit(keyHash: key, project: "p", limits: limits(rpm: 5), reserveTokens: 1).allowed { ok += 1 }
        }
        XCTAssertEqual(ok, 5)
    }

    /// A key's concurrency cap holds across two gateways whatever they keep idle: never more
    /// running than the cap; once all are released and the leases given back, either gateway can
    /// run the full cap again.
    func testConcurrencyCapAcrossGateways() async throws {
        let client = try RedisClient(RedisAddress(port: Self.port), connections: 1)
        defer { client.close() }
        let gws = [RateLimiter(redis: client, owner: "gw-a"), RateLimiter(redis: client, owner: "gw-b")]
        let key = randomID(length: 8)
        let l = limits(concurrent: 6)
        var running: [(Int, String)] = []
        var rng = SystemRandomNumberGenerator()
        var refusedWithRoom = 0
        for i in 0..<300 {
            if running.isEmpty || Int.random(in: 0..<3, using: &rng) > 0 {
                let g = Int.random(in: 0..<2, using: &rng)
                var d = try await gws[g].admit(keyHash: key, project: "p", limits: l, reserveTokens: 1)
                if !d.allowed, running.count < 6 {
                    // The other gateway keeps released slots idle for a moment (20 ms); once they
                    // are back, the same request gets in.
                    refusedWithRoom += 1
                    if refusedWithRoom <= 5 {
                        try await Task.sleep(nanoseconds: 80_000_000)
                        d = try await gws[g].admit(keyHash: key, project: "p", limits: l, reserveTokens: 1)
                        XCTAssertTrue(d.allowed, "refused with \(running.count) of 6 running, and still refused after the idle slots went back")
                    }
                }
                if d.allowed { running.append((g, "r\(i)")) }
                XCTAssertLessThanOrEqual(running.count, 6, "never more running than the cap")
            } else {
                let (g, _) = running.remove(at: Int.random(in: 0..<running.count, using: &rng))
                gws[g].release(keyHash: key)
            }
        }
        for (g, _) in running { gws[g].release(keyHash: key) }
        for g in gws { try await g.flush() }
        let held = try await client.send(["HGETALL", RedisKeys.slots(key)]).hash.filter { !$0.key.hasSuffix(":exp") }
        XCTAssertEqual(held.values.compactMap { Int($0) }.reduce(0, +), 0, "every slot was given back: \(held)")
        for i in 0..<6 {
            let d = try await gws[0].admit(keyHash: key, project: "p", limits: l, reserveTokens: 1)
            XCTAssertTrue(d.allowed, "slot \(i) of 6 is free again")
        }
        let d = try await gws[1].admit(keyHash: key, project: "p", limits: l, reserveTokens: 1)
        XCTAssertFalse(d.allowed, "the seventh is refused on the other gateway")
        print("concurrency across gateways: \(refusedWithRoom) refusals while under the cap (slots kept idle, released a moment later)")
    }

    /// With leases off every admission is decided in Redis.
    func testLeasesOffDecidesEveryAdmissionInRedis() async throws {
        let client = try RedisClient(RedisAddress(port: Self.port), connections: 1)
        defer { client.close() }
        let rl = RateLimiter(redis: client, leases: false)
        let key = randomID(length: 8)
        for _ in 0..<50 {
            let d = try await rl.admit(keyHash: key, project: "p", limits: limits(rpm: 10_000, concurrent: 100), reserveTokens: 1)
            XCTAssertTrue(d.allowed)
        }
        XCTAssertEqual(rl.localAdmissions, 0)
        let held = try await client.send(["HGET", RedisKeys.slots(key), rl.leases.owner]).int
        XCTAssertEqual(held, 50, "one slot per running request, none spare")
    }

    func testDaysAreUTCCalendarDates() {
        XCTAssertEqual(RedisKeys.day(ms: 0), "19700101")
        XCTAssertEqual(RedisKeys.day(ms: 86_400_000 - 1), "19700101")
        XCTAssertEqual(RedisKeys.day(ms: 951_782_400_000), "20000229")      // a leap day
        XCTAssertEqual(RedisKeys.day(ms: 1_798_761_599_999), "20261231")
        XCTAssertEqual(RedisKeys.day(ms: 1_798_761_600_000), "20270101")
    }
}
