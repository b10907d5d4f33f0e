import CXeroKernels
import Foundation
import XCTest
import XeroCore
@testable import XeroGGUF

/// The C matrix kernels against a plain scalar statement of llama.cpp's x86 arithmetic (eight
/// float lanes, lane k = the exact integer dot of elements 4k…4k+3, one fused multiply-add per
/// block, ggml's horizontal-sum order, Q4_1's separate `summs`). Bit-for-bit, on both the VNNI and
/// the AVX2 path, for shapes that exercise every register tile and its edges.
final class KernelTests: XCTestCase {
    struct Case { let type: GGUFFile.TensorType; let rows: Int; let cols: Int; let n: Int }

    func testEveryPathAndTileMatchesTheScalarStatementBitForBit() {
        let cases = [
            Case(type: .q4_1, rows: 13, cols: 96, n: 7), Case(type: .q4_1, rows: 64, cols: 576, n: 1),
            Case(type: .q4_1, rows: 40, cols: 64, n: 37), Case(type: .q4_0, rows: 11, cols: 128, n: 6),
            Case(type: .q4_0, rows: 8, cols: 32, n: 1), Case(type: .q8_0, rows: 9, cols: 160, n: 5),
            Case(type: .q8_0, rows: 4, cols: 64, n: 17), Case(type: .q5_0, rows: 13, cols: 96, n: 7),
            Case(type: .q5_0, rows: 8, cols: 32, n: 1), Case(type: .q5_0, rows: 6, cols: 256, n: 37),
            // Eight activation rows with weight rows in threes, twos and ones (VNNI), then a group of four.
            Case(type: .q4_1, rows: 13, cols: 96, n: 12), Case(type: .q4_0, rows: 7, cols: 128, n: 9),
            Case(type: .q8_0, rows: 5, cols: 160, n: 8), Case(type: .q5_0, rows: 10, cols: 64, n: 16),
            // One activation row (decoding), Q8_0 as the output matrix is.
            Case(type: .q8_0, rows: 12, cols: 576, n: 1),
        ]
        var rng = SplitMix64(seed: 7)
        for c in cases {
            let weights = Self.randomWeights(c.type, rows: c.rows, cols: c.cols, &rng)
            let x = (0..<(c.n * c.cols)).map { _ in Float(Double(rng.next() % 20_001) / 1_000 - 10) }
            let a = x.withUnsafeBufferPointer { QuantizedRows($0.baseAddress!, rows: c.n, cols: c.cols, withF16: false) }
            let expected = weights.withUnsafeBytes { w in
                (0..<c.n).flatMap { t in (0..<c.rows).map { r in Self.reference(c.type, w.baseAddress! + r * (w.count / c.rows), a, t) } }
            }
            Self.assertProductsOnEveryPath(c, weights, a, expected)
        }
    }

    /// Q4_1 and Q8_0 repacked four rows at a time (`RepackedWeights`): every tile on both paths
    /// gives the scalar statement's bits on the repacked records — one to three activation rows
    /// (VNNI's own kernels), and the batched tiles (5, 8, 12 and 37 rows: the 4 × 4, 3 × 8 and
    /// remainder tiles) — for whole products and for a row range.
    func testRepackedRowsMatchTheScalarStatementBitForBit() {
        var rng = SplitMix64(seed: 11)
        for type in [GGUFFile.TensorType.q4_1, .q8_0] {
            for (rows, cols) in [(4, 32), (12, 96), (64, 576), (24, 1536)] {
                let weights = Self.randomWeights(type, rows: rows, cols: cols, &rng)
                for n in [1, 2, 3, 5, 8, 12, 37] {
                    let x = Self.activations(rows: n, cols: cols, &rng)
                    let a = x.withUnsafeBufferPointer { QuantizedRows($0.baseAddress!, rows: n, cols: cols, withF16: false) }
                    Self.onEveryPath { vnni in
                        weights.withUnsafeBytes { w in
                            let store = RepackedWeights()
                            let m = store.repacked(WeightMatrix(type: type, rows: rows, cols: cols, base: w.baseAddress!))
                            XCTAssertNotNil(m.packedX4)
                            var out = [Float](repeating: .nan, count: n * rows)
                            out.withUnsafeMutableBufferPointer { m.multiply(a, into: $0.baseAddress!) }
                            for t in 0..<n {
                                for r in 0..<rows {
                                    let expected = Self.reference(type, w.baseAddress! + r * m.rowBytes, a, t)
                                    XCTAssertEqual(out[t * rows + r].bitPattern, expected.bitPattern,
                                                   "\(type) \(rows)×\(cols) n=\(n) vnni=\(vnni): row \(r) is \(out[t * rows + r]), expected \(expected)")
                                }
                            }
                            guard let packed = m.packedX4, n <= 3, rows >= 8 else { return }
                            // Rows 4 ..< 8 alone write only those outputs.
                            var part = [Float](repeating: -1, count: n * rows)
                            a.qs.withUnsafeBufferPointer { qs in a.d.withUnsafeBufferPointer { d in a.s.withUnsafeBufferPointer { s in
                                part.withUnsafeMutableBufferPointer { o in
                                    xk_gemm(m.kernelType!, packed, m.rowBytes, 4, 8, qs.baseAddress!, d.baseAddress!, s.baseAddress!,
                                            Int32(n), Int32(cols), o.baseAddress!, Int32(rows))
                                }
                            } } }
                            for i in part.indices {
                                XCTAssertEqual(part[i].bitPattern, (4..<8).contains(i % rows) ? out[i].bitPattern : Float(-1).bitPattern, "output \(i)")
                            }
                        }
                    }
                }
            }
        }
    }

