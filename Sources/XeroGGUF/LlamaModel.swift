import Foundation

/// Hyper-parameters of a llama-architecture model, from the GGUF metadata.
public struct LlamaConfig: Sendable, Equatable {
    public var layers: Int
    public var embedding: Int
    public var feedForward: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var ropeDims: Int
    public var ropeBase: Float
    public var rmsEps: Float
    public var contextLength: Int
    public var vocab: Int
    public var kvDim: Int { kvHeads * headDim }
}

/// The KV state of one sequence: per layer, the roped keys and the values of every position so far,
/// stored as Float16 (llama.cpp's default cache type). Grows on demand. Owned by one sequence at a
/// time; `truncate` rolls it back (prefix reuse keeps a prefix and computes the rest).
public final class KVCache: @unchecked Sendable {
    public let layers: Int, kvDim: Int
    public private(set) var capacity = 0
    /// Positions filled.
    public internal(set) var count = 0
    var keys: [UnsafeMutablePointer<Float16>] = []
    var values: [UnsafeMutablePointer<Float16>] = []

    public init(config: LlamaConfig, reserve: Int = 256) {
        layers = config.layers
        kvDim = config.kvDim
        grow(to: reserve)
    }

    deinit {
        for p in keys { p.deallocate() }
        for p in values { p.deallocate() }
    }

    /// Bytes held (what a memory budget counts).
    public var bytes: Int { 2 * layers * capacity * kvDim * MemoryLayout<Float16>.size }

    func grow(to needed: Int) {
        guard needed > capacity else { return }
        let newCap = max(needed, capacity * 2, 64)
        for l in 0..<layers {
            let nk = UnsafeMutablePointer<Float16>.allocate(capacity: newCap * kvDim)
            let nv = UnsafeMutablePointer<Float16>.allocate(capacity: newCap * kvDim)
            if capacity > 0 {
                nk.update(from: keys[l], count: count * kvDim)
                nv.update(from: values[l], count: count * kvDim)
                keys[l].deallocate()
                values[l].deallocate()
                keys[l] = nk
                values[l] = nv
            } else {
                keys.append(nk)
                values.append(nv)
            }
        }
        capacity = newCap
    }

    /// Forgets positions from `n` on.
    public func truncate(to n: Int) { count = min(count, max(0, n)) }

    /// A copy of the first `n` positions (for a prefix cache that hands out its entries).
    public func copy(prefix n: Int) -> KVCache {
        let c = KVCache(layers: layers, kvDim: kvDim, reserve: n)
        let m = min(n, count)
        for l in 0..<layers {
            c.keys[l].update(from: keys[l], count: m * kvDim)
            c.values[l].update(from: values[l], count: m * kvDim)
        }
        c.count = m
        return c
    }

    init(layers: Int, kvDim: Int, reserve: Int) {
        self.layers = layers
        self.kvDim = kvDim
        grow(to: max(1, reserve))
    }
}

/// A llama-family model (RMSNorm, RoPE, grouped-query attention, SwiGLU, tied or separate output)
/// running straight from the memory-mapped GGUF file. Immutable after load, so one instance is
/// shared by every sequence of a worker; all per-sequence state lives in `KVCache`.
public final class LlamaModel: @unchecked Sendable {
    public let file: GGUFFile
    public let config: LlamaConfig
    public let name: String

    struct Layer {
        let attnNorm: [Float], ffnNorm: [Float]
        let q: WeightMatrix, k: WeightMatrix, v: WeightMatrix, o: WeightMatrix
        let gate: WeightMatrix, up: WeightMatrix, down: WeightMatrix
    }
    let tokenEmbedding: WeightMatrix
    let layers: [Layer]
    let outputNorm: [Float]
    let output: WeightMatrix
    /// RoPE frequencies per pair, computed as ggml does (repeated multiplication by theta_scale).
    let ropeThetaScale: Float

    public static let supportedArchitectures: Set<String> = ["llama"]

