import Foundation

/// BERT's uncased tokenizer: basic tokenization (clean, split CJK characters, lowercase, strip
/// accents, split on whitespace and punctuation), then greedy longest-match WordPiece with `##`
/// continuations, wrapped in [CLS] … [SEP].
public struct WordPieceTokenizer: Sendable {
    public let vocab: [String: Int32]
    public let cls: Int32, sep: Int32, unk: Int32, pad: Int32
    static let maxCharsPerWord = 100

    public init(vocabPath: String) throws {
        guard let text = try? String(contentsOfFile: vocabPath, encoding: .utf8) else { throw EmbeddingError.load("cannot read \(vocabPath)") }
        var v: [String: Int32] = [:]
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
            v[String(line)] = Int32(i)
        }
        guard let cls = v["[CLS]"], let sep = v["[SEP]"], let unk = v["[UNK]"], let pad = v["[PAD]"] else {
            throw EmbeddingError.load("\(vocabPath) lacks [CLS]/[SEP]/[UNK]/[PAD]")
        }
        vocab = v
        self.cls = cls; self.sep = sep; self.unk = unk; self.pad = pad
    }

    /// Token ids with [CLS]/[SEP], truncated to `maxLength` (the [SEP] is kept). `truncated` tells
    /// whether anything was cut.
    public func encode(_ text: String, maxLength: Int) -> (ids: [Int32], truncated: Bool) {
        var ids: [Int32] = [cls]
        for word in basicTokens(text) { ids += wordPiece(word) }
        let truncated = ids.count + 1 > maxLength
        if truncated { ids = Array(ids.prefix(maxLength - 1)) }
        ids.append(sep)
        return (ids, truncated)
    }

    func basicTokens(_ text: String) -> [String] {
        var out: [String] = []
        var current = ""
        func flush() { if !current.isEmpty { out.append(current); current = "" } }
        // Lowercase, then NFD and drop combining marks (accent stripping).
        for scalar in text.lowercased().decomposedStringWithCanonicalMapping.unicodeScalars {
            let v = scalar.value
            if v == 0 || v == 0xFFFD || isControl(scalar) { continue }
            if scalar.properties.generalCategory == .nonspacingMark { continue }
            if isWhitespace(scalar) { flush(); continue }
            if isCJK(v) || isPunctuation(scalar) {
                flush()
                out.append(String(scalar))
                continue
            }
            current.unicodeScalars.append(scalar)
        }
        flush()
        return out
    }

    func wordPiece(_ word: String) -> [Int32] {
        let chars = Array(word.unicodeScalars)
        if chars.count > Self.maxCharsPerWord { return [unk] }
        var pieces: [Int32] = []
        var start = 0
        while start < chars.count {
            var end = chars.count
            var found: Int32?
            while start < end {
                var s = String(String.UnicodeScalarView(chars[start..<end]))
                if start > 0 { s = "##" + s }
                if let id = vocab[s] { found = id; break }
                end -= 1
            }
            guard let id = found else { return [unk] }
            pieces.append(id)
            start = end
        }
        return pieces
    }

    func isWhitespace(_ s: Unicode.Scalar) -> Bool {
        s == " " || s == "\t" || s == "\n" || s == "\r" || s.properties.generalCategory == .spaceSeparator
    }

    func isControl(_ s: Unicode.Scalar) -> Bool {
        if s == "\t" || s == "\n" || s == "\r" { return false }
        switch s.properties.generalCategory {
        case .control, .format: return true
        default: return false
        }
    }

    func isPunctuation(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) { return true }
        switch s.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation, .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return true
        default: return false
        }
    }

    func isCJK(_ v: UInt32) -> Bool {
        (0x4E00...0x9FFF).contains(v) || (0x3400...0x4DBF).contains(v) || (0x20000...0x2A6DF).contains(v) || (0x2A700...0x2B73F).contains(v)
            || (0x2B740...0x2B81F).contains(v) || (0x2B820...0x2CEAF).contains(v) || (0xF900...0xFAFF).contains(v) || (0x2F800...0x2FA1F).contains(v)
    }
}