    func testARowRangeWritesOnlyItsRowsAtTheGivenStride() {
        var rng = SplitMix64(seed: 3)
        let rows = 16, cols = 64, n = 5
        let weights = Self.randomWeights(.q4_1, rows: rows, cols: cols, &rng)
        let x = (0..<(n * cols)).map { _ in Float(Double(rng.next() % 2_001) / 100 - 10) }
        let a = x.withUnsafeBufferPointer { QuantizedRows($0.baseAddress!, rows: n, cols: cols, withF16: false) }
        Self.onEveryPath { vnni in
        var out = [Float](repeating: -1, count: n * rows)
        weights.withUnsafeBytes { w in
            a.qs.withUnsafeBufferPointer { qs in a.d.withUnsafeBufferPointer { d in a.s.withUnsafeBufferPointer { s in
                out.withUnsafeMutableBufferPointer { o in
                    xk_gemm(Int32(XK_Q4_1.rawValue), w.baseAddress!, w.count / rows, 3, 10, qs.baseAddress!, d.baseAddress!,
                            s.baseAddress!, Int32(n), Int32(cols), o.baseAddress!, Int32(rows))
                }
            } } }
            for t in 0..<n {
                for r in 0..<rows {
                    let v = out[t * rows + r]
                    if (3..<10).contains(r) {
                        XCTAssertEqual(v.bitPattern, Self.reference(.q4_1, w.baseAddress! + r * (w.count / rows), a, t).bitPattern)
                    } else {
                        XCTAssertEqual(v, -1, "row \(r) is outside the range and must be untouched")
                    }
                }
            }
        }
        }
    }

    /// The matrix product of `c` on every path equals `expected` bit for bit.
    static func assertProductsOnEveryPath(_ c: Case, _ weights: [UInt8], _ a: QuantizedRows, _ expected: [Float],
                                          file: StaticString = #filePath, line: UInt = #line) {
        onEveryPath { vnni in
            var out = [Float](repeating: .nan, count: c.n * c.rows)
            weights.withUnsafeBytes { w in
                let m = WeightMatrix(type: c.type, rows: c.rows, cols: c.cols, base: w.baseAddress!)
                out.withUnsafeMutableBufferPointer { m.multiply(a, into: $0.baseAddress!) }
            }
            for i in out.indices where out[i].bitPattern != expected[i].bitPattern {
                XCTFail("\(c) vnni=\(vnni): output \(i) is \(out[i]), expected \(expected[i])", file: file, line: line)
                break
            }
        }
    }

    /// Runs `body` on each ISA path this CPU has (VNNI, then AVX2), restoring the choice after.
    static func onEveryPath(_ body: (Int) -> Void) {
        for vnni in [1, 0] {
            let previous = xk_set_vnni(Int32(vnni))
            defer { xk_set_vnni(previous) }
            if vnni == 1 && xk_uses_vnni() == 0 { continue }  // this CPU has no VNNI: AVX2 only
            body(vnni)
        }
    }

