import XCTest
import XeroCore
@testable import XeroRouter

/// Placement policies and the prefix index, driven through the scheduler as the router drives it.
final class PlacementTests: XCTestCase {
    func tier(_ placement: String?) -> Tier {
        var t = Tier(name: "standard", priority: 5, weight: 1, queueTimeoutMs: 1000, requestTimeoutMs: 5000)
        t.placement = placement
        return t
    }

    func job(_ id: String, blocks: [UInt64] = []) -> JobEnvelope {
        JobEnvelope(requestId: id, replyTo: "gw", tier: "standard", project: "p", endpoint: "e", model: "m", acceptedAtMs: 0,
                    queueDeadlineMs: 100_000, requestDeadlineMs: 100_000, prefixBlocks: blocks, payload: [])
    }

    func worker(_ id: String, slots: Int = 4) -> WorkerInfo {
        WorkerInfo(id: id, slots: slots, freeSlots: slots, models: ["*"], capabilities: ["chat"], engine: "sim", host: "h", pid: 1)
    }

    /// A long shared prefix: blocks 1…20 of one system prompt, then a question's own block.
    let system: [UInt64] = Array(1...20)
    func prompt(_ question: UInt64) -> [UInt64] { system + [1000 + question] }

    func scheduler(_ placement: String, workers: [String] = ["w1", "w2"]) -> TierScheduler {
        var s = TierScheduler(tiers: [tier(placement)])
        for w in workers { s.join(worker(w), now: 0) }
        return s
    }

    func place(_ s: inout TierScheduler, _ j: JobEnvelope, now: Int64 = 0) -> String? {
        XCTAssertTrue(s.enqueue(j))
        return s.dispatch(now: now).first { $0.envelope.requestId == j.requestId }?.worker
    }

    func testConfigChoosesThePolicyPerTier() throws {
        XCTAssertTrue(scheduler("prefix_aware").placements["standard"] is PrefixAwarePlacement)
        XCTAssertTrue(scheduler("round_robin").placements["standard"] is RoundRobinPlacement)
        XCTAssertNil(TierScheduler(tiers: [tier(nil)]).placements["standard"], "none named: the scheduler's default (least_loaded)")
        let yaml = """
        tiers:
          - {name: standard, priority: 5, weight: 1, queue_timeout_ms: 1000, request_timeout_ms: 1000, placement: nearest}
        """
        XCTAssertThrowsError(try PlatformConfig.parse(yaml: yaml, source: "t")) { error in
            XCTAssertTrue("\(error)".contains("placement must be"), "\(error)")
        }
    }

    func testRoundRobinTakesTurns() {
        var s = scheduler("round_robin", workers: ["w1", "w2", "w3"])
        let picks = (0..<6).compactMap { place(&s, job("j\($0)")) }
        XCTAssertEqual(picks, ["w1", "w2", "w3", "w1", "w2", "w3"])
    }

    func testPrefixAwareFollowsTheCacheEvenToTheBusierWorker() {
        var s = scheduler("prefix_aware")
        s.reportPrefixes("w2", hashes: prompt(1))
        // w2 runs one job (its own report): busier than idle w1, but within the imbalance bound.
        s.reportLoad("w2", active: 1)
        XCTAssertEqual(place(&s, job("follow-up", blocks: prompt(2))), "w2",
                       "20 of 21 blocks cached outweigh a quarter of its slots busy")
        XCTAssertEqual(place(&s, job("cold", blocks: [77, 78])), "w1", "no worker holds it: the least loaded")
    }

