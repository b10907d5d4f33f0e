import Foundation
import XeroCore

/// How to pick each next token. Order of operations (vLLM's): penalties, temperature, top-k,
/// top-p, min-p, then a seeded draw. Temperature 0 is greedy (argmax, lowest id on ties).
public struct SamplingOptions: Sendable {
    public var temperature: Float = 1
    public var topP: Float = 1
    /// 0 = off.
    public var topK: Int = 0
    public var minP: Float = 0
    public var seed: UInt64?
    public var presencePenalty: Float = 0
    public var frequencyPenalty: Float = 0
    /// How many alternatives to report per token (0 = only the chosen token's logprob).
    public var topLogprobs: Int = 0
    public var wantLogprobs = false
    public init() {}
}

/// A chosen token with what `logprobs` reports about it (natural-log probabilities under the
/// model's distribution after penalties, before temperature — OpenAI's meaning).
public struct SampledToken: Sendable {
    public init(id: Int32, logprob: Float, top: [(id: Int32, logprob: Float)]) { self.id = id; self.logprob = logprob; self.top = top }
    public var id: Int32
    public var logprob: Float
    public var top: [(id: Int32, logprob: Float)]
}

public struct Sampler {
    public let options: SamplingOptions
    private var rng: SplitMix64
    private var counts: [Int32: Int] = [:]

    public init(options: SamplingOptions) {
        self.options = options
        var system = SystemRandomNumberGenerator()
        rng = SplitMix64(seed: options.seed ?? system.next())
    }

    /// Records a token of the output (for presence/frequency penalties).
    public mutating func accept(_ id: Int32) { counts[id, default: 0] += 1 }

    /// Picks the next token from `logits`; where `mask` is false the token cannot be chosen.
    public mutating func sample(_ logits: inout [Float], mask: [Bool]? = nil) -> SampledToken {
        let o = options
        if o.presencePenalty != 0 || o.frequencyPenalty != 0 {
            for (id, n) in counts where Int(id) < logits.count {
                logits[Int(id)] -= Float(n) * o.frequencyPenalty + o.presencePenalty
            }
        }
        if let mask {
            for i in 0..<min(mask.count, logits.count) where !mask[i] { logits[i] = -.infinity }
        }
        var chosen: Int32
        if o.temperature <= 1e-5 {
            var best = 0
            for i in 1..<logits.count where logits[i] > logits[best] { best = i }
            chosen = Int32(best)
        } else {
            chosen = draw(logits)
        }
        var result = SampledToken(id: chosen, logprob: 0, top: [])
        if o.wantLogprobs {
            var mx = -Float.infinity
            for v in logits { mx = max(mx, v) }
            var sum: Double = 0
            for v in logits where v > -.infinity { sum += Double(expf(v - mx)) }
            let logZ = mx + Float(log(sum))
            result.logprob = logits[Int(chosen)] - logZ
            if o.topLogprobs > 0 {
                result.top = Self.topIndices(logits, o.topLogprobs).map { ($0, logits[Int($0)] - logZ) }
            }
        }
        return result
    }

    /// How the model scores a given token (a prompt token, for `echo` with `logprobs`): its
    /// log-probability and the `top` best alternatives, as `sample` reports them.
    public static func score(_ logits: [Float], token: Int32, top: Int) -> SampledToken {
        var mx = -Float.infinity
        for v in logits { mx = max(mx, v) }
        var sum: Double = 0
        for v in logits where v > -.infinity { sum += Double(expf(v - mx)) }
        let logZ = mx + Float(log(sum))
        let alternatives = top > 0 ? topIndices(logits, top).map { ($0, logits[Int($0)] - logZ) } : []
        return SampledToken(id: token, logprob: logits[Int(token)] - logZ, top: alternatives)
    }

    mutating func draw(_ logits: [Float]) -> Int32 {
        let o = options
        let invT = 1 / o.temperature
        // Candidates: top-k if set; otherwise everything within a generous window of the best
        // logit (tokens more than 30 nats below it carry < 1e-13 of the mass).
        var mx = -Float.infinity
        for v in logits { mx = max(mx, v) }
        var cand: [(id: Int32, p: Float)] = []
        if o.topK > 0 {
            cand = Self.topIndices(logits, o.topK).map { ($0, logits[Int($0)]) }
        } else {
            let floor = mx - 30 * o.temperature
            for (i, v) in logits.enumerated() where v >= floor { cand.append((Int32(i), v)) }
            cand.sort { $0.p > $1.p || ($0.p == $1.p && $0.id < $1.id) }
        }
        guard !cand.isEmpty, mx > -.infinity else { return 0 }
        var sum: Float = 0
        for i in cand.indices { cand[i].p = expf((cand[i].p - mx) * invT); sum += cand[i].p }
        for i in cand.indices { cand[i].p /= sum }
        if o.topP < 1 {
            var acc: Float = 0, keep = cand.count
            for (i, c) in cand.enumerated() { acc += c.p; if acc >= o.topP { keep = i + 1; break } }
            cand.removeSubrange(keep...)
        }
        if o.minP > 0, let top = cand.first?.p {
            let floor = o.minP * top
            cand.removeAll { $0.p < floor }
        }
        var total: Float = 0
        for c in cand { total += c.p }
        var r = Float(Double(rng.next() >> 11) / Double(1 << 53)) * total
        for c in cand {
            r -= c.p
            if r < 0 { return c.id }
        }
        return cand.last!.id
    }

    /// Indices of the `k` largest values, best first (ties: lower id first).
    static func topIndices(_ v: [Float], _ k: Int) -> [Int32] {
        var heap: [(Float, Int32)] = []
        heap.reserveCapacity(k + 1)
        for (i, x) in v.enumerated() where x > -.infinity {
            if heap.count < k { heap.append((x, Int32(i))); if heap.count == k { heap.sort { $0.0 > $1.0 } } ; continue }
            if x > heap[k - 1].0 {
                var j = k - 1
                while j > 0 && heap[j - 1].0 < x { heap[j] = heap[j - 1]; j -= 1 }
                heap[j] = (x, Int32(i))
            }
        }
        if heap.count < k { heap.sort { $0.0 > $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) } }
        return heap.map(\.1)
    }
}
