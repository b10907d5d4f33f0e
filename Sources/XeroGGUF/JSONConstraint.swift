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

/// Applies `JSONGrammar` to a vocabulary: which tokens may come next.
public struct JSONConstraint {
    public private(set) var grammar = JSONGrammar()
    let tokenizer: BPETokenizer

    public init(tokenizer: BPETokenizer) { self.tokenizer = tokenizer }

    public var isComplete: Bool { grammar.isComplete }

    /// A mask over the vocabulary: true where the token keeps the output a valid JSON-object prefix
    /// that can still be completed within the `remaining` tokens (this one included). End-of-
    /// generation tokens are allowed exactly when the object is complete.
    public func mask(remaining: Int = .max) -> [Bool] {
        var m = [Bool](repeating: false, count: tokenizer.vocabSize)
        let done = grammar.isComplete
        // Near the end of the budget, a token must also leave room for the shortest completion
        // (one token per byte in the worst case) — then even a cut-off answer parses.
        let tight = remaining < grammar.completion().count + 64
        for id in 0..<tokenizer.vocabSize {
            let t = Int32(id)
            if tokenizer.endOfGeneration.contains(t) { m[id] = done; continue }
            let bytes = tokenizer.tokenBytes[id]
            if bytes.isEmpty { continue }
            var g = grammar
            var ok = true
            for b in bytes where !g.accept(b) { ok = false; break }
            if ok && tight { ok = g.completion().count <= remaining - 1 }
            m[id] = ok
        }
        return m
    }

    /// End of generation once the object is complete (nothing else may follow).
    public var forcedToken: Int32? { grammar.isComplete ? tokenizer.eos : nil }

    /// Records the chosen token.
    public mutating func advance(_ token: Int32) {
        for b in tokenizer.bytes(of: token) { _ = grammar.accept(b) }
    }
}
