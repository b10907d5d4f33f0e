/// JSON mode (`response_format: {"type": "json_object"}`) as a real guarantee: before each token is
/// sampled, every token whose bytes would take the output off the grammar of a JSON object is
/// masked out, so whatever the sampler picks keeps the text a valid prefix; the end-of-generation
/// token is allowed only once the object is complete. When the token budget (`max_tokens` or the
/// context) is about to run out, the shortest completion is forced, so even a truncated generation
/// parses. Whitespace runs are capped (a model can otherwise pad forever).
public struct JSONGrammar: Sendable, Equatable {
    enum Mode: UInt8 {
        case top, objectFirst, objectKey, colon, value, arrayFirst, after, done
        case string, escape, hex
        case minus, zero, integer, dot, fraction, exponent, exponentSign, exponentDigits
        case literal
    }
    var mode: Mode = .top
    /// Containers open, innermost in bit 0: 1 = object, 0 = array.
    var stack: UInt64 = 0
    var depth: UInt8 = 0
    var stringIsKey = false
    var hexLeft: UInt8 = 0
    /// The literal being spelled (true/false/null) and how far.
    var literal: UInt8 = 0
    var literalIndex: UInt8 = 0
    var spaces: UInt8 = 0

    static let maxDepth: UInt8 = 48
    static let maxSpaces: UInt8 = 24
    static let literals: [[UInt8]] = [Array("true".utf8), Array("false".utf8), Array("null".utf8)]
    /// Characters that may follow a backslash (besides `u`).
    static let escapes: Set<UInt8> = Set("\"\\/bfnrt".utf8)

    public init() {}

    public var isComplete: Bool { mode == .done }

    /// Feeds one byte; false if it cannot continue a JSON object (the state is then unspecified).
    public mutating func accept(_ b: UInt8) -> Bool {
        let isSpace = b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09
        switch mode {
        case .string:
            if b == UInt8(ascii: "\"") { return endString() }
            if b == UInt8(ascii: "\\") { mode = .escape; return true }
            return b >= 0x20
        case .escape:
            if b == UInt8(ascii: "u") { mode = .hex; hexLeft = 4; return true }
            guard Self.escapes.contains(b) else { return false }
            mode = .string
            return true
        case .hex:
            guard (b >= 48 && b <= 57) || (b | 0x20 >= 97 && b | 0x20 <= 102) else { return false }
            hexLeft -= 1
            if hexLeft == 0 { mode = .string }
            return true
        case .literal:
            let word = Self.literals[Int(literal)]
            guard b == word[Int(literalIndex)] else { return false }
            literalIndex += 1
            if Int(literalIndex) == word.count { endValue() }
            return true
        case .minus:
            if b == UInt8(ascii: "0") { mode = .zero; return true }
            if b >= 49 && b <= 57 { mode = .integer; return true }
            return false
        case .zero, .integer, .fraction, .exponentDigits:
            if b >= 48 && b <= 57 {
                if mode == .zero { return false }
                return true
            }
            if b == UInt8(ascii: ".") && (mode == .zero || mode == .integer) { mode = .dot; return true }
            if (b == UInt8(ascii: "e") || b == UInt8(ascii: "E")) && mode != .exponentDigits { mode = .exponent; return true }
            endValue()
            return accept(b)
        case .dot:
            guard b >= 48 && b <= 57 else { return false }
            mode = .fraction
            return true
        case .exponent:
            if b == UInt8(ascii: "+") || b == UInt8(ascii: "-") { mode = .exponentSign; return true }
            guard b >= 48 && b <= 57 else { return false }
            mode = .exponentDigits
            return true
        case .exponentSign:
            guard b >= 48 && b <= 57 else { return false }
            mode = .exponentDigits
            return true
        default:
            break
        }
        // Structural states: whitespace is allowed between tokens, up to a limit.
        if isSpace {
            spaces += 1
            return spaces <= Self.maxSpaces
        }
        spaces = 0
        switch mode {
        case .top:
            return b == UInt8(ascii: "{") && open(object: true)
        case .objectFirst, .objectKey:
            if b == UInt8(ascii: "\"") { mode = .string; stringIsKey = true; return true }
            if b == UInt8(ascii: "}") && mode == .objectFirst { return close() }
            return false
        case .colon:
            guard b == UInt8(ascii: ":") else { return false }
            mode = .value
            return true
        case .value, .arrayFirst:
            if b == UInt8(ascii: "]") && mode == .arrayFirst { return close() }
            return startValue(b)
        case .after:
            let inObject = stack & 1 == 1
            if b == UInt8(ascii: ",") { mode = inObject ? .objectKey : .value; return true }
            if b == UInt8(ascii: inObject ? "}" : "]") { return close() }
            return false
        default:
            return false   // .done: nothing but whitespace
        }
    }

