import CXeroKernels
import Foundation

/// Activations quantized to 8-bit blocks of 32, the way ggml does before a quantized matrix
/// product (`Q8_0`: scale `d`; `Q8_1`: also `s = d·Σq`). Doing the same rounding as llama.cpp is
/// what lets greedy decoding reproduce its token ids; the integer dot products are also the fast
/// path. `d` and `s` are rounded through Float16 exactly as ggml stores them.
public struct QuantizedRows {
    public let rows: Int, cols: Int
    public var qs: [Int8]
    public var d: [Float]
    public var s: [Float]
    /// The same rows rounded to Float16, for F16 weights (ggml's vec_dot_type for F16).
    public var f16: [Float16]

    /// The float rows themselves, for F32 weights; valid while the caller's buffer is.
    let source: UnsafePointer<Float>

    /// Quantizes `rows × cols` floats (cols a multiple of 32) once, for every matrix that reads
    /// them (q, k and v read the same normed input; so do gate and up).
    public init(_ x: UnsafePointer<Float>, rows: Int, cols: Int, withF16: Bool) {
        self.rows = rows
        self.cols = cols
        source = x
        qs = [Int8](repeating: 0, count: rows * cols)
        d = [Float](repeating: 0, count: rows * cols / 32)
        s = d
        f16 = []
        quantize(x, withF16: withF16)
    }

    private mutating func quantize(_ x: UnsafePointer<Float>, withF16: Bool) {
        let nb = cols / 32
        qs.withUnsafeMutableBufferPointer { q in
            d.withUnsafeMutableBufferPointer { dp in
                s.withUnsafeMutableBufferPointer { sp in
                    let (q, dp, sp) = (q.baseAddress!, dp.baseAddress!, sp.baseAddress!)
                    Parallel.chunks(rows, minChunk: 4) { range in
                        let b0 = range.lowerBound * nb
                        xk_quantize_q8(x + b0 * 32, Int32(range.count * nb), q + b0 * 32, dp + b0, sp + b0)
                    }
                }
            }
        }
        if withF16 {
            f16 = [Float16](unsafeUninitializedCapacity: rows * cols) { buf, n in
                for i in 0..<(rows * cols) { buf[i] = Float16(x[i]) }
                n = rows * cols
            }
        }
    }
}

/// A weight matrix inside the mapped file: `rows` output features, each a row of `cols` inputs
/// stored in ggml's block layout for `type`.
public struct WeightMatrix: @unchecked Sendable {
    public let type: GGUFFile.TensorType
    public let rows: Int, cols: Int
    public let base: UnsafeRawPointer
    public let rowBytes: Int

    public init(type: GGUFFile.TensorType, rows: Int, cols: Int, base: UnsafeRawPointer) {
        self.type = type
        self.rows = rows
        self.cols = cols
        self.base = base
        rowBytes = cols / type.blockLayout.elements * type.blockLayout.bytes
    }

    public static let supportedTypes: Set<GGUFFile.TensorType> = [.f32, .f16, .q8_0, .q4_0, .q4_1]

    /// Dot product of float row `r` with activation row `t` (F16 and F32 weights; the quantized
    /// types go through the C kernels, `xk_gemm`).
    @inline(__always)
    func dot(row r: Int, _ a: UnsafeQuantized, _ t: Int) -> Float {
        let w = base + r * rowBytes
        switch type {
        case .f16: return Kernels.dotF16(w, a.f16! + t * cols, cols)
        case .f32: return Kernels.dotF32(w, a.f32 + t * cols, cols)
        default: return 0
        }
    }

    /// The C kernels' name for a quantized type; nil for F16/F32.
    var kernelType: Int32? {
        switch type {
        case .q4_0: return Int32(XK_Q4_0.rawValue)
        case .q4_1: return Int32(XK_Q4_1.rawValue)
        case .q8_0: return Int32(XK_Q8_0.rawValue)
        default: return nil
        }
    }

