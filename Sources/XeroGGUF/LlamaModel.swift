import CXeroKernels
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
    /// Width of the query heads together (Gemma's heads are wider than embedding / heads).
    public var queryDim: Int { heads * headDim }

    // What the architectures after llama change (the defaults are llama's).
    public var architecture: Architecture = .llama
    /// The token embedding is multiplied by this (Gemma: √embedding).
    public var embeddingScale: Float = 1
    /// Rotary embedding on the halves of a head (pairs i, i + d/2: ggml's NEOX mode, Gemma) rather
    /// than on adjacent pairs.
    public var ropeNeox = false
    /// Layers that attend only to the last `slidingWindow` positions (0: none) and their RoPE base.
    public var slidingWindow = 0
    public var slidingLayers: [Bool] = []
    public var ropeBaseSliding: Float = 10000
    /// Gemma scales q before attention (1/√query_pre_attn_scalar) and the softmax by 1; llama
    /// scales the scores by 1/√headDim. nil: llama's way.
    public var queryScale: Float?
    /// GELU-gated feed-forward (ggml's geglu) instead of SwiGLU.
    public var gatedGELU = false
    /// Gemma 2's final logit soft-capping, c·tanh(logit/c) (0: none).
    public var logitSoftcap: Float = 0

    public enum Architecture: String, Sendable { case llama, gemma3 }

    public func isSliding(layer l: Int) -> Bool { slidingWindow > 0 && l < slidingLayers.count && slidingLayers[l] }
    public func ropeBase(layer l: Int) -> Float { isSliding(layer: l) ? ropeBaseSliding : ropeBase }
}

/// The KV state of one sequence: per layer, the roped keys of every position (position-major) and
/// the values transposed (dimension-major, as llama.cpp's non-flash-attention cache), both Float16.
/// Transposed values make each attention output a contiguous dot product over positions. Capacity
/// grows in steps of 64 positions and fresh memory is zeroed, because the attention kernels read
/// whole 16/64-position lanes and multiply the unused tail by zero weights.
public final class KVCache: @unchecked Sendable {
    public let layers: Int, kvDim: Int
    public private(set) var capacity = 0
    /// Positions filled.
    public internal(set) var count = 0
    var keys: [UnsafeMutablePointer<Float16>] = []
    /// values[l][d * capacity + position]
    var values: [UnsafeMutablePointer<Float16>] = []

    public init(config: LlamaConfig, reserve: Int = 256) {
        layers = config.layers
        kvDim = config.kvDim
        grow(to: reserve)
    }

    deinit {
        for p in keys { p.deallocate() }
        for p in values { p.deallocate() }
        Self.account(-bytes)
    }

    /// KV memory held by all live caches of this process (measured by the tests of cancellation).
    public static var liveBytes: Int { liveLock.withLock { live } }
    nonisolated(unsafe) private static var live = 0
    private static let liveLock = NSLock()
    static func account(_ delta: Int) { liveLock.withLock { live += delta } }

    /// Bytes held (what a memory budget counts).
    public var bytes: Int { 2 * layers * capacity * kvDim * MemoryLayout<Float16>.size }

    func grow(to needed: Int) {
        guard needed > capacity else { return }
        let newCap = (max(needed, capacity * 2, 64) + 63) / 64 * 64
        for l in 0..<layers {
            let nk = UnsafeMutablePointer<Float16>.allocate(capacity: newCap * kvDim)
            let nv = UnsafeMutablePointer<Float16>.allocate(capacity: newCap * kvDim)
            nk.initialize(repeating: 0, count: newCap * kvDim)
            nv.initialize(repeating: 0, count: newCap * kvDim)
            if capacity > 0 {
                nk.update(from: keys[l], count: count * kvDim)
                for d in 0..<kvDim { (nv + d * newCap).update(from: values[l] + d * capacity, count: count) }
                keys[l].deallocate()
                values[l].deallocate()
                keys[l] = nk
                values[l] = nv
            } else {
                keys.append(nk)
                values.append(nv)
            }
        }
        Self.account(2 * layers * (newCap - capacity) * kvDim * MemoryLayout<Float16>.size)
        capacity = newCap
    }

