import XCTest
@testable import XeroStore

/// The pure lease state of one gateway: when it admits locally, what it asks Redis for, and what
/// it gives back.
final class LeaseBookTests: XCTestCase {
    let req = LeaseBook.Charge(key: "rl:req", capacity: 1000, cost: 1)
    func tok(_ cost: Int) -> LeaseBook.Charge { LeaseBook.Charge(key: "rl:tok", capacity: 100_000, cost: cost) }

    func testNoDemandNoLeaseAndNothingLocal() {
        var b = LeaseBook(leaseMs: 100)
        XCTAssertNil(b.takeLocally([req], slotKey: nil, now: 0), "nothing is held at first")
        XCTAssertEqual(b.wants([req], slotKey: nil, now: 0).tokens, [0], "a first request has no demand to lease for")
        _ = b.granted([req], leases: [0], remaining: [999], resetMs: [60], now: 0)
        XCTAssertNil(b.takeLocally([req], slotKey: nil, now: 1))
    }

    func testDemandSizesTheAskAndOneAskAtATime() {
        var b = LeaseBook(leaseMs: 100)
        for i in 0..<10 { _ = b.granted([req], leases: [0], remaining: [900], resetMs: [0], now: Int64(i)) }
        XCTAssertEqual(b.wants([req], slotKey: nil, now: 20).tokens, [10], "ten admitted this window: ask for ten")
        XCTAssertEqual(b.wants([req], slotKey: nil, now: 21).tokens, [0], "another ask is in flight")
        let remaining = b.granted([req], leases: [10], remaining: [880], resetMs: [5], now: 22)
        XCTAssertEqual(remaining, [890], "the reported remaining counts this gateway's own lease")
        XCTAssertEqual(b.wants([req], slotKey: nil, now: 23).tokens, [1], "ask cleared; demand 11 less the 10 held")
        b.failed([req], slotKey: nil)
    }

    /// Two replies resume out of Redis's order (another lane, or the callers of one batch): the
    /// newer one granted a lease and set the remaining; the older one's snapshot of the bucket had
    /// that lease still in it. Adding the lease to it would report the bucket full after a
    /// request (CI: 300 of 300 left on the first request of a fresh key).
    func testAnOlderReplyDoesNotCountANewerLeaseTwice() {
        var b = LeaseBook(leaseMs: 100)
        for i in 0..<10 { _ = b.granted([req], leases: [0], remaining: [990 - i], resetMs: [0], versions: [i + 1], now: Int64(i)) }
        // Redis ran admission 11 (bucket 989 left), then a top-up taking 50 (939 left, version 12);
        // the top-up's caller resumed first.
        let topUp = LeaseBook.Charge(key: "rl:req", capacity: 1000, cost: 0)
        XCTAssertEqual(b.granted([topUp], leases: [50], remaining: [939], resetMs: [0], versions: [12], now: 11), [989])
        XCTAssertEqual(b.granted([req], leases: [0], remaining: [989], resetMs: [0], versions: [11], now: 11), [989],
                       "the older snapshot says nothing new: not 989 + 50")
        XCTAssertEqual(b.takeLocally([req], slotKey: nil, now: 12)?.leases.first?.remaining, 988)
        // Two top-ups, 5 then 7 off the bucket (934, then 927 left); the second's caller resumes first.
        XCTAssertEqual(b.granted([topUp], leases: [7], remaining: [927], resetMs: [0], versions: [14], now: 13), [983], "927 + 49 + 7")
        XCTAssertEqual(b.granted([topUp], leases: [5], remaining: [934], resetMs: [0], versions: [13], now: 13), [988],
                       "an older reply that granted: the newer snapshot had it off the bucket, not yet in the lease")
        XCTAssertEqual(b.tokens["rl:req"]?.left, 61)
        XCTAssertEqual(b.granted([req], leases: [0], remaining: [926], resetMs: [0], versions: [15], now: 14), [987],
                       "a newer snapshot sets it again: 926 in the bucket + the 61 held")
    }