    public init(file: GGUFFile) throws {
        self.file = file
        guard let arch = file.architecture else { throw GGUFError.corrupt("general.architecture is missing") }
        guard Self.supportedArchitectures.contains(arch) else {
            throw GGUFError.unsupported("architecture '\(arch)' (this engine runs: \(Self.supportedArchitectures.sorted().joined(separator: ", ")))")
        }
        try file.requireTensorTypes(WeightMatrix.supportedTypes)
        func int(_ key: String, _ fallback: Int? = nil) throws -> Int {
            if let v = file.metadata["\(arch).\(key)"]?.int, v > 0 { return v }
            if let fallback { return fallback }
            throw GGUFError.corrupt("metadata \(arch).\(key) is missing or invalid")
        }
        let embd = try int("embedding_length"), heads = try int("attention.head_count")
        guard embd % heads == 0 else { throw GGUFError.corrupt("embedding_length \(embd) is not a multiple of head_count \(heads)") }
        let kvHeads = try int("attention.head_count_kv", heads)
        guard heads % kvHeads == 0 else { throw GGUFError.corrupt("head_count \(heads) is not a multiple of head_count_kv \(kvHeads)") }
        let headDim = embd / heads
        let vocab = try file.metadata["tokenizer.ggml.tokens"]?.array?.count ?? int("vocab_size")
        if let scaling = file.metadata["\(arch).rope.scaling.type"]?.string, scaling != "none" {
            throw GGUFError.unsupported("rope scaling '\(scaling)'")
        }
        config = LlamaConfig(
            layers: try int("block_count"), embedding: embd, feedForward: try int("feed_forward_length"),
            heads: heads, kvHeads: kvHeads, headDim: headDim, ropeDims: try int("rope.dimension_count", headDim),
            ropeBase: Float(file.metadata["\(arch).rope.freq_base"]?.double ?? 10000),
            rmsEps: Float(file.metadata["\(arch).attention.layer_norm_rms_epsilon"]?.double ?? 1e-5),
            contextLength: try int("context_length", 2048), vocab: vocab)
        guard config.ropeDims <= headDim, config.ropeDims % 2 == 0 else { throw GGUFError.corrupt("rope.dimension_count \(config.ropeDims)") }
        name = file.metadata["general.name"]?.string ?? "llama"
        ropeThetaScale = powf(config.ropeBase, -2.0 / Float(config.ropeDims))

        func matrix(_ name: String, rows: Int, cols: Int) throws -> WeightMatrix {
            guard let t = file.tensors[name] else { throw GGUFError.corrupt("tensor \(name) is missing") }
            guard t.dims.count == 2, t.dims[0] == cols, t.dims[1] == rows else {
                throw GGUFError.corrupt("tensor \(name) has shape \(t.dims), expected [\(cols), \(rows)]")
            }
            guard cols % 32 == 0 else { throw GGUFError.unsupported("tensor \(name): rows of \(cols) are not a multiple of 32") }
            return WeightMatrix(type: t.type, rows: rows, cols: cols, base: file.bytes(of: t).baseAddress!)
        }
        func vector(_ name: String, _ n: Int) throws -> [Float] {
            guard let t = file.tensors[name] else { throw GGUFError.corrupt("tensor \(name) is missing") }
            guard t.elementCount == n, t.type == .f32 || t.type == .f16 else { throw GGUFError.corrupt("tensor \(name) must be \(n) F32/F16 values") }
            var out = [Float](repeating: 0, count: n)
            let m = WeightMatrix(type: t.type, rows: 1, cols: n, base: file.bytes(of: t).baseAddress!)
            out.withUnsafeMutableBufferPointer { m.dequantizeRow(0, into: $0.baseAddress!) }
            return out
        }
        let c = config
        tokenEmbedding = try matrix("token_embd.weight", rows: c.vocab, cols: c.embedding)
        outputNorm = try vector("output_norm.weight", c.embedding)
        output = file.tensors["output.weight"] != nil ? try matrix("output.weight", rows: c.vocab, cols: c.embedding) : tokenEmbedding
        layers = try (0..<c.layers).map { i in
            let p = "blk.\(i)."
            return Layer(
                attnNorm: try vector(p + "attn_norm.weight", c.embedding), ffnNorm: try vector(p + "ffn_norm.weight", c.embedding),
                q: try matrix(p + "attn_q.weight", rows: c.embedding, cols: c.embedding),
                k: try matrix(p + "attn_k.weight", rows: c.kvDim, cols: c.embedding),
                v: try matrix(p + "attn_v.weight", rows: c.kvDim, cols: c.embedding),
                o: try matrix(p + "attn_output.weight", rows: c.embedding, cols: c.embedding),
                gate: try matrix(p + "ffn_gate.weight", rows: c.feedForward, cols: c.embedding),
                up: try matrix(p + "ffn_up.weight", rows: c.feedForward, cols: c.embedding),
                down: try matrix(p + "ffn_down.weight", rows: c.embedding, cols: c.feedForward))
        }
    }

