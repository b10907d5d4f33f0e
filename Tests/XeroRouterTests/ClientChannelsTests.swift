import XCTest
@testable import XeroRouter

final class ClientChannelsTests: XCTestCase {
    static func frame(_ kind: UInt8, _ topic: String) -> [UInt8] { [kind] + Array(topic.utf8) }
    static func adoption(_ id: String, client: String, at ms: Int64, worker: String = "w1") -> ClientChannels.Adoption {
        .init(identity: Array(worker.utf8), worker: worker, requestId: id, client: client, ticket: [1, 2, 3], started: true, sinceMs: ms)
    }

    func testAnAdoptionWaitsForItsClientAndGoesOnWhenItSubscribes() {
        var c = ClientChannels()
        XCTAssertFalse(c.isSubscribed("gw-a"))
        XCTAssertTrue(c.wait(Self.adoption("r2", client: "gw-a", at: 20)))
        XCTAssertTrue(c.wait(Self.adoption("r1", client: "gw-a", at: 10)))
        XCTAssertTrue(c.wait(Self.adoption("r3", client: "gw-b", at: 5)))
        // Another client's subscription releases only its own.
        XCTAssertEqual(c.subscription(Self.frame(1, "gw-b/")), .subscribed(client: "gw-b", returned: false, ready: [Self.adoption("r3", client: "gw-b", at: 5)]))
        XCTAssertEqual(c.subscription(Self.frame(1, "gw-a/")),
                       .subscribed(client: "gw-a", returned: false, ready: [Self.adoption("r1", client: "gw-a", at: 10), Self.adoption("r2", client: "gw-a", at: 20)]))
        XCTAssertTrue(c.isSubscribed("gw-a"))
        XCTAssertTrue(c.waiting.isEmpty)
    }

    func testASecondSubscriptionIsAReturnWhetherOrNotTheEndWasSeen() {
        var c = ClientChannels()
        XCTAssertEqual(c.subscription(Self.frame(1, "gw-a/")), .subscribed(client: "gw-a", returned: false, ready: []))
        // A new connection while the old one still looks alive (a partition shows no end).
        XCTAssertEqual(c.subscription(Self.frame(1, "gw-a/")), .subscribed(client: "gw-a", returned: true, ready: []))
        XCTAssertEqual(c.subscription(Self.frame(0, "gw-a/")), .unsubscribed(client: "gw-a"))
        XCTAssertFalse(c.isSubscribed("gw-a"))
        XCTAssertNil(c.subscription(Self.frame(0, "gw-a/")), "an end already seen is no change")
        XCTAssertEqual(c.subscription(Self.frame(1, "gw-a/")), .subscribed(client: "gw-a", returned: true, ready: []))
    }

    func testOnlyAClientsOwnPrefixCounts() {
        var c = ClientChannels()
        for bad in [[1], [1, 0x2f], Self.frame(1, "gw-a"), Self.frame(1, "gw-a/req-1"), Self.frame(1, "a/b/"), Self.frame(2, "gw-a/"), []] as [[UInt8]] {
            XCTAssertNil(c.subscription(bad), "\(bad)")
        }
        XCTAssertTrue(c.subscribed.isEmpty)
    }

    func testAdoptionsExpireAndTheWaitingAreBounded() {
        var c = ClientChannels()
        c.waitMs = 100
        XCTAssertTrue(c.wait(Self.adoption("old", client: "gw-a", at: 0)))
        XCTAssertTrue(c.wait(Self.adoption("new", client: "gw-a", at: 50)))
        XCTAssertEqual(c.expired(now: 100), [], "not past the wait yet")
        XCTAssertEqual(c.expired(now: 101).map(\.requestId), ["old"])
        XCTAssertEqual(c.waiting.keys.map(\.requestId), ["new"])
        // The same request again replaces its first ask (a worker that asked twice).
        XCTAssertTrue(c.wait(Self.adoption("new", client: "gw-a", at: 90)))
        XCTAssertEqual(c.expired(now: 151), [])
        XCTAssertEqual(c.expired(now: 191).map(\.requestId), ["new"])
        XCTAssertTrue(c.waiting.isEmpty)
    }

    func testTwoWorkersRunningOneRequestWaitEachForTheirOwnAnswer() {
        var c = ClientChannels()
        XCTAssertTrue(c.wait(Self.adoption("r", client: "gw-a", at: 1, worker: "w1")))
        XCTAssertTrue(c.wait(Self.adoption("r", client: "gw-a", at: 2, worker: "w2")))
        guard case let .subscribed(_, _, ready)? = c.subscription(Self.frame(1, "gw-a/")) else { return XCTFail("no change") }
        XCTAssertEqual(ready.map(\.worker), ["w1", "w2"], "neither ask replaced the other")
    }

    func testTheWaitingAreBoundedInAllAndPerWorker() {
        var c = ClientChannels()
        for i in 0..<ClientChannels.maxWaitingPerWorker { XCTAssertTrue(c.wait(Self.adoption("a\(i)", client: "gw-z", at: 0, worker: "agent"))) }
        XCTAssertFalse(c.wait(Self.adoption("a-more", client: "gw-z", at: 0, worker: "agent")), "one worker cannot take every place")
        XCTAssertTrue(c.wait(Self.adoption("a0", client: "gw-z", at: 1, worker: "agent")), "a known ask still replaces itself")
        var n = c.waiting.count, w = 0
        while n < ClientChannels.maxWaiting {
            for i in 0..<min(ClientChannels.maxWaitingPerWorker, ClientChannels.maxWaiting - n) {
                XCTAssertTrue(c.wait(Self.adoption("b\(w)-\(i)", client: "gw-z", at: 0, worker: "w\(w)")))
                n += 1
            }
            w += 1
        }
        XCTAssertFalse(c.wait(Self.adoption("one-more", client: "gw-z", at: 0, worker: "fresh")), "past the bound an adoption is refused")
        // Places come back as adoptions go on.
        _ = c.subscription(Self.frame(1, "gw-z/"))
        XCTAssertTrue(c.waiting.isEmpty)
        XCTAssertTrue(c.wait(Self.adoption("a-more", client: "gw-y", at: 0, worker: "agent")))
    }
}
