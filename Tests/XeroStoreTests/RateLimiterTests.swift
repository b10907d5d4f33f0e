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

    func limits(rpm: Int? = nil, tpm: Int? = nil, projectRPM: Int? = nil, concurrent: Int? = nil) -> RateLimiter.Limits {
        var t = Tier(name: "t", priority: 1, weight: 1, queueTimeoutMs: 1000, requestTimeoutMs: 1000)
        t.requestsPerMinute = rpm
        t.tokensPerMinute = tpm
        t.projectRequestsPerMinute = projectRPM
        t.maxConcurrentRequests = concurrent
        return RateLimiter.Limits(tier: t)
    }

    func testBurstThenRefusalWithRetryAfter() async throws {
        let client = try RedisClient(RedisAddress(port: Self.port), connections: 1)
        defer { client.close() }
        let rl = RateLimiter(redis: client)
        let key = randomID(length: 8)
        var admitted = 0
        var last: RateLimiter.Decision?
        for i in 0..<70 {
            let d = try await rl.admit(keyHash: key, project: "p", limits: limits(rpm: 60), reserveTokens: 10, requestId: "r\(i)")
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
        let l = limits(tpm: 1000)
        let d1 = try await rl.admit(keyHash: key, project: "p", limits: l, reserveTokens: 800, requestId: "a")
        XCTAssertTrue(d1.allowed)
        XCTAssertEqual(d1.remainingTokens, 200)
        let d2 = try await rl.admit(keyHash: key, project: "p", limits: l, reserveTokens: 500, requestId: "b")
        XCTAssertFalse(d2.allowed, "a reservation that does not fit is refused")
        try await rl.finish(keyHash: key, project: "p", endpoint: "e", tier: tier, limits: l, reserved: 800,
                            usage: Usage(promptTokens: 40, completionTokens: 60), requestId: "a")
        let usage = try await client.send(["HGETALL", RedisKeys.usage("p", "e")]).hash
        XCTAssertEqual(usage["input_tokens"], "40")
        XCTAssertEqual(usage["output_tokens"], "60")
        XCTAssertEqual(usage["cost_micro_usd"], "260", "40 × 2 + 60 × 3 micro-dollars")
        let d3 = try await rl.admit(keyHash: key, project: "p", limits: l, reserveTokens: 500, requestId: "c")
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
            let d = try await rl.admit(keyHash: "k\(i % 3)-\(project)", project: project, limits: limits(projectRPM: 4), reserveTokens: 1, requestId: "\(i)")
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
        let a = try await rl.admit(keyHash: key, project: "p", limits: l, reserveTokens: 1, requestId: "a")
        let b = try await rl.admit(keyHash: key, project: "p", limits: l, reserveTokens: 1, requestId: "b")
        let c = try await rl.admit(keyHash: key, project: "p", limits: l, reserveTokens: 1, requestId: "c")
        XCTAssertTrue(a.allowed)
        XCTAssertTrue(b.allowed)
        XCTAssertFalse(c.allowed)
        try await rl.finish(keyHash: key, project: "p", endpoint: "e", tier: tier, limits: l, reserved: 1, usage: nil, requestId: "a")
        let d = try await rl.admit(keyHash: key, project: "p", limits: l, reserveTokens: 1, requestId: "d")
        XCTAssertTrue(d.allowed, "a finished request frees its slot")
    }

    func testNoLimitsNoRedis() async throws {
        let client = try RedisClient(RedisAddress(port: Self.port), connections: 1)
        defer { client.close() }
        let d = try await RateLimiter(redis: client).admit(keyHash: "k", project: "p", limits: limits(), reserveTokens: 10, requestId: "r")
        XCTAssertTrue(d.allowed)
        XCTAssertNil(d.limitRequests)
    }
}
