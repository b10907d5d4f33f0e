import XCTest
import XeroCore
@testable import XeroRouter

final class TierSchedulerTests: XCTestCase {
    let tiers = [
        Tier(name: "priority", priority: 10, weight: 4, queueTimeoutMs: 1000, requestTimeoutMs: 5000),
        Tier(name: "standard", priority: 5, weight: 1, queueTimeoutMs: 1000, requestTimeoutMs: 5000),
    ]

    func job(_ id: String, tier: String = "standard", model: String = "m", deadline: Int64 = 1000) -> JobEnvelope {
        JobEnvelope(requestId: id, replyTo: "gw", tier: tier, project: "p", endpoint: "e", model: model, acceptedAtMs: 0,
                    queueDeadlineMs: deadline, requestDeadlineMs: 10_000, payload: [])
    }

    func worker(_ id: String, slots: Int, models: [String] = ["*"]) -> WorkerInfo {
        WorkerInfo(id: id, slots: slots, freeSlots: slots, models: models, capabilities: ["chat"], engine: "sim", host: "h", pid: 1)
    }

    func testCreditsBoundDispatch() {
        var s = TierScheduler(tiers: tiers)
        for i in 0..<10 { XCTAssertTrue(s.enqueue(job("j\(i)"))) }
        s.join(worker("w1", slots: 3), now: 0)
        let d = s.dispatch(now: 0)
        XCTAssertEqual(d.count, 3, "a worker is never sent more jobs than it has credits")
        XCTAssertEqual(d.map(\.envelope.requestId), ["j0", "j1", "j2"], "FIFO within a tier")
        XCTAssertEqual(s.dispatch(now: 0).count, 0)
        XCTAssertEqual(s.depth("standard"), 7)
        s.finish("j0", worker: "w1")
        XCTAssertEqual(s.dispatch(now: 0).map(\.envelope.requestId), ["j3"], "a finished job returns exactly one credit")
        s.credit("w1", 100, now: 0)
        XCTAssertEqual(s.dispatch(now: 0).count, 0, "credits never exceed the worker's slots")
    }

    func testPriorityWithoutStarvation() {
        var s = TierScheduler(tiers: tiers)
        for i in 0..<50 { _ = s.enqueue(job("p\(i)", tier: "priority")); _ = s.enqueue(job("s\(i)", tier: "standard")) }
        s.join(worker("w", slots: 20), now: 0)
        let first20 = s.dispatch(now: 0).map(\.envelope.tier)
        XCTAssertEqual(first20.filter { $0 == "priority" }.count, 16, "weights 4:1 give 16 of 20 to priority")
        XCTAssertEqual(first20.filter { $0 == "standard" }.count, 4, "standard still progresses while priority is backlogged")
        // Within every window of 5 consecutive dispatches, standard gets one.
        for start in stride(from: 0, to: 20, by: 5) {
            XCTAssertEqual(first20[start..<start + 5].filter { $0 == "standard" }.count, 1)
        }
    }

    func testPriorityServedFirstWhenOnlyOneSlot() {
        var s = TierScheduler(tiers: tiers)
        _ = s.enqueue(job("s0", tier: "standard"))
        _ = s.enqueue(job("p0", tier: "priority"))
        s.join(worker("w", slots: 1), now: 0)
        XCTAssertEqual(s.dispatch(now: 0).first?.envelope.requestId, "p0")
    }

    func testExpiredJobsAreReturnedNotDispatched() {
        var s = TierScheduler(tiers: tiers)
        _ = s.enqueue(job("old", deadline: 100))
        _ = s.enqueue(job("new", deadline: 5000))
        let expired = s.expire(now: 200)
        XCTAssertEqual(expired.map(\.requestId), ["old"])
        s.join(worker("w", slots: 4), now: 200)
        XCTAssertEqual(s.dispatch(now: 200).map(\.envelope.requestId), ["new"])
        XCTAssertEqual(s.stats["standard"]?.expired, 1)
    }

    func testUnknownTierRefused() {
        var s = TierScheduler(tiers: tiers)
        XCTAssertFalse(s.enqueue(job("x", tier: "gold")))
    }

    func testModelAwarePlacementSkipsBlockedHead() {
        var s = TierScheduler(tiers: tiers)
        _ = s.enqueue(job("needs-b", model: "b"))
        _ = s.enqueue(job("needs-a", model: "a"))
        s.join(worker("wa", slots: 2, models: ["a"]), now: 0)
        let d = s.dispatch(now: 0)
        XCTAssertEqual(d.map(\.envelope.requestId), ["needs-a"], "a job no worker can serve does not block the queue")
        XCTAssertEqual(d.first?.worker, "wa")
        s.join(worker("wb", slots: 1, models: ["b"]), now: 0)
        XCTAssertEqual(s.dispatch(now: 0).map(\.worker), ["wb"])
    }