    static func activations(rows n: Int, cols: Int, _ rng: inout SplitMix64) -> [Float] {
        (0..<(n * cols)).map { _ in Float(Double(rng.next() % 20_001) / 1_000 - 10) }
    }

    /// The K-quant statement of row r against Q8_K activation row t of `a`.
    static func referenceK(_ type: GGUFFile.TensorType, _ weights: [UInt8], rows: Int, _ r: Int, _ a: QuantizedRows, _ t: Int) -> Float {
        let rb = weights.count / rows, nb = a.cols / 256
        return ScalarStatement.dotK(type, Array(weights[(r * rb)..<((r + 1) * rb)]), a.kqs[(t * a.cols)..<((t + 1) * a.cols)],
                                    a.kd[(t * nb)..<((t + 1) * nb)], a.bsums[(t * nb * 16)..<((t + 1) * nb * 16)])
    }

    func testKQuantsMatchTheScalarStatementOnEveryPathAndTile() {
        // Rows not a multiple of 4, n = 1, n past one 16-row activation block and not a multiple of
        // 4, several superblocks; Q5_K held to the statement like the shipped types.
        let cases = [
            Case(type: .q4_k, rows: 13, cols: 256, n: 7), Case(type: .q4_k, rows: 8, cols: 768, n: 1),
            Case(type: .q4_k, rows: 6, cols: 512, n: 37), Case(type: .q6_k, rows: 13, cols: 512, n: 5),
            Case(type: .q6_k, rows: 4, cols: 256, n: 1), Case(type: .q6_k, rows: 9, cols: 768, n: 19),
            Case(type: .q5_k, rows: 11, cols: 512, n: 6), Case(type: .q5_k, rows: 4, cols: 256, n: 17),
        ]
        var rng = SplitMix64(seed: 17)
        for c in cases {
            let weights = Self.randomWeights(c.type, rows: c.rows, cols: c.cols, &rng)
            let x = Self.activations(rows: c.n, cols: c.cols, &rng)
            let a = x.withUnsafeBufferPointer { QuantizedRows($0.baseAddress!, rows: c.n, cols: c.cols, withF16: false, withQ8: false, withQ8K: true) }
            let expected = (0..<c.n).flatMap { t in (0..<c.rows).map { r in Self.referenceK(c.type, weights, rows: c.rows, r, a, t) } }
            Self.assertProductsOnEveryPath(c, weights, a, expected)
        }
    }

    func testAKQuantRowRangeWritesOnlyItsRowsAtTheGivenStride() {
        var rng = SplitMix64(seed: 19)
        let rows = 16, cols = 512, n = 6
        for type in [GGUFFile.TensorType.q4_k, .q6_k] {
            let weights = Self.randomWeights(type, rows: rows, cols: cols, &rng)
            let x = Self.activations(rows: n, cols: cols, &rng)
            let a = x.withUnsafeBufferPointer { QuantizedRows($0.baseAddress!, rows: n, cols: cols, withF16: false, withQ8K: true) }
            let kind = Int32(type == .q4_k ? XK_Q4_K.rawValue : XK_Q6_K.rawValue)
            Self.onEveryPath { vnni in
                var out = [Float](repeating: -1, count: n * rows)
                weights.withUnsafeBytes { w in
                    out.withUnsafeMutableBufferPointer { o in
                        xk_gemm_k(kind, w.baseAddress!, w.count / rows, 3, 10, a.kqs, a.kd, a.bsums, Int32(n), Int32(cols), o.baseAddress!, Int32(rows))
                    }
                }
                for t in 0..<n {
                    for r in 0..<rows {
                        let v = out[t * rows + r]
                        if (3..<10).contains(r) {
                            XCTAssertEqual(v.bitPattern, Self.referenceK(type, weights, rows: rows, r, a, t).bitPattern, "\(type) vnni=\(vnni) r \(r) t \(t)")
                        } else {
                            XCTAssertEqual(v, -1, "row \(r) is outside the range and must be untouched")
                        }
                    }
                }
            }
        }
    }