    /// Row `r` as floats (embedding lookup).
    public func dequantizeRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        let w = base + r * rowBytes
        switch type {
        case .f32: for i in 0..<cols { out[i] = w.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
        case .f16: for i in 0..<cols { out[i] = Float(w.loadUnaligned(fromByteOffset: 2 * i, as: Float16.self)) }
        case .q8_0:
            for b in 0..<(cols / 32) {
                let bp = w + b * 34
                let d = Float(bp.loadUnaligned(as: Float16.self))
                for j in 0..<32 { out[b * 32 + j] = d * Float(bp.loadUnaligned(fromByteOffset: 2 + j, as: Int8.self)) }
            }
        case .q4_0:
            for b in 0..<(cols / 32) {
                let bp = w + b * 18
                let d = Float(bp.loadUnaligned(as: Float16.self))
                for j in 0..<16 {
                    let q = bp.load(fromByteOffset: 2 + j, as: UInt8.self)
                    out[b * 32 + j] = d * Float(Int(q & 0x0F) - 8)
                    out[b * 32 + j + 16] = d * Float(Int(q >> 4) - 8)
                }
            }
        case .q4_1:
            for b in 0..<(cols / 32) {
                let bp = w + b * 20
                let d = Float(bp.loadUnaligned(as: Float16.self)), m = Float(bp.loadUnaligned(fromByteOffset: 2, as: Float16.self))
                for j in 0..<16 {
                    let q = bp.load(fromByteOffset: 4 + j, as: UInt8.self)
                    out[b * 32 + j] = d * Float(q & 0x0F) + m
                    out[b * 32 + j + 16] = d * Float(q >> 4) + m
                }
            }
        default: break
        }
    }
}

/// Raw pointers into a `QuantizedRows` and its float source, valid for one matrix product.
struct UnsafeQuantized: @unchecked Sendable {
    let qs: UnsafePointer<Int8>
    let d: UnsafePointer<Float>
    let s: UnsafePointer<Float>
    let f16: UnsafePointer<Float16>?
    let f32: UnsafePointer<Float>
    let cols: Int
}

/// The float inner loops (F16/F32 weights: small models, norms kept as matrices). Eight float
/// lanes of partial sums; the quantized types are in the C target `CXeroKernels`.
enum Kernels {
    @inline(__always)
    static func dotF16(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float16>, _ n: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            let wv = SIMD8<Float>(w.loadUnaligned(fromByteOffset: 2 * i, as: SIMD8<Float16>.self))
            let xv = SIMD8<Float>(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float16>.self))
            acc.addProduct(wv, xv)
            i += 8
        }
        var s = acc.sum()
        while i < n { s += Float(w.loadUnaligned(fromByteOffset: 2 * i, as: Float16.self)) * Float(x[i]); i += 1 }
        return s
    }

    @inline(__always)
    static func dotF32(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            acc.addProduct(w.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self), UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self))
            i += 8
        }
        var s = acc.sum()
        while i < n { s += w.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) * x[i]; i += 1 }
        return s
    }
}

/// Runs work over all cores, on the C kernels' fork–join pool (helpers spin between calls, so one
/// token's ~150 parallel loops cost microseconds each, not Dispatch's tens). One process-wide pool:
/// the model is shared by a worker's sequences, and its matrix products keep the cores busy.
public enum Parallel {
    public static let threads = Int(xk_threads())

    /// Calls `body(range)` for contiguous chunks of `0..<count`, in parallel when worth it. One
    /// chunk per thread: finer chunks (4 per thread) cost decode 15 % (weight streams restart and
    /// interleave), more than they win back in balance.
    public static func chunks(_ count: Int, minChunk: Int = 16, _ body: (Range<Int>) -> Void) {
        let n = min(threads, max(1, count / minChunk))
        if n <= 1 { body(0..<count); return }
        let per = (count + n - 1) / n
        withoutActuallyEscaping(body) { body in
            // xk_parallel returns only after every chunk ran, so the closure outlives no call.
            var job = ChunkJob(body: body, count: count, per: per)
            withUnsafeMutablePointer(to: &job) { p in
                xk_parallel(Int32(n), { ctx, i in
                    let job = ctx!.assumingMemoryBound(to: ChunkJob.self)
                    let lo = Int(i) * job.pointee.per, hi = min(job.pointee.count, lo + job.pointee.per)
                    if lo < hi { job.pointee.body(lo..<hi) }
                }, p)
            }
        }
    }