    func testOwnRecentDecisionsCountBeforeTheWorkerReports() {
        var s = scheduler("prefix_aware")
        let first = place(&s, job("a", blocks: prompt(1)), now: 0)
        XCTAssertEqual(place(&s, job("b", blocks: prompt(2)), now: 10), first, "the router remembers where it sent the prefix")
        // Its own memory lasts `placedTTLMs`; after that only reports count.
        s.finish("a", worker: first!)
        s.finish("b", worker: first!)
        let other = first == "w1" ? "w2" : "w1"
        s.reportLoad(first!, active: 1)
        XCTAssertEqual(place(&s, job("c", blocks: prompt(3)), now: PrefixIndex.placedTTLMs + 100), other,
                       "forgotten and unreported: the less loaded worker")
    }

    func testNoPileUpOnTheCacheHolder() {
        var s = scheduler("prefix_aware")
        s.reportPrefixes("w1", hashes: prompt(1))
        // w1 runs as many jobs as it has slots (other routers' among them), w2 is idle: more than
        // `maxImbalance` (0.75) apart.
        s.reportLoad("w1", active: 4)
        XCTAssertEqual(place(&s, job("x", blocks: prompt(2))), "w2", "affinity never piles work onto an overloaded holder")
    }

    func testLoadIsTheWorkersOwnCountNotThisRoutersShare() {
        var s = scheduler("prefix_aware")
        // Another router keeps w1 busy: this router has nothing on it, but w1 reports 3 running.
        s.reportLoad("w1", active: 3)
        XCTAssertEqual(place(&s, job("x")), "w2")
        s.finish("x", worker: "w2")
        // And what this router sent since the last report counts at once (at dispatch, not at stream start).
        s.reportLoad("w1", active: 0)
        s.reportLoad("w2", active: 0)
        let a = place(&s, job("a"))!, b = place(&s, job("b"))!
        XCTAssertNotEqual(a, b, "the first dispatch made its worker the busier one")
    }

    func testDrainingAndLostWorkersLoseTheirAffinity() {
        var s = scheduler("prefix_aware", workers: ["w1", "w2", "w3"])
        s.reportPrefixes("w1", hashes: prompt(1))
        s.drain("w1")
        XCTAssertEqual(s.heldBlocks("w1"), 0, "a draining worker is out of the index")
        XCTAssertNotEqual(place(&s, job("x", blocks: prompt(2))), "w1")
        s.reportPrefixes("w2", hashes: prompt(1))
        _ = s.remove("w2")
        XCTAssertNil(s.prefixMatches(prompt(2), now: 0)["w2"], "a removed worker is out of the index")
    }

    func testIndexMatchesTheLongestHeldPrefix() {
        var idx = PrefixIndex()
        let a: PrefixIndex.Worker = 0, b: PrefixIndex.Worker = 1, c: PrefixIndex.Worker = 2
        idx.report(worker: a, hashes: Array(1...5))
        idx.report(worker: b, hashes: Array(1...2))
        XCTAssertEqual(idx.matches([1, 2, 3, 9], now: 0), [a: 3, b: 2])
        XCTAssertEqual(idx.matches([9, 1, 2], now: 0), [:], "a first block nobody holds ends the walk")
        idx.report(worker: a, hashes: [1])
        XCTAssertEqual(idx.matches([1, 2, 3], now: 0), [a: 1, b: 2], "a report replaces the previous one")
        XCTAssertEqual(idx.depth(of: b, [1, 2, 3], now: 0), 2)
        idx.placed(worker: c, blocks: [1, 2, 3], now: 0)
        XCTAssertEqual(idx.matches([1, 2, 3], now: 10), [a: 1, b: 2, c: 3], "its own placements count, at their depth")
        idx.expire(now: PrefixIndex.placedTTLMs)
        XCTAssertEqual(idx.matches([1, 2, 3], now: PrefixIndex.placedTTLMs), [a: 1, b: 2], "own placements expire")
    }

