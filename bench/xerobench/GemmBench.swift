import CXeroKernels
import Foundation
import XeroGGUF

/// One thread's quantized matrix product (`xk_gemm`, on the path this CPU takes: VNNI or AVX2)
/// at 1, 4, 8 and 16 activation rows, on SmolLM2's and Gemma's block types and shapes: GMAC/s per
/// core, best of 5 (issue 19). Random weights with sane block scales; the weights stay in cache
/// except for the 49,152-row output matrix.
///   xerobench gemm
enum GemmBench {
    struct Shape { let name: String; let type: xk_type; let blockBytes: Int; let rows: Int; let cols: Int }

    static func run() {
        let shapes = [
            Shape(name: "q4_1", type: XK_Q4_1, blockBytes: 20, rows: 1536, cols: 576),
            Shape(name: "q4_1", type: XK_Q4_1, blockBytes: 20, rows: 576, cols: 1536),
            Shape(name: "q4_1x4", type: XK_Q4_1X4, blockBytes: 20, rows: 1536, cols: 576),
            Shape(name: "q4_1x4", type: XK_Q4_1X4, blockBytes: 20, rows: 576, cols: 1536),
            Shape(name: "q8_0", type: XK_Q8_0, blockBytes: 34, rows: 49152, cols: 576),
            Shape(name: "q8_0x4", type: XK_Q8_0X4, blockBytes: 34, rows: 49152, cols: 576),
            Shape(name: "q8_0", type: XK_Q8_0, blockBytes: 34, rows: 2048, cols: 576),
            Shape(name: "q8_0x4", type: XK_Q8_0X4, blockBytes: 34, rows: 2048, cols: 576),
            Shape(name: "q5_0", type: XK_Q5_0, blockBytes: 22, rows: 2048, cols: 640),
            Shape(name: "q4_0", type: XK_Q4_0, blockBytes: 18, rows: 1536, cols: 576),
        ]
        var rng = SystemRandomNumberGenerator()
        for s in shapes {
            let nb = s.cols / 32, rowBytes = nb * s.blockBytes
            var w = (0..<(rowBytes * s.rows)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            for block in stride(from: 0, to: w.count, by: s.blockBytes) {
                // d (and Q4_1's m) as Float16 of a sane size.
                let d = Float16(Float.random(in: 0.001...0.02, using: &rng)).bitPattern
                w[block] = UInt8(d & 0xFF); w[block + 1] = UInt8(d >> 8)
                if s.type == XK_Q4_1 || s.type == XK_Q4_1X4 {
                    let m = Float16(-Float.random(in: 0.01...0.1, using: &rng)).bitPattern
                    w[block + 2] = UInt8(m & 0xFF); w[block + 3] = UInt8(m >> 8)
                }
            }
            if s.type == XK_Q4_1X4 || s.type == XK_Q8_0X4 {
                // The same random rows in the repacked layout the model loads them into.
                let rows = w
                w.withUnsafeMutableBytes { dst in rows.withUnsafeBytes { xk_repack_x4(Int32(s.type == XK_Q4_1X4 ? XK_Q4_1.rawValue : XK_Q8_0.rawValue), $0.baseAddress!, rowBytes, Int32(s.rows), dst.baseAddress!) } }
            }
            for n in [1, 2, 3, 4, 8, 16] {
                let x = (0..<(n * s.cols)).map { _ in Float.random(in: -1...1, using: &rng) }
                let a = x.withUnsafeBufferPointer { QuantizedRows($0.baseAddress!, rows: n, cols: s.cols, withF16: false) }
                var out = [Float](repeating: 0, count: n * s.rows)
                let macs = Double(s.rows * s.cols * n)
                let reps = max(3, Int(2e9 / macs))
                var best = Double.infinity
                for _ in 0..<5 {
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    w.withUnsafeBytes { wb in
                        a.qs.withUnsafeBufferPointer { qs in a.d.withUnsafeBufferPointer { d in a.s.withUnsafeBufferPointer { sums in
                            out.withUnsafeMutableBufferPointer { o in
                                for _ in 0..<reps {
                                    xk_gemm(Int32(s.type.rawValue), wb.baseAddress!, rowBytes, 0, Int32(s.rows), qs.baseAddress!, d.baseAddress!,
                                            sums.baseAddress!, Int32(n), Int32(s.cols), o.baseAddress!, Int32(s.rows))
                                }
                            }
                        } } }
                    }
                    best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 / Double(reps))
                }
                print(String(format: #"{"mode":"gemm","path":"%@","type":"%@","rows":%d,"cols":%d,"n":%d,"ms":%.4f,"gmac_per_s":%.1f}"#,
                             xk_uses_vnni() != 0 ? "vnni" : "avx2", s.name, s.rows, s.cols, n, best * 1e3, macs / best / 1e9))
            }
        }
    }
}
