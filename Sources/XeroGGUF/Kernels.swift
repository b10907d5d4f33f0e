import CXeroKernels
import Foundation

/// Activations quantized to 8-bit blocks of 32, the way ggml does before a quantized matrix
/// product (`Q8_0`: scale `d`; `Q8_1`: also `s = d·Σq`). Doing the same rounding as llama.cpp is
/// what lets greedy decoding reproduce its token ids; the integer dot products are also the fast
/// path. `d` and `s` are rounded through Float16 exactly as ggml stores them. K-quant weights read
/// `Q8_K` rows instead (superblocks of 256: a float scale and sums of 16), held beside them.
public struct QuantizedRows {
    public let rows: Int, cols: Int
    /// Q8_0/Q8_1 blocks (empty when not asked for).
    public var qs: [Int8]
    public var d: [Float]
    public var s: [Float]
    /// The same rows rounded to Float16, for F16 weights (ggml's vec_dot_type for F16).
    public var f16: [Float16]
    /// Q8_K superblocks (ggml's quantize_row_q8_K_ref; empty when not asked for): `rows × cols`
    /// values, one scale per 256 (`kd`) and 16 sums of 16 per 256 (`bsums`).
    public var kqs: [Int8]
    public var kd: [Float]
    public var bsums: [Int16]

    /// The float rows themselves, for F32 weights; valid while the caller's buffer is.
    let source: UnsafePointer<Float>

    /// Quantizes `rows × cols` floats (cols a multiple of 32; of 256 for `withQ8K`) once, for every
    /// matrix that reads them (q, k and v read the same normed input; so do gate and up).
    /// `preparing` writes rows of `x` just before they are quantized, in the same parallel loop
    /// (the RMS norm that makes them): one pass over the pool instead of a serial step and a pass.
    public init(_ x: UnsafePointer<Float>, rows: Int, cols: Int, withF16: Bool, withQ8: Bool = true, withQ8K: Bool = false,
                preparing: ((Range<Int>) -> Void)? = nil) {
        precondition(cols % 32 == 0 && (!withQ8K || cols % 256 == 0), "QuantizedRows: \(cols) columns")
        self.rows = rows
        self.cols = cols
        source = x
        qs = []; d = []; s = []; f16 = []; kqs = []; kd = []; bsums = []
        fill(x, kinds: (withQ8, withF16, withQ8K), preparing: preparing)
    }

    /// Exactly what `matrices` read: an F16 copy for F16 weights, Q8_0/Q8_1 blocks for the types of
    /// blocks of 32, Q8_K superblocks for the K-quants.
    public init(_ x: UnsafePointer<Float>, rows: Int, cols: Int, for matrices: [WeightMatrix], preparing: ((Range<Int>) -> Void)? = nil) {
        let needs = Set(matrices.map(\.activation))
        self.init(x, rows: rows, cols: cols, withF16: needs.contains(.f16), withQ8: needs.contains(.q8), withQ8K: needs.contains(.q8K),
                  preparing: preparing)
    }

