import Foundation
import XCTest
import XeroCore
@testable import XeroStore

/// Real redis-servers that want credentials: one with `requirepass`, one with only an ACL user.
final class RedisAuthTests: XCTestCase {
    nonisolated(unsafe) static var passwordServer: RedisServerFixture!
    nonisolated(unsafe) static var aclServer: RedisServerFixture!

    // "p@ss w/rd:%" percent-encodes to this: every awkward character a password may hold.
    static let password = "p@ss w/rd:%"
    static let encodedPassword = "p%40ss%20w%2Frd%3A%25"

    override class func setUp() {
        passwordServer = RedisServerFixture(portRange: 55001...58000, extraArguments: ["--requirepass", password])
        // Redis 7 ACL: alice may do anything; the default user is off, so nothing works without her.
        aclServer = RedisServerFixture(portRange: 58001...60500, extraArguments: [
            "--user", "alice", "on", ">secret", "~*", "&*", "+@all", "--user", "default", "off",
        ])
    }
    override class func tearDown() {
        passwordServer.stop()
        aclServer.stop()
    }

    func testRequirePassWithTheRightPassword() throws {
        let a = try RedisAddress(url: "redis://:\(Self.encodedPassword)@127.0.0.1:\(Self.passwordServer.port)/2")
        XCTAssertEqual(a.password, Self.password)
        let c = try RedisConnection(a)
        try c.ping()
        XCTAssertEqual(try c.command(["SET", "k", "v"]), .status("OK"))
        // SELECT ran after AUTH: the key is in db 2, not db 0.
        let db0 = try RedisConnection(RedisAddress(port: Self.passwordServer.port, password: Self.password))
        XCTAssertEqual(try db0.command(["GET", "k"]), .null)
        XCTAssertEqual(try c.command(["GET", "k"]).string, "v")
    }

    func testRequirePassRefusals() throws {
        let port = Self.passwordServer.port
        XCTAssertThrowsError(try RedisConnection(RedisAddress(port: port, password: "hunter2"))) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("cannot log in to redis://:***@127.0.0.1:\(port)/0"), text)
            XCTAssertTrue(text.contains("WRONGPASS"), text)
            XCTAssertFalse(text.contains("hunter2"), text)
        }
        // No credentials: connecting works, the first command is refused; ping() says why.
        XCTAssertThrowsError(try RedisConnection(RedisAddress(port: port)).ping()) { error in
            XCTAssertTrue("\(error)".contains("NOAUTH"), "\(error)")
            XCTAssertTrue("\(error)".contains("needs credentials"), "\(error)")
        }
        XCTAssertThrowsError(try RedisClient(RedisAddress(port: port), connections: 1), "the client fails at start, not later")
        XCTAssertThrowsError(try RedisClient(RedisAddress(port: port, password: "wrong"), connections: 1))
    }

    func testACLUser() async throws {
        let port = Self.aclServer.port
        let alice = try RedisAddress(url: "redis://alice:secret@127.0.0.1:\(port)")
        let c = try RedisConnection(alice)
        XCTAssertEqual(try c.command(["ACL", "WHOAMI"]).string, "alice")
        XCTAssertEqual(try c.command(["SET", "k", "v"]), .status("OK"))

        let client = try RedisClient(alice, connections: 2)
        defer { client.close() }
        let v = try await client.send(["GET", "k"]).string
        XCTAssertEqual(v, "v")

        for bad in ["redis://alice:wrong@127.0.0.1:\(port)", "redis://bob:secret@127.0.0.1:\(port)", "redis://:secret@127.0.0.1:\(port)"] {
            XCTAssertThrowsError(try RedisConnection(RedisAddress(url: bad)), bad) { error in
                XCTAssertTrue("\(error)".contains("WRONGPASS"), "\(error)")
                XCTAssertFalse("\(error)".contains("secret") || "\(error)".contains("wrong"), "\(error)")
            }
        }
        XCTAssertThrowsError(try RedisConnection(RedisAddress(port: port)).ping(), "the default user is off")
    }

    func testPubSubConnectionLogsIn() throws {
        // KeyEventSubscriber's connection goes through the same handshake: SUBSCRIBE works as alice.
        let port = Self.aclServer.port
        let alice = RedisAddress(port: port, username: "alice", password: "secret")
        let received = Locked<[String]>([])
        let sub = KeyEventSubscriber(address: alice, onMessage: { m in received.withLock { $0.append(m) } }, onReconnect: {})
        defer { sub.stop() }
        let pub = try RedisConnection(alice)
        let deadline = Date().addingTimeInterval(5)
        while received.withLock({ $0.isEmpty }) && Date() < deadline {
            _ = try pub.command(["PUBLISH", KeyEventSubscriber.channel, "hash1"])
            usleep(50_000)
        }
        XCTAssertEqual(received.withLock { $0.first }, "hash1")
    }
}