    private mutating func startValue(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "{"): return open(object: true)
        case UInt8(ascii: "["): return open(object: false)
        case UInt8(ascii: "\""): mode = .string; stringIsKey = false; return true
        case UInt8(ascii: "-"): mode = .minus; return true
        case UInt8(ascii: "0"): mode = .zero; return true
        case 49...57: mode = .integer; return true
        case UInt8(ascii: "t"): literal = 0
        case UInt8(ascii: "f"): literal = 1
        case UInt8(ascii: "n"): literal = 2
        default: return false
        }
        mode = .literal
        literalIndex = 1
        return true
    }

    private mutating func open(object: Bool) -> Bool {
        guard depth < Self.maxDepth else { return false }
        stack = stack << 1 | (object ? 1 : 0)
        depth += 1
        mode = object ? .objectFirst : .arrayFirst
        return true
    }

    private mutating func close() -> Bool {
        stack >>= 1
        depth -= 1
        endValue()
        return true
    }

    private mutating func endString() -> Bool {
        if stringIsKey { mode = .colon } else { endValue() }
        return true
    }

    private mutating func endValue() { mode = depth == 0 ? .done : .after }

    /// The shortest text that completes the object from here.
    public func completion() -> [UInt8] {
        var g = self
        var out: [UInt8] = []
        func push(_ s: String) { for b in s.utf8 where g.accept(b) { out.append(b) } }
        var guardSteps = 0
        while g.mode != .done && guardSteps < 400 {
            guardSteps += 1
            switch g.mode {
            case .top: push("{")
            case .string: push("\"")
            case .escape: push("n")
            case .hex: push("0")
            case .literal: push(String(decoding: [Self.literals[Int(g.literal)][Int(g.literalIndex)]], as: UTF8.self))
            case .minus, .dot, .exponent, .exponentSign: push("0")
            case .zero, .integer, .fraction, .exponentDigits: g.endValue()
            case .objectFirst: push("}")
            case .objectKey: push("\"")
            case .colon: push(":")
            case .value: push("0")
            case .arrayFirst: push("]")
            case .after: push(g.stack & 1 == 1 ? "}" : "]")
            case .done: break
            }
        }
        return out
    }
}

/// A grammar over output bytes that constrained decoding can apply to a vocabulary.
public protocol ByteGrammar: Sendable {
    /// Feeds one byte; false if no text the grammar accepts continues this way.
    mutating func accept(_ b: UInt8) -> Bool
    /// The text so far is a whole answer (the end of generation may come now).
    var isComplete: Bool { get }
    /// Nothing but the end of generation may follow.
    var isFinished: Bool { get }
    /// Inside a string, with no escape pending: any byte but `"`, `\` and controls keeps the state.
    var inPlainString: Bool { get }
    /// The shortest text that completes the answer from here (nil: none does).
    func shortestCompletion() -> [UInt8]?
}

extension JSONGrammar: ByteGrammar {
    public var isFinished: Bool { isComplete }
    public var inPlainString: Bool { mode == .string }
    public func shortestCompletion() -> [UInt8]? { completion() }
}

/// The vocabulary laid out for constrained decoding, built once per tokenizer: token ids sorted by
/// their bytes with each one's common prefix with the one before (a flattened trie: walking it in
/// order, a token starts from its prefix's state, and a rejected prefix skips every token under
/// it), and the tokens that are plain string content (no `"`, `\`, control byte), which inside a
/// string need no walk at all.
public final class VocabIndex: @unchecked Sendable {
    let sorted: [Int32]
    let lcp: [Int32]
    /// Tokens whose bytes are all plain string content.
    let plain: [Int32]
    /// Tokens with text that are not plain (walked even inside a string).
    let other: [Int32]
    let bytes: [[UInt8]]
    let endOfGeneration: Set<Int32>
    let vocabSize: Int
    let eos: Int32

