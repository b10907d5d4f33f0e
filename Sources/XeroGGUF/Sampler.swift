import CXeroKernels
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

    /// Draws from softmax(logits / T) after top-k, top-p and min-p. Only the tokens within 30·T
    /// nats of the best carry any mass (the rest < 1e-13); only a top-p cut needs them sorted, and
    /// then only the few above a threshold found from a histogram of their weights — sorting a
    /// whole small model's window (tens of thousands of tokens at T 0.7) cost 3 ms a token.
    mutating func draw(_ logits: [Float]) -> Int32 {
        let o = options
        let invT = 1 / o.temperature
        // Unnormalised weights e^((v − max)/T) ∈ (0, 1]; `total` is their sum.
        var ids: [Int32] = [], weights: [Float] = []
        var total: Float = 0
        if o.topK > 0 {
            var mx = -Float.infinity
            for v in logits { mx = max(mx, v) }
            guard mx > -.infinity else { return 0 }
            for id in Self.topIndices(logits, o.topK) where logits[Int(id)] > -.infinity {
                ids.append(id); weights.append(expf((logits[Int(id)] - mx) * invT))
            }
            for w in weights { total += w }
        } else {
            // Every logit within the window, in id order (xk_sample_window, vectorised), written
            // straight into the arrays: no zeroing of 49k entries to trim after.
            guard !logits.isEmpty else { return 0 }
            var mx: Float = 0
            logits.withUnsafeBufferPointer { l in
                ids = [Int32](unsafeUninitializedCapacity: l.count) { i, idCount in
                    weights = [Float](unsafeUninitializedCapacity: l.count) { w, weightCount in
                        weightCount = Int(xk_sample_window(l.baseAddress!, Int32(l.count), invT, 30 * o.temperature,
                                                           i.baseAddress!, w.baseAddress!, &mx, &total))
                    }
                    idCount = weights.count
                }
            }
            guard !ids.isEmpty else { return 0 }
        }
        if o.topP < 1 {
            // The nucleus: the most likely tokens, in order, until their mass reaches top_p. Weights
            // bucketed by binary exponent (bucket b holds [2^−b, 2^−b+1)) say how far down it can
            // reach; only the tokens above that bound are sorted.
            var mass = [Float](repeating: 0, count: 160)
            for w in weights { mass[min(159, max(0, -Int(w.exponent)))] += w }
            let target = o.topP * total
            var bucket = 0, acc: Float = 0
            while bucket < 159 { acc += mass[bucket]; if acc >= target { break }; bucket += 1 }
            let bound: Float = bucket >= 159 ? 0 : Float(sign: .plus, exponent: -bucket, significand: 1)
            var top: [(id: Int32, w: Float)] = []
            for (i, w) in weights.enumerated() where w >= bound { top.append((ids[i], w)) }
            top.sort { $0.w > $1.w || ($0.w == $1.w && $0.id < $1.id) }
            var kept: Float = 0, keep = top.count
            for (i, c) in top.enumerated() { kept += c.w; if kept >= target { keep = i + 1; break } }
            ids = top.prefix(keep).map(\.id)
            weights = top.prefix(keep).map(\.w)
            total = kept   // the kept weights summed in order, as the draw below walks them
        }
        if o.minP > 0, let best = weights.max() {
            let floor = o.minP * best
            var kept: [Int32] = [], kw: [Float] = []
            total = 0
            for (i, w) in weights.enumerated() where w >= floor { kept.append(ids[i]); kw.append(w); total += w }
            (ids, weights) = (kept, kw)
        }
        guard !ids.isEmpty else { return 0 }
        var r = Float(Double(rng.next() >> 11) / Double(1 << 53)) * total
        for (i, w) in weights.enumerated() {
            r -= w
            if r < 0 { return ids[i] }
        }
        return ids.last!
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