    /// Test hook: sees named intermediate tensors (for comparing with llama.cpp's eval callback).
    nonisolated(unsafe) static var tap: ((String, Int, [Float]) -> Void)?

    public convenience init(path: String) throws { try self.init(file: try GGUFFile(path: path)) }

    public func newCache(reserve: Int = 256) -> KVCache { KVCache(config: config, reserve: reserve) }

    /// Runs `tokens` at positions `cache.count ..< cache.count + tokens.count`, appending to the
    /// cache, and returns the logits of the last token (vocab floats).
    public func forward(_ tokens: [Int32], cache: KVCache) -> [Float] {
        precondition(!tokens.isEmpty)
        let c = config, n = tokens.count, E = c.embedding, KV = c.kvDim, F = c.feedForward
        let start = cache.count
        cache.grow(to: start + n)
        var x = [Float](repeating: 0, count: n * E)
        var xn = x, q = x, attn = x, proj = x
        var k = [Float](repeating: 0, count: n * KV), v = k
        var g = [Float](repeating: 0, count: n * F), u = g
        var scratch = QuantizedRows(rows: 0, cols: 0)

        x.withUnsafeMutableBufferPointer { xp in
            for (t, id) in tokens.enumerated() {
                tokenEmbedding.dequantizeRow(Int(max(0, min(Int32(c.vocab - 1), id))), into: xp.baseAddress! + t * E)
            }
        }
        for (l, layer) in layers.enumerated() {
            rmsNorm(x, layer.attnNorm, rows: n, into: &xn)
            Self.tap?("attn_norm", l, xn)
            xn.withUnsafeBufferPointer { xb in
                q.withUnsafeMutableBufferPointer { layer.q.multiply(xb.baseAddress!, rows: n, into: $0.baseAddress!, scratch: &scratch) }
                k.withUnsafeMutableBufferPointer { layer.k.multiply(xb.baseAddress!, rows: n, into: $0.baseAddress!, scratch: &scratch) }
                v.withUnsafeMutableBufferPointer { layer.v.multiply(xb.baseAddress!, rows: n, into: $0.baseAddress!, scratch: &scratch) }
            }
            rope(&q, heads: c.heads, rows: n, start: start)
            rope(&k, heads: c.kvHeads, rows: n, start: start)
            let kc = cache.keys[l], vc = cache.values[l]
            for i in 0..<(n * KV) {
                kc[start * KV + i] = Float16(k[i])
                vc[start * KV + i] = Float16(v[i])
            }
            attention(q, keys: kc, values: vc, rows: n, start: start, into: &attn)
            Self.tap?("kqv", l, attn)
            attn.withUnsafeBufferPointer { ab in
                proj.withUnsafeMutableBufferPointer { layer.o.multiply(ab.baseAddress!, rows: n, into: $0.baseAddress!, scratch: &scratch) }
            }
            Self.tap?("attn_out", l, proj)
            for i in 0..<(n * E) { x[i] += proj[i] }
            rmsNorm(x, layer.ffnNorm, rows: n, into: &xn)
            Self.tap?("ffn_norm", l, xn)
            xn.withUnsafeBufferPointer { xb in
                g.withUnsafeMutableBufferPointer { layer.gate.multiply(xb.baseAddress!, rows: n, into: $0.baseAddress!, scratch: &scratch) }
                u.withUnsafeMutableBufferPointer { layer.up.multiply(xb.baseAddress!, rows: n, into: $0.baseAddress!, scratch: &scratch) }
            }
            for i in 0..<(n * F) { g[i] = silu(g[i]) * u[i] }
            Self.tap?("ffn_swiglu", l, g)
            g.withUnsafeBufferPointer { gb in
                proj.withUnsafeMutableBufferPointer { layer.down.multiply(gb.baseAddress!, rows: n, into: $0.baseAddress!, scratch: &scratch) }
            }
            Self.tap?("ffn_out", l, proj)
            for i in 0..<(n * E) { x[i] += proj[i] }
            Self.tap?("l_out", l, x)
        }
        cache.count = start + n
        // Only the last position's logits are needed to continue.
        let last = Array(x[((n - 1) * E)...])
        var normed = [Float](repeating: 0, count: E)
        rmsNorm(last, outputNorm, rows: 1, into: &normed)
        var logits = [Float](repeating: 0, count: c.vocab)
        normed.withUnsafeBufferPointer { nb in
            logits.withUnsafeMutableBufferPointer { output.multiply(nb.baseAddress!, rows: 1, into: $0.baseAddress!, scratch: &scratch) }
        }
        return logits
    }