    func testAJointMultiplyOfMixedTypesGivesTheBitsOfSeparateOnes() {
        var rng = SplitMix64(seed: 23)
        let cols = 512, n = 9
        let shapes: [(GGUFFile.TensorType, Int)] = [(.q5_0, 13), (.q8_0, 9), (.q4_k, 6), (.q6_k, 7), (.f16, 5)]
        let buffers = shapes.map { s -> UnsafeMutableRawBufferPointer in
            let w = Self.randomWeights(s.0, rows: s.1, cols: cols, &rng)
            let p = UnsafeMutableRawBufferPointer.allocate(byteCount: w.count, alignment: 64)
            p.copyBytes(from: w)
            return p
        }
        defer { for p in buffers { p.deallocate() } }
        let matrices = zip(shapes, buffers).map { WeightMatrix(type: $0.0, rows: $0.1, cols: cols, base: UnsafeRawPointer($1.baseAddress!)) }
        let x = Self.activations(rows: n, cols: cols, &rng)
        Self.onEveryPath { vnni in
            x.withUnsafeBufferPointer { xp in
                // Separately, each quantizing for itself.
                let separate = matrices.map { m -> [Float] in
                    var out = [Float](repeating: .nan, count: n * m.rows)
                    out.withUnsafeMutableBufferPointer { m.multiply(xp.baseAddress!, rows: n, into: $0.baseAddress!) }
                    return out
                }
                // Jointly: from rows quantized for all of them, and from rows holding Q8_0 only (the
                // product quantizes what is missing); Q5_0 + Q8_0 alone, as a model's q, k, v would be.
                let exact = QuantizedRows(xp.baseAddress!, rows: n, cols: cols, for: matrices)
                XCTAssertEqual(exact.f16.count, n * cols); XCTAssertEqual(exact.kqs.count, n * cols); XCTAssertEqual(exact.qs.count, n * cols)
                let partial = QuantizedRows(xp.baseAddress!, rows: n, cols: cols, withF16: false)
                for (a, subset) in [(exact, Array(matrices.indices)), (partial, Array(matrices.indices)), (partial, [0, 1])] {
                    let outs = subset.map { UnsafeMutableBufferPointer<Float>.allocate(capacity: n * matrices[$0].rows) }
                    defer { for o in outs { o.deallocate() } }
                    for o in outs { o.initialize(repeating: .nan) }
                    WeightMatrix.multiply(zip(subset, outs).map { (matrices[$0], $1.baseAddress!) }, a)
                    for (j, i) in subset.enumerated() {
                        XCTAssertEqual(Array(outs[j]).map(\.bitPattern), separate[i].map(\.bitPattern), "\(shapes[i]) vnni=\(vnni)")
                    }
                }
            }
        }
    }

    func testOnlyWholeBlocksCanBeHeld() {
        XCTAssertTrue(WeightMatrix.canHold(type: .q4_k, cols: 512))
        XCTAssertFalse(WeightMatrix.canHold(type: .q4_k, cols: 576))
        XCTAssertFalse(WeightMatrix.canHold(type: .q6_k, cols: 128))
        XCTAssertTrue(WeightMatrix.canHold(type: .q5_0, cols: 96))
        XCTAssertFalse(WeightMatrix.canHold(type: .q5_0, cols: 100))
        XCTAssertFalse(WeightMatrix.canHold(type: .q3_k, cols: 256))
        XCTAssertTrue(WeightMatrix.canHold(type: .f32, cols: 7))
    }

    func testDequantizedRowsEqualGGMLsDequantize() {
        var rng = SplitMix64(seed: 29)
        for type in [GGUFFile.TensorType.q5_0, .q4_k, .q5_k, .q6_k] {
            let rows = 3, cols = 512
            let weights = Self.randomWeights(type, rows: rows, cols: cols, &rng)
            weights.withUnsafeBytes { w in
                let m = WeightMatrix(type: type, rows: rows, cols: cols, base: w.baseAddress!)
                for r in 0..<rows {
                    var out = [Float](repeating: .nan, count: cols)
                    out.withUnsafeMutableBufferPointer { m.dequantizeRow(r, into: $0.baseAddress!) }
                    let expected = ScalarStatement.dequantize(type, Array(weights[(r * m.rowBytes)..<((r + 1) * m.rowBytes)]))
                    XCTAssertEqual(out.map(\.bitPattern), expected.map(\.bitPattern), "\(type) row \(r)")
                }
            }
        }
    }