    func testPromptBlocksArePerProjectAndCumulative() {
        let a = PromptBlocks.hashes([(role: "system", content: String(repeating: "x", count: 600)), (role: "user", content: "hi")], partition: "p1")
        let b = PromptBlocks.hashes([(role: "system", content: String(repeating: "x", count: 600)), (role: "user", content: "other")], partition: "p1")
        let c = PromptBlocks.hashes([(role: "system", content: String(repeating: "x", count: 600)), (role: "user", content: "hi")], partition: "p2")
        XCTAssertEqual(a.count, 2, "616 bytes: two full blocks of 256")
        XCTAssertEqual(a, b, "the same leading 512 bytes: the same hashes")
        XCTAssertTrue(Set(a).isDisjoint(with: c), "another project's hashes never match")
        let long = PromptBlocks.hashes([(role: "user", content: String(repeating: "y", count: 1 << 20))], partition: "p")
        XCTAssertEqual(long.count, PromptBlocks.maxBlocks, "bounded")
        // The partition is terminated (0xFF, never a UTF-8 byte): no project can impersonate another
        // by moving text into its id.
        let text = String(repeating: "z", count: 300)
        let x = PromptBlocks.hashes([(role: "u", content: text)], partition: "x")
        let impostor = PromptBlocks.hashes([(role: "", content: String(text.dropFirst(0)))], partition: "xu\u{1F}")
        XCTAssertNotEqual(x.first, impostor.first)
    }

    // MARK: SLO-aware placement

    func testLatencyModelFitsALine() {
        var m = LatencyModel()
        m.add(x: 0, y: 100)
        m.add(x: 10, y: 200)
        XCTAssertNil(m.predict(5), "fewer than three samples: no prediction")
        m.add(x: 20, y: 300)
        XCTAssertEqual(m.predict(30) ?? 0, 400, accuracy: 1)
        var flat = LatencyModel()
        for y in [10.0, 20, 30] { flat.add(x: 0.5, y: y) }
        XCTAssertEqual(flat.predict(0.5) ?? 0, 20.3, accuracy: 0.1, "one x only: the (weighted) mean there")
        XCTAssertEqual(flat.predict(0.9) ?? 0, 20.3 * 0.9 / 0.5, accuracy: 0.1,
                       "and beyond it in proportion to the work, not flat: one job more is never free")
        XCTAssertEqual(flat.predict(0.1) ?? 0, 20.3, accuracy: 0.1, "below it no faster than measured")
        var spread = LatencyModel()
        for _ in 0..<10 { for x in [1.0, 2, 3, 4] { spread.add(x: x, y: 5) } }
        XCTAssertLessThan(spread.predict(8) ?? 99, 5.5, "samples over four jobs that show no growth outweigh the proportional slope (16 ms at 8)")
        var noisy = LatencyModel()
        for (x, y) in [(0.0, 50.0), (1, 40), (2, 30)] { noisy.add(x: x, y: y) }
        XCTAssertGreaterThanOrEqual(noisy.predict(10) ?? -1, 0, "never negative, never falling with work")
    }

    /// A job's TPOT is sampled against the jobs it decoded beside, not the load it was sent at: a
    /// job sent to an idle worker that gets company at once ran in a batch of three.
    func testTPOTIsSampledAtTheJobsItDecodedBeside() {
        var s = scheduler("least_loaded", workers: ["w"])
        XCTAssertEqual(place(&s, job("a"), now: 0), "w")
        XCTAssertTrue(s.markStarted("a", worker: "w", now: 0))
        XCTAssertEqual(place(&s, job("b"), now: 0), "w")
        XCTAssertEqual(place(&s, job("c"), now: 0), "w")
        _ = s.finish("b", worker: "w", now: 50)
        let a = s.finish("a", worker: "w", now: 100)
        XCTAssertEqual(a?.runningAtDispatch, 0, "sent to it idle")
        XCTAssertEqual(a?.decodeJobs ?? 0, 2.5, accuracy: 1e-9, "three jobs for 50 ms, two for 50 ms")
        XCTAssertEqual(a?.tpotJobs ?? 0, 2.5, accuracy: 1e-9)
        let c = s.finish("c", worker: "w", now: 120)
        XCTAssertNil(c?.decodeJobs, "never reported its start")
        XCTAssertEqual(c?.tpotJobs, 3, "so: the two running when it was sent, and itself")
    }

