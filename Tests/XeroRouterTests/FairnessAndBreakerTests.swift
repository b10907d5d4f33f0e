import XCTest
import XeroCore
@testable import XeroRouter

/// Projects share a tier fairly; bounded queues refuse; a failing worker is taken out and probed back.
final class FairnessAndBreakerTests: XCTestCase {
    func tier(maxQueued: Int? = nil, perProject: Int? = nil) -> Tier {
        var t = Tier(name: "standard", priority: 5, weight: 1, queueTimeoutMs: 1000, requestTimeoutMs: 5000)
        t.maxQueued = maxQueued
        t.maxQueuedPerProject = perProject
        return t
    }

    func job(_ id: String, project: String, deadline: Int64 = 100_000) -> JobEnvelope {
        JobEnvelope(requestId: id, replyTo: "gw", tier: "standard", project: project, endpoint: "e", model: "m", acceptedAtMs: 0,
                    queueDeadlineMs: deadline, requestDeadlineMs: 200_000, payload: [])
    }

    func worker(_ id: String, slots: Int) -> WorkerInfo {
        WorkerInfo(id: id, slots: slots, freeSlots: slots, models: ["*"], capabilities: ["chat"], engine: "sim", host: "h", pid: 1)
    }

    /// One project floods the tier with 1,000 jobs before two others submit a few each: the
    /// others are served within the next round, not after the flood.
    func testAFloodingProjectQueuesBehindItself() {
        var s = TierScheduler(tiers: [tier()])
        for i in 0..<1000 { XCTAssertTrue(s.enqueue(job("flood\(i)", project: "flood"))) }
        for i in 0..<3 { _ = s.enqueue(job("a\(i)", project: "a")); _ = s.enqueue(job("b\(i)", project: "b")) }
        s.join(worker("w", slots: 9), now: 0)
        let order = s.dispatch(now: 0).map(\.envelope.project)
        XCTAssertEqual(order.count, 9)
        XCTAssertEqual(order.filter { $0 == "a" }.count, 3, "project a is served in full in the first 9: \(order)")
        XCTAssertEqual(order.filter { $0 == "b" }.count, 3)
        XCTAssertEqual(order.filter { $0 == "flood" }.count, 3, "the flood gets its share, one per round")
        XCTAssertEqual(s.depth("standard", project: "flood"), 997)
    }

    /// Within a project the order stays first-in first-out; a re-queued job goes back in front.
    func testFIFOWithinAProjectAndRequeueInFront() {
        var s = TierScheduler(tiers: [tier()])
        for i in 0..<4 { _ = s.enqueue(job("p\(i)", project: "p")) }
        s.join(worker("w", slots: 1), now: 0)
        XCTAssertEqual(s.dispatch(now: 0).map(\.envelope.requestId), ["p0"])
        let lost = s.remove("w", now: 0)
        XCTAssertEqual(lost.requeued.map(\.requestId), ["p0"])
        s.join(worker("w2", slots: 4), now: 0)
        XCTAssertEqual(s.dispatch(now: 0).map(\.envelope.requestId), ["p0", "p1", "p2", "p3"])
    }

    /// Over a long run with two projects always backlogged, dispatches alternate.
    func testTwoBackloggedProjectsAlternate() {
        var s = TierScheduler(tiers: [tier()])
        for i in 0..<100 { _ = s.enqueue(job("x\(i)", project: "x")) }
        for i in 0..<100 { _ = s.enqueue(job("y\(i)", project: "y")) }
        s.join(worker("w", slots: 50), now: 0)
        let order = s.dispatch(now: 0).map(\.envelope.project)
        XCTAssertEqual(order.filter { $0 == "x" }.count, 25)
        for k in stride(from: 0, to: 50, by: 2) { XCTAssertNotEqual(order[k], order[k + 1], "alternating at \(k): \(order)") }
    }

    func testQueueBoundsPerTierAndPerProject() {
        var s = TierScheduler(tiers: [tier(maxQueued: 5, perProject: 3)])
        for i in 0..<3 { XCTAssertEqual(s.submit(job("a\(i)", project: "a")), .queued) }
        XCTAssertEqual(s.submit(job("a3", project: "a")), .projectFull(3), "project a holds its 3")
        XCTAssertEqual(s.submit(job("b0", project: "b")), .queued, "another project still gets in")
        XCTAssertEqual(s.submit(job("b1", project: "b")), .queued)
        XCTAssertEqual(s.submit(job("c0", project: "c")), .tierFull(5))
        var t = TierScheduler(tiers: [tier()])
        t.maxQueued = 2
        _ = t.submit(job("1", project: "p"))
        _ = t.submit(job("2", project: "p"))
        XCTAssertEqual(t.submit(job("3", project: "p")), .routerFull(2))
        XCTAssertEqual(t.submit(JobEnvelope(requestId: "g", replyTo: "gw", tier: "gold", project: "p", endpoint: "e", model: "m", acceptedAtMs: 0,
                                            queueDeadlineMs: 1, requestDeadlineMs: 2, payload: [])), .unknownTier)
    }

