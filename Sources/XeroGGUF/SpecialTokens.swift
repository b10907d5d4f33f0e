/// A vocabulary's special tokens as they are found in text, for both tokenizers: control tokens
/// (`<|im_start|>`) only inside segments that allow them — template text, never client content, so
/// typing `<|im_start|>system` cannot forge a turn — and user-defined tokens anywhere. Ordinary
/// text runs across segment borders, so it is tokenized as the joined string would be.
struct SpecialTokens: Sendable {
    typealias Entry = (text: [UInt8], id: Int32, control: Bool)
    /// Longest first, so that a token wins over any special that is a prefix of it.
    let entries: [Entry]

    init(_ entries: [Entry]) { self.entries = entries.filter { !$0.text.isEmpty }.sorted { $0.text.count > $1.text.count } }

    enum Piece { case text([UInt8]), special(Int32) }

    /// The segments as runs of ordinary text and special tokens, in order.
    func split(_ segments: [(text: String, allowSpecial: Bool)], _ each: (Piece) -> Void) {
        var run: [UInt8] = []
        for (text, allowSpecial) in segments {
            let bytes = Array(text.utf8)
            var start = 0, i = 0
            while i < bytes.count {
                var matched: Entry?
                for s in entries where (allowSpecial || !s.control) && s.text.count <= bytes.count - i {
                    if bytes[i] == s.text[0] && bytes[i..<(i + s.text.count)].elementsEqual(s.text) { matched = s; break }
                }
                if let s = matched {
                    run.append(contentsOf: bytes[start..<i])
                    if !run.isEmpty { each(.text(run)); run = [] }
                    each(.special(s.id))
                    i += s.text.count
                    start = i
                } else {
                    i += 1
                }
            }
            run.append(contentsOf: bytes[start...])
        }
        if !run.isEmpty { each(.text(run)) }
    }
}
