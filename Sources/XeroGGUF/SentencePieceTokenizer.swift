import Foundation

/// SentencePiece tokenization as llama.cpp runs it for `tokenizer.ggml.model = llama` (Llama 2,
/// Mistral, Gemma): spaces become `▁` (with one added in front of the text when
/// `tokenizer.ggml.add_space_prefix` says so), the text starts as one symbol per UTF-8 character,
/// and adjacent symbols whose concatenation is a token merge, highest token score first (the
/// leftmost on a tie), until no pair is a token. A symbol left that is not a token is written as
/// its byte tokens (`<0xE2>`…: byte fallback). Special tokens are found as in `BPETokenizer`:
/// control tokens only in template text, user-defined ones anywhere.
public final class SentencePieceTokenizer: @unchecked Sendable {
    public let vocabSize: Int
    public let bos: Int32?
    public let eos: Int32
    public let addBOS: Bool
    public let addSpacePrefix: Bool
    public let endOfGeneration: Set<Int32>
    /// The text each token stands for (`▁` as a space, a byte token as its byte, control: none).
    public let tokenBytes: [[UInt8]]
    let scores: [Float]
    /// Token text (`▁` kept) → id, for merging.
    let ids: [[UInt8]: Int32]
    let byteTokens: [Int32?]
    let specials: SpecialTokens

    static let space = Array("\u{2581}".utf8)   // ▁

    public init(file: GGUFFile) throws {
        let m = file.metadata
        guard m["tokenizer.ggml.model"]?.string == "llama" else { throw GGUFError.unsupported("tokenizer model '\(m["tokenizer.ggml.model"]?.string ?? "none")' (this reader is SentencePiece, 'llama')") }
        guard let tokens = m["tokenizer.ggml.tokens"]?.array?.compactMap(\.string), !tokens.isEmpty else {
            throw GGUFError.corrupt("tokenizer.ggml.tokens is missing")
        }
        let scores = m["tokenizer.ggml.scores"]?.array?.map { Float($0.double ?? 0) } ?? []
        let types = m["tokenizer.ggml.token_type"]?.array?.compactMap(\.int) ?? []
        guard scores.count == tokens.count else { throw GGUFError.corrupt("tokenizer.ggml.scores does not match the tokens") }
        vocabSize = tokens.count
        self.scores = scores
        var ids: [[UInt8]: Int32] = [:]
        var bytes: [[UInt8]] = []
        var byteTokens = [Int32?](repeating: nil, count: 256)
        var specials: [(text: [UInt8], id: Int32, control: Bool)] = []
        bytes.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() {
            let raw = Array(t.utf8)
            let type = i < types.count ? types[i] : 1
            ids[raw] = Int32(i)        // a duplicate text: the last id, as llama.cpp's map keeps it
            switch type {
            case 6:   // byte: <0xAB>
                if raw.count == 6, let b = UInt8(String(decoding: raw[3..<5], as: UTF8.self), radix: 16) {
                    byteTokens[Int(b)] = Int32(i)
                    bytes.append([b])
                } else { bytes.append([]) }
            case 3:   // control: no text
                specials.append((raw, Int32(i), true))
                bytes.append([])
            case 4:   // user-defined: its text, found anywhere
                specials.append((raw, Int32(i), false))
                bytes.append(Self.unescape(raw))
            default:
                bytes.append(Self.unescape(raw))
            }
        }
        self.ids = ids
        tokenBytes = bytes
        self.byteTokens = byteTokens
        self.specials = SpecialTokens(specials)
        func flag(_ key: String) -> Bool? { if case let .bool(b)? = m[key] { return b } else { return nil } }
        addSpacePrefix = flag("tokenizer.ggml.add_space_prefix") ?? true
        addBOS = flag("tokenizer.ggml.add_bos_token") ?? true
        bos = m["tokenizer.ggml.bos_token_id"]?.int.map(Int32.init)
        guard let eos = m["tokenizer.ggml.eos_token_id"]?.int, eos < tokens.count else { throw GGUFError.corrupt("tokenizer.ggml.eos_token_id is missing") }
        self.eos = Int32(eos)
        var eog: Set<Int32> = [Int32(eos)]
        for t in ["<end_of_turn>", "<|im_end|>", "<|eot_id|>", "</s>"] {
            if let s = specials.first(where: { $0.text == Array(t.utf8) }) { eog.insert(s.id) }
        }
        endOfGeneration = eog
    }

    static func unescape(_ raw: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < raw.count {
            if i + 3 <= raw.count && raw[i] == space[0] && raw[i + 1] == space[1] && raw[i + 2] == space[2] { out.append(0x20); i += 3 }
            else { out.append(raw[i]); i += 1 }
        }
        return out
    }

