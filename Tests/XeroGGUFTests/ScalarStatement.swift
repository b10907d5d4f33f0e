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
