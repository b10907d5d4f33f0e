import Foundation

/// Byte-level BPE (`tokenizer.ggml.model = gpt2`) read from the GGUF metadata: vocabulary, merges,
/// token types, BOS/EOS. Text is split on special tokens first (when asked), then by the model's
/// pre-tokenizer, then each piece is merged lowest-rank-first — the order llama.cpp and Hugging
/// Face use, so ids agree. Round trip is exact on any UTF-8 (every byte has a token).
public final class BPETokenizer: @unchecked Sendable {
    public enum PreTokenizer: String, Sendable {
        /// Digits one by one, then GPT-2-like words without the trailing `\s+` (SmolLM, StarCoder).
        case smollm
        /// GPT-2's own pattern.
        case gpt2
        /// Llama 3 (`llama-bpe`): letters with one leading non-letter, digits in threes, newline
        /// runs apart; a word that is itself a token skips the merges (llama.cpp's `ignore_merges`).
        case llama3
        /// Qwen 2/2.5/3: Llama 3's pattern with digits one by one.
        case qwen2
    }

    public let vocabSize: Int
    public let bos: Int32?
    public let eos: Int32
    public let addBOS: Bool
    /// Tokens that end a generation (EOS and the chat-turn terminators the vocabulary has).
    public let endOfGeneration: Set<Int32>
    public let preTokenizer: PreTokenizer
    /// Raw bytes of each token (empty for control tokens, which render as nothing).
    public let tokenBytes: [[UInt8]]
    /// Control and user-defined tokens by their text.
    let specials: SpecialTokens
    /// The token of each single byte; nil for the few bytes a vocabulary lacks (SmolLM2: six ASCII
    /// control characters and lead bytes of planes 4–16), which are dropped as llama.cpp drops them.
    let byteToken: [Int32?]
    /// (left id, right id) → (rank, merged id)
    let merges: [UInt64: (rank: Int32, id: Int32)]
    /// Whole-word lookup for `ignore_merges` (Llama 3); empty otherwise.
    let wordTokens: [[UInt8]: Int32]
    private var wordCache: [[UInt8]: [Int32]] = [:]
    private let cacheLock = NSLock()