    public func bytes(of token: Int32) -> [UInt8] {
        token >= 0 && Int(token) < tokenBytes.count ? tokenBytes[Int(token)] : []
    }

    public func decode(_ tokens: [Int32]) -> String {
        String(decoding: tokens.flatMap { bytes(of: $0) }, as: UTF8.self)
    }

    public func encode(_ text: String, parseSpecial: Bool, addBOS: Bool? = nil) -> [Int32] {
        encode(segments: [(text, parseSpecial)], addBOS: addBOS)
    }

    /// As llama.cpp: each run of ordinary text between special tokens is tokenized on its own,
    /// with the space prefix when it follows a special token or starts the text.
    public func encode(segments: [(text: String, allowSpecial: Bool)], addBOS: Bool? = nil) -> [Int32] {
        var out: [Int32] = []
        if addBOS ?? self.addBOS, let bos { out.append(bos) }
        var afterSpecial = true
        specials.split(segments) { piece in
            switch piece {
            case let .text(run):
                tokenize(run, prefixSpace: addSpacePrefix && afterSpecial, into: &out)
                afterSpecial = false
            case let .special(id):
                out.append(id)
                afterSpecial = true
            }
        }
        return out
    }

    private struct Symbol { var start: Int; var count: Int; var prev: Int; var next: Int }

    /// One run of text: spaces escaped, characters merged by score, leftovers as bytes.
    func tokenize(_ raw: [UInt8], prefixSpace: Bool, into out: inout [Int32]) {
        var text: [UInt8] = []
        text.reserveCapacity(raw.count + 6)
        if prefixSpace { text += Self.space }
        for b in raw { if b == 0x20 { text += Self.space } else { text.append(b) } }
        var symbols: [Symbol] = []
        var offset = 0
        while offset < text.count {
            let lead = text[offset]
            let len = lead < 0x80 ? 1 : lead >> 5 == 0b110 ? 2 : lead >> 4 == 0b1110 ? 3 : lead >> 3 == 0b11110 ? 4 : 1
            let n = min(len, text.count - offset)
            symbols.append(Symbol(start: offset, count: n, prev: symbols.count - 1, next: offset + n == text.count ? -1 : symbols.count + 1))
            offset += n
        }
        // A max-heap of candidate merges: higher score first, then the leftmost.
        struct Bigram { var left: Int; var right: Int; var score: Float; var size: Int }
        var heap: [Bigram] = []
        func before(_ a: Bigram, _ b: Bigram) -> Bool { a.score > b.score || (a.score == b.score && a.left < b.left) }
        func push(_ g: Bigram) {
            heap.append(g)
            var i = heap.count - 1
            while i > 0 { let p = (i - 1) / 2; if before(heap[i], heap[p]) { heap.swapAt(i, p); i = p } else { break } }
        }
        func pop() -> Bigram {
            let top = heap[0]
            heap[0] = heap[heap.count - 1]
            heap.removeLast()
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var best = i
                if l < heap.count && before(heap[l], heap[best]) { best = l }
                if r < heap.count && before(heap[r], heap[best]) { best = r }
                if best == i { break }
                heap.swapAt(i, best); i = best
            }
            return top
        }
        func tryPair(_ left: Int, _ right: Int) {
            guard left >= 0, right >= 0 else { return }
            let piece = Array(text[symbols[left].start..<(symbols[left].start + symbols[left].count + symbols[right].count)])
            guard let id = ids[piece] else { return }
            push(Bigram(left: left, right: right, score: scores[Int(id)], size: piece.count))
        }
        for i in symbols.indices.dropFirst() { tryPair(i - 1, i) }
        while !heap.isEmpty {
            let g = pop()
            let l = symbols[g.left], r = symbols[g.right]
            if l.count == 0 || r.count == 0 || l.count + r.count != g.size { continue }
            symbols[g.left].count += r.count
            symbols[g.right].count = 0
            symbols[g.left].next = r.next
            if r.next >= 0 { symbols[r.next].prev = g.left }
            tryPair(symbols[g.left].prev, g.left)
            tryPair(g.left, symbols[g.left].next)
        }
        // Every merged symbol is a token (merges need one), so only a single character can be
        // left that is not: it is written as its bytes.
        var i = symbols.isEmpty ? -1 : 0
        while i != -1 {
            let s = symbols[i]
            let piece = Array(text[s.start..<(s.start + s.count)])
            if let id = ids[piece] { out.append(id) } else { for b in piece { if let t = byteTokens[Int(b)] { out.append(t) } } }
            i = s.next
        }
    }
}