    /// A lease is refilled before it runs out: once less than half its recent demand is left
    /// (or it nears expiry) a local admission asks for a top-up — once, while it is in flight —
    /// and the grant extends the lease, so steady load keeps admitting locally.
    func testALowLeaseAsksForATopUpOnce() {
        var b = LeaseBook(leaseMs: 100)
        for i in 0..<10 { _ = b.granted([req], leases: [0], remaining: [900], resetMs: [0], now: Int64(i)) }
        _ = b.wants([req], slotKey: nil, now: 10)
        _ = b.granted([req], leases: [10], remaining: [880], resetMs: [0], now: 10)
        // Demand this window: 11 (ten Redis admissions and the grant's). Ten leased.
        for n in 0..<3 {
            let a = b.takeLocally([req], slotKey: nil, now: 11)
            XCTAssertNotNil(a)
            XCTAssertNil(a?.topUp, "\(9 - n) of 10 left, demand \(12 + n): at least half of it")
        }
        let low = b.takeLocally([req], slotKey: nil, now: 12)
        XCTAssertEqual(low?.leases.first?.left, 6)
        XCTAssertEqual(low?.topUp, [9], "6 left of a recent demand of 15: ask for the difference")
        XCTAssertNil(b.takeLocally([req], slotKey: nil, now: 13)?.topUp, "a top-up is in flight: no second ask")
        _ = b.granted([LeaseBook.Charge(key: "rl:req", capacity: 1000, cost: 0)], leases: [9], remaining: [860], resetMs: [0], now: 14)
        XCTAssertEqual(b.tokens["rl:req"]?.left, 14, "5 left + 9 granted")
        XCTAssertEqual(b.tokens["rl:req"]?.expiresAtMs, 114, "the grant extends the lease")
        XCTAssertNil(b.takeLocally([req], slotKey: nil, now: 20)?.topUp, "refilled: nothing to ask")
        let late = b.takeLocally([req], slotKey: nil, now: 70)
        XCTAssertEqual(late?.topUp, [6], "within half a lease time of expiring: refilled before it lapses (demand 18, 12 held)")
    }

    func testAStaleAskIsForgottenAfterASecond() {
        var b = LeaseBook(leaseMs: 1_000)
        for i in 0..<5 { _ = b.granted([req], leases: [0], remaining: [900], resetMs: [0], now: Int64(i)) }
        XCTAssertEqual(b.wants([req], slotKey: nil, now: 10).tokens, [5])
        XCTAssertEqual(b.wants([req], slotKey: nil, now: 500).tokens, [0], "in flight")
        // Its answer never came (neither granted nor failed): after a second it is presumed lost.
        XCTAssertEqual(b.wants([req], slotKey: nil, now: 1_011).tokens, [5], "last window's demand, asked again")
    }

    func testLocalAdmissionIsAllOrNothing() {
        var b = LeaseBook(leaseMs: 100)
        _ = b.granted([req, tok(300)], leases: [5, 500], remaining: [900, 90_000], resetMs: [0, 0], now: 0)
        let got = b.takeLocally([req, tok(300)], slotKey: nil, now: 1)
        XCTAssertEqual(got?.leases.count, 2, "one lease per charge, in the charges' order")
        XCTAssertEqual(got?.leases.first?.left, 4)
        XCTAssertEqual(got?.leases.last?.left, 200)
        XCTAssertEqual(got?.leases.first?.remaining, 904, "900 in the bucket + 5 leased − 1 spent")
        XCTAssertNil(b.takeLocally([req, tok(300)], slotKey: nil, now: 2), "the token lease cannot pay 300 more")
        XCTAssertEqual(b.tokens["rl:req"]?.left, 4, "a refusal spends nothing")
        XCTAssertNil(b.takeLocally([LeaseBook.Charge(key: "rl:req", capacity: 2000, cost: 1)], slotKey: nil, now: 2),
                     "a lease of another capacity (the tier changed) is not used")
        XCTAssertNil(b.takeLocally([req], slotKey: nil, now: 100), "an expired lease is not used")
    }