    public init(file: GGUFFile) throws {
        let m = file.metadata
        guard let model = m["tokenizer.ggml.model"]?.string else { throw GGUFError.corrupt("tokenizer.ggml.model is missing") }
        guard model == "gpt2" else { throw GGUFError.unsupported("tokenizer model '\(model)' (this engine reads byte-level BPE, 'gpt2')") }
        let pre = m["tokenizer.ggml.pre"]?.string ?? "gpt2"
        switch pre {
        case "smollm", "starcoder", "codeshell", "refact": preTokenizer = .smollm
        case "gpt2", "gpt-2", "phi-2", "default": preTokenizer = .gpt2
        case "llama-bpe", "llama3", "llama-v3", "falcon3", "pixtral": preTokenizer = .llama3
        case "qwen2", "deepseek-r1-qwen": preTokenizer = .qwen2
        default: throw GGUFError.unsupported("pre-tokenizer '\(pre)' (supported: smollm, starcoder, gpt2, llama-bpe, qwen2)")
        }
        guard let tokens = m["tokenizer.ggml.tokens"]?.array?.compactMap(\.string), !tokens.isEmpty else {
            throw GGUFError.corrupt("tokenizer.ggml.tokens is missing")
        }
        let types = m["tokenizer.ggml.token_type"]?.array?.compactMap(\.int) ?? []
        vocabSize = tokens.count
        let decode = Self.unicodeToByte
        var bytes: [[UInt8]] = []
        bytes.reserveCapacity(tokens.count)
        var ids: [[UInt8]: Int32] = [:]
        var specials: [(text: [UInt8], id: Int32, control: Bool)] = []
        for (i, t) in tokens.enumerated() {
            let type = i < types.count ? types[i] : 1
            if type == 3 || type == 4 {
                specials.append((Array(t.utf8), Int32(i), type == 3))
                bytes.append(type == 3 ? [] : Array(t.utf8))
                continue
            }
            var raw: [UInt8] = []
            for s in t.unicodeScalars {
                if let b = decode[s.value] { raw.append(b) } else { raw.append(contentsOf: String(s).utf8) }
            }
            bytes.append(raw)
            if ids[raw] == nil { ids[raw] = Int32(i) }
        }
        tokenBytes = bytes
        self.specials = SpecialTokens(specials)
        byteToken = (0..<256).map { ids[[UInt8($0)]] }
        guard byteToken.compactMap({ $0 }).count >= 128 else { throw GGUFError.unsupported("the vocabulary is not byte-level (too few single-byte tokens)") }
        var merges: [UInt64: (Int32, Int32)] = [:]
        for (rank, v) in (m["tokenizer.ggml.merges"]?.array ?? []).enumerated() {
            guard let line = v.string, let space = line.firstIndex(of: " ") else { continue }
            func raw(_ s: Substring) -> [UInt8] { s.unicodeScalars.map { decode[$0.value] ?? 0 } }
            let l = raw(line[..<space]), r = raw(line[line.index(after: space)...])
            guard let li = ids[l], let ri = ids[r], let mi = ids[l + r] else { continue }
            let key = UInt64(UInt32(li)) << 32 | UInt64(UInt32(ri))
            if merges[key] == nil { merges[key] = (Int32(rank), mi) }
        }
        self.merges = merges
        wordTokens = preTokenizer == .llama3 ? ids : [:]
        bos = m["tokenizer.ggml.bos_token_id"]?.int.map(Int32.init)
        guard let eos = m["tokenizer.ggml.eos_token_id"]?.int, eos < tokens.count else { throw GGUFError.corrupt("tokenizer.ggml.eos_token_id is missing") }
        self.eos = Int32(eos)
        addBOS = (m["tokenizer.ggml.add_bos_token"].flatMap { if case let .bool(b) = $0 { return b } else { return nil } }) ?? false
        var eog: Set<Int32> = [Int32(eos)]
        for t in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>"] {
            if let s = specials.first(where: { $0.text == Array(t.utf8) }) { eog.insert(s.id) }
        }
        endOfGeneration = eog
    }

    /// Token ids of `text`. With `parseSpecial`, special-token text (`<|im_start|>`) becomes its
    /// token (for rendered templates); without, it is tokenized as ordinary text (for user content).
    public func encode(_ text: String, parseSpecial: Bool, addBOS: Bool? = nil) -> [Int32] {
        encode(segments: [(text, parseSpecial)], addBOS: addBOS)
    }

    /// Token ids of the concatenated segments; special tokens are recognised only inside segments
    /// that allow them (template text), never inside client content — so a user who types
    /// `<|im_start|>system` gets those characters, not a forged turn. Ordinary text runs across
    /// segment borders, so the ids equal those of the joined string when no specials are forged.
    public func encode(segments: [(text: String, allowSpecial: Bool)], addBOS: Bool? = nil) -> [Int32] {
        var out: [Int32] = []
        if addBOS ?? self.addBOS, let bos { out.append(bos) }
        specials.split(segments) { piece in
            switch piece {
            case let .text(run): encodeText(run[...], into: &out)
            case let .special(id): out.append(id)
            }
        }
        return out
    }

    /// The bytes of a token (a piece of UTF-8 that may end mid-character).
    public func bytes(of token: Int32) -> [UInt8] {
        token >= 0 && Int(token) < tokenBytes.count ? tokenBytes[Int(token)] : []
    }

    public func decode(_ tokens: [Int32]) -> String {
        String(decoding: tokens.flatMap { bytes(of: $0) }, as: UTF8.self)
    }

    func encodeText(_ bytes: ArraySlice<UInt8>, into out: inout [Int32]) {
        let text = String(decoding: bytes, as: UTF8.self)
        for piece in preTokenize(text) {
            let word = Array(piece.utf8)
            if let cached = cacheLock.withLock({ wordCache[word] }) { out.append(contentsOf: cached); continue }
            let ids = bpe(word)
            cacheLock.withLock { if wordCache.count < 100_000 { wordCache[word] = ids } }
            out.append(contentsOf: ids)
        }
    }

    /// Merges the bytes of one pre-tokenized word, lowest rank first (leftmost on ties).
    func bpe(_ word: [UInt8]) -> [Int32] {
        if let whole = wordTokens[word] { return [whole] }
        var syms = word.compactMap { byteToken[Int($0)] }
        while syms.count > 1 {
            var best: (rank: Int32, at: Int, id: Int32)?
            for i in 0..<(syms.count - 1) {
                let key = UInt64(UInt32(syms[i])) << 32 | UInt64(UInt32(syms[i + 1]))
                if let m = merges[key], best == nil || m.rank < best!.rank { best = (m.rank, i, m.id) }
            }
            guard let b = best else { break }
            syms[b.at] = b.id
            syms.remove(at: b.at + 1)
        }
        return syms
    }

    // MARK: pre-tokenizer

    enum Kind { case letter, number, space, other }
    static func kind(_ s: Unicode.Scalar) -> Kind {
        if s.properties.isWhitespace { return .space }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    /// Splits text the way the model's pre-tokenizer regex does (a hand-written scanner: the
    /// patterns are fixed, and this is both exact and fast).
    public func preTokenize(_ text: String) -> [String] {
        let scalars = Array(text.unicodeScalars)
        var out: [String] = []
        switch preTokenizer {
        case .smollm:
            // First pass: every number character is its own piece; the rest go through pass two.
            var segStart = 0
            for (i, s) in scalars.enumerated() where Self.kind(s) == .number {
                if segStart < i { Self.words(scalars[segStart..<i], trailingSpaceRun: false, into: &out) }
                out.append(String(s))
                segStart = i + 1
            }
            if segStart < scalars.count { Self.words(scalars[segStart...], trailingSpaceRun: false, into: &out) }
        case .gpt2:
            Self.words(scalars[...], trailingSpaceRun: true, into: &out)
        case .llama3:
            Self.llama3Words(scalars[...], digitsPerPiece: 3, into: &out)
        case .qwen2:
            Self.llama3Words(scalars[...], digitsPerPiece: 1, into: &out)
        }
        return out
    }

    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,n}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
    /// leftmost-first, as llama.cpp's scanner for it. A character with no Unicode category
    /// (unassigned) matches none of the classes and is a piece of its own.
    static func llama3Words(_ s: ArraySlice<Unicode.Scalar>, digitsPerPiece: Int, into out: inout [String]) {
        let end = s.endIndex
        var start = s.startIndex, i = start
        func emit(_ e: Int) {
            if e > start {
                var v = String.UnicodeScalarView()
                v.append(contentsOf: s[start..<e])
                out.append(String(v))
            }
            start = e
            i = e
        }
        func k(_ j: Int) -> Kind? { j < end ? kind(s[j]) : nil }
        func assigned(_ j: Int) -> Bool { j < end && s[j].properties.generalCategory != .unassigned }
        func isNewline(_ j: Int) -> Bool { j < end && (s[j] == "\r" || s[j] == "\n") }
        while i < end {
            let c = s[i]
            if c == "'" && i + 1 < end {
                let c1 = s[i + 1].properties.lowercaseMapping
                if c1 == "s" || c1 == "t" || c1 == "m" || c1 == "d" { emit(i + 2); continue }
                if i + 2 < end {
                    let c2 = s[i + 2].properties.lowercaseMapping
                    if (c1 == "r" && c2 == "e") || (c1 == "v" && c2 == "e") || (c1 == "l" && c2 == "l") { emit(i + 3); continue }
                }
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !isNewline(i) && k(i) != .number && (k(i) == .letter || k(i + 1) == .letter) {
                var e = i + 1
                while k(e) == .letter { e += 1 }
                emit(e); continue
            }
            // \p{N}{1,n}
            if k(i) == .number {
                var e = i
                while k(e) == .number && e - i < digitsPerPiece { e += 1 }
                emit(e); continue
            }
            //  ?[^\s\p{L}\p{N}]+[\r\n]*
            let p = c == " " ? i + 1 : i
            if k(p) == .other && assigned(p) {
                var e = p
                while k(e) == .other && assigned(e) { e += 1 }
                while isNewline(e) { e += 1 }
                emit(e); continue
            }
            // \s*[\r\n]+ | \s+(?!\S) | \s+
            var spaces = 0, lastNewline = -1
            while k(i + spaces) == .space {
                if isNewline(i + spaces) { lastNewline = i + spaces + 1 }
                spaces += 1
            }
            if lastNewline >= 0 { emit(lastNewline); continue }
            if spaces > 1 && i + spaces < end { emit(i + spaces - 1); continue }
            if spaces > 0 { emit(i + spaces); continue }
            emit(i + 1)
        }
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)` (and `|\s+` when
    /// `trailingSpaceRun`), leftmost-first; text no alternative matches is kept as its own piece.
    static func words(_ s: ArraySlice<Unicode.Scalar>, trailingSpaceRun: Bool, into out: inout [String]) {
        var i = s.startIndex
        let end = s.endIndex
        var unmatched = String.UnicodeScalarView()
        func emit(_ r: Range<Int>) {
            if !unmatched.isEmpty { out.append(String(unmatched)); unmatched = String.UnicodeScalarView() }
            var v = String.UnicodeScalarView()
            v.append(contentsOf: s[r])
            out.append(String(v))
        }
        func run(from j: Int, _ k: Kind) -> Int {
            var e = j
            while e < end && kind(s[e]) == k { e += 1 }
            return e
        }
        while i < end {
            let c = s[i]
            if c == "'" && i + 1 < end {
                let c1 = s[i + 1]
                if c1 == "s" || c1 == "t" || c1 == "m" || c1 == "d" { emit(i..<(i + 2)); i += 2; continue }
                if i + 2 < end {
                    let c2 = s[i + 2]
                    if (c1 == "r" && c2 == "e") || (c1 == "v" && c2 == "e") || (c1 == "l" && c2 == "l") { emit(i..<(i + 3)); i += 3; continue }
                }
            }
            let j = (c == " " && i + 1 < end) ? i + 1 : i
            var matched = false
            for k in [Kind.letter, .number, .other] {
                if kind(s[i]) == k || (j > i && kind(s[j]) == k) {
                    let from = kind(s[i]) == k ? i : j
                    let e = run(from: from, k)
                    emit(i..<e); i = e; matched = true
                    break
                }
            }
            if matched { continue }
            if kind(c) == .space {
                let e = run(from: i, .space)
                if e == end { emit(i..<e); i = e; continue }
                // `\s+(?!\S)` leaves the last space to join the next word; a lone one only
                // GPT-2's trailing `\s+` takes.
                if e - i >= 2 { emit(i..<(e - 1)); i = e - 1; continue }
                if trailingSpaceRun { emit(i..<e); i = e; continue }
            }
            unmatched.append(c)
            i += 1
        }
        if !unmatched.isEmpty { out.append(String(unmatched)) }
    }

    /// GPT-2's byte ↔ printable-character table: printable Latin-1 bytes map to themselves, the
    /// rest to U+0100 upward in order.
    static let unicodeToByte: [UInt32: UInt8] = {
        var table: [UInt32: UInt8] = [:]
        var n: UInt32 = 0
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            if printable { table[UInt32(b)] = UInt8(b) } else { table[256 + n] = UInt8(b); n += 1 }
        }
        return table
    }()
}