    func testCancelAndExpireAcrossProjects() {
        var s = TierScheduler(tiers: [tier()])
        _ = s.enqueue(job("a0", project: "a", deadline: 50))
        _ = s.enqueue(job("b0", project: "b"))
        _ = s.enqueue(job("b1", project: "b"))
        XCTAssertEqual(s.cancel("b0"), .dequeued(job("b0", project: "b")))
        XCTAssertEqual(s.expire(now: 60).map(\.requestId), ["a0"])
        XCTAssertEqual(s.queuedProjects("standard"), 1)
        s.join(worker("w", slots: 4), now: 60)
        XCTAssertEqual(s.dispatch(now: 60).map(\.envelope.requestId), ["b1"])
        XCTAssertEqual(s.depth("standard"), 0)
    }

    // MARK: - Breaker

    func testBreakerOpensAfterFailuresAndProbesBack() {
        var s = TierScheduler(tiers: [tier()])
        s.breakerPolicy.cooldownMs = 1000
        s.join(worker("bad", slots: 1), now: 0)
        for i in 0..<3 {
            _ = s.enqueue(job("f\(i)", project: "p"))
            XCTAssertEqual(s.dispatch(now: Int64(i)).first?.worker, "bad")
            s.finish("f\(i)", worker: "bad", outcome: .failure, now: Int64(i))
        }
        XCTAssertEqual(s.breakers["bad"]?.state, .open(untilMs: 1002))
        _ = s.enqueue(job("next", project: "p"))
        XCTAssertTrue(s.dispatch(now: 500).isEmpty, "an open breaker takes the worker out of dispatch")
        s.join(worker("good", slots: 1), now: 500)
        XCTAssertEqual(s.dispatch(now: 500).first?.worker, "good", "others serve meanwhile")
        s.finish("next", worker: "good", outcome: .success, now: 600)
        // After the cooldown one probe goes; while it runs nothing else does.
        _ = s.enqueue(job("probe", project: "p"))
        _ = s.enqueue(job("after", project: "p"))
        s.drain("good")
        let probe = s.dispatch(now: 1100)
        XCTAssertEqual(probe.map(\.envelope.requestId), ["probe"])
        XCTAssertEqual(s.breakers["bad"]?.state, .probing)
        // A failed probe opens it again, for twice as long.
        s.finish("probe", worker: "bad", outcome: .failure, now: 1200)
        XCTAssertEqual(s.breakers["bad"]?.state, .open(untilMs: 3200))
        XCTAssertTrue(s.dispatch(now: 3000).isEmpty)
        XCTAssertEqual(s.dispatch(now: 3200).map(\.envelope.requestId), ["after"])
        s.finish("after", worker: "bad", outcome: .success, now: 3300)
        XCTAssertEqual(s.breakers["bad"]?.state, .closed, "a successful probe closes it")
        XCTAssertEqual(s.breakers["bad"]?.trips, 2)
    }

    /// Client errors never count: a worker answering nothing but 4xx (context too long, bad
    /// requests) and cancels stays in.
    func testClientErrorsNeverCountAgainstAWorker() {
        var s = TierScheduler(tiers: [tier()])
        s.join(worker("w", slots: 1), now: 0)
        for (i, outcome) in ["rejected:context_length_exceeded", "rejected:invalid_request_error", "cancelled", "rejected:upstream_rate_limited",
                             "rejected:x", "cancelled", "error:no_slot"].enumerated() {
            _ = s.enqueue(job("j\(i)", project: "p"))
            XCTAssertEqual(s.dispatch(now: 0).count, 1, "job \(i) was dispatched")
            s.finish("j\(i)", worker: "w", outcome: WorkerBreaker.Outcome(report: outcome), now: 0)
        }
        XCTAssertEqual(s.breakers["w"]?.state, .closed)
        XCTAssertEqual(s.breakers["w"]?.consecutiveFailures, 0)
        XCTAssertEqual(WorkerBreaker.Outcome(report: "error:internal"), .failure)
        XCTAssertEqual(WorkerBreaker.Outcome(report: "timeout"), .failure)
        XCTAssertEqual(WorkerBreaker.Outcome(report: "done"), .success)
    }

    /// A worker lost with jobs on it (a crash) counts as a failure, and its breaker survives its
    /// re-join; one lost idle does not count.
    func testCrashesCountAcrossRejoins() {
        var s = TierScheduler(tiers: [tier()])
        for i in 0..<3 {
            s.join(worker("crashy", slots: 1), now: Int64(i))
            _ = s.enqueue(job("c\(i)", project: "p"))
            XCTAssertEqual(s.dispatch(now: Int64(i)).count, 1)
            _ = s.remove("crashy", now: Int64(i))
            _ = s.cancel("c\(i)")   // re-queued; dropped here to keep the queue empty
        }
        XCTAssertEqual(s.breakers["crashy"]?.trips, 1)
        s.join(worker("crashy", slots: 1), now: 10)
        _ = s.enqueue(job("x", project: "p"))
        XCTAssertTrue(s.dispatch(now: 10).isEmpty, "re-joined, still out until the cooldown")
        s.join(worker("idle", slots: 1), now: 10)
        _ = s.remove("idle", now: 10)
        XCTAssertNil(s.breakers["idle"], "a worker lost with nothing on it is not counted")
    }
}