    func testThePoolRunsEveryTaskOnceIncludingNestedAndConcurrentCalls() {
        final class Counts: @unchecked Sendable { var hits = [Int](repeating: 0, count: 1_000); let lock = NSLock() }
        let counts = Counts()
        // Nested: each outer chunk runs an inner parallel loop (which runs inline).
        Parallel.chunks(100, minChunk: 1) { outer in
            for i in outer {
                Parallel.chunks(10, minChunk: 1) { inner in
                    for j in inner { counts.lock.lock(); counts.hits[i * 10 + j] += 1; counts.lock.unlock() }
                }
            }
        }
        XCTAssertEqual(counts.hits, [Int](repeating: 1, count: 1_000))
        // Concurrent callers from several threads: each call still covers its range exactly once.
        let totals = Counts()
        DispatchQueue.concurrentPerform(iterations: 8) { caller in
            for _ in 0..<50 {
                Parallel.chunks(125, minChunk: 1) { range in
                    totals.lock.lock(); for i in range { totals.hits[caller * 125 + i] += 1 }; totals.lock.unlock()
                }
            }
        }
        XCTAssertEqual(totals.hits, [Int](repeating: 50, count: 1_000))
    }

    // MARK: - The scalar statement

    static func randomWeights(_ type: GGUFFile.TensorType, rows: Int, cols: Int, _ rng: inout SplitMix64) -> [UInt8] {
        let (elements, bytes) = type.blockLayout
        var w = [UInt8](repeating: 0, count: rows * cols / elements * bytes)
        if type == .f16 {
            for i in 0..<(w.count / 2) {
                let h = Float16(Float(Double(rng.next() % 2_001) / 1_000 - 1)).bitPattern
                w[2 * i] = UInt8(h & 0xFF); w[2 * i + 1] = UInt8(h >> 8)
            }
            return w
        }
        for i in w.indices { w[i] = UInt8(truncatingIfNeeded: rng.next()) }
        // Sane scales (random bits would be NaN/inf half the time); Q8_0 keeps -128 among its values.
        for b in 0..<(w.count / bytes) {
            let d = Float16(Float(rng.next() % 1_000 + 1) / 20_000), m = Float16(-Float(rng.next() % 1_000) / 1_000)
            withUnsafeBytes(of: d.bitPattern.littleEndian) { w[b * bytes] = $0[0]; w[b * bytes + 1] = $0[1] }
            if type == .q4_1 { withUnsafeBytes(of: m.bitPattern.littleEndian) { w[b * bytes + 2] = $0[0]; w[b * bytes + 3] = $0[1] } }
            // K-quants: Q4_K/Q5_K's dmin beside d (mins subtract: positive), Q6_K's d at the end.
            if type == .q4_k || type == .q5_k {
                let dmin = Float16(Float(rng.next() % 1_000) / 20_000)
                withUnsafeBytes(of: dmin.bitPattern.littleEndian) { w[b * bytes + 2] = $0[0]; w[b * bytes + 3] = $0[1] }
            }
            if type == .q6_k {
                withUnsafeBytes(of: d.bitPattern.littleEndian) { w[b * bytes + 208] = $0[0]; w[b * bytes + 209] = $0[1] }
                w[b * bytes] = UInt8(truncatingIfNeeded: rng.next()); w[b * bytes + 1] = UInt8(truncatingIfNeeded: rng.next())
            }
        }
        return w
    }

