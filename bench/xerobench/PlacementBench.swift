import Foundation
import XeroCore
import XeroGGUF
import XeroRouter

extension Xerobench {
    /// The router's placement in-process (issue 16): decisions per second with 10 … 10,000 workers,
    /// for `prefix_aware` and `least_loaded`, each decision a queued job matched to a worker and
    /// finished again (the scheduler's whole dispatch, not the policy alone). Workers report the
    /// blocks of 64 distinct ~1,000-token system prompts, each held by an eighth of them. Then what
    /// a prompt's block hashes cost at the gateway, against tokenizing it (the alternative).
    static func placementBench(tokenizerModel: String?) throws {
        var tier = Tier(name: "standard", priority: 5, weight: 1, queueTimeoutMs: 60_000, requestTimeoutMs: 60_000)
        let system = (0..<64).map { i in
            [(role: "system", content: "Prompt \(i). " + String(repeating: "You answer questions about ships, tides and harbours. ", count: 80))]
        }
        let prompts = system.map { PromptBlocks.hashes($0, partition: "bench") }
        for policy in ["prefix_aware", "least_loaded"] {
            tier.placement = policy
            for n in [10, 100, 1_000, 10_000] {
                var s = TierScheduler(tiers: [tier])
                for w in 0..<n {
                    let id = "w\(w)"
                    s.join(WorkerInfo(id: id, slots: 8, freeSlots: 8, models: ["m"], capabilities: ["chat"], engine: "sim", host: "h", pid: 1), now: 0)
                    s.reportPrefixes(id, hashes: (0..<prompts.count).filter { $0 % 8 == w % 8 }.flatMap { prompts[$0] })
                }
                var rng = SplitMix64(seed: UInt64(n))   // not the system's: a syscall per draw would be most of a decision
                var done = 0
                let t0 = DispatchTime.now().uptimeNanoseconds
                var now: Int64 = 1
                while DispatchTime.now().uptimeNanoseconds - t0 < 1_000_000_000 {
                    for _ in 0..<100 {
                        let blocks = prompts[Int.random(in: 0..<prompts.count, using: &rng)] + [UInt64.random(in: 0...UInt64.max, using: &rng)]
                        let id = "j\(done)"
                        _ = s.enqueue(JobEnvelope(requestId: id, replyTo: "gw", tier: "standard", project: "bench", endpoint: "e", model: "m",
                                                  acceptedAtMs: now, queueDeadlineMs: now + 60_000, requestDeadlineMs: now + 60_000,
                                                  prefixBlocks: blocks, payload: []))
                        for d in s.dispatch(now: now) { s.finish(d.envelope.requestId, worker: d.worker, now: now) }
                        done += 1
                    }
                    now += 1
                }
                let secs = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                print(String(format: #"{"mode":"placement","policy":"%@","workers":%d,"decisions_per_s":%.0f}"#, policy, n, Double(done) / secs))
            }
        }
        // What it costs to turn a ~1,000-token prompt into what the router compares.
        let text = system[0]
        let bytes = text.reduce(0) { $0 + $1.role.utf8.count + $1.content.utf8.count + 2 }
        var t0 = DispatchTime.now().uptimeNanoseconds
        var sink: UInt64 = 0
        for _ in 0..<1000 { sink &+= PromptBlocks.hashes(text, partition: "bench").last ?? 0 }
        let hashUs = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e3 / 1000
        var tokenizeUs = -1.0, tokens = 0
        if let path = tokenizerModel {
            let tokenizer = try Tokenizers.load(try GGUFFile(path: path))
            tokens = tokenizer.encode(text[0].content, parseSpecial: false).count
            t0 = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<20 { sink &+= UInt64(tokenizer.encode(text[0].content, parseSpecial: false).count) }
            tokenizeUs = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e3 / 20
        }
        print(String(format: #"{"mode":"prompt-blocks","bytes":%d,"tokens":%d,"hash_us":%.1f,"tokenize_us":%.1f,"sink":%llu}"#,
                     bytes, tokens, hashUs, tokenizeUs, sink % 2))
    }
}
