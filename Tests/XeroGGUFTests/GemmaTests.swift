import Foundation
import XCTest
@testable import XeroGGUF

/// Gemma 3 270M (Q4_K_M: Q5_0, Q8_0, Q4_K and Q6_K weights; SentencePiece; sliding-window layers)
/// against llama.cpp's own output on the shipped file (Fixtures/gemma3-reference.json, made by
/// scripts/make-gemma-references.py: llama-server -t 2 -fa off --no-repack).
final class GemmaTests: XCTestCase {
    struct Reference: Decodable {
        struct Tok: Decodable { let text: String; let ids: [Int32] }
        struct Greedy: Decodable { let prompt: String; let prompt_ids: [Int32]; let completion_ids: [Int32]; let completion_text: String }
        let tokenizer: [Tok]
        let greedy: [Greedy]
    }

    static let reference: Reference = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/gemma3-reference.json")
        return try! JSONDecoder().decode(Reference.self, from: Data(contentsOf: url))
    }()

    static var path: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
            + "/models/gemma3/gemma-3-270m-q4_k_m.gguf"
    }

    /// Loaded once for the class (CI fetches the file: scripts/test.sh runs setup --with-gemma).
    nonisolated(unsafe) static var loaded: (LlamaModel, any Tokenizer)?
    static func load() throws -> (LlamaModel, any Tokenizer) {
        if let l = loaded { return l }
        guard FileManager.default.fileExists(atPath: path) else {
            XCTFail("missing \(path): run scripts/setup.sh --with-gemma")
            throw XCTSkip("no Gemma file")
        }
        let file = try GGUFFile(path: path)
        let l: (LlamaModel, any Tokenizer) = (try LlamaModel(file: file), try Tokenizers.load(file))
        loaded = l
        return l
    }

    func testTheFileGetsSentencePieceWithIdsEqualToLlamaCpp() throws {
        guard FileManager.default.fileExists(atPath: Self.path) else { return XCTFail("missing \(Self.path): run scripts/setup.sh --with-gemma") }
        let tok = try Tokenizers.load(try GGUFFile(path: Self.path))
        XCTAssertTrue(tok is SentencePieceTokenizer)
        for r in Self.reference.tokenizer {
            XCTAssertEqual(tok.encode(r.text, parseSpecial: true, addBOS: false), r.ids, "ids of \(r.text.debugDescription)")
        }
    }

    /// Greedy ids equal llama.cpp's for the first 48 tokens of English, code and Japanese prompts:
    /// the prompt in one batch (multi-token arithmetic), then one token at a time.
    func testGreedyDecodingMatchesLlamaCppFor48Tokens() throws {
        let (model, tok) = try Self.load()
        for g in Self.reference.greedy {
            XCTAssertEqual(tok.encode(g.prompt, parseSpecial: true), g.prompt_ids, "prompt ids of \(g.prompt.debugDescription)")
            let out = model.greedy(g.prompt_ids, count: g.completion_ids.count, banning: tok.endOfGeneration)
            let firstDifference = zip(out, g.completion_ids).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            XCTAssertNil(firstDifference, "greedy continuation of \(g.prompt.debugDescription) differs from token \(firstDifference ?? -1): "
                         + "\(tok.decode(out).debugDescription) vs \(g.completion_text.debugDescription)")
        }
    }


    /// A sliding layer sees only the last 512 positions: past the window, the answer differs from
    /// what full attention everywhere gives (so the mask is in force), and it is deterministic.
    func testSlidingLayersForgetWhatLeftTheWindow() throws {
        let (model, tok) = try Self.load()
        let text = String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 60)
        let prompt = Array(tok.encode(text, parseSpecial: false).prefix(600))
        XCTAssertGreaterThan(prompt.count, 512)
        let windowed = model.forward(prompt, cache: model.newCache())
        let window = model.config.slidingWindow
        model.config.slidingWindow = 0
        let full = model.forward(prompt, cache: model.newCache())
        model.config.slidingWindow = window
        XCTAssertNotEqual(windowed, full)
        XCTAssertEqual(windowed, model.forward(prompt, cache: model.newCache()))
    }
}

extension LlamaModel {
    /// `count` greedy tokens after `prompt`: the prompt in one batch, then one token at a time,
    /// `banned` never chosen (llama.cpp's references are made with ignore_eos, which bans the
    /// end-of-generation tokens).
    func greedy(_ prompt: [Int32], count: Int, banning banned: Set<Int32>) -> [Int32] {
        let cache = newCache()
        var logits = forward(prompt, cache: cache)
        var out: [Int32] = []
        for _ in 0..<count {
            for e in banned { logits[Int(e)] = -.infinity }
            var best = 0
            for i in 1..<logits.count where logits[i] > logits[best] { best = i }
            out.append(Int32(best))
            logits = forward([Int32(best)], cache: cache)
        }
        return out
    }
}