    static func reference(_ type: GGUFFile.TensorType, _ row: UnsafeRawPointer, _ a: QuantizedRows, _ t: Int) -> Float {
        let nb = a.cols / 32, bytes = type.blockLayout.bytes
        var lanes = [Float](repeating: 0, count: 8)
        var summs: Float = 0
        for b in 0..<nb {
            let bp = row + b * bytes
            let d = Float(bp.loadUnaligned(as: Float16.self))
            var w = [Int32](repeating: 0, count: 32)
            switch type {
            case .q5_0:
                // Element e = (nibble | bit e of qh << 4) − 16: nibbles low then high, as Q4_0.
                let qh = bp.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
                for j in 0..<16 {
                    let q = bp.load(fromByteOffset: 6 + j, as: UInt8.self)
                    w[j] = (Int32(q & 0x0F) | Int32((qh >> UInt32(j)) & 1) << 4) - 16
                    w[j + 16] = (Int32(q >> 4) | Int32((qh >> UInt32(j + 16)) & 1) << 4) - 16
                }
            case .q4_1, .q4_0:
                let off = type == .q4_1 ? 4 : 2
                for j in 0..<16 {
                    let q = bp.load(fromByteOffset: off + j, as: UInt8.self)
                    w[j] = Int32(q & 0x0F) - (type == .q4_0 ? 8 : 0)
                    w[j + 16] = Int32(q >> 4) - (type == .q4_0 ? 8 : 0)
                }
            default:
                for j in 0..<32 { w[j] = Int32(bp.load(fromByteOffset: 2 + j, as: Int8.self)) }
            }
            let scale = d * a.d[t * nb + b]
            for k in 0..<8 {
                var sum: Int32 = 0
                for i in 0..<4 { sum += w[4 * k + i] * Int32(a.qs[t * a.cols + b * 32 + 4 * k + i]) }
                lanes[k] = lanes[k].addingProduct(scale, Float(sum))
            }
            if type == .q4_1 { summs = summs + Float(bp.loadUnaligned(fromByteOffset: 2, as: Float16.self)) * a.s[t * nb + b] }
        }
        let h = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
        return type == .q4_1 ? h + summs : h
    }
}

/// The element-wise C kernels against the scalar statement, bit for bit.
final class ElementwiseKernelTests: XCTestCase {
    func testExponentialEqualsTheStatementAcrossTheRange() {
        // A fine sweep of [-110, 89], then every float near the edges of the normal range.
        var inputs = (0..<400_000).map { Float(-110 + Double($0) * 199 / 400_000) }
        for edge: Float in [-87.33655, -87.68, -103.27893, -88.72284] {
            var x = edge
            for _ in 0..<2_000 { inputs.append(x); x = x.nextUp }
        }
        inputs += [0, -0, -.infinity, -200, -150, 100, .infinity]
        for x in inputs where xk_exp(x).bitPattern != ScalarStatement.exp(x).bitPattern {
            XCTFail("exp(\(x)): C \(xk_exp(x)) vs statement \(ScalarStatement.exp(x))")
            return
        }
        XCTAssertTrue(xk_exp(.nan).isNaN && ScalarStatement.exp(.nan).isNaN)
    }

    func testSwiGLUEqualsTheStatement() {
        var rng = SplitMix64(seed: 11)
        // 1,003 elements: whole vectors and a scalar tail; values from −100 to 100.
        var g = (0..<1_003).map { _ in Float(Double(rng.next() % 200_001) / 1_000 - 100) }
        let u = (0..<1_003).map { _ in Float(Double(rng.next() % 2_001) / 100 - 10) }
        let expected = zip(g, u).map { ScalarStatement.swiglu($0, $1) }
        xk_swiglu(&g, u, Int32(g.count))
        for i in g.indices where g[i].bitPattern != expected[i].bitPattern {
            XCTFail("swiglu[\(i)]: \(g[i]) vs \(expected[i])")
            return
        }
    }

    func testRMSNormEqualsGGMLsStatementForOneToElevenRows() {
        var rng = SplitMix64(seed: 17)
        // 579 columns: whole vectors and a scalar tail; 1–11 rows: one group of eight, a part group, both.
        let cols = 579, eps: Float = 1e-5
        let w = (0..<cols).map { _ in Float(Double(rng.next() % 2_001) / 1_000 - 1) }
        for rows in [1, 3, 8, 11] {
            let x = (0..<(rows * cols)).map { _ in Float(Double(rng.next() % 200_001) / 1_000 - 100) }
            var expected = [Float](repeating: 0, count: rows * cols)
            for r in 0..<rows {
                var sum: Double = 0
                for i in 0..<cols { let v = x[r * cols + i]; sum += Double(v * v) }
                let scale = 1 / sqrtf(Float(sum / Double(cols)) + eps)
                for i in 0..<cols { expected[r * cols + i] = x[r * cols + i] * scale * w[i] }
            }
            var out = [Float](repeating: .nan, count: rows * cols)
            xk_rms_norm(x, w, Int32(rows), Int32(cols), eps, &out)
            for i in out.indices where out[i].bitPattern != expected[i].bitPattern {
                XCTFail("rms_norm \(rows) rows [\(i)]: \(out[i]) vs \(expected[i])")
                return
            }
        }
    }

