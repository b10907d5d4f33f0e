import Foundation

/// What the engine needs of a GGUF file's tokenizer, whichever algorithm the file names:
/// byte-level BPE (`tokenizer.ggml.model = gpt2`: SmolLM2, Llama 3, Qwen) or SentencePiece
/// (`llama`: Llama 2, Mistral, Gemma).
public protocol Tokenizer: AnyObject, Sendable {
    var vocabSize: Int { get }
    var bos: Int32? { get }
    var eos: Int32 { get }
    /// Whether a BOS goes in front of a prompt's text.
    var addBOS: Bool { get }
    /// Tokens that end a generation (EOS and the templates' end-of-turn tokens).
    var endOfGeneration: Set<Int32> { get }
    /// The bytes each token stands for (empty for control tokens), indexed by id.
    var tokenBytes: [[UInt8]] { get }
    /// Token ids of `text`; with `parseSpecial`, special-token text becomes its token.
    func encode(_ text: String, parseSpecial: Bool, addBOS: Bool?) -> [Int32]
    /// Token ids of segments; special tokens only inside segments that allow them (template text).
    func encode(segments: [(text: String, allowSpecial: Bool)], addBOS: Bool?) -> [Int32]
    func bytes(of token: Int32) -> [UInt8]
    func decode(_ tokens: [Int32]) -> String
}

extension Tokenizer {
    public func encode(_ text: String, parseSpecial: Bool) -> [Int32] { encode(text, parseSpecial: parseSpecial, addBOS: nil) }
    public func encode(segments: [(text: String, allowSpecial: Bool)]) -> [Int32] { encode(segments: segments, addBOS: nil) }
}

public enum Tokenizers {
    /// The tokenizer the file names, or the reason it cannot be read.
    public static func load(_ file: GGUFFile) throws -> any Tokenizer {
        switch file.metadata["tokenizer.ggml.model"]?.string {
        case "gpt2": return try BPETokenizer(file: file)
        case "llama": return try SentencePieceTokenizer(file: file)
        case let other?: throw GGUFError.unsupported("tokenizer model '\(other)' (this engine reads 'gpt2' byte-level BPE and 'llama' SentencePiece)")
        case nil: throw GGUFError.corrupt("tokenizer.ggml.model is missing")
        }
    }
}

extension BPETokenizer: Tokenizer {}
extension SentencePieceTokenizer: Tokenizer {}