    /// Quantizes the asked kinds into new arrays (every element written, none zero-filled first),
    /// rows spread over the pool; the other kinds' arrays are left as they are (not copied).
    private mutating func fill(_ x: UnsafePointer<Float>, kinds: (q8: Bool, f16: Bool, q8K: Bool), preparing: ((Range<Int>) -> Void)?) {
        let cols = cols, n = rows * cols
        func made<T: BitwiseCopyable>(_ count: Int, _ asked: Bool) -> [T] {
            asked ? [T](unsafeUninitializedCapacity: count) { _, c in c = count } : []
        }
        var qs: [Int8] = made(n, kinds.q8), d: [Float] = made(n / 32, kinds.q8), s: [Float] = made(n / 32, kinds.q8)
        var f16: [Float16] = made(n, kinds.f16)
        var kqs: [Int8] = made(n, kinds.q8K), kd: [Float] = made(n / 256, kinds.q8K), bsums: [Int16] = made(n / 16, kinds.q8K)
        qs.withUnsafeMutableBufferPointer { qs in d.withUnsafeMutableBufferPointer { d in s.withUnsafeMutableBufferPointer { s in
        f16.withUnsafeMutableBufferPointer { f16 in
        kqs.withUnsafeMutableBufferPointer { kqs in kd.withUnsafeMutableBufferPointer { kd in bsums.withUnsafeMutableBufferPointer { bsums in
            let (qs, d, s, f16, kqs, kd, bsums) = (qs.baseAddress, d.baseAddress, s.baseAddress, f16.baseAddress, kqs.baseAddress, kd.baseAddress,
                                                  bsums.baseAddress)
            Parallel.chunks(rows, minChunk: 4) { range in
                preparing?(range)
                let (e0, count) = (range.lowerBound * cols, range.count * cols)
                if kinds.q8 { xk_quantize_q8(x + e0, Int32(count / 32), qs! + e0, d! + e0 / 32, s! + e0 / 32) }
                if kinds.f16 { for i in e0..<(e0 + count) { f16![i] = Float16(x[i]) } }
                if kinds.q8K { xk_quantize_q8_K(x + e0, Int32(count / 256), kqs! + e0, kd! + e0 / 256, bsums! + e0 / 16) }
            }
        } } } } } } }
        if kinds.q8 { (self.qs, self.d, self.s) = (qs, d, s) }
        if kinds.f16 { self.f16 = f16 }
        if kinds.q8K { (self.kqs, self.kd, self.bsums) = (kqs, kd, bsums) }
    }

    var has: Set<WeightMatrix.Activation> {
        var h: Set<WeightMatrix.Activation> = [.f32]
        if qs.count == rows * cols { h.insert(.q8) }
        if f16.count == rows * cols { h.insert(.f16) }
        if kqs.count == rows * cols { h.insert(.q8K) }
        return h
    }

    /// These rows with whatever `matrices` need and they lack quantized from the float source.
    func completed(for matrices: [WeightMatrix]) -> QuantizedRows {
        let missing = Set(matrices.map(\.activation)).subtracting(has)
        guard !missing.isEmpty else { return self }
        var a = self
        let (q8, f16, q8K) = (missing.contains(.q8), missing.contains(.f16), missing.contains(.q8K))
        a.fill(source, kinds: (q8, f16, q8K), preparing: nil)
        return a
    }
}

/// A weight matrix inside the mapped file: `rows` output features, each a row of `cols` inputs
/// stored in ggml's block layout for `type`.
public struct WeightMatrix: @unchecked Sendable {
    public let type: GGUFFile.TensorType
    public let rows: Int, cols: Int
    public let base: UnsafeRawPointer
    public let rowBytes: Int
    /// The same rows repacked four at a time (`RepackedWeights`), if any: the kernels read these.
    var packedX4: UnsafeRawPointer?
    /// What the kernels read: the repacked copy, or the rows in the file.
    var kernelBase: UnsafeRawPointer { packedX4 ?? base }

    public init(type: GGUFFile.TensorType, rows: Int, cols: Int, base: UnsafeRawPointer) {
        precondition(cols % type.blockLayout.elements == 0, "a \(type) row of \(cols) columns is not whole blocks (WeightMatrix.canHold)")
        self.type = type
        self.rows = rows
        self.cols = cols
        self.base = base
        rowBytes = cols / type.blockLayout.elements * type.blockLayout.bytes
    }

    public static let supportedTypes: Set<GGUFFile.TensorType> = [.f32, .f16, .q8_0, .q4_0, .q4_1, .q5_0, .q4_k, .q5_k, .q6_k]

    /// Whether rows of `cols` columns of `type` can be a matrix here: a supported type and whole
    /// blocks (32 columns; 256 for the K-quants). A loader checks this before `init`, which requires it.
    public static func canHold(type: GGUFFile.TensorType, cols: Int) -> Bool {
        supportedTypes.contains(type) && cols > 0 && cols % type.blockLayout.elements == 0
    }