    public init(tokenizer: any Tokenizer) {
        vocabSize = tokenizer.vocabSize
        eos = tokenizer.eos
        endOfGeneration = tokenizer.endOfGeneration
        let bytes = tokenizer.tokenBytes
        self.bytes = bytes
        let texts = (0..<Int32(tokenizer.vocabSize)).filter { !bytes[Int($0)].isEmpty && !tokenizer.endOfGeneration.contains($0) }
        let sorted = texts.sorted { bytes[Int($0)].lexicographicallyPrecedes(bytes[Int($1)]) }
        self.sorted = sorted
        var lcp = [Int32](repeating: 0, count: sorted.count)
        for k in 1..<max(1, sorted.count) {
            let a = bytes[Int(sorted[k - 1])], b = bytes[Int(sorted[k])]
            var n = 0
            while n < a.count && n < b.count && a[n] == b[n] { n += 1 }
            lcp[k] = Int32(n)
        }
        self.lcp = lcp
        let isPlain = { (id: Int32) in bytes[Int(id)].allSatisfy { $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") } }
        plain = texts.filter(isPlain)
        other = texts.filter { !isPlain($0) }
    }
}

/// What the engine asks of a constraint each step (one dynamic call per step; the per-token work
/// inside is generic and inlined).
public protocol TokenConstraint {
    /// True where the token keeps the output a valid prefix that can still be completed within
    /// `remaining` tokens (this one included). End-of-generation tokens: exactly when complete.
    func mask(remaining: Int) -> [Bool]
    /// End of generation once nothing else may follow.
    var forcedToken: Int32? { get }
    var isComplete: Bool { get }
    mutating func advance(_ token: Int32)
}

/// Applies a `ByteGrammar` to a vocabulary: which tokens may come next.
public struct GrammarConstraint<G: ByteGrammar>: TokenConstraint {
    public private(set) var grammar: G
    let vocab: VocabIndex

    public init(_ grammar: G, vocab: VocabIndex) {
        self.grammar = grammar
        self.vocab = vocab
    }

    public var isComplete: Bool { grammar.isComplete }
    public var forcedToken: Int32? { grammar.isFinished ? vocab.eos : nil }

    public func mask(remaining: Int = .max) -> [Bool] {
        var m = [Bool](repeating: false, count: vocab.vocabSize)
        let done = grammar.isComplete
        for t in vocab.endOfGeneration where Int(t) < m.count { m[Int(t)] = done }
        // Near the end of the budget, a token must also leave room for the shortest completion
        // (one token per byte in the worst case): then even a cut-off answer parses.
        guard let finish = grammar.shortestCompletion() else { return m }
        let tight = remaining < finish.count + 64
        if grammar.inPlainString {
            // Plain content leaves the state, and so the shortest completion, as it is.
            if !tight || finish.count <= remaining - 1 { for id in vocab.plain { m[Int(id)] = true } }
            for id in vocab.other {
                var g = grammar
                var ok = vocab.bytes[Int(id)].allSatisfy { g.accept($0) }
                if ok && tight { ok = (g.shortestCompletion()?.count ?? .max) <= remaining - 1 }
                m[Int(id)] = ok
            }
            return m
        }
        // The trie walk: states[d] is the grammar after the current token's first d bytes.
        var states: [G] = [grammar]
        var dead = Int.max    // the last walk failed after this many bytes (its prefix is refused)
        for k in 0..<vocab.sorted.count {
            let id = vocab.sorted[k], shared = Int(vocab.lcp[k])
            if shared >= dead { continue }
            dead = .max
            if states.count > shared + 1 { states.removeLast(states.count - shared - 1) }
            let bytes = vocab.bytes[Int(id)]
            var g = states[shared]
            var ok = true
            for d in shared..<bytes.count {
                if !g.accept(bytes[d]) { dead = d + 1; ok = false; break }
                states.append(g)
            }
            if ok && tight { ok = (g.shortestCompletion()?.count ?? .max) <= remaining - 1 }
            m[Int(id)] = ok
        }
        return m
    }

    public mutating func advance(_ token: Int32) {
        guard Int(token) < vocab.bytes.count else { return }
        for b in vocab.bytes[Int(token)] { _ = grammar.accept(b) }
    }
}
