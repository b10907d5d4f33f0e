import Foundation
import XCTest
import XeroCore
@testable import XeroStore

/// Runs against a real redis-server started on a free port for this test case.
final class RedisTests: XCTestCase {
    nonisolated(unsafe) static var redis: RedisServerFixture!
    static var port: Int { redis.port }

    override class func setUp() { redis = RedisServerFixture(portRange: 30000...45000) }
    override class func tearDown() { redis.stop() }

    var address: RedisAddress { RedisAddress(port: Self.port) }

    func testConnectionCommandsAndPipeline() throws {
        let c = try RedisConnection(address)
        XCTAssertEqual(try c.command(["SET", "k", "v"]), .status("OK"))
        XCTAssertEqual(try c.command(["GET", "k"]).string, "v")
        XCTAssertEqual(try c.command(["GET", "missing"]), .null)
        let binary: [UInt8] = [0, 255, 10, 13, 0]
        _ = try c.command(bytes: [Array("SET".utf8), Array("bin".utf8), binary])
        XCTAssertEqual(try c.command(["GET", "bin"]), .bulk(binary), "arguments are binary-safe")
        let replies = try c.pipeline((0..<100).map { _ in [Array("INCR".utf8), Array("counter".utf8)] })
        XCTAssertEqual(replies.last, .int(100))
        if case .error = try c.command(["NOSUCHCOMMAND"]) {} else { XCTFail("expected an error reply") }
        _ = try c.command(["HSET", "h", "a", "1", "b", "2"])
        XCTAssertEqual(try c.command(["HGETALL", "h"]).hash, ["a": "1", "b": "2"])
    }

    func testConnectFailureIsAnError() {
        XCTAssertThrowsError(try RedisConnection(RedisAddress(port: 1)))
        XCTAssertThrowsError(try RedisAddress(url: "http://x"))
        XCTAssertEqual(try RedisAddress(url: "redis://h:7/3"), RedisAddress(host: "h", port: 7, db: 3))
        // A password on a server that wants none is refused (Redis: "AUTH ... called without any password configured").
        XCTAssertThrowsError(try RedisConnection(RedisAddress(port: Self.port, password: "x")))
    }

    func testAsyncClientUnderConcurrency() async throws {
        let client = try RedisClient(address, connections: 2)
        defer { client.close() }
        try await withThrowingTaskGroup(of: Void.self) { g in
            for i in 0..<500 { g.addTask { _ = try await client.send(["SADD", "set", String(i)]) } }
            try await g.waitForAll()
        }
        let card = try await client.send(["SCARD", "set"]).int
        XCTAssertEqual(card, 500)
    }

    func testKeysAreStoredOnlyAsHashes() async throws {
        let client = try RedisClient(address, connections: 1)
        defer { client.close() }
        let store = TenancyStore(redis: client)
        let project = try await store.createProject(slug: "acme", name: "Acme")
        do { _ = try await store.createProject(slug: "acme", name: "dup"); XCTFail("duplicate slug accepted") } catch {}
        let (key, record) = try await store.createKey(project: project, name: "k", scopes: [KeyRecord.inference])
        XCTAssertTrue(key.hasPrefix("xero_acme_"))
        XCTAssertEqual(APIKey.projectSlug(of: key), "acme")
        XCTAssertGreaterThanOrEqual(key.count - "xero_acme_".count, 32)
        XCTAssertEqual(record.hash, APIKey.hash(key))
        let fetched = try await store.keyRecord(hash: APIKey.hash(key))
        XCTAssertEqual(fetched?.project, project.id)
        XCTAssertEqual(fetched?.scopes, [KeyRecord.inference])
        // Nothing in Redis contains the plaintext key.
        let keys = try await client.send(["KEYS", "*"]).array.compactMap(\.string)
        let dump = try await client.pipeline(strings: keys.map { ["DUMP", $0] })
        for value in dump { XCTAssertFalse(String(decoding: (value.string ?? "").utf8, as: UTF8.self).contains(key)) }
        for k in keys { XCTAssertFalse(k.contains(key)) }
        try await store.revokeKey(hash: record.hash)
        let revoked = try await store.keyRecord(hash: record.hash)
        XCTAssertEqual(revoked?.revoked, true)
    }

    func testAPIKeyFormatChecks() {
        XCTAssertNil(APIKey.projectSlug(of: "sk-abc"))
        XCTAssertNil(APIKey.projectSlug(of: "xero_demo_short"))
        XCTAssertNil(APIKey.projectSlug(of: "xero__abcdefghijklmnopqrstuvwxyz"))
        XCTAssertNil(APIKey.projectSlug(of: "xero_demo_abcdefghijklmnop!rstuvwxyz"))
        XCTAssertEqual(APIKey.projectSlug(of: "xero_my-proj_abcdefghijklmnopqrstuvwxyz012345"), "my-proj")
        XCTAssertNotEqual(APIKey.generate(projectSlug: "a"), APIKey.generate(projectSlug: "a"))
    }
}