    /// What a matrix product with these weights reads of the activations.
    enum Activation: Hashable { case f32, f16, q8, q8K }

    var activation: Activation {
        switch type {
        case .f16: return .f16
        case .q4_k, .q5_k, .q6_k: return .q8K
        case .q4_0, .q4_1, .q8_0, .q5_0: return .q8
        default: return .f32
        }
    }

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

    /// Its first `count` rows (a multiple of 4 when repacked: whole records), in the same layout.
    public func firstRows(_ count: Int) -> WeightMatrix {
        precondition(count > 0 && count <= rows && (packedX4 == nil || count % 4 == 0), "firstRows(\(count)) of \(rows)")
        var m = WeightMatrix(type: type, rows: count, cols: cols, base: base)
        m.packedX4 = packedX4
        return m
    }

    /// The C kernels' name for a quantized type (the repacked layout's when there is a copy);
    /// nil for F16/F32.
    var kernelType: Int32? {
        switch type {
        case .q4_1 where packedX4 != nil: return Int32(XK_Q4_1X4.rawValue)
        case .q8_0 where packedX4 != nil: return Int32(XK_Q8_0X4.rawValue)
        case .q4_0: return Int32(XK_Q4_0.rawValue)
        case .q4_1: return Int32(XK_Q4_1.rawValue)
        case .q8_0: return Int32(XK_Q8_0.rawValue)
        case .q5_0: return Int32(XK_Q5_0.rawValue)
        case .q4_k: return Int32(XK_Q4_K.rawValue)
        case .q5_k: return Int32(XK_Q5_K.rawValue)
        case .q6_k: return Int32(XK_Q6_K.rawValue)
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
        case .q5_0:
            for b in 0..<(cols / 32) {
                let bp = w + b * 22
                let d = Float(bp.loadUnaligned(as: Float16.self))
                let qh = bp.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
                for j in 0..<16 {
                    let q = bp.load(fromByteOffset: 6 + j, as: UInt8.self)
                    let h0 = Int((qh >> UInt32(j)) & 1) << 4, h1 = Int((qh >> UInt32(j + 16)) & 1) << 4
                    out[b * 32 + j] = Float((Int(q & 0x0F) | h0) - 16) * d
                    out[b * 32 + j + 16] = Float((Int(q >> 4) | h1) - 16) * d
                }
            }
        case .q4_k, .q5_k:
            // d·sc and dmin·m first, then d1·q − m1 (ggml's dequantize_row_q4_K / _q5_K).
            let bytes = type.blockLayout.bytes, qsAt = type == .q4_k ? 16 : 48
            for b in 0..<(cols / 256) {
                let bp = w + b * bytes
                let d = Float(bp.loadUnaligned(as: Float16.self)), dmin = Float(bp.loadUnaligned(fromByteOffset: 2, as: Float16.self))
                let (sc, mn) = Self.scaleMinK4(bp + 4)
                for c in 0..<8 {
                    let d1 = d * Float(sc[c]), m1 = dmin * Float(mn[c])
                    for l in 0..<32 {
                        let byte = bp.load(fromByteOffset: qsAt + 32 * (c / 2) + l, as: UInt8.self)
                        var q = Int(c % 2 == 0 ? byte & 0x0F : byte >> 4)
                        if type == .q5_k && (bp.load(fromByteOffset: 16 + l, as: UInt8.self) >> UInt8(c)) & 1 == 1 { q += 16 }
                        out[b * 256 + 32 * c + l] = d1 * Float(q) - m1
                    }
                }
            }
        case .q6_k:
            // d·sc·q, left to right (ggml's dequantize_row_q6_K).
            for b in 0..<(cols / 256) {
                let bp = w + b * 210
                let d = Float(bp.loadUnaligned(fromByteOffset: 208, as: Float16.self))
                for e in 0..<256 {
                    let sc = Float(bp.load(fromByteOffset: 192 + e / 16, as: Int8.self))
                    out[b * 256 + e] = d * sc * Float(Self.q6(bp, e) - 32)
                }
            }
        default: break
        }
    }

