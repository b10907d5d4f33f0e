/// Builds OpenAI's `text_completion` objects (`/v1/completions`), streamed or whole. Engines report
/// logprobs as chat-style entries (`{"token","logprob","bytes","top_logprobs"}`, one per token);
/// this writer turns them into the legacy shape: parallel `tokens`, `token_logprobs`,
/// `top_logprobs` (a token → logprob map) and `text_offset` arrays.
public struct CompletionResponseWriter: Sendable {
    public let id: String
    public let created: Int
    public let model: String
    public let includeUsage: Bool

    public init(id: String, created: Int, model: String, includeUsage: Bool = false) {
        self.id = id
        self.created = created
        self.model = model
        self.includeUsage = includeUsage
    }

    /// One choice as it accumulates: its text, its logprob entries, where its next token's text
    /// starts (characters, OpenAI's `text_offset`), and its finish.
    public struct Choice: Sendable {
        public var text = ""
        public var entries: [String] = []
        public var offset = 0
        public var finishReason: String?
        public init() {}
    }

    private func header(_ w: inout JSONWriter) {
        w.field("id", id)
        w.field("object", "text_completion")
        w.field("created", created)
        w.field("model", model)
        w.key("system_fingerprint"); w.null()
    }

    /// A streaming chunk for one choice: its new text, the logprobs of the tokens in it, or its finish.
    public func chunk(index: Int, text: String, entries: [String], offset: inout Int, finishReason: String? = nil) -> [UInt8] {
        var w = JSONWriter(capacity: 192 + text.utf8.count)
        w.objectStart()
        header(&w)
        w.key("choices"); w.arrayStart(); w.objectStart()
        w.field("text", text)
        w.field("index", index)
        w.key("logprobs")
        if entries.isEmpty { w.null() } else { Self.writeLogprobs(entries, offset: &offset, to: &w) }
        w.fieldOrNull("finish_reason", finishReason)
        w.objectEnd(); w.arrayEnd()
        if includeUsage { w.key("usage"); w.null() }
        w.objectEnd()
        return w.bytes
    }

    /// The last chunk when `include_usage` is on: no choices, the real usage.
    public func usageChunk(_ usage: Usage) -> [UInt8] {
        var w = JSONWriter()
        w.objectStart()
        header(&w)
        w.key("choices"); w.arrayStart(); w.arrayEnd()
        w.key("usage"); ChatResponseWriter.writeUsage(usage, to: &w)
        w.objectEnd()
        return w.bytes
    }

    /// The whole `text_completion` object. `logprobs` says whether the client asked for them
    /// (then every choice carries the object, empty or not).
    public func completion(choices: [Choice], logprobs: Bool, usage: Usage) -> [UInt8] {
        var w = JSONWriter(capacity: 256 + choices.reduce(0) { $0 + $1.text.utf8.count })
        w.objectStart()
        header(&w)
        w.key("choices"); w.arrayStart()
        for (i, c) in choices.enumerated() {
            w.objectStart()
            w.field("text", c.text)
            w.field("index", i)
            w.key("logprobs")
            var offset = 0
            if logprobs { Self.writeLogprobs(c.entries, offset: &offset, to: &w) } else { w.null() }
            w.field("finish_reason", c.finishReason ?? "stop")
            w.objectEnd()
        }
        w.arrayEnd()
        w.key("usage"); ChatResponseWriter.writeUsage(usage, to: &w)
        w.objectEnd()
        return w.bytes
    }

    /// Chat-style entries → the legacy logprobs object. A prompt's first token has no logprob
    /// (nothing precedes it): its entry's `logprob` is null, and so are its top alternatives.
    static func writeLogprobs(_ entries: [String], offset: inout Int, to w: inout JSONWriter) {
        var tokens: [String] = [], logprobs: [Double?] = [], tops: [[(String, Double)]?] = [], offsets: [Int] = []
        // An event's entry string may hold several entries, comma-joined (an upstream's chunk).
        let parsed = entries.flatMap { e -> [JSONValue] in
            guard case let .array(items)? = try? JSONValue.parse(Array(("[" + e + "]").utf8)) else { return [] }
            return items
        }
        for case let .object(o) in parsed {
            let token: String
            if case let .string(t)? = o["token"] { token = t } else { token = "" }
            var lp: Double?
            switch o["logprob"] {
            case let .double(d)?: lp = d
            case let .int(i)?: lp = Double(i)
            default: lp = nil
            }
            var top: [(String, Double)] = []
            if case let .array(items)? = o["top_logprobs"] {
                for case let .object(t) in items {
                    guard case let .string(s)? = t["token"] else { continue }
                    switch t["logprob"] {
                    case let .double(d)?: top.append((s, d))
                    case let .int(i)?: top.append((s, Double(i)))
                    default: break
                    }
                }
            }
            tokens.append(token)
            logprobs.append(lp)
            tops.append(lp == nil ? nil : top)
            offsets.append(offset)
            offset += token.unicodeScalars.count
        }
        w.objectStart()
        w.key("tokens"); w.arrayStart(); for t in tokens { w.value(t) }; w.arrayEnd()
        w.key("token_logprobs"); w.arrayStart(); for lp in logprobs { if let lp { w.value(lp) } else { w.null() } }; w.arrayEnd()
        w.key("top_logprobs"); w.arrayStart()
        for top in tops {
            guard let top else { w.null(); continue }
            // A map: a token that appears twice among the alternatives (two ids, one text) keeps its best.
            var seen = Set<String>()
            w.objectStart()
            for (t, lp) in top.sorted(by: { $0.1 > $1.1 }) where seen.insert(t).inserted { w.field(t, lp) }
            w.objectEnd()
        }
        w.arrayEnd()
        w.key("text_offset"); w.arrayStart(); for o in offsets { w.value(o) }; w.arrayEnd()
        w.objectEnd()
    }
}

/// Folds a text completion's events into its choices (gateway and batch runner).
public struct CompletionAccumulator: Sendable {
    public private(set) var choices: [CompletionResponseWriter.Choice]

    public init(choices n: Int) {
        choices = (0..<max(1, n)).map { _ in CompletionResponseWriter.Choice() }
    }

    public mutating func add(_ body: StreamEvent.Body) {
        switch body {
        case let .delta(i, text, logprobs, _) where choices.indices.contains(i):
            choices[i].text += text
            if let logprobs { choices[i].entries.append(logprobs) }
        case let .finish(i, reason) where choices.indices.contains(i):
            choices[i].finishReason = reason
        default: break
        }
    }
}