    func testJobTimeIntegratesTheRunningCount() {
        var t = JobTime()
        t.advance(to: 100, jobs: 2)
        let mark = t.total
        t.advance(to: 150, jobs: 4)
        XCTAssertEqual(t.mean(since: mark, fromMs: 100, to: 200), 3, "2 for 50 ms, 4 for 50 ms")
        t.advance(to: 120, jobs: 1)   // a clock that went back
        XCTAssertEqual(t.total, 100, "accrues nothing")
        XCTAssertNil(t.mean(since: mark, fromMs: 200, to: 200), "over no time: unknown")
    }

    func job(_ id: String, ttft: Int = 0, tpot: Int = 0) -> JobEnvelope {
        var j = job(id)
        j.sloTTFTMs = ttft
        j.sloTPOTMs = tpot
        return j
    }

    /// Two workers measured at 10 and 50 ms per token: a 30 ms TPOT hint goes to the fast one even
    /// when it is the busier; a hint nobody can meet goes to the best; the prediction comes along.
    func testTPOTHintsSteerToTheWorkerThatCanMeetThem() {
        var s = scheduler("prefix_aware", workers: ["fast", "slow"])   // load as the workers report it
        for _ in 0..<5 {
            s.observeTPOT("fast", jobs: 3, ms: 10)   // measured with two running beside it, as it is now
            s.observeTPOT("slow", jobs: 2, ms: 50)
        }
        s.reportLoad("fast", active: 2)   // busier: on load alone "slow" wins
        XCTAssertEqual(place(&s, job("plain")), "slow")
        XCTAssertTrue(s.enqueue(job("hinted", tpot: 30)))
        let d = s.dispatch(now: 0)
        XCTAssertEqual(d.first?.worker, "fast")
        XCTAssertEqual(d.first?.prediction?.tpotMs, 10)
        XCTAssertNil(d.first?.prediction?.ttftMs, "no TTFT measured yet")
        XCTAssertEqual(place(&s, job("impossible", tpot: 5)), "fast", "nobody meets 5 ms: the one that misses it least")
        XCTAssertTrue(s.enqueue(job("unhinted")))
        XCTAssertNil(s.dispatch(now: 0).first?.prediction, "no hints, no prediction sent")
    }

    /// A worker whose TPOT grows with its load (10 ms for a job alone, 15 ms beside another, 20 ms
    /// beside two) and one at 40 ms: a second 12 ms hint nobody can meet goes to the slow
    /// worker rather than push the fast one's running hinted job past its target; with nothing
    /// there to break, to the least miss (fast); and an overloaded fast worker gets no more until
    /// it has drained.
    func testAHintNobodyMeetsDoesNotBreakTheRunningJobs() {
        func fleet() -> TierScheduler {
            var s = scheduler("least_loaded", workers: ["fast", "slow"])
            for _ in 0..<3 {
                s.observeTPOT("fast", jobs: 1, ms: 10)
                s.observeTPOT("fast", jobs: 3, ms: 20)
                s.observeTPOT("slow", jobs: 1, ms: 40)
            }
            return s
        }
        var s = fleet()
        XCTAssertTrue(s.enqueue(job("a", tpot: 12)))
        let a = s.dispatch(now: 0).first
        XCTAssertEqual(a?.worker, "fast", "10 ms sent to it idle: met")
        XCTAssertEqual(a?.prediction?.tpotMs, 10, "predicted alone there: 10 ms")
        XCTAssertTrue(s.enqueue(job("b", tpot: 12)))
        let b = s.dispatch(now: 0).first
        XCTAssertEqual(b?.worker, "slow", "on fast, b and a would both run at 15 ms and miss")
        XCTAssertEqual(b?.prediction?.tpotMs, 40)
        var unhinted = fleet()
        XCTAssertEqual(place(&unhinted, job("a")), "fast")
        XCTAssertEqual(place(&unhinted, job("b", tpot: 12)), "fast", "the running job has no target to break: the least miss")
        var tolerant = fleet()
        XCTAssertEqual(place(&tolerant, job("a", tpot: 25)), "fast")
        XCTAssertEqual(place(&tolerant, job("b", tpot: 12)), "fast", "a still meets its 25 ms at 15")
        // Overloaded: two 12 ms jobs on fast (the only worker with credits then) run at 15 ms and miss
        // already. Another goes to slow, so fast drains back to where it meets them.
        var full = fleet()
        _ = full.reclaim("slow", 100)
        XCTAssertEqual(place(&full, job("a", tpot: 12)), "fast")
        XCTAssertEqual(place(&full, job("b", tpot: 12)), "fast")
        full.credit("slow", 4, now: 0)
        XCTAssertEqual(place(&full, job("c", tpot: 12)), "slow", "not a third on fast, though 20 ms there misses least")
    }

