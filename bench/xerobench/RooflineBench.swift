import Foundation
import XeroGGUF

/// What decoding could reach and what it does: the machine's read bandwidth with the engine's own
/// thread pool, the weight bytes one token streams, single-stream decode as a fraction of
/// bandwidth / bytes, and decode throughput when B sequences share each forward pass.
enum RooflineBench {
    /// Reads a 1 GiB buffer (far beyond the caches) with every pool thread, 64-byte loads; best of 5.
    static func bandwidth() -> Double {
        let bytes = 1 << 30
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { buffer.deallocate() }
        memset(buffer, 1, bytes)
        let lanes = bytes / 64
        var best = 0.0
        for _ in 0..<5 {
            var sums = [UInt32](repeating: 0, count: Parallel.threads)
            let t0 = DispatchTime.now().uptimeNanoseconds
            sums.withUnsafeMutableBufferPointer { out in
                let out = out.baseAddress!
                Parallel.chunks(lanes, minChunk: 1 << 16) { range in
                    var acc = SIMD16<UInt32>()
                    var i = range.lowerBound
                    while i + 4 <= range.upperBound {
                        acc &+= buffer.load(fromByteOffset: i * 64, as: SIMD16<UInt32>.self)
                        acc &+= buffer.load(fromByteOffset: (i + 1) * 64, as: SIMD16<UInt32>.self)
                        acc &+= buffer.load(fromByteOffset: (i + 2) * 64, as: SIMD16<UInt32>.self)
                        acc &+= buffer.load(fromByteOffset: (i + 3) * 64, as: SIMD16<UInt32>.self)
                        i += 4
                    }
                    while i < range.upperBound { acc &+= buffer.load(fromByteOffset: i * 64, as: SIMD16<UInt32>.self); i += 1 }
                    out[range.lowerBound * Parallel.threads / lanes] = acc.wrappedSum()
                }
            }
            let s = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            precondition(sums.reduce(0, &+) != 7)   // keeps the reads
            best = max(best, Double(bytes) / s / 1e9)
        }
        return best
    }

    /// Seconds one decoding step's matrix products take with their weights in cache (one
    /// activation row, the engine's own parallel loops): the ceiling the kernels set, whatever the
    /// memory does. Each distinct product group is timed warm, best of 5; a large matrix (the
    /// output) is timed on its first rows, which fit in L2, and scaled to its height.
    static func productSeconds(_ model: LlamaModel) -> Double {
        var cost: [String: Double] = [:]
        var total = 0.0
        for group in model.decodeProducts {
            let key = group.map { "\($0.type)/\($0.rows)/\($0.cols)" }.joined(separator: ",")
            if let c = cost[key] { total += c; continue }
            let rows = group.map(\.rows).reduce(0, +)
            let fits = 1 << 19   // bytes a thread keeps in L2 with room to spare
            let bytes = group.map { $0.rows * $0.rowBytes }.reduce(0, +)
            let scale = bytes > Parallel.threads * fits ? Double(bytes) / Double(Parallel.threads * fits) : 1
            let timed = group.map { m in
                scale == 1 ? m : m.firstRows(max(4, Int(Double(m.rows) / scale) / 4 * 4))
            }
            let cols = group[0].cols
            let x = (0..<cols).map { _ in Float.random(in: -1...1) }
            let a = x.withUnsafeBufferPointer { QuantizedRows($0.baseAddress!, rows: 1, cols: cols, for: timed) }
            var outs = timed.map { [Float](repeating: 0, count: $0.rows) }
            let reps = 50
            var best = Double.infinity
            for _ in 0..<5 {
                let t0 = DispatchTime.now().uptimeNanoseconds
                for _ in 0..<reps {
                    outs.withUnsafeMutableBufferPointer { o in
                        let ptrs = (0..<o.count).map { i in o[i].withUnsafeMutableBufferPointer { $0.baseAddress! } }
                        WeightMatrix.multiply(Array(zip(timed, ptrs)), a)
                    }
                }
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 / Double(reps))
            }
            let c = best * Double(rows) / Double(timed.map(\.rows).reduce(0, +))
            cost[key] = c
            total += c
        }
        return total
    }

    /// Decode against both ceilings: memory (bandwidth / weight bytes a token) and compute (the
    /// products with their weights in cache). On this VM the probe has read 29–65 GB/s within one
    /// hour while decoding stayed at 240–280 tok/s, so the fraction of the bandwidth roofline alone
    /// says more about the VM's minute than about decoding; `ceiling_fraction` is against the lower
    /// of the two.
    static func roofline(path: String, decodeTokens: Int = 128) throws {
        let gbs = bandwidth()
        let model = try LlamaModel(path: path)
        let bytes = model.weightBytesPerToken
        let tg = (0..<3).map { _ in Xerobench.decodeRate(model, tokens: decodeTokens) }.max()!
        let roof = gbs * 1e9 / Double(bytes)
        let compute = 1 / productSeconds(model)
        print(String(format: #"{"mode":"roofline","threads":%d,"read_gb_s":%.1f,"weight_mb_per_token":%.1f,"roofline_tok_s":%.1f,"tg_tok_s":%.1f,"achieved_gb_s":%.1f,"fraction":%.2f,"compute_tok_s":%.1f,"ceiling_fraction":%.2f}"#,
                     Parallel.threads, gbs, Double(bytes) / 1e6, roof, tg, tg * Double(bytes) / 1e9, tg / roof, compute, tg / min(roof, compute)))
    }

    /// B sequences (32-token prompts) decoding together, one token each per forward pass: the
    /// engine's continuous batching without the platform around it.
    static func batchedDecode(path: String, sizes: [Int], steps: Int = 64) throws {
        let model = try LlamaModel(path: path)
        for b in sizes {
            let caches = (0..<b).map { s -> KVCache in
                let c = model.newCache(reserve: 32 + steps + 1)
                _ = model.forward((0..<32).map { Int32(100 + s * 32 + $0) }, cache: c)
                return c
            }
            var tokens = [Int32](repeating: 1, count: b)
            let t0 = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<steps {
                let outs = model.forward(zip(tokens, caches).map { ([$0], $1) })
                tokens = outs.map(Xerobench.greedyToken)
            }
            let s = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            print(String(format: #"{"mode":"gguf-batch","sequences":%d,"steps":%d,"tokens_per_s":%.1f,"step_ms":%.2f}"#,
                         b, steps, Double(b * steps) / s, s * 1000 / Double(steps)))
        }
    }
}