    func testExpiredLeasesGoBack() {
        var b = LeaseBook(leaseMs: 100)
        _ = b.granted([req, tok(10)], leases: [5, 0], remaining: [900, 90_000], resetMs: [0, 0], now: 0)
        _ = b.takeLocally([req], slotKey: nil, now: 10)
        XCTAssertTrue(b.sweep(now: 50).tokens.isEmpty, "not expired yet")
        let r = b.sweep(now: 100)
        XCTAssertEqual(r.tokens, [LeaseBook.Charge(key: "rl:req", capacity: 1000, cost: 4)], "the four unused requests go back")
        XCTAssertTrue(b.isEmpty)
    }

    /// A lease that expired before the sweeper gave it back is merged into the next grant, never
    /// dropped; one of another capacity (the tier changed) is given back at the next sweep.
    func testExpiredOrReplacedLeasesAreNeverDropped() {
        var b = LeaseBook(leaseMs: 100)
        _ = b.granted([req], leases: [5], remaining: [900], resetMs: [0], now: 0)
        _ = b.granted([req], leases: [3], remaining: [890], resetMs: [0], now: 150)
        XCTAssertEqual(b.tokens["rl:req"]?.left, 8, "the expired 5 joined the new 3")
        let bigger = LeaseBook.Charge(key: "rl:req", capacity: 2000, cost: 1)
        _ = b.granted([bigger], leases: [4], remaining: [1500], resetMs: [0], now: 160)
        XCTAssertEqual(b.tokens["rl:req"]?.left, 4)
        XCTAssertEqual(b.sweep(now: 170).tokens, [LeaseBook.Charge(key: "rl:req", capacity: 1000, cost: 8)], "the old lease goes back")
    }

    func testSlotsKeptIdleOnlyFarFromTheLimit() {
        var b = LeaseBook(leaseMs: 100)
        b.grantedSlots("s", count: 3, freeAfter: 40, limit: 64, ttlMs: 30_000, now: 0)
        XCTAssertEqual(b.slots["s"]?.held, 3)
        XCTAssertEqual(b.slots["s"]?.running, 1)
        XCTAssertNotNil(b.takeLocally([], slotKey: "s", now: 1), "an idle held slot admits locally")
        XCTAssertEqual(b.release("s", now: 2), 0, "far from the limit: the slot stays, idle")
        XCTAssertEqual(b.slots["s"]?.idle, 2)
        // Near the limit (a later grant left few free), released slots go straight back.
        b.grantedSlots("s", count: 1, freeAfter: 10, limit: 64, ttlMs: 30_000, now: 3)
        XCTAssertEqual(b.release("s", now: 4), 3, "every idle slot is returned")
        XCTAssertEqual(b.slots["s"]?.held, 1)
        XCTAssertEqual(b.release("s", now: 5), 1)
        XCTAssertNil(b.slots["s"])
    }

    func testIdleSlotsGoBackSoonAndHeldOnesAreRenewed() {
        var b = LeaseBook(leaseMs: 100, slotIdleMs: 20, slotRefreshMs: 1_000)
        b.grantedSlots("s", count: 2, freeAfter: 60, limit: 64, ttlMs: 30_000, now: 0)
        XCTAssertEqual(b.sweep(now: 10), LeaseBook.Returns(), "idle for less than its 20 ms")
        let r = b.sweep(now: 20)
        XCTAssertEqual(r.slots, [LeaseBook.SlotReturn(key: "s", count: 1)])
        XCTAssertEqual(b.slots["s"]?.held, 1, "the running request keeps its slot")
        XCTAssertEqual(b.sweep(now: 1_000).refresh, [LeaseBook.SlotReturn(key: "s", count: 30_000)],
                       "a slot held long has its expiry renewed")
        XCTAssertEqual(b.sweep(now: 1_500).refresh, [])
    }

    func testReturnAll() {
        var b = LeaseBook(leaseMs: 100)
        _ = b.granted([req], leases: [7], remaining: [900], resetMs: [0], now: 0)
        b.grantedSlots("s", count: 3, freeAfter: 60, limit: 64, ttlMs: 30_000, now: 0)
        let r = b.returnAll()
        XCTAssertEqual(r.tokens.map(\.cost), [7])
        XCTAssertEqual(r.slots, [LeaseBook.SlotReturn(key: "s", count: 2)])
        XCTAssertEqual(b.slots["s"]?.running, 1, "running requests keep theirs")
        XCTAssertTrue(b.tokens.isEmpty)
    }
}