    /// TTFT is measured from dispatch to `started` against the prompt blocks the worker lacked:
    /// with a long prompt, the worker holding it is predicted fast and one without it slow.
    func testTTFTHintsUseTheUncachedPrompt() {
        var s = scheduler("least_loaded", workers: ["holder", "other"])
        // Samples: 1 block uncached → 20 ms, 21 blocks → 420 ms, on both workers.
        var n = 0
        for w in ["holder", "other"] {
            for blocks in [1, 21, 1, 21] {
                let b = (0..<blocks).map { UInt64(10_000 + n * 100 + $0) }
                n += 1
                XCTAssertTrue(s.enqueue(job("t\(n)", blocks: b)))
                // Pin each sample to its worker: only it has a credit this moment.
                let other = w == "holder" ? "other" : "holder"
                _ = s.reclaim(other, 100)
                let d = s.dispatch(now: 0)
                XCTAssertEqual(d.first?.worker, w)
                XCTAssertTrue(s.markStarted("t\(n)", worker: w, now: Int64(20 * blocks)))
                s.finish("t\(n)", worker: w)
                s.credit(other, 4, now: 0)
            }
        }
        s.reportPrefixes("holder", hashes: prompt(1))
        s.reportLoad("holder", active: 1)   // busier, so least_loaded alone would not choose it
        XCTAssertTrue(s.enqueue({ var j = job("q", blocks: prompt(2)); j.sloTTFTMs = 100; return j }()))
        let d = s.dispatch(now: 0)
        XCTAssertEqual(d.first?.worker, "holder", "only the holder can start within 100 ms")
        XCTAssertEqual(Double(d.first?.prediction?.ttftMs ?? 0), 20, accuracy: 5)
    }

