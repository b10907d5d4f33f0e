import Foundation
import XCTest
@testable import XeroGGUF

/// Model files the engine cannot run are refused at load, naming what is missing.
final class ModelRefusalTests: XCTestCase {
    /// A minimal GGUF v3: string metadata and F32/other-typed tensors with zeroed data.
    func gguf(meta: [String: String], ints: [String: UInt32] = [:], tensors: [(String, [UInt64], UInt32)]) throws -> String {
        var b = Array("GGUF".utf8)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); b += Array(s.utf8) }
        u32(3); u64(UInt64(tensors.count)); u64(UInt64(meta.count + ints.count))
        for (k, v) in meta.sorted(by: { $0.key < $1.key }) { str(k); u32(8); str(v) }
        for (k, v) in ints.sorted(by: { $0.key < $1.key }) { str(k); u32(4); u32(v) }
        var offset: UInt64 = 0
        var sizes: [Int] = []
        for (name, dims, type) in tensors {
            str(name); u32(UInt32(dims.count)); for d in dims { u64(d) }; u32(type); u64(offset)
            let layout = GGUFFile.TensorType(rawValue: type)!.blockLayout
            let size = Int(dims.reduce(1, *)) / layout.elements * layout.bytes
            sizes.append(size)
            offset += UInt64((size + 31) / 32 * 32)
        }
        while b.count % 32 != 0 { b.append(0) }
        for s in sizes { b += [UInt8](repeating: 0, count: (s + 31) / 32 * 32) }
        let p = NSTemporaryDirectory() + "xero-\(UUID().uuidString).gguf"
        FileManager.default.createFile(atPath: p, contents: Data(b))
        addTeardownBlock { try? FileManager.default.removeItem(atPath: p) }
        return p
    }

    func assertRefused(_ path: String, mentions words: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try LlamaModel(path: path), file: file, line: line) { e in
            let text = "\(e)"
            for w in words { XCTAssertTrue(text.contains(w), "'\(text)' should mention \(w)", file: file, line: line) }
        }
    }

    /// The real Gemma 3 270M file (scripts/setup.sh --with-gemma, as CI runs it): its metadata and
    /// tensor index read, and the engine takes its architecture (GemmaTests run it).
    func testTheShippedGemmaFileIsReadWithItsArchitecture() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let path = root.path + "/models/gemma3/gemma-3-270m-q4_k_m.gguf"
        guard FileManager.default.fileExists(atPath: path) else { return XCTFail("missing \(path): run scripts/setup.sh --with-gemma") }
        let file = try GGUFFile(path: path)
        XCTAssertEqual(file.architecture, "gemma3")
        XCTAssertEqual(file.metadata["tokenizer.ggml.model"]?.string, "llama")
        XCTAssertNil(file.metadata["tokenizer.chat_template"]?.string)
        XCTAssertEqual(Set(file.tensors.values.map(\.type)), [.f32, .q5_0, .q4_k, .q8_0, .q6_k])
        let c = try LlamaModel(file: file).config
        XCTAssertEqual(c.architecture, .gemma3)
        XCTAssertEqual([c.layers, c.embedding, c.heads, c.kvHeads, c.headDim, c.queryDim, c.feedForward, c.vocab], [18, 640, 4, 1, 256, 1024, 2048, 262_144])
        XCTAssertEqual(c.slidingWindow, 512)
        XCTAssertEqual((0..<18).filter { !c.isSliding(layer: $0) }, [5, 11, 17], "every 6th layer is global")
        XCTAssertEqual(c.ropeBase(layer: 0), 10_000)
        XCTAssertEqual(c.ropeBase(layer: 5), 1_000_000)
        XCTAssertEqual(c.queryScale, 1.0 / 16)
        XCTAssertEqual(c.embeddingScale, sqrtf(640))
    }

    /// The tokenizer comes from `tokenizer.ggml.model`: an unknown one is refused naming it and
    /// the two this engine reads; a missing one is called missing.
    func testTheTokenizerModelIsNamedWhenItCannotBeRead() throws {
        XCTAssertThrowsError(try Tokenizers.load(try GGUFFile(path: try gguf(meta: ["tokenizer.ggml.model": "rwkv"], tensors: [("x", [32], 0)])))) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains("rwkv") && text.contains("gpt2") && text.contains("llama"), text)
        }
        XCTAssertThrowsError(try Tokenizers.load(try GGUFFile(path: try gguf(meta: ["general.architecture": "llama"], tensors: [("x", [32], 0)])))) { e in
            XCTAssertTrue("\(e)".contains("tokenizer.ggml.model is missing"), "\(e)")
        }
    }

    func testUnsupportedArchitectureIsNamed() throws {
        assertRefused(try gguf(meta: ["general.architecture": "mamba"], tensors: [("x", [32], 0)]), mentions: ["mamba", "llama"])
    }

    func testUnsupportedTensorTypeIsNamed() throws {
        let p = try gguf(meta: ["general.architecture": "llama"], tensors: [("token_embd.weight", [256, 4], 11), ("blk.0.attn_q.weight", [256, 4], 10)])
        assertRefused(p, mentions: ["q3_k", "q2_k", "not supported"])
    }

    func testMissingHyperParametersAndTensorsAreNamed() throws {
        assertRefused(try gguf(meta: ["general.architecture": "llama"], tensors: [("x", [32], 0)]), mentions: ["llama.embedding_length"])
        let p = try gguf(meta: ["general.architecture": "llama"],
                         ints: ["llama.embedding_length": 128, "llama.attention.head_count": 2, "llama.block_count": 1,
                                "llama.feed_forward_length": 64, "llama.vocab_size": 8],
                         tensors: [("token_embd.weight", [128, 8], 0)])
        assertRefused(p, mentions: ["output_norm.weight", "missing"])
    }

    func testAHeadDimensionTheAttentionKernelsCannotStepIsRefused() throws {
        let p = try gguf(meta: ["general.architecture": "llama"],
                         ints: ["llama.embedding_length": 160, "llama.attention.head_count": 2, "llama.block_count": 1,
                                "llama.feed_forward_length": 64, "llama.vocab_size": 8],
                         tensors: [("token_embd.weight", [160, 8], 0)])
        assertRefused(p, mentions: ["head dimension 80", "multiple of 64"])
    }
}