    func testJobsGoOnlyToWorkersWithTheCapability() {
        var s = TierScheduler(tiers: tiers)
        var embed = job("e1")
        embed.kind = .embeddings
        _ = s.enqueue(embed)
        _ = s.enqueue(job("c1"))
        s.join(WorkerInfo(id: "chat-only", slots: 4, freeSlots: 4, models: ["*"], capabilities: ["chat"], engine: "sim", host: "", pid: 0), now: 0)
        XCTAssertEqual(s.dispatch(now: 0).map(\.envelope.requestId), ["c1"])
        s.join(WorkerInfo(id: "embedder", slots: 4, freeSlots: 4, models: ["*"], capabilities: ["embeddings"], engine: "x", host: "", pid: 0), now: 0)
        XCTAssertEqual(s.dispatch(now: 0).map(\.worker), ["embedder"])
    }

    func testLeastLoadedPlacementSpreadsJobs() {
        var s = TierScheduler(tiers: tiers)
        for i in 0..<4 { _ = s.enqueue(job("j\(i)")) }
        s.join(worker("w1", slots: 4), now: 0)
        s.join(worker("w2", slots: 4), now: 0)
        let perWorker = Dictionary(grouping: s.dispatch(now: 0), by: \.worker).mapValues(\.count)
        XCTAssertEqual(perWorker, ["w1": 2, "w2": 2])
    }

    func testLostWorkerRequeuesUnstartedAndHoldsStartedForTheirClients() {
        var s = TierScheduler(tiers: tiers)
        _ = s.enqueue(job("a"))
        _ = s.enqueue(job("b"))
        s.join(worker("w1", slots: 2), now: 0)
        XCTAssertEqual(s.dispatch(now: 0).count, 2)
        XCTAssertFalse(s.markStarted("a", worker: "w2"), "only the job's own worker may mark it started")
        XCTAssertTrue(s.markStarted("a", worker: "w1"))
        let lost = s.remove("w1")
        XCTAssertEqual(lost.interrupted.map(\.requestId), ["a"], "a streaming chat job: its client may continue it elsewhere")
        XCTAssertEqual(lost.failed.map(\.requestId), [])
        XCTAssertEqual(lost.requeued.map(\.requestId), ["b"])
        XCTAssertEqual(lost.requeued.first?.attempt, 2)
        s.join(worker("w2", slots: 2), now: 0)
        let d = s.dispatch(now: 0)
        XCTAssertEqual(d.map(\.envelope.requestId), ["b"])
        XCTAssertEqual(d.first?.envelope.attempt, 2)
        // Out of attempts in its block (3 per block; a client's handover starts the next at 5),
        // or a kind that cannot be continued: the client gets its error.
        var t = TierScheduler(tiers: tiers)
        var late = job("c"); late.attempt = 3
        var moved = job("d"); moved.attempt = 5
        _ = t.enqueue(late)
        _ = t.enqueue(moved)
        t.join(worker("w3", slots: 2), now: 0)
        _ = t.dispatch(now: 0)
        t.markStarted("c", worker: "w3")
        let lost2 = t.remove("w3")
        XCTAssertEqual(lost2.failed.map(\.requestId), ["c"])
        XCTAssertEqual(lost2.requeued.map(\.requestId), ["d"], "attempt 5 is the first of its block: it may run again")
        XCTAssertEqual(lost2.requeued.first?.attempt, 6)
    }

    func testAttemptsAreBounded() {
        var s = TierScheduler(tiers: tiers)
        var j = job("a")
        j.attempt = 3
        _ = s.enqueue(j)
        s.join(worker("w1", slots: 1), now: 0)
        _ = s.dispatch(now: 0)
        XCTAssertEqual(s.remove("w1").failed.map(\.requestId), ["a"])
    }

    func testSilentWorkersAndDraining() {
        var s = TierScheduler(tiers: tiers)
        s.join(worker("w1", slots: 2), now: 0)
        s.join(worker("w2", slots: 2), now: 0)
        s.seen("w2", now: 2500)
        XCTAssertEqual(s.silentWorkers(now: 3500, timeoutMs: 3000), ["w1"])
        s.drain("w2")
        _ = s.enqueue(job("x"))
        _ = s.remove("w1")
        XCTAssertEqual(s.dispatch(now: 3500).count, 0, "a draining worker takes no new jobs")
    }

    func testCancelQueuedAndRunning() {
        var s = TierScheduler(tiers: tiers)
        _ = s.enqueue(job("q"))
        _ = s.enqueue(job("r"))
        XCTAssertEqual(s.cancel("q"), .dequeued(job("q")))
        s.join(worker("w", slots: 1), now: 0)
        XCTAssertEqual(s.dispatch(now: 0).map(\.envelope.requestId), ["r"])
        XCTAssertEqual(s.cancel("r"), .running(worker: "w"))
        XCTAssertEqual(s.cancel("nope"), .unknown)
    }

