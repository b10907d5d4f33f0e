import XCTest
import XeroCore
@testable import XeroQueue

/// A client keeps each job until it starts and sends it again when no router took it.
final class PendingSubmitsTests: XCTestCase {
    func job(_ id: String) -> JobEnvelope {
        JobEnvelope(requestId: id, replyTo: "gw", tier: "standard", project: "p", endpoint: "e", model: "m", acceptedAtMs: 0,
                    queueDeadlineMs: 1, requestDeadlineMs: 1, payload: [])
    }

    func frame(_ id: String, attempt: Int = 1) -> [UInt8] {
        var j = job(id)
        j.attempt = attempt
        return GatewayMessage.submit(j).encode()
    }

    func testUnacknowledgedJobsGoAgainAfterTheTimeoutOnTheSameLink() {
        var p = PendingSubmits(links: 1)
        p.confirmed(0, now: 0)
        XCTAssertEqual(p.add(job("a"), frame: frame("a"), now: 0), 0)
        XCTAssertEqual(p.add(job("b"), frame: frame("b"), now: 0), 0)
        p.acknowledge("b", link: 0)
        XCTAssertEqual(p.tick(now: 999), [], "not yet")
        XCTAssertEqual(p.tick(now: 1000), [.submit(link: 0, frame: frame("a"))], "only the unacknowledged one")
        _ = p.heard(0, routerId: "r1", now: 1000)
        XCTAssertEqual(p.tick(now: 1500), [], "sent again at 1000: the clock restarts")
        _ = p.heard(0, routerId: "r1", now: 1900)
        XCTAssertEqual(p.tick(now: 2000), [.submit(link: 0, frame: frame("a"))])
        p.remove("a")
        _ = p.heard(0, routerId: "r1", now: 8900)
        XCTAssertEqual(p.tick(now: 9000), [])
        XCTAssertEqual(p.count, 1)
    }

    func testJobsGoRoundRobinOverUpLinksOnly() {
        var p = PendingSubmits(links: 3)
        p.confirmed(0, now: 0)
        p.confirmed(2, now: 0)
        let links = (0..<4).map { p.add(job("j\($0)"), frame: [], now: 10) }
        XCTAssertEqual(links, [0, 2, 0, 2], "link 1 never confirmed our subscription")
    }

    func testARestartedRouterIsAskedForItsJobsThenGetsTheUnadoptedOnesAgain() {
        var p = PendingSubmits(links: 1)
        XCTAssertEqual(p.heard(0, routerId: "r1", now: 0), [], "the first router heard of")
        _ = p.add(job("a"), frame: frame("a"), now: 0)
        _ = p.add(job("b"), frame: frame("b"), now: 0)
        _ = p.add(job("s"), frame: frame("s"), now: 0)
        p.acknowledge("a", link: 0)
        p.acknowledge("b", link: 0)
        p.event("s", link: 0)   // streaming through it
        XCTAssertEqual(p.heard(0, routerId: "r1", now: 10), [], "the same router: nothing lost")
        XCTAssertEqual(p.heard(0, routerId: "r2", now: 20), [.relocate(link: 0, requestIds: ["a", "b", "s"])],
                       "a new router id: whoever runs them adopts them there")
        p.adopted("b", link: 0)   // its worker had it
        XCTAssertEqual(p.tick(now: 100), [], "the handover waits for adoptions")
        _ = p.heard(0, routerId: "r2", now: 500)
        XCTAssertEqual(p.tick(now: 520), [.submit(link: 0, frame: frame("a", attempt: 5))],
                       "not adopted: it was only queued there, so it runs anew, with an attempt number no router uses")
        _ = p.heard(0, routerId: "r2", now: 3000)
        XCTAssertEqual(p.tick(now: 3020).compactMap { if case let .fail(id, _) = $0 { return id } else { return nil } }, ["s"],
                       "a stream nobody adopted within the grace ends")
    }

    func testALinkThatFallsSilentHandsItsJobsToAnotherRouter() {
        var p = PendingSubmits(links: 2)
        _ = p.heard(0, routerId: "r0", now: 0)
        _ = p.heard(1, routerId: "r1", now: 0)
        XCTAssertEqual(p.add(job("a"), frame: frame("a"), now: 0), 0)
        p.acknowledge("a", link: 0)
        XCTAssertEqual(p.tick(now: 100), [])
        _ = p.heard(1, routerId: "r1", now: 1000)
        XCTAssertEqual(p.tick(now: 1100), [.relocate(link: 1, requestIds: ["a"])], "link 0 silent for over a second")
        _ = p.heard(1, routerId: "r1", now: 1500)
        XCTAssertEqual(p.tick(now: 1600), [.submit(link: 1, frame: frame("a", attempt: 5))])
        XCTAssertEqual(p.add(job("b"), frame: [], now: 1600), 1, "new jobs avoid the silent router")
    }

    func testRouterNoticeRoundTripAndRefusals() throws {
        for n in [RouterNotice.accepted(requestId: "chatcmpl-1", routerId: "router-x"), .alive(routerId: "router-x"),
                  .adopted(requestId: "chatcmpl-1", routerId: "router-y")] {
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