    /// Q4_K/Q5_K scale bytes → eight 6-bit scales and mins (ggml's get_scale_min_k4).
    static func scaleMinK4(_ q: UnsafeRawPointer) -> (sc: [UInt8], mn: [UInt8]) {
        var sc = [UInt8](repeating: 0, count: 8), mn = sc
        for j in 0..<8 {
            let b = { (i: Int) in q.load(fromByteOffset: i, as: UInt8.self) }
            if j < 4 {
                sc[j] = b(j) & 63; mn[j] = b(j + 4) & 63
            } else {
                sc[j] = (b(j + 4) & 0x0F) | ((b(j - 4) >> 6) << 4)
                mn[j] = (b(j + 4) >> 4) | ((b(j) >> 6) << 4)
            }
        }
        return (sc, mn)
    }

    /// Element e (0..<256) of a Q6_K superblock as its unsigned 6-bit value: 128-element halves,
    /// each four runs of 32 from ql's low/high nibbles and qh's bit pairs.
    static func q6(_ bp: UnsafeRawPointer, _ e: Int) -> Int {
        let half = e / 128, run = (e % 128) / 32, l = e % 32
        let ql = bp.load(fromByteOffset: 64 * half + l + (run % 2 == 1 ? 32 : 0), as: UInt8.self)
        let qh = bp.load(fromByteOffset: 128 + 32 * half + l, as: UInt8.self)
        return Int(run < 2 ? ql & 0x0F : ql >> 4) | Int((qh >> UInt8(2 * run)) & 3) << 4
    }
}

/// Raw pointers into a `QuantizedRows` and its float source, valid for one matrix product (nil
/// for what the rows do not hold).
struct UnsafeQuantized: @unchecked Sendable {
    let qs: UnsafePointer<Int8>?
    let d: UnsafePointer<Float>?
    let s: UnsafePointer<Float>?
    let f16: UnsafePointer<Float16>?
    let kqs: UnsafePointer<Int8>?
    let kd: UnsafePointer<Float>?
    let bsums: UnsafePointer<Int16>?
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
    /// interleave), more than they win back in balance; compute-bound callers take `guidedChunks`.
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

    /// Calls `body(range)` for chunks of `0..<count` that shrink as the work runs out: each takes
    /// 1 / (2 · threads) of what is left, at least `minChunk` (guided scheduling). For
    /// compute-bound callers: few calls while there is much to do, and small ones at the end, so
    /// neither thread waits long for the other at the join.
    public static func guidedChunks(_ count: Int, minChunk: Int, _ body: (Range<Int>) -> Void) {
        var bounds = [0]
        while bounds.last! < count {
            let left = count - bounds.last!
            bounds.append(min(count, bounds.last! + max(minChunk, (left + 2 * threads - 1) / (2 * threads))))
        }
        if bounds.count <= 2 || threads == 1 { body(0..<count); return }
        withoutActuallyEscaping(body) { body in
            // xk_parallel returns only after every chunk ran, so the closure outlives no call.
            var job = GuidedJob(body: body, bounds: bounds)
            withUnsafeMutablePointer(to: &job) { p in
                xk_parallel(Int32(bounds.count - 1), { ctx, i in
                    let job = ctx!.assumingMemoryBound(to: GuidedJob.self)
                    job.pointee.body(job.pointee.bounds[Int(i)]..<job.pointee.bounds[Int(i) + 1])
                }, p)
            }
        }
    }

    private struct GuidedJob {
        let body: (Range<Int>) -> Void
        let bounds: [Int]
    }
}

extension WeightMatrix {
    /// `out[t][r] = W[r] · x[t]` for the `n` rows of `x` (n × cols floats) → n × rows floats.
    public func multiply(_ x: UnsafePointer<Float>, rows n: Int, into out: UnsafeMutablePointer<Float>) {
        multiply(QuantizedRows(x, rows: n, cols: cols, for: [self]), into: out)
    }