    /// A gateway that is gone: its queued jobs leave the queues, its running ones are named with
    /// their workers; another gateway's jobs are untouched.
    func testAbandonTakesOnlyThatGatewaysJobs() {
        var s = TierScheduler(tiers: tiers)
        var other = job("o1")
        other.replyTo = "gw-2"
        for j in [job("a"), other, job("b"), job("c")] { _ = s.enqueue(j) }
        s.join(worker("w", slots: 1), now: 0)
        XCTAssertEqual(s.dispatch(now: 0).map(\.envelope.requestId), ["a"])
        let gone = s.abandon(replyTo: "gw")
        XCTAssertEqual(gone.dequeued.map(\.requestId).sorted(), ["b", "c"])
        XCTAssertEqual(gone.running.map(\.requestId), ["a"])
        XCTAssertEqual(gone.running.map(\.worker), ["w"])
        XCTAssertEqual(s.totalQueued, 1)
        XCTAssertEqual(s.cancel("o1"), .dequeued(other))
    }

    func testRejoinAfterRouterRestartKeepsAccounting() {
        var s = TierScheduler(tiers: tiers)
        s.join(WorkerInfo(id: "w", slots: 4, freeSlots: 1, models: ["*"], capabilities: ["chat"], engine: "sim", host: "", pid: 0), now: 0)
        for i in 0..<3 { _ = s.enqueue(job("j\(i)")) }
        XCTAssertEqual(s.dispatch(now: 0).count, 1, "a re-joining worker is credited only its free slots")
    }
    func testCreditsNeverExceedFreeSlotsWhateverTheWorkerClaims() {
        var s = TierScheduler(tiers: tiers)
        s.join(worker("w1", slots: 4), now: 0)
        s.credit("w1", Int.max, now: 0)
        XCTAssertEqual(s.workers["w1"]?.credits, 4)
        s.credit("w1", Int.min, now: 0)
        XCTAssertEqual(s.workers["w1"]?.credits, 4)
        for i in 0..<3 { _ = s.enqueue(job("j\(i)")) }
        XCTAssertEqual(s.dispatch(now: 0).count, 3)
        // A hello claiming fewer slots than are in flight leaves no negative credit.
        s.join(WorkerInfo(id: "w1", slots: 2, freeSlots: 2, models: ["*"], capabilities: ["chat"], engine: "sim", host: "h", pid: 1), now: 0)
        XCTAssertEqual(s.workers["w1"]?.credits, 0)
        s.credit("w1", 5, now: 0)
        XCTAssertEqual(s.workers["w1"]?.credits, 0)
    }

    func testQueueBoundRefusesNewJobsButKeepsRequeuedOnes() {
        var s = TierScheduler(tiers: tiers)
        s.maxQueued = 2
        XCTAssertTrue(s.enqueue(job("a")))
        XCTAssertTrue(s.enqueue(job("b")))
        XCTAssertFalse(s.enqueue(job("c")))
        XCTAssertEqual(s.totalQueued, 2)
        XCTAssertEqual(s.cancel("a"), .dequeued(job("a")))
        XCTAssertEqual(s.totalQueued, 1)
        XCTAssertTrue(s.enqueue(job("c")))
        s.join(worker("w1", slots: 1), now: 0)
        XCTAssertEqual(s.dispatch(now: 0).count, 1)
        XCTAssertEqual(s.totalQueued, 1)
    }

}

final class BatchTierTests: XCTestCase {
    func testWeightZeroTierOnlyTakesIdleCapacity() {
        let tiers = [
            Tier(name: "standard", priority: 5, weight: 1, queueTimeoutMs: 1000, requestTimeoutMs: 5000),
            Tier(name: "batch", priority: 0, weight: 0, queueTimeoutMs: 1000, requestTimeoutMs: 5000),
        ]
        var s = TierScheduler(tiers: tiers)
        func job(_ id: String, _ tier: String) -> JobEnvelope {
            JobEnvelope(requestId: id, replyTo: "gw", tier: tier, project: "p", endpoint: "e", model: "m", acceptedAtMs: 0,
                        queueDeadlineMs: 1000, requestDeadlineMs: 10_000, payload: [])
        }
        for i in 0..<5 { _ = s.enqueue(job("b\(i)", "batch")) }
        for i in 0..<3 { _ = s.enqueue(job("s\(i)", "standard")) }
        s.join(WorkerInfo(id: "w", slots: 4, freeSlots: 4, models: ["*"], capabilities: ["chat"], engine: "sim", host: "", pid: 0), now: 0)
        let d = s.dispatch(now: 0).map(\.envelope.requestId)
        XCTAssertEqual(d, ["s0", "s1", "s2", "b0"], "interactive first; batch only gets the slot left over")
    }

}
