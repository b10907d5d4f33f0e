import XCTest
@testable import XeroWorker

/// A worker's credits spread over several routers (docs/routing.md, "Credits across routers").
final class CreditLedgerTests: XCTestCase {
    /// Invariant 1, checked after every step: what runs, what routers hold and what is in hand add
    /// up to the slots, and none is negative.
    func assertBalanced(_ l: CreditLedger, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(l.running + l.links.reduce(0) { $0 + $1.granted } + l.inHand, l.slots, file: file, line: line)
        XCTAssertGreaterThanOrEqual(l.inHand, 0, file: file, line: line)
        XCTAssertTrue(l.links.allSatisfy { $0.granted >= 0 }, file: file, line: line)
        XCTAssertLessThanOrEqual(l.running, l.slots, file: file, line: line)
    }

    func testOneRouterHoldsEveryCreditAsBefore() {
        var l = CreditLedger(slots: 4, links: 1)
        XCTAssertEqual(l.linkUp(0).free, 4)
        XCTAssertEqual(l.jobArrived(from: 0), .run)
        XCTAssertEqual(l.demand(0, 3), [], "nothing in hand, nobody else to reclaim from")
        let (back, actions) = l.jobEnded(relay: 0)
        XCTAssertTrue(back, "the credit returns with the report, as with a single router")
        XCTAssertEqual(actions, [])
        XCTAssertEqual(l.links[0].granted, 4)
        assertBalanced(l)
    }

    func testASecondRouterGetsAnEvenShare() {
        var l = CreditLedger(slots: 4, links: 2)
        XCTAssertEqual(l.linkUp(0).free, 4)
        let (free, actions) = l.linkUp(1)
        XCTAssertEqual(free, 0, "nothing in hand when it comes up")
        XCTAssertEqual(actions, [.reclaim(link: 0, n: 2)], "the first router's surplus over an even share is asked back")
        XCTAssertEqual(l.returned(0, 2), [.credit(link: 1, n: 2)], "and goes to the newcomer")
        XCTAssertEqual(l.links.map(\.granted), [2, 2])
        assertBalanced(l)
    }

    func testAReclaimAnsweredWithLessThanAskedStaysBalanced() {
        var l = CreditLedger(slots: 4, links: 2)
        _ = l.linkUp(0)
        _ = l.linkUp(1)
        // Router 0 spent one credit before the reclaim reached it: the job arrives first, then the answer.
        XCTAssertEqual(l.jobArrived(from: 0), .run)
        XCTAssertEqual(l.returned(0, 1), [.credit(link: 1, n: 1)])
        XCTAssertEqual(l.links.map(\.granted), [2, 1])
        assertBalanced(l)
    }

    func testDemandPullsCreditsFromARouterWithoutWork() {
        var l = CreditLedger(slots: 2, links: 2)
        _ = l.linkUp(0)
        _ = l.linkUp(1)
        _ = l.returned(0, 1)
        XCTAssertEqual(l.links.map(\.granted), [1, 1])
        XCTAssertEqual(l.jobArrived(from: 1), .run)
        // Router 1 has two more jobs for us, router 0 none: its idle credit is asked back.
        XCTAssertEqual(l.demand(1, 2), [.reclaim(link: 0, n: 1)])
        XCTAssertEqual(l.demand(1, 2), [], "one reclaim at a time")
        XCTAssertEqual(l.returned(0, 1), [.credit(link: 1, n: 1)])
        XCTAssertEqual(l.links.map(\.granted), [0, 1])
        assertBalanced(l)
    }

    func testAFreedSlotAlternatesBetweenRoutersThatBothHaveWork() {
        var l = CreditLedger(slots: 1, links: 2)
        _ = l.linkUp(0)
        _ = l.linkUp(1)
        XCTAssertEqual(l.jobArrived(from: 0), .run)
        _ = l.demand(0, 1)
        _ = l.demand(1, 1)
        var went: [Int] = []
        var relay = 0
        for _ in 0..<6 {
            let (back, actions) = l.jobEnded(relay: relay)
            let to = back ? relay : actions.compactMap { if case let .credit(link, _) = $0 { return link } else { return nil } }.first!
            went.append(to)
            XCTAssertEqual(l.jobArrived(from: to), .run)
            relay = to
            assertBalanced(l)
        }
        XCTAssertEqual(Set(went), [0, 1], "both routers with work get the slot in turn: \(went)")
        XCTAssertLessThanOrEqual(abs(went.filter { $0 == 0 }.count - went.filter { $0 == 1 }.count), 2)
    }

    func testARouterThatGoesDownLosesItsCreditsAndAJobFromItIsHandedBack() {
        var l = CreditLedger(slots: 2, links: 2)
        _ = l.linkUp(0)
        _ = l.linkUp(1)
        _ = l.returned(0, 1)
        l.linkDown(0)
        XCTAssertEqual(l.rebalance(), [.credit(link: 1, n: 1)], "its voided credit goes to the router that is up")
        XCTAssertEqual(l.jobArrived(from: 0), .requeue, "a late job from the router written off: handed back, not run")
        XCTAssertEqual(l.running, 0)
        // It comes back: a fresh hello with what it may hold now.
        XCTAssertEqual(l.linkUp(0).free, 0)
        assertBalanced(l)
    }

    func testNeverMoreJobsThanSlotsWhateverTheRoutersDo() {
        var l = CreditLedger(slots: 3, links: 3)
        var rng = SystemRandomNumberGenerator()
        for i in 0..<3 { _ = l.linkUp(i) }
        var running: [Int] = []   // relay of each running job
        for _ in 0..<5_000 {
            let link = Int.random(in: 0..<3, using: &rng)
            switch Int.random(in: 0..<6, using: &rng) {
            case 0, 1: if l.jobArrived(from: link) == .run { running.append(link) }
            case 2: if !running.isEmpty { _ = l.jobEnded(relay: l.links[running.removeLast()].up ? link : nil) }
            case 3: _ = l.demand(link, Int.random(in: 0...3, using: &rng))
            case 4: _ = l.returned(link, Int.random(in: 0...l.links[link].granted, using: &rng))
            default: if Bool.random(using: &rng) { l.linkDown(link) } else { _ = l.linkUp(link) }
            }
            assertBalanced(l)
            XCTAssertEqual(l.running, running.count)
        }
    }

    func testADrainingWorkerGrantsNothing() {
        var l = CreditLedger(slots: 2, links: 2)
        _ = l.linkUp(0)
        XCTAssertEqual(l.jobArrived(from: 0), .run)
        l.draining = true
        XCTAssertEqual(l.jobEnded(relay: 0).returnsCredit, false)
        XCTAssertEqual(l.linkUp(1).free, 0)
        XCTAssertEqual(l.rebalance(), [])
    }
}