    func testKVStoreRoundsToFloat16AndWritesOnlyItsColumn() {
        var rng = SplitMix64(seed: 19)
        let dims = 67, stride = 5, pos = 2  // 67: whole vectors and a scalar tail
        // Ordinary values, then those where two Float16 roundings could part: past the largest
        // half (65504) and at the overflow edge, a tie, subnormals, −0, infinities, NaN.
        let edges: [Float] = [70_000, 65_520, -65_519, 1 + 0x1p-11, 0x1p-24, 0x1p-25, 3 * 0x1p-26, -0.0, .infinity, -.infinity, .nan]
        var key = (0..<dims).map { _ in Float(Double(rng.next() % 2_000_001) / 1_000 - 1_000) }
        for (i, v) in edges.enumerated() { key[3 + i] = v; key[dims - 1 - i] = -v }
        var value = (0..<dims).map { _ in Float(Double(rng.next() % 2_000_001) / 100_000 - 10) }
        for (i, v) in edges.enumerated() { value[20 + i] = v; value[dims - 20 - i] = -v }
        var keyRow = [UInt16](repeating: 0xFFFF, count: dims)
        var columns = [UInt16](repeating: 0xFFFF, count: dims * stride)
        columns.withUnsafeMutableBufferPointer { c in
            xk_store_kv(key, value, Int32(dims), &keyRow, c.baseAddress! + pos, stride)
        }
        for i in 0..<dims {
            XCTAssertEqual(keyRow[i], Float16(key[i]).bitPattern, "key \(i): \(key[i])")
            for p in 0..<stride {
                XCTAssertEqual(columns[i * stride + p], p == pos ? Float16(value[i]).bitPattern : 0xFFFF, "value \(i) at \(p)")
            }
        }
    }

    func testAttentionScoresValuesAndSoftmaxEqualTheStatement() {
        var rng = SplitMix64(seed: 13)
        func half(_ scale: Double) -> Float16 { Float16(Double(rng.next() % 20_001) / 10_000 - 1) * Float16(scale) }
        let dims = 128, stride = 3 * dims + 64, count = 37, padded = 64  // 37: not a whole 16-lane group
        let keys = (0..<(count * stride)).map { _ in half(2) }
        let q = (0..<dims).map { _ in half(1) }
        var scratch = [Float](repeating: 0, count: max(padded, dims))
        for tiled in [1, 0] {
            var scores = [Float](repeating: 0, count: padded)
            keys.withUnsafeBytes { k in q.withUnsafeBytes { qb in
                xk_attention_scores(k.baseAddress!.assumingMemoryBound(to: UInt16.self) + dims, stride, Int32(count),
                                    qb.baseAddress!.assumingMemoryBound(to: UInt16.self), Int32(dims), Int32(tiled), 0.125, &scratch, &scores)
            } }
            for j in 0..<count {
                let key = keys[(j * stride + dims)..<(j * stride + 2 * dims)]
                let dot = tiled == 1 ? ScalarStatement.tiledDot(key, q[...]) : ScalarStatement.vecDot(key, q[...])
                XCTAssertEqual(scores[j].bitPattern, (dot * 0.125).bitPattern, "score \(j), tiled \(tiled)")
            }
            let expected = ScalarStatement.softmax(scores, len: count, padded: padded)
            var probs = [UInt16](repeating: 0xFFFF, count: padded)
            xk_softmax_f16(&scores, Int32(count), Int32(padded), &probs)
            XCTAssertEqual(probs, expected.map(\.bitPattern), "softmax weights, tiled \(tiled)")
            // Values stored transposed: one column of `capacity` per dimension; n = the kernel's length.
            let capacity = 128, n = tiled == 1 ? 48 : 64
            let columns = (0..<(dims * capacity)).map { _ in half(3) }
            var out = [Float](repeating: .nan, count: dims)
            columns.withUnsafeBytes { c in
                xk_attention_values(c.baseAddress!.assumingMemoryBound(to: UInt16.self), capacity, Int32(dims), probs, Int32(n),
                                    Int32(tiled), &scratch, &out)
            }
            let p16 = expected.map { $0 }
            for d in 0..<dims {
                let column = columns[(d * capacity)..<(d * capacity + n)]
                let want = tiled == 1 ? ScalarStatement.tiledDot(column, p16[..<n]) : ScalarStatement.vecDot(column, p16[..<n])
                XCTAssertEqual(out[d].bitPattern, want.bitPattern, "value \(d), tiled \(tiled)")
            }
        }
    }