    /// The same with activations already quantized. Each weight row is used against every input
    /// row while it is in cache (prompt processing is matrix–matrix, not n matrix–vector products).
    public func multiply(_ a: QuantizedRows, into out: UnsafeMutablePointer<Float>) {
        Self.multiply([(self, out)], a)
    }

    /// Several matrices that read the same activations (q, k, v; gate, up) in one parallel loop:
    /// their rows are split over the threads as one range, so the work is balanced and the pool is
    /// entered once instead of once per matrix. Any mix of types: each matrix reads the activations
    /// its type needs (quantized here from the float source if `a` lacks them; make `a` with
    /// `QuantizedRows(_:rows:cols:for:)` to quantize exactly once).
    public static func multiply(_ products: [(matrix: WeightMatrix, out: UnsafeMutablePointer<Float>)], _ a: QuantizedRows) {
        let n = a.rows, cols = a.cols
        for (m, _) in products { precondition(m.cols == cols, "a \(m.cols)-column matrix times \(cols)-column activations") }
        let a = a.completed(for: products.map(\.matrix))
        a.qs.withUnsafeBufferPointer { qs in
            a.d.withUnsafeBufferPointer { d in
                a.s.withUnsafeBufferPointer { s in
                    a.f16.withUnsafeBufferPointer { f16 in
                    a.kqs.withUnsafeBufferPointer { kqs in
                    a.kd.withUnsafeBufferPointer { kd in
                    a.bsums.withUnsafeBufferPointer { bsums in
                        let a = UnsafeQuantized(qs: qs.baseAddress, d: d.baseAddress, s: s.baseAddress, f16: f16.baseAddress,
                                                kqs: kqs.baseAddress, kd: kd.baseAddress, bsums: bsums.baseAddress,
                                                f32: a.source, cols: cols)
                        // F16/F32 weights: their own loop each. The quantized ones share one.
                        for (m, out) in products where m.kernelType == nil { m.multiplyFloat(a, rows: n, into: out) }
                        let quantized = products.filter { $0.matrix.kernelType != nil }
                        guard !quantized.isEmpty else { return }
                        // Groups of 4 rows (the kernels' register tile); a matrix's last group takes
                        // its remainder rows. `starts[i]` is matrix i's first group in the joint range.
                        let groups = quantized.map { max(1, $0.matrix.rows / 4) }
                        var starts = [0]
                        for g in groups { starts.append(starts.last! + g) }
                        // Four rows and more are compute-bound: chunks that shrink as the work runs
                        // out, taken as threads free up, so a thread the VM slows does not hold the
                        // other at the join (4 equal chunks a thread: main's join wait and the
                        // helper's idle spin 12.5–14.6 % of an 8-sequence run's samples; guided:
                        // 8.7–10.1 %). Fewer rows stream weights: one chunk a thread (see `chunks`).
                        let product = { (range: Range<Int>) in
                            for (i, (m, out)) in quantized.enumerated() {
                                let lo = max(range.lowerBound, starts[i]) - starts[i], hi = min(range.upperBound, starts[i + 1]) - starts[i]
                                guard lo < hi else { continue }
                                let r1 = hi == groups[i] ? m.rows : hi * 4
                                if m.activation == .q8K {
                                    xk_gemm_k(m.kernelType!, m.base, m.rowBytes, Int32(lo * 4), Int32(r1),
                                              a.kqs, a.kd, a.bsums, Int32(n), Int32(cols), out, Int32(m.rows))
                                } else {
                                    xk_gemm(m.kernelType!, m.kernelBase, m.rowBytes, Int32(lo * 4), Int32(r1),
                                            a.qs, a.d, a.s, Int32(n), Int32(cols), out, Int32(m.rows))
                                }
                            }
                        }
                        let minChunk = max(2, 32 / max(1, n))
                        if n >= 4 { Parallel.guidedChunks(starts.last!, minChunk: minChunk, product) } else {
                            Parallel.chunks(starts.last!, minChunk: minChunk, product)
                        }
                    }
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
