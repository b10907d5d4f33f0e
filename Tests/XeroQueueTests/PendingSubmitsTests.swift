import XCTest
import XeroCore
@testable import XeroQueue

/// A client keeps each job until it starts and sends it again when no router took it.
final class PendingSubmitsTests: XCTestCase {
    func testUnacknowledgedJobsGoAgainAfterTheTimeout() {
        var p = PendingSubmits()
        p.add("a", frame: [1], now: 0)
        p.add("b", frame: [2], now: 0)
        p.acknowledge("b")
        XCTAssertEqual(p.overdue(now: 999, ackTimeoutMs: 1000), [], "not yet")
        XCTAssertEqual(p.overdue(now: 1000, ackTimeoutMs: 1000), [[1]], "only the unacknowledged one")
        XCTAssertEqual(p.overdue(now: 1500, ackTimeoutMs: 1000), [], "sent again at 1000: the clock restarts")
        XCTAssertEqual(p.overdue(now: 2000, ackTimeoutMs: 1000), [[1]])
        p.remove("a")
        XCTAssertEqual(p.overdue(now: 9000, ackTimeoutMs: 1000), [])
        XCTAssertEqual(p.count, 1)
    }

    func testARestartedRouterGetsEveryWaitingJobAgain() {
        var p = PendingSubmits()
        XCTAssertFalse(p.routerIs("r1"), "the first router heard of")
        p.add("a", frame: [1], now: 0)
        p.add("b", frame: [2], now: 0)
        p.acknowledge("a")
        p.acknowledge("b")
        XCTAssertFalse(p.routerIs("r1"), "the same router: nothing lost")
        XCTAssertEqual(p.overdue(now: 10, ackTimeoutMs: 1000), [])
        XCTAssertTrue(p.routerIs("r2"), "a new router id: its predecessor's queue is gone")
        XCTAssertEqual(p.count, 2)
        XCTAssertEqual(p.overdue(now: 10, ackTimeoutMs: 1000).sorted { $0[0] < $1[0] }, [[1], [2]], "both go again at once")
    }

    func testRouterNoticeRoundTripAndRefusals() throws {
        for n in [RouterNotice.accepted(requestId: "chatcmpl-1", routerId: "router-x"), .alive(routerId: "router-x")] {
            XCTAssertEqual(try RouterNotice.decode(n.encode()), n)
            XCTAssertTrue(RouterNotice.looksLikeNotice(n.encode()))
            XCTAssertThrowsError(try RouterNotice.decode(n.encode() + [0]), "trailing bytes")
        }
        XCTAssertFalse(RouterNotice.looksLikeNotice(Array("subscribed".utf8)), "the subscription confirmation is not a notice")
        XCTAssertThrowsError(try RouterNotice.decode([0x4E, 99, 1]), "another wire version")
        XCTAssertThrowsError(try RouterNotice.decode([0x4E]), "truncated")
        var big = RouterNotice.accepted(requestId: String(repeating: "x", count: WireLimits.maxIDBytes + 1), routerId: "r").encode()
        XCTAssertThrowsError(try RouterNotice.decode(big), "an id past the bound")
        big = []
        XCTAssertThrowsError(try RouterNotice.decode(big))
    }
}
