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

    static func roofline(path: String, decodeTokens: Int = 128) throws {
        let gbs = bandwidth()
        let model = try LlamaModel(path: path)
        let bytes = model.weightBytesPerToken
        let tg = (0..<3).map { _ in Xerobench.decodeRate(model, tokens: decodeTokens) }.max()!
        let roof = gbs * 1e9 / Double(bytes)
        print(String(format: #"{"mode":"roofline","threads":%d,"read_gb_s":%.1f,"weight_mb_per_token":%.1f,"roofline_tok_s":%.1f,"tg_tok_s":%.1f,"achieved_gb_s":%.1f,"fraction":%.2f}"#,
                     Parallel.threads, gbs, Double(bytes) / 1e6, roof, tg, tg * Double(bytes) / 1e9, tg / roof))
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