    /// ggml's rms_norm (sum of squares in double) followed by the weight multiply.
    func rmsNorm(_ x: [Float], _ w: [Float], rows: Int, into out: inout [Float]) {
        let E = config.embedding
        for r in 0..<rows {
            var sum: Double = 0
            for i in 0..<E { let v = x[r * E + i]; sum += Double(v * v) }
            let scale = 1 / sqrtf(Float(sum / Double(E)) + config.rmsEps)
            for i in 0..<E { out[r * E + i] = x[r * E + i] * scale * w[i] }
        }
    }

    /// Rotary embedding on adjacent pairs (ggml's "normal" mode, which the GGUF converter's
    /// Q/K permutation expects for llama).
    func rope(_ x: inout [Float], heads: Int, rows: Int, start: Int) {
        let hd = config.headDim, half = config.ropeDims / 2
        var cosT = [Float](repeating: 0, count: half), sinT = cosT
        for r in 0..<rows {
            var theta = Float(start + r)
            for i in 0..<half {
                cosT[i] = cosf(theta)
                sinT[i] = sinf(theta)
                theta *= ropeThetaScale
            }
            for h in 0..<heads {
                let base = (r * heads + h) * hd
                for i in 0..<half {
                    let a = x[base + 2 * i], b = x[base + 2 * i + 1]
                    x[base + 2 * i] = a * cosT[i] - b * sinT[i]
                    x[base + 2 * i + 1] = a * sinT[i] + b * cosT[i]
                }
            }
        }
    }

    /// Causal grouped-query attention for `rows` new positions starting at `start`, over the cache.
    /// Rounds q and the attention weights through Float16 as ggml's F16-cache path does.
    func attention(_ q: [Float], keys: UnsafeMutablePointer<Float16>, values: UnsafeMutablePointer<Float16>, rows: Int, start: Int, into out: inout [Float]) {
        let c = config, hd = c.headDim, KV = c.kvDim, group = c.heads / c.kvHeads
        let scale = 1 / sqrtf(Float(hd))
        let kp = UnsafeSendable(keys), vp = UnsafeSendable(values)
        out.withUnsafeMutableBufferPointer { ob in
        let o = UnsafeSendable(ob.baseAddress!)
        q.withUnsafeBufferPointer { qb in
            let qp = qb.baseAddress!
            Parallel.chunks(rows * c.heads, minChunk: 2) { range in
                var qh = [Float16](repeating: 0, count: hd)
                var scores = [Float](repeating: 0, count: start + rows)
                var acc = [Float](repeating: 0, count: hd)
                for job in range {
                    let t = job / c.heads, h = job % c.heads, kvh = h / group
                    let len = start + t + 1
                    for i in 0..<hd { qh[i] = Float16(qp[(t * c.heads + h) * hd + i]) }
                    var mx = -Float.infinity
                    qh.withUnsafeBufferPointer { qhb in
                        for j in 0..<len {
                            let s = Kernels.dotF16(UnsafeRawPointer(kp.p + j * KV + kvh * hd), qhb.baseAddress!, hd) * scale
                            scores[j] = s
                            mx = max(mx, s)
                        }
                    }
                    // Summed in float per 16 lanes, then in double, as ggml's softmax does.
                    var sum: Double = 0, lane: Float = 0
                    for j in 0..<len {
                        let e = approxExp(scores[j] - mx)
                        scores[j] = e
                        lane += e
                        if j % 16 == 15 { sum += Double(lane); lane = 0 }
                    }
                    sum += Double(lane)
                    let inv = Float(1 / sum)
                    for i in 0..<hd { acc[i] = 0 }
                    for j in 0..<len {
                        let p = Float(Float16(scores[j] * inv))
                        let vrow = vp.p + j * KV + kvh * hd
                        for i in 0..<hd { acc[i] += p * Float(vrow[i]) }
                    }
                    for i in 0..<hd { o.p[(t * c.heads + h) * hd + i] = acc[i] }
                }
            }
        }
        }
    }
}
