import CXeroKernels
import Foundation
import XCTest
import XeroCore
@testable import XeroGGUF

/// The sampler's draws: what each option keeps and drops, on fixed seeds (deterministic).
final class SamplerTests: XCTestCase {
    func sampler(temperature: Float = 1, topP: Float = 1, topK: Int = 0, minP: Float = 0, seed: UInt64 = 1) -> Sampler {
        var o = SamplingOptions()
        o.temperature = temperature; o.topP = topP; o.topK = topK; o.minP = minP; o.seed = seed
        return Sampler(options: o)
    }

    func counts(_ s: inout Sampler, _ logits: [Float], draws: Int, mask: [Bool]? = nil) -> [Int: Int] {
        var c: [Int: Int] = [:]
        for _ in 0..<draws { var l = logits; c[Int(s.sample(&l, mask: mask).id), default: 0] += 1 }
        return c
    }

    /// The tokens a sampler draws at least once in `draws` draws.
    func drawn(_ s: Sampler, _ logits: [Float], draws: Int, mask: [Bool]? = nil) -> Set<Int> {
        var s = s
        return Set(counts(&s, logits, draws: draws, mask: mask).keys)
    }

    /// Probabilities 0.5, 0.3, 0.15, 0.05.
    let four: [Float] = [logf(0.5), logf(0.3), logf(0.15), logf(0.05)]

    /// The draw's window in C: exactly the logits within the window of the largest, in id order,
    /// each weight ggml's exponential of (v − max)/T bit for bit, the sum in id order; −inf and
    /// NaN logits never kept; a length that is not a multiple of 8; nothing kept when every logit
    /// is −inf.
    func testTheSampleWindowKeepsExactlyTheLogitsWithinIt() {
        var rng = SplitMix64(seed: 11)
        var logits = (0..<1_003).map { _ in Float(Double(rng.next() % 40_001) / 1_000 - 20) }
        logits[5] = -.infinity; logits[77] = .nan; logits[1_002] = 20.5
        let (invT, window): (Float, Float) = (1 / 0.7, 30 * 0.7)
        var ids = [Int32](repeating: -1, count: logits.count), weights = [Float](repeating: -1, count: logits.count)
        var mx: Float = 0, total: Float = 0
        let n = Int(xk_sample_window(logits, Int32(logits.count), invT, window, &ids, &weights, &mx, &total))
        XCTAssertEqual(mx, 20.5)
        let expected = logits.indices.filter { logits[$0] >= 20.5 - window }
        XCTAssertGreaterThan(expected.count, 500)
        XCTAssertLessThan(expected.count, logits.count - 2)
        XCTAssertEqual(ids.prefix(n).map(Int.init), expected)
        var sum: Float = 0
        for (k, i) in expected.enumerated() {
            let w = ScalarStatement.exp((logits[i] - 20.5) * invT)
            XCTAssertEqual(weights[k].bitPattern, w.bitPattern, "weight of \(i)")
            sum += w
        }
        XCTAssertEqual(total.bitPattern, sum.bitPattern)
        let none = [Float](repeating: -.infinity, count: 9)
        XCTAssertEqual(xk_sample_window(none, 9, invT, window, &ids, &weights, &mx, &total), 0)
        XCTAssertEqual(mx, -.infinity)
    }

    func testGreedyIsTheArgmaxWhateverTheSeed() {
        for seed: UInt64 in [1, 2, 3] {
            var s = sampler(temperature: 0, seed: seed)
            var l: [Float] = [0.1, 2, -1, 1.9]
            XCTAssertEqual(s.sample(&l).id, 1)
        }
    }

    func testDrawsFollowTheSoftmaxAndRepeatForASeed() {
        var s = sampler()
        let c = counts(&s, four, draws: 20_000)
        for (i, p) in [0.5, 0.3, 0.15, 0.05].enumerated() {
            XCTAssertEqual(Double(c[i, default: 0]) / 20_000, p, accuracy: 0.015, "token \(i)")
        }
        var a = sampler(seed: 9), b = sampler(seed: 9), other = sampler(seed: 10)
        let ra = (0..<50).map { _ in var l = four; return a.sample(&l).id }
        let rb = (0..<50).map { _ in var l = four; return b.sample(&l).id }
        let ro = (0..<50).map { _ in var l = four; return other.sample(&l).id }
        XCTAssertEqual(ra, rb)
        XCTAssertNotEqual(ra, ro)
    }

    func testTopPKeepsTheSmallestNucleusReachingIt() {
        XCTAssertEqual(drawn(sampler(topP: 0.8), four, draws: 5_000), [0, 1], "0.5 + 0.3 reach 0.8")
        XCTAssertEqual(drawn(sampler(topP: 0.81), four, draws: 5_000), [0, 1, 2])
        XCTAssertEqual(drawn(sampler(topP: 0.1), four, draws: 1_000), [0])
    }

    /// On a small model's vocabulary (49,152 logits, many within the window at T 0.7), every draw
    /// is inside the nucleus a full sort gives, and the draws reach well into it.
    func testTopPOnAWholeVocabularyDrawsOnlyFromTheSortedNucleus() {
        var rng = SplitMix64(seed: 5)
        let logits = (0..<49_152).map { _ in Float(Double(rng.next() % 10_000) / 1_000) }
        let T: Float = 0.7, topP: Float = 0.9
        let mx = logits.max()!
        let weights = logits.map { expf(($0 - mx) / T) }
        let order = weights.indices.sorted { weights[$0] > weights[$1] || (weights[$0] == weights[$1] && $0 < $1) }
        let total = weights.reduce(0, +)
        var acc: Float = 0, nucleus = Set<Int>()
        for i in order { nucleus.insert(i); acc += weights[i]; if acc >= topP * total { break } }
        XCTAssertGreaterThan(nucleus.count, 1_000)
        var s = sampler(temperature: T, topP: topP)
        let c = counts(&s, logits, draws: 1_500)
        XCTAssertTrue(Set(c.keys).isSubset(of: nucleus), "\(Set(c.keys).subtracting(nucleus).count) draws outside the nucleus")
        XCTAssertGreaterThan(c.count, 500)
    }

    func testMinPTopKTemperatureAndTheMask() {
        XCTAssertEqual(drawn(sampler(minP: 0.5), four, draws: 3_000), [0, 1], "p ≥ 0.5 · 0.5")
        XCTAssertEqual(drawn(sampler(topK: 3), four, draws: 3_000), [0, 1, 2])
        var cold = sampler(temperature: 0.1)
        XCTAssertGreaterThan(counts(&cold, four, draws: 1_000)[0, default: 0], 980, "0.6^10 of the mass is left to the second")
        XCTAssertEqual(drawn(sampler(), four, draws: 2_000, mask: [false, true, false, true]), [1, 3])
    }
}
