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

/// The K-quants: ggml's quantize_row_q8_K_ref, the AVX2 ggml_vec_dot_q{4,5,6}_K_q8_K and the
/// dequantize_row_* functions, one element at a time.
extension ScalarStatement {
    /// quantize_row_q8_K_ref for one block of 256: max = the first element of largest |x|,
    /// iscale = −127/max, q = min(127, nearest_int(iscale·x)) with nearest_int's 1.5·2²³ trick,
    /// d = 1/iscale, bsums = sums of 16. An all-zero block: d = 0, q = 0 (sums 0).
    static func quantizeK(_ x: ArraySlice<Float>) -> (q: [Int8], d: Float, bsums: [Int16]) {
        var amax: Float = 0, max: Float = 0
        for v in x where abs(v) > amax { amax = abs(v); max = v }
        if amax == 0 { return ([Int8](repeating: 0, count: 256), 0, [Int16](repeating: 0, count: 16)) }
        let iscale = -127 / max
        let q = x.map { v -> Int8 in
            let f = iscale * v + 12582912
            let i = (Int32(bitPattern: f.bitPattern) & 0x007F_FFFF) - 0x0040_0000
            return Int8(Swift.min(127, i))
        }
        let bsums = (0..<16).map { j in Int16(q[(16 * j)..<(16 * j + 16)].reduce(Int32(0)) { $0 + Int32($1) }) }
        return (q, 1 / iscale, bsums)
    }

    /// get_scale_min_k4(j, q): Q4_K/Q5_K's j-th 6-bit scale and min.
    static func scaleMinK4(_ j: Int, _ q: [UInt8]) -> (Int32, Int32) {
        if j < 4 { return (Int32(q[j] & 63), Int32(q[j + 4] & 63)) }
        return (Int32((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4)), Int32((q[j + 4] >> 4) | ((q[j] >> 6) << 4)))
    }

    /// A K-quant superblock's 256 unsigned values (Q4_K 0…15, Q5_K 0…31, Q6_K 0…63, before Q6_K's −32)
    /// and its per-element scale, unpacked as ggml's dequantize_row_* loops walk them.
    static func unpackK(_ type: GGUFFile.TensorType, _ b: [UInt8]) -> (q: [Int32], scale: [Int32]) {
        var q = [Int32](repeating: 0, count: 256), scale = q
        switch type {
        case .q4_k, .q5_k:
            let qs = type == .q4_k ? 16 : 48
            let scales = Array(b[4..<16])
            var u1: UInt8 = 1, u2: UInt8 = 2
            for j in 0..<4 {
                let (s1, _) = scaleMinK4(2 * j, scales), (s2, _) = scaleMinK4(2 * j + 1, scales)
                for l in 0..<32 {
                    let byte = b[qs + 32 * j + l], h = type == .q5_k ? b[16 + l] : 0
                    q[64 * j + l] = Int32(byte & 0xF) + (h & u1 != 0 ? 16 : 0)
                    q[64 * j + 32 + l] = Int32(byte >> 4) + (h & u2 != 0 ? 16 : 0)
                    scale[64 * j + l] = s1
                    scale[64 * j + 32 + l] = s2
                }
                u1 <<= 2; u2 <<= 2
            }
        default:  // .q6_k: ql[128], qh[64], int8 scales[16], d
            for n in 0..<2 {
                for l in 0..<32 {
                    let ql0 = b[64 * n + l], ql32 = b[64 * n + l + 32], qh = b[128 + 32 * n + l]
                    q[128 * n + l] = Int32((ql0 & 0xF) | ((qh >> 0) & 3) << 4)
                    q[128 * n + l + 32] = Int32((ql32 & 0xF) | ((qh >> 2) & 3) << 4)
                    q[128 * n + l + 64] = Int32((ql0 >> 4) | ((qh >> 4) & 3) << 4)
                    q[128 * n + l + 96] = Int32((ql32 >> 4) | ((qh >> 6) & 3) << 4)
                }
            }
            for e in 0..<256 { scale[e] = Int32(Int8(bitPattern: b[192 + e / 16])) }
        }
        return (q, scale)
    }

    static func half(_ b: [UInt8], _ at: Int) -> Float { Float(Float16(bitPattern: UInt16(b[at]) | UInt16(b[at + 1]) << 8)) }