    /// The indexed placement (pools ordered by load, holders visited by depth) chooses what a full
    /// scan of every worker under the same rules chooses, through a random walk of joins, credits,
    /// load reports, prefix reports, drains, removals, failures and dispatches.
    func testIndexedPlacementEqualsAFullScan() {
        for policy in ["least_loaded", "prefix_aware"] {
            var rng = SplitMix64(seed: policy == "least_loaded" ? 1 : 2)
            var s = TierScheduler(tiers: [tier(policy)])
            let prompts: [[UInt64]] = (0..<6).map { p in (0..<8).map { UInt64(p * 100 + $0 + 1) } }
            var dispatches = 0, onHolders = 0
            for step in 0..<4_000 {
                let id = "w\(Int.random(in: 0..<12, using: &rng))"
                switch Int.random(in: 0..<10, using: &rng) {
                case 0:
                    // Some serve only model "m", some anything; some embeddings only.
                    let models = Bool.random(using: &rng) ? ["m"] : ["*"]
                    let caps = Int.random(in: 0..<5, using: &rng) == 0 ? ["embeddings"] : ["chat"]
                    let slots = Int.random(in: 1...4, using: &rng)
                    s.join(WorkerInfo(id: id, slots: slots, freeSlots: slots, models: models, capabilities: caps, engine: "sim", host: "h", pid: 1), now: 0)
                case 1: s.credit(id, Int.random(in: 0...2, using: &rng), now: 0)
                case 2: s.reportLoad(id, active: Int.random(in: 0...4, using: &rng))
                case 3:
                    // A prefix of one prompt, of some depth (reports are prefix-closed).
                    let p = prompts.randomElement(using: &rng)!
                    s.reportPrefixes(id, hashes: Array(p.prefix(Int.random(in: 0...8, using: &rng))))
                case 4 where Int.random(in: 0..<4, using: &rng) == 0: s.drain(id)
                case 5 where Int.random(in: 0..<6, using: &rng) == 0:
                    // Its unstarted jobs would be requeued and dispatched first: the walk drops them.
                    for lost in s.remove(id, now: Int64(step)).requeued { _ = s.cancel(lost.requestId) }
                case 6, 7:
                    // End one running job, sometimes as a failure (breakers open after three).
                    if let f = s.inflight.values.first(where: { $0.worker == id }) {
                        s.finish(f.envelope.requestId, worker: id, outcome: Bool.random(using: &rng) ? .success : .failure, now: Int64(step))
                    }
                default:
                    var j = job("j\(step)", blocks: Bool.random(using: &rng) ? [] : prompts.randomElement(using: &rng)! + [UInt64(9_000 + step)])
                    if Int.random(in: 0..<4, using: &rng) == 0 { j.model = "other" }
                    let expected = fullScan(s, j, policy: policy, now: Int64(step))
                    XCTAssertTrue(s.enqueue(j))
                    let got = s.dispatch(now: Int64(step)).first { $0.envelope.requestId == j.requestId }?.worker
                    XCTAssertEqual(got, expected, "\(policy), step \(step)")
                    if got == nil { _ = s.cancel(j.requestId) } else { dispatches += 1 }
                    if let got, s.prefixMatches(j.prefixBlocks, now: Int64(step))[got] != nil { onHolders += 1 }
                }
            }
            XCTAssertGreaterThan(dispatches, 200, "the walk placed jobs")
            XCTAssertGreaterThan(onHolders, 50, "and many on a worker holding part of their prompt")
        }
    }

    /// Placement by the rules, over every worker: the reference for the indexed scheduler.
    private func fullScan(_ s: TierScheduler, _ job: JobEnvelope, policy: String, now: Int64) -> String? {
        let candidates = s.workers.values.filter {
            $0.credits > 0 && $0.mayRun(job) && (s.breakers[$0.info.id]?.allows(now: now, inflight: $0.inflight.count) ?? true)
        }
        func key(_ w: TierScheduler.Worker) -> (Double, Int, String) { (w.load, s.heldBlocks(w.info.id), w.info.id) }
        guard let least = candidates.min(by: { key($0) < key($1) }) else { return nil }
        if policy == "least_loaded" || job.prefixBlocks.isEmpty { return least.info.id }
        // Depth per worker by walking its blocks one by one.
        let matches = s.prefixMatches(job.prefixBlocks, now: now)
        return candidates.max { a, b in
            func score(_ w: TierScheduler.Worker) -> Double {
                let m = w.load <= least.load + PrefixAwarePlacement.defaultMaxImbalance ? Double(matches[w.info.id] ?? 0) / Double(job.prefixBlocks.count) : 0
                return m - PrefixAwarePlacement.defaultLoadWeight * w.load
            }
            let (sa, sb) = (score(a), score(b))
            if sa != sb { return sa < sb }
            return key(a) > key(b)
        }?.info.id
    }
}