    func testQuantizationEqualsTheStatementIncludingZeroAndCorruptBlocks() {
        var rng = SplitMix64(seed: 5)
        var x = (0..<(32 * 64)).map { _ in Float(Double(rng.next() % 2_000_001) / 100_000 - 10) }
        for i in 32..<64 { x[i] = 0 }                 // an all-zero block: d = 0, q = 0
        x[70] = .nan                                   // a NaN element is ignored and becomes 0
        x[100] = .infinity                             // an infinite one: d = ∞, nothing traps
        for i in 128..<160 { x[i] = x[i] * 1e-30 }     // tiny values: d rounds to a Float16 subnormal or 0
        for i in 160..<192 { x[i] = x[i] * 1e-38 }     // so tiny that 127/amax is infinite: still ±127
        let blocks = x.count / 32
        var q = [Int8](repeating: 0, count: x.count), d = [Float](repeating: 0, count: blocks), s = d
        xk_quantize_q8(x, Int32(blocks), &q, &d, &s)
        for b in 0..<blocks {
            let e = ScalarStatement.quantize(x[(b * 32)..<((b + 1) * 32)])
            XCTAssertEqual(Array(q[(b * 32)..<((b + 1) * 32)]), e.q, "block \(b)")
            XCTAssertTrue(d[b].bitPattern == e.d.bitPattern || (d[b].isNaN && e.d.isNaN), "block \(b) d \(d[b]) vs \(e.d)")
            XCTAssertTrue(s[b].bitPattern == e.s.bitPattern || (s[b].isNaN && e.s.isNaN), "block \(b) s \(s[b]) vs \(e.s)")
        }
    }

    func testQ8KQuantizationEqualsTheStatementIncludingAZeroBlock() {
        var rng = SplitMix64(seed: 31)
        var x = (0..<(256 * 12)).map { _ in Float(Double(rng.next() % 2_000_001) / 100_000 - 10) }
        for i in 256..<512 { x[i] = 0 }                // an all-zero block: d = 0, q = 0, sums 0
        x[600] = -50                                    // a negative max: iscale > 0
        x[800] = 30; x[801] = -30                       // a tie: the first of largest |x| is max
        x[1100] = .nan                                  // NaN is ignored for max and quantizes to 0
        for i in 1280..<1536 { x[i] = x[i] * 1e-30 }    // tiny values
        for i in 1536..<1792 { x[i] = Float(Int(x[i]) % 3) }  // small integers: many exact halves
        let blocks = x.count / 256
        var q = [Int8](repeating: 1, count: x.count), d = [Float](repeating: .nan, count: blocks), bsums = [Int16](repeating: 1, count: blocks * 16)
        xk_quantize_q8_K(x, Int32(blocks), &q, &d, &bsums)
        for b in 0..<blocks {
            let e = ScalarStatement.quantizeK(x[(b * 256)..<((b + 1) * 256)])
            XCTAssertEqual(Array(q[(b * 256)..<((b + 1) * 256)]), e.q, "block \(b)")
            XCTAssertEqual(d[b].bitPattern, e.d.bitPattern, "block \(b) d \(d[b]) vs \(e.d)")
            XCTAssertEqual(Array(bsums[(b * 16)..<((b + 1) * 16)]), e.bsums, "block \(b) sums")
        }
        XCTAssertEqual(d[1], 0)
        // QuantizedRows holds the same, row by row.
        let a = x.withUnsafeBufferPointer { QuantizedRows($0.baseAddress!, rows: 4, cols: 768, withF16: false, withQ8: false, withQ8K: true) }
        XCTAssertEqual(a.kqs, q); XCTAssertEqual(a.kd.map(\.bitPattern), d.map(\.bitPattern)); XCTAssertEqual(a.bsums, bsums)
        XCTAssertTrue(a.qs.isEmpty && a.f16.isEmpty)
    }
}