    /// Stores position `pos`'s key and value rows for layer `l`.
    @inline(__always)
    func store(layer l: Int, position pos: Int, key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        let k = UnsafeMutableRawPointer(keys[l] + pos * kvDim).assumingMemoryBound(to: UInt16.self)
        let v = UnsafeMutableRawPointer(values[l] + pos).assumingMemoryBound(to: UInt16.self)
        xk_store_kv(key, value, Int32(kvDim), k, v, capacity)
    }

    /// A copy of the first `n` positions (for a prefix cache that hands out its entries).
    public func copy(prefix n: Int) -> KVCache {
        let c = KVCache(layers: layers, kvDim: kvDim, reserve: n)
        let m = min(n, count)
        for l in 0..<layers {
            c.keys[l].update(from: keys[l], count: m * kvDim)
            for d in 0..<kvDim { (c.values[l] + d * c.capacity).update(from: values[l] + d * capacity, count: m) }
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
    /// Owns the repacked copies of the Q4_1 and Q8_0 matrices (layers and output) the kernels read.
    let repacked: RepackedWeights
    /// Set once at load (tests change a field to compare variants of the arithmetic).
    public internal(set) var config: LlamaConfig
    public let name: String

    struct Layer {
        let attnNorm: [Float], ffnNorm: [Float]
        let q: WeightMatrix, k: WeightMatrix, v: WeightMatrix, o: WeightMatrix
        let gate: WeightMatrix, up: WeightMatrix, down: WeightMatrix
        /// Gemma: RMSNorms of each q and k head, and of the attention and feed-forward outputs.
        let qNorm: [Float]?, kNorm: [Float]?, postAttnNorm: [Float]?, postFFNNorm: [Float]?
    }
    let tokenEmbedding: WeightMatrix
    let layers: [Layer]
    let outputNorm: [Float]
    let output: WeightMatrix
    /// RoPE frequency step per pair and layer, computed as ggml does (repeated multiplication by
    /// theta_scale = base^(−2/dims); sliding layers have their own base).
    let ropeThetaScale: [Float]

    public static let supportedArchitectures: Set<String> = ["llama", "gemma3"]

    public init(file: GGUFFile) throws {
        self.file = file
        // The kernels are x86-64 with AVX2, FMA and F16C: refuse a CPU without them here, with a
        // message, rather than die on an illegal instruction at the first token.
        guard xk_cpu_supported() != 0 else {
            throw GGUFError.unsupported("this CPU: the built-in engine needs x86-64 with AVX2, FMA and F16C (2013 or later)")
        }
        guard let arch = file.architecture else { throw GGUFError.corrupt("general.architecture is missing") }
        guard Self.supportedArchitectures.contains(arch), let architecture = LlamaConfig.Architecture(rawValue: arch) else {
            throw GGUFError.unsupported("architecture '\(arch)' (this engine runs: \(Self.supportedArchitectures.sorted().joined(separator: ", ")))")
        }
        try file.requireTensorTypes(WeightMatrix.supportedTypes)
        ScratchMemory.retained
        func int(_ key: String, _ fallback: Int? = nil) throws -> Int {
            if let v = file.metadata["\(arch).\(key)"]?.int, v > 0 { return v }
            if let fallback { return fallback }
            throw GGUFError.corrupt("metadata \(arch).\(key) is missing or invalid")
        }
        let embd = try int("embedding_length"), heads = try int("attention.head_count")
        let kvHeads = try int("attention.head_count_kv", heads)
        guard heads % kvHeads == 0 else { throw GGUFError.corrupt("head_count \(heads) is not a multiple of head_count_kv \(kvHeads)") }
        // Gemma's heads are wider than embedding / heads: attention.key_length says so.
        guard architecture != .llama || embd % heads == 0 else { throw GGUFError.corrupt("embedding_length \(embd) is not a multiple of head_count \(heads)") }
        let headDim = try int("attention.key_length", embd / max(1, heads))
        guard try int("attention.value_length", headDim) == headDim else { throw GGUFError.unsupported("value heads narrower or wider than key heads") }
        // The attention kernels step through a head 64 values at a time (ggml's vec_dot_f16 order).
        guard headDim % 64 == 0 else {
            throw GGUFError.unsupported("head dimension \(headDim) (this engine needs a multiple of 64)")
        }
        let vocab = try file.metadata["tokenizer.ggml.tokens"]?.array?.count ?? int("vocab_size")
        if let scaling = file.metadata["\(arch).rope.scaling.type"]?.string, scaling != "none" {
            throw GGUFError.unsupported("rope scaling '\(scaling)'")
        }
        var config = LlamaConfig(
            layers: try int("block_count"), embedding: embd, feedForward: try int("feed_forward_length"),
            heads: heads, kvHeads: kvHeads, headDim: headDim, ropeDims: try int("rope.dimension_count", headDim),
            ropeBase: Float(file.metadata["\(arch).rope.freq_base"]?.double ?? (architecture == .gemma3 ? 1_000_000 : 10000)),
            rmsEps: Float(file.metadata["\(arch).attention.layer_norm_rms_epsilon"]?.double ?? 1e-5),
            contextLength: try int("context_length", 2048), vocab: vocab)
        config.architecture = architecture
        if architecture == .gemma3 {
            // llama.cpp's gemma3: embedding × √n_embd, NEOX rope, GELU-gated FFN, every 6th layer
            // global (rope base 1M) and the others a sliding window (rope base 10k), q scaled by
            // 1/√head_dim before a softmax of scale 1.
            config.embeddingScale = sqrtf(Float(embd))
            config.ropeNeox = true
            config.gatedGELU = true
            config.queryScale = 1 / sqrtf(Float(headDim))
            if file.metadata["\(arch).attention.sliding_window_pattern"]?.array != nil {
                throw GGUFError.unsupported("a per-layer sliding_window_pattern array")
            }
            config.slidingWindow = file.metadata["\(arch).attention.sliding_window"]?.int ?? 0
            let pattern = file.metadata["\(arch).attention.sliding_window_pattern"]?.int ?? 6
            config.slidingLayers = (0..<config.layers).map { pattern == 0 || $0 % pattern < pattern - 1 }
            config.ropeBaseSliding = Float(file.metadata["\(arch).rope.freq_base_swa"]?.double ?? 10000)
            config.logitSoftcap = Float(file.metadata["\(arch).final_logit_softcapping"]?.double ?? 0)
        }
        self.config = config
        guard config.ropeDims <= headDim, config.ropeDims % 2 == 0 else { throw GGUFError.corrupt("rope.dimension_count \(config.ropeDims)") }
        name = file.metadata["general.name"]?.string ?? arch
        ropeThetaScale = (0..<config.layers).map { powf(config.ropeBase(layer: $0), -2.0 / Float(config.ropeDims)) }

        func matrix(_ name: String, rows: Int, cols: Int) throws -> WeightMatrix {
            guard let t = file.tensors[name] else { throw GGUFError.corrupt("tensor \(name) is missing") }
            guard t.dims.count == 2, t.dims[0] == cols, t.dims[1] == rows else {
                throw GGUFError.corrupt("tensor \(name) has shape \(t.dims), expected [\(cols), \(rows)]")
            }
            guard WeightMatrix.canHold(type: t.type, cols: cols) else {
                throw GGUFError.unsupported("tensor \(name): rows of \(cols) are not a multiple of its \(t.type) blocks")
            }
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
        func optionalVector(_ name: String, _ n: Int) throws -> [Float]? {
            architecture == .gemma3 ? try vector(name, n) : nil
        }
        let c = config
        tokenEmbedding = try matrix("token_embd.weight", rows: c.vocab, cols: c.embedding)
        outputNorm = try vector("output_norm.weight", c.embedding)
        let store = RepackedWeights()
        func layerMatrix(_ name: String, rows: Int, cols: Int) throws -> WeightMatrix {
            store.repacked(try matrix(name, rows: rows, cols: cols), mapped: true)
        }
        // Tied, the output is the embedding's rows: lookups read the file's layout (`base`).
        output = store.repacked(file.tensors["output.weight"] != nil ? try matrix("output.weight", rows: c.vocab, cols: c.embedding) : tokenEmbedding,
                                mapped: true)
        let layers = try (0..<c.layers).map { i in
            let p = "blk.\(i)."
            return Layer(
                attnNorm: try vector(p + "attn_norm.weight", c.embedding), ffnNorm: try vector(p + "ffn_norm.weight", c.embedding),
                q: try layerMatrix(p + "attn_q.weight", rows: c.queryDim, cols: c.embedding),
                k: try layerMatrix(p + "attn_k.weight", rows: c.kvDim, cols: c.embedding),
                v: try layerMatrix(p + "attn_v.weight", rows: c.kvDim, cols: c.embedding),
                o: try layerMatrix(p + "attn_output.weight", rows: c.embedding, cols: c.queryDim),
                gate: try layerMatrix(p + "ffn_gate.weight", rows: c.feedForward, cols: c.embedding),
                up: try layerMatrix(p + "ffn_up.weight", rows: c.feedForward, cols: c.embedding),
                down: try layerMatrix(p + "ffn_down.weight", rows: c.embedding, cols: c.feedForward),
                qNorm: try optionalVector(p + "attn_q_norm.weight", c.headDim), kNorm: try optionalVector(p + "attn_k_norm.weight", c.headDim),
                postAttnNorm: try optionalVector(p + "post_attention_norm.weight", c.embedding),
                postFFNNorm: try optionalVector(p + "post_ffw_norm.weight", c.embedding))
        }
        self.layers = layers
        repacked = store
    }

    /// Weight bytes one decoding step streams from memory: every layer matrix and the output
    /// matrix (norms and the one embedding row are noise). The bandwidth roofline of decoding is
    /// memory bandwidth / this (bench/roofline.sh).
    public var weightBytesPerToken: Int {
        decodeProducts.joined().reduce(0) { $0 + $1.rows * $1.rowBytes }
    }

    /// The products one decoding step runs, in order, each group in one parallel loop (q, k, v;
    /// o; gate, up; down) — layer by layer, then the output matrix (for benchmarks).
    public var decodeProducts: [[WeightMatrix]] {
        layers.flatMap { [[$0.q, $0.k, $0.v], [$0.o], [$0.gate, $0.up], [$0.down]] } + [[output]]
    }

    /// Test hook: sees named intermediate tensors (for comparing with llama.cpp's eval callback).
    nonisolated(unsafe) static var tap: ((String, Int, [Float]) -> Void)?

    public convenience init(path: String) throws { try self.init(file: try GGUFFile(path: path)) }

    public func newCache(reserve: Int = 256) -> KVCache { KVCache(config: config, reserve: reserve) }

    /// Runs `tokens` at positions `cache.count ..< cache.count + tokens.count`, appending to the
    /// cache, and returns the logits of the last token (vocab floats).
    public func forward(_ tokens: [Int32], cache: KVCache) -> [Float] {
        forward([(tokens, cache)])[0]
    }

    /// Several sequences in one pass (continuous batching): each segment's tokens continue its own
    /// cache, every weight matrix is read once for all rows, and the last-token logits of each
    /// segment come back in order. Row results do not depend on what else is in the batch — a
    /// segment of one token gets single-token attention arithmetic, a longer one the batch
    /// arithmetic — so batching never changes a sequence's output.
    /// Segments listed in `allPositions` get the logits of every position (their tokens' count ×
    /// vocab floats), for scoring a prompt (`echo` with `logprobs`).
    public func forward(_ segments: [(tokens: [Int32], cache: KVCache)], allPositions: Set<Int> = []) -> [[Float]] {
        precondition(!segments.isEmpty && segments.allSatisfy { !$0.tokens.isEmpty })
        let c = config, E = c.embedding, QD = c.queryDim, KV = c.kvDim, F = c.feedForward
        let n = segments.reduce(0) { $0 + $1.tokens.count }
        var offsets: [Int] = [], starts: [Int] = [], positions: [Int] = []
        for (tokens, cache) in segments {
            offsets.append(positions.count)
            starts.append(cache.count)
            cache.grow(to: cache.count + tokens.count)
            positions += (0..<tokens.count).map { cache.count + $0 }
        }
        var x = [Float](repeating: 0, count: n * E)
        var xn = x, proj = x
        var q = [Float](repeating: 0, count: n * QD), attn = q
        var k = [Float](repeating: 0, count: n * KV), v = k
        var g = [Float](repeating: 0, count: n * F), u = g

        x.withUnsafeMutableBufferPointer { xp in
            for (s, seg) in segments.enumerated() {
                for (t, id) in seg.tokens.enumerated() {
                    let row = xp.baseAddress! + (offsets[s] + t) * E
                    tokenEmbedding.dequantizeRow(Int(max(0, min(Int32(c.vocab - 1), id))), into: row)
                    if c.embeddingScale != 1 { for i in 0..<E { row[i] *= c.embeddingScale } }
                }
            }
        }
        for (l, layer) in layers.enumerated() {
            normed(x, layer.attnNorm, rows: n, into: &xn, for: [layer.q, layer.k, layer.v]) { a in
                q.withUnsafeMutableBufferPointer { qb in
                    k.withUnsafeMutableBufferPointer { kb in
                        v.withUnsafeMutableBufferPointer { vb in
                            WeightMatrix.multiply([(layer.q, qb.baseAddress!), (layer.k, kb.baseAddress!), (layer.v, vb.baseAddress!)], a)
                        }
                    }
                }
            }
            Self.tap?("attn_norm", l, xn)
            // Gemma normalises every head of q and k on its own (rows of headDim).
            if let w = layer.qNorm { q = rmsNormed(q, w, rows: n * c.heads) }
            if let w = layer.kNorm { k = rmsNormed(k, w, rows: n * c.kvHeads) }
            if layer.qNorm != nil { Self.tap?("Qcur_normed", l, q); Self.tap?("Kcur_normed", l, k) }
            rope(&q, heads: c.heads, &k, heads: c.kvHeads, positions: positions, layer: l)
            Self.tap?("Qcur", l, q); Self.tap?("Kcur", l, k); Self.tap?("Vcur", l, v)
            if let scale = c.queryScale { for i in q.indices { q[i] *= scale } }
            var spans: [AttentionSpan] = []
            for (s, seg) in segments.enumerated() {
                k.withUnsafeBufferPointer { kb in
                    v.withUnsafeBufferPointer { vb in
                        for t in 0..<seg.tokens.count {
                            let row = offsets[s] + t
                            seg.cache.store(layer: l, position: starts[s] + t, key: kb.baseAddress! + row * KV, value: vb.baseAddress! + row * KV)
                        }
                    }
                }
                spans.append(AttentionSpan(rowOffset: offsets[s], keys: seg.cache.keys[l], values: seg.cache.values[l],
                                           capacity: seg.cache.capacity, rows: seg.tokens.count, start: starts[s]))
            }
            attention(q, spans: spans, window: c.isSliding(layer: l) ? c.slidingWindow : 0, into: &attn)
            Self.tap?("kqv", l, attn)
            attn.withUnsafeBufferPointer { ab in
                proj.withUnsafeMutableBufferPointer { layer.o.multiply(ab.baseAddress!, rows: n, into: $0.baseAddress!) }
            }
            Self.tap?("attn_out", l, proj)
            if let w = layer.postAttnNorm { proj = rmsNormed(proj, w, rows: n); Self.tap?("attn_post_norm", l, proj) }
            Self.addInPlace(&x, proj)
            Self.tap?("sa_out", l, x)
            normed(x, layer.ffnNorm, rows: n, into: &xn, for: [layer.gate, layer.up]) { a in
                g.withUnsafeMutableBufferPointer { gb in
                    u.withUnsafeMutableBufferPointer { ub in
                        WeightMatrix.multiply([(layer.gate, gb.baseAddress!), (layer.up, ub.baseAddress!)], a)
                    }
                }
            }
            Self.tap?("ffn_norm", l, xn)
            Self.tap?("ffn_gate", l, g); Self.tap?("ffn_up", l, u)
            // The gating (g = act(g)·u) is done row by row by the loop that quantizes g for down.
            let gelu = c.gatedGELU
            g.withUnsafeMutableBufferPointer { gb in
                u.withUnsafeBufferPointer { ub in
                    let (gp, up) = (gb.baseAddress!, ub.baseAddress!)
                    let a = QuantizedRows(gp, rows: n, cols: F, for: [layer.down]) { rows in
                        let (g0, u0, count) = (gp + rows.lowerBound * F, up + rows.lowerBound * F, Int32(rows.count * F))
                        if gelu { xk_geglu(g0, u0, count) } else { xk_swiglu(g0, u0, count) }
                    }
                    proj.withUnsafeMutableBufferPointer { layer.down.multiply(a, into: $0.baseAddress!) }
                }
            }
            Self.tap?(gelu ? "ffn_geglu" : "ffn_swiglu", l, g)
            Self.tap?("ffn_out", l, proj)
            if let w = layer.postFFNNorm { proj = rmsNormed(proj, w, rows: n); Self.tap?("ffn_post_norm", l, proj) }
            Self.addInPlace(&x, proj)
            Self.tap?("l_out", l, x)
        }
        for (s, seg) in segments.enumerated() { seg.cache.count = starts[s] + seg.tokens.count }
        // Only each segment's last position is needed to continue (all of them for a scored prompt).
        var rows: [Int] = [], firstRow: [Int] = []
        for s in segments.indices {
            firstRow.append(rows.count)
            let count = segments[s].tokens.count
            if allPositions.contains(s) { rows += (0..<count).map { offsets[s] + $0 } } else { rows.append(offsets[s] + count - 1) }
        }
        let m = rows.count
        var last = [Float](repeating: 0, count: m * E)
        for (r, row) in rows.enumerated() {
            for i in 0..<E { last[r * E + i] = x[row * E + i] }
        }
        let outputNormed = rmsNormed(last, outputNorm, rows: m)
        // Every logit is written by the product: no zero-fill first (1.5 MB a step at 8 sequences).
        var logits = [Float](unsafeUninitializedCapacity: m * c.vocab) { buffer, initialized in
            outputNormed.withUnsafeBufferPointer { output.multiply($0.baseAddress!, rows: m, into: buffer.baseAddress!) }
            initialized = m * c.vocab
        }
        if c.logitSoftcap > 0 {
            // ggml: scale by 1/c, tanh, scale by c.
            let inv = 1 / c.logitSoftcap
            for i in logits.indices { logits[i] = tanhf(logits[i] * inv) * c.logitSoftcap }
        }
        Self.tap?("result_norm", 0, outputNormed); Self.tap?("result_output", 0, logits)
        return segments.indices.map { s in
            let first = firstRow[s], count = allPositions.contains(s) ? segments[s].tokens.count : 1
            return Array(logits[(first * c.vocab)..<((first + count) * c.vocab)])
        }
    }

    /// x += y, elementwise (the residual connections), through pointers so it vectorises.
    static func addInPlace(_ x: inout [Float], _ y: [Float]) {
        precondition(x.count == y.count)
        x.withUnsafeMutableBufferPointer { xb in
            y.withUnsafeBufferPointer { yb in
                let (xp, yp) = (xb.baseAddress!, yb.baseAddress!)
                for i in 0..<xb.count { xp[i] += yp[i] }
            }
        }
    }

    /// ggml's rms_norm (sum of squares in double) followed by the weight multiply, over rows of
    /// `w.count` values (the embedding, or one head for Gemma's q/k norms).
    func rmsNorm(_ x: [Float], _ w: [Float], rows: Int, into out: inout [Float]) {
        withRowNorm(x, w, into: &out) { _, norm in
            // Rows are independent: a prompt's are spread over the pool (one row stays inline).
            Parallel.chunks(rows, minChunk: max(1, 16_384 / w.count), norm)
        }
    }

    /// rmsNorm(x, w) into `out` and quantized for `matrices`, row by row in one parallel loop (the
    /// norm was a serial step before the quantizing pass, the pool's helpers idle meanwhile).
    func normed(_ x: [Float], _ w: [Float], rows: Int, into out: inout [Float], for matrices: [WeightMatrix],
                _ body: (QuantizedRows) -> Void) {
        withRowNorm(x, w, into: &out) { o, norm in
            // `preparing` is optional, hence escaping in type; QuantizedRows calls it only in its init.
            withoutActuallyEscaping(norm) { norm in
                body(QuantizedRows(o, rows: rows, cols: w.count, for: matrices, preparing: norm))
            }
        }
    }

    /// Calls `body` with `out`'s storage and the norm of a range of rows (x's into out's).
    private func withRowNorm(_ x: [Float], _ w: [Float], into out: inout [Float],
                             _ body: (UnsafeMutablePointer<Float>, (Range<Int>) -> Void) -> Void) {
        let E = w.count, eps = config.rmsEps
        x.withUnsafeBufferPointer { xb in
            w.withUnsafeBufferPointer { wb in
                out.withUnsafeMutableBufferPointer { ob in
                    let (x, w, o) = (xb.baseAddress!, wb.baseAddress!, ob.baseAddress!)
                    body(o) { range in
                        xk_rms_norm(x + range.lowerBound * E, w, Int32(range.count), Int32(E), eps, o + range.lowerBound * E)
                    }
                }
            }
        }
    }

    func rmsNormed(_ x: [Float], _ w: [Float], rows: Int) -> [Float] {
        var out = [Float](repeating: 0, count: rows * w.count)
        rmsNorm(x, w, rows: rows, into: &out)
        return out
    }

    /// Rotary embedding as ggml's rope: adjacent pairs (2i, 2i+1) in its "normal" mode, which the
    /// GGUF converter's Q/K permutation expects for llama, or the halves (i, i + dims/2) in NEOX
    /// mode (Gemma). The FMA shape is what GCC makes of ggml's rotate_pairs.
    /// q and k of the same positions share one cos/sin table per position.
    func rope(_ q: inout [Float], heads qHeads: Int, _ k: inout [Float], heads kHeads: Int, positions: [Int], layer: Int) {
        let hd = config.headDim, half = config.ropeDims / 2
        let (step, neox) = (ropeThetaScale[layer], config.ropeNeox)
        var cosT = [Float](repeating: 0, count: half), sinT = cosT
        // Through pointers: bounds-checked array accesses made this the main thread's largest
        // serial step at 8 sequences (1.4 % of a batched run's samples, the helper idle meanwhile).
        func rotate(_ x: UnsafeMutablePointer<Float>, row r: Int, heads: Int, _ c: UnsafePointer<Float>, _ s: UnsafePointer<Float>) {
            for h in 0..<heads {
                let base = x + (r * heads + h) * hd
                for i in 0..<half {
                    let (i0, i1) = neox ? (i, i + half) : (2 * i, 2 * i + 1)
                    let a = base[i0], b = base[i1]
                    base[i0] = (-(b * s[i])).addingProduct(a, c[i])
                    base[i1] = (b * c[i]).addingProduct(a, s[i])
                }
            }
        }
        q.withUnsafeMutableBufferPointer { qb in
            k.withUnsafeMutableBufferPointer { kb in
                for (r, position) in positions.enumerated() {
                    var theta = Float(position)
                    for i in 0..<half {
                        cosT[i] = cosf(theta)
                        sinT[i] = sinf(theta)
                        theta *= step
                    }
                    cosT.withUnsafeBufferPointer { cb in
                        sinT.withUnsafeBufferPointer { sb in
                            rotate(qb.baseAddress!, row: r, heads: qHeads, cb.baseAddress!, sb.baseAddress!)
                            rotate(kb.baseAddress!, row: r, heads: kHeads, cb.baseAddress!, sb.baseAddress!)
                        }
                    }
                }
            }
        }
    }

    /// One segment's share of a layer's attention: its rows of q and out, its cache, and the
    /// position its rows start at.
    struct AttentionSpan {
        let rowOffset: Int
        let keys: UnsafeMutablePointer<Float16>, values: UnsafeMutablePointer<Float16>
        let capacity: Int, rows: Int, start: Int
    }

    /// Causal grouped-query attention for each span's `rows` new positions from its `start`, over its cache.
    /// Mirrors ggml's F16-KV-cache arithmetic so results are bit-identical to llama.cpp: q and the
    /// attention weights are rounded to Float16, exponentials are ggml's (`exp8` in C), and every dot
    /// product accumulates in the lane order of the kernel llama.cpp picks — 16-lane tiles when a
    /// batch has several tokens (its tinyBLAS path), four 16-lane accumulators over 64-element
    /// steps for a single token (its vec_dot_f16); the dot products are the C kernels'
    /// `xk_attention_scores` / `xk_attention_values`.
    /// `window` > 0: each query sees only the last `window` positions (Gemma's sliding layers; the
    /// ones before get weight 0, as ggml's −∞ mask gives them).
    /// Every segment of a batch goes in one parallel loop over (segment, row, head): a batch of
    /// decoding sequences enters the pool once per layer, not once per sequence.
    func attention(_ q: [Float], spans: [AttentionSpan], window: Int, into out: inout [Float]) {
        let c = config, hd = c.headDim, KV = c.kvDim, group = c.heads / c.kvHeads
        let scale: Float = c.queryScale != nil ? 1 : 1 / sqrtf(Float(hd))
        var firstJob = [0]
        for span in spans { firstJob.append(firstJob.last! + span.rows * c.heads) }
        let jobs = firstJob.last!
        let maxPadded = spans.map { ($0.start + $0.rows + 63) / 64 * 64 }.max() ?? 64
        out.withUnsafeMutableBufferPointer { ob in
        q.withUnsafeBufferPointer { qb in
            let (o, qp) = (ob.baseAddress!, qb.baseAddress!)
            // A job's cost grows with its position (causal): jobs are taken first-and-last in turn
            // (0, N−1, 1, N−2, …), so the threads' contiguous ranges cost alike.
            Parallel.chunks(jobs, minChunk: 2) { range in
                var qh = [Float16](repeating: 0, count: hd)
                var scores = [Float](repeating: 0, count: maxPadded)
                var probs = [UInt16](repeating: 0, count: maxPadded)  // Float16 bits
                var scratch = [Float](repeating: 0, count: max(maxPadded, hd))
                var s = 0
                for i in range {
                    let job = i % 2 == 0 ? i / 2 : jobs - 1 - i / 2
                    while job < firstJob[s] { s -= 1 }
                    while job >= firstJob[s + 1] { s += 1 }
                    let span = spans[s], local = job - firstJob[s]
                    let t = local / c.heads, h = local % c.heads, kvh = h / group
                    let row = span.rowOffset + t
                    let len = span.start + t + 1
                    let tiled = span.rows >= 2
                    let padded = (span.start + span.rows + 63) / 64 * 64
                    for i in 0..<hd { qh[i] = Float16(qp[(row * c.heads + h) * hd + i]) }
                    qh.withUnsafeBufferPointer { qhb in
                        xk_attention_scores(UnsafeRawPointer(span.keys).assumingMemoryBound(to: UInt16.self) + kvh * hd, KV, Int32(len),
                                            UnsafeRawPointer(qhb.baseAddress!).assumingMemoryBound(to: UInt16.self), Int32(hd),
                                            tiled ? 1 : 0, scale, &scratch, &scores)
                    }
                    if window > 0 { for j in 0..<max(0, len - window) { scores[j] = -.infinity } }
                    xk_softmax_f16(&scores, Int32(len), Int32(padded), &probs)
                    // Beyond `len` the weights are zero and the cache holds zeros or finite values.
                    let n = tiled ? (len + 15) / 16 * 16 : padded
                    xk_attention_values(UnsafeRawPointer(span.values).assumingMemoryBound(to: UInt16.self) + kvh * hd * span.capacity, span.capacity,
                                        Int32(hd), probs, Int32(n), tiled ? 1 : 0, &scratch, o + (row * c.heads + h) * hd)
                }
            }
        }
        }
    }
}
