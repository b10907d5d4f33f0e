import Foundation
@testable import XeroGGUF

/// llama.cpp's CPU arithmetic (x86, AVX-512 build) stated one element at a time, in plain Swift:
/// what the vectorised C kernels must reproduce to the bit. Test code only.
enum ScalarStatement {
    /// ggml's vectorised expf for one lane: x = n·ln2 + b, a degree-5 polynomial for e^b, then
    /// j·2ⁿ rounded once (AVX-512 scalef); |n| > 192 saturates to 0 or ∞.
    static func exp(_ x: Float) -> Float {
        let shift: Float = 0x1.8p23
        let z = shift.addingProduct(x, 0x1.715476p+0)
        let n = z - shift
        let b = x.addingProduct(-n, 0x1.62e4p-1).addingProduct(-n, 0x1.7f7d1cp-20)
        if n.isNaN { return .nan }
        if abs(n) > 192 { return n <= 0 ? 0 : .infinity }
        let u = b * b
        let p1 = Float(0x1.573e2ep-5).addingProduct(0x1.0e4020p-7, b)
        let p2 = Float(0x1.fffdb6p-2).addingProduct(0x1.555e66p-3, b)
        let p3 = Float(1).addingProduct(0x1.ffffecp-1, b)
        let j = p3.addingProduct(p2.addingProduct(p1, u), u)
        // Not Float(sign:exponent:significand:): it rounds twice when the result is subnormal.
        if n >= -126 && n <= 127 { return j * Float(sign: .plus, exponentBitPattern: UInt(127 + Int(n)), significandBitPattern: 0) }
        return scalbnf(j, Int32(n))
    }

    /// ggml's swiglu element: silu(g)·u = g / (1 + e^(0−g)) · u.
    static func swiglu(_ g: Float, _ u: Float) -> Float { g / (1 + exp(0 - g)) * u }

    /// ggml's quantize_row_q8_1 for one block of 32: 127/amax (not 1/d), round-half-even, d and
    /// d·Σq through Float16. NaN elements are ignored for amax and quantize to 0.
    static func quantize(_ x: ArraySlice<Float>) -> (q: [Int8], d: Float, s: Float) {
        var amax: Float = 0
        for v in x { amax = Swift.max(amax, abs(v)) }
        let dd = amax / 127
        let id: Float = amax != 0 ? 127 / amax : 0
        var q = [Int8](), sum: Int32 = 0
        for v in x {
            let f = (v * id).rounded(.toNearestOrEven)
            let i: Int8 = f.isNaN ? 0 : Int8(Swift.max(-127, Swift.min(127, f)))
            q.append(i)
            sum += Int32(i)
        }
        return (q, Float(Float16(dd)), Float(Float16(Float(sum) * dd)))
    }
}

extension ScalarStatement {
    /// _mm512_reduce_add_ps as GCC expands it: halves, quarters, then ((0+2)+(1+3)).
    static func reduce16(_ a: [Float]) -> Float {
        let t3 = (0..<8).map { a[$0] + a[$0 + 8] }
        let t6 = (0..<4).map { t3[$0] + t3[$0 + 4] }
        return (t6[0] + t6[2]) + (t6[1] + t6[3])
    }

    /// tinyBLAS's Float16 dot (a batch of several tokens): one 16-lane accumulator, 16-element steps.
    static func tiledDot(_ x: ArraySlice<Float16>, _ y: ArraySlice<Float16>) -> Float {
        var acc = [Float](repeating: 0, count: 16)
        for (i, (a, b)) in zip(x, y).enumerated() { acc[i % 16] = acc[i % 16].addingProduct(Float(a), Float(b)) }
        return reduce16(acc)
    }

    /// ggml_vec_dot_f16 (a single token): four 16-lane accumulators over 64-element steps,
    /// combined as (s0 + s2) + (s1 + s3).
    static func vecDot(_ x: ArraySlice<Float16>, _ y: ArraySlice<Float16>) -> Float {
        var s = [[Float]](repeating: [Float](repeating: 0, count: 16), count: 4)
        for (i, (a, b)) in zip(x, y).enumerated() { s[(i / 16) % 4][i % 16] = s[(i / 16) % 4][i % 16].addingProduct(Float(a), Float(b)) }
        return reduce16((0..<16).map { (s[0][$0] + s[2][$0]) + (s[1][$0] + s[3][$0]) })
    }

    /// ggml's soft_max over `len` scores (16-lane groups summed in reduce16 order into a double),
    /// the weights rounded to Float16 and zero up to `padded`.
    static func softmax(_ scores: [Float], len: Int, padded: Int) -> [Float16] {
        let mx = scores[..<len].max()!
        var e = [Float](repeating: 0, count: len)
        var sum: Double = 0
        for j0 in stride(from: 0, to: len, by: 16) {
            var chunk = [Float](repeating: 0, count: 16)
            for l in 0..<16 where j0 + l < len { e[j0 + l] = exp(scores[j0 + l] - mx); chunk[l] = e[j0 + l] }
            sum += Double(reduce16(chunk))
        }
        let inv = Float(1 / sum)
        return (0..<padded).map { $0 < len ? Float16(e[$0] * inv) : 0 }
    }
}