    private struct ChunkJob {
        let body: (Range<Int>) -> Void
        let count: Int, per: Int
    }
}

extension WeightMatrix {
    /// `out[t][r] = W[r] · x[t]` for the `n` rows of `x` (n × cols floats) → n × rows floats.
    public func multiply(_ x: UnsafePointer<Float>, rows n: Int, into out: UnsafeMutablePointer<Float>) {
        multiply(QuantizedRows(x, rows: n, cols: cols, withF16: type == .f16), into: out)
    }

    /// The same with activations already quantized. Each weight row is used against every input
    /// row while it is in cache (prompt processing is matrix–matrix, not n matrix–vector products).
    public func multiply(_ a: QuantizedRows, into out: UnsafeMutablePointer<Float>) {
        Self.multiply([(self, out)], a)
    }

    /// Several matrices that read the same activations (q, k, v; gate, up) in one parallel loop:
    /// their rows are split over the threads as one range, so the work is balanced and the pool is
    /// entered once instead of once per matrix.
    public static func multiply(_ products: [(matrix: WeightMatrix, out: UnsafeMutablePointer<Float>)], _ a: QuantizedRows) {
        let n = a.rows, cols = a.cols
        for (m, _) in products { precondition(m.cols == cols && (m.type != .f16 || a.f16.count == n * cols)) }
        a.qs.withUnsafeBufferPointer { qs in
            a.d.withUnsafeBufferPointer { d in
                a.s.withUnsafeBufferPointer { s in
                    a.f16.withUnsafeBufferPointer { f16 in
                        let a = UnsafeQuantized(qs: qs.baseAddress!, d: d.baseAddress!, s: s.baseAddress!, f16: f16.baseAddress,
                                                f32: a.source, cols: cols)
                        guard products.allSatisfy({ $0.matrix.kernelType != nil }) else {
                            for (m, out) in products { m.multiplyFloat(a, rows: n, into: out) }
                            return
                        }
                        // Groups of 4 rows (the kernel's register tile); a matrix's last group takes
                        // its remainder rows. `starts[i]` is matrix i's first group in the joint range.
                        let groups = products.map { max(1, $0.matrix.rows / 4) }
                        var starts = [0]
                        for g in groups { starts.append(starts.last! + g) }
                        Parallel.chunks(starts.last!, minChunk: max(2, 32 / max(1, n))) { range in
                            for (i, (m, out)) in products.enumerated() {
                                let lo = max(range.lowerBound, starts[i]) - starts[i], hi = min(range.upperBound, starts[i + 1]) - starts[i]
                                guard lo < hi else { continue }
                                let r1 = hi == groups[i] ? m.rows : hi * 4
                                xk_gemm(m.kernelType!, m.base, m.rowBytes, Int32(lo * 4), Int32(r1),
                                        a.qs, a.d, a.s, Int32(n), Int32(cols), out, Int32(m.rows))
                            }
                        }
                    }
                }
            }
        }
    }

    /// F16/F32 weights: Swift SIMD dot products, input rows tiled so a tile and a weight row stay
    /// in cache.
    func multiplyFloat(_ a: UnsafeQuantized, rows n: Int, into out: UnsafeMutablePointer<Float>) {
        let rowsOut = rows
        Parallel.chunks(rowsOut, minChunk: max(8, 4096 / max(1, n))) { range in
            let tile = 16
            var t0 = 0
            while t0 < n {
                let t1 = min(n, t0 + tile)
                for r in range {
                    for t in t0..<t1 { out[t * rowsOut + r] = self.dot(row: r, a, t) }
                }
                t0 = t1
            }
        }
    }
}