    /// ggml_vec_dot_q{4,5,6}_K_q8_K (AVX2) of one weight row (`w`: its superblocks' bytes) with one
    /// Q8_K row (`a`: 256·nb values, `d`: nb scales, `bsums`: 16·nb sums).
    static func dotK(_ type: GGUFFile.TensorType, _ w: [UInt8], _ a: ArraySlice<Int8>, _ d: ArraySlice<Float>, _ bsums: ArraySlice<Int16>) -> Float {
        let bytes = type.blockLayout.bytes, nb = w.count / bytes
        let a = Array(a), d = Array(d), bs = Array(bsums).map { Int32($0) }
        var acc = [Float](repeating: 0, count: 8), accm = [Float](repeating: 0, count: 4), summs: Float = 0
        for i in 0..<nb {
            let b = Array(w[(i * bytes)..<((i + 1) * bytes)])
            let (q, scale) = unpackK(type, b)
            var sumi = [Int32](repeating: 0, count: 8)
            for k in 0..<8 {
                for c in 0..<8 {
                    for e in (4 * k)..<(4 * k + 4) { sumi[k] += q[32 * c + e] * Int32(a[256 * i + 32 * c + e]) * scale[32 * c + e] }
                }
            }
            if type == .q6_k {
                for k in 0..<8 { sumi[k] -= 32 * (bs[16 * i + 2 * k] * scale[32 * k] + bs[16 * i + 2 * k + 1] * scale[32 * k + 16]) }
            }
            let dd = d[i] * half(b, type == .q6_k ? 208 : 0)
            for k in 0..<8 { acc[k] = acc[k].addingProduct(dd, Float(sumi[k])) }
            if type != .q6_k {
                let dmin = -d[i] * half(b, 2)
                let scales = Array(b[4..<16])
                let prod = (0..<4).map { m -> Int32 in
                    let (_, m0) = scaleMinK4(2 * m, scales), (_, m1) = scaleMinK4(2 * m + 1, scales)
                    return m0 * (bs[16 * i + 4 * m] + bs[16 * i + 4 * m + 1]) + m1 * (bs[16 * i + 4 * m + 2] + bs[16 * i + 4 * m + 3])
                }
                if type == .q4_k {
                    for m in 0..<4 { accm[m] = accm[m].addingProduct(dmin, Float(prod[m])) }
                } else {
                    summs = summs.addingProduct(dmin, Float(prod.reduce(0, +)))
                }
            }
        }
        let h = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
        switch type {
        case .q4_k: return h + ((accm[0] + accm[2]) + (accm[1] + accm[3]))
        case .q5_k: return h + summs
        default: return h
        }
    }

    /// dequantize_row_q5_0 / _q4_K / _q5_K / _q6_K of one row's bytes.
    static func dequantize(_ type: GGUFFile.TensorType, _ w: [UInt8]) -> [Float] {
        let bytes = type.blockLayout.bytes
        var y = [Float]()
        for i in 0..<(w.count / bytes) {
            let b = Array(w[(i * bytes)..<((i + 1) * bytes)])
            switch type {
            case .q5_0:
                let d = half(b, 0)
                let qh = UInt32(b[2]) | UInt32(b[3]) << 8 | UInt32(b[4]) << 16 | UInt32(b[5]) << 24
                var lo = [Float](), hi = [Float]()
                for j in 0..<16 {
                    let xh0 = UInt8(truncatingIfNeeded: (qh >> UInt32(j)) << 4) & 0x10, xh1 = UInt8(truncatingIfNeeded: qh >> UInt32(j + 12)) & 0x10
                    lo.append(Float(Int32((b[6 + j] & 0x0F) | xh0) - 16) * d)
                    hi.append(Float(Int32((b[6 + j] >> 4) | xh1) - 16) * d)
                }
                y += lo + hi
            case .q4_k, .q5_k:
                let d = half(b, 0), dmin = half(b, 2)
                let (q, _) = unpackK(type, b)
                let scales = Array(b[4..<16])
                for c in 0..<8 {
                    let (sc, m) = scaleMinK4(c, scales)
                    let d1 = d * Float(sc), m1 = dmin * Float(m)
                    for l in 0..<32 { y.append(d1 * Float(q[32 * c + l]) - m1) }
                }
            default:
                let d = half(b, 208)
                let (q, scale) = unpackK(type, b)
                for e in 0..<256 { y.append(d * Float(scale[e]) * Float(q[e] - 32)) }
            }
        }
        return y
    }
}
