/// Renders chat messages into the model's prompt format. A general Jinja interpreter is out of
/// scope: this renders the ChatML family (`<|im_start|>role\ncontent<|im_end|>\n`), which covers
/// the shipped SmolLM2 template — including its default system prompt, injected when the first
/// message is not a system message, read from the template text itself — and any plain ChatML
/// template. A GGUF whose `tokenizer.chat_template` is something else is refused at load, naming
/// the problem, rather than prompted in a format it was not trained on.
public struct ChatTemplate: Sendable, Equatable {
    public struct Message: Sendable {
        public var role: String
        public var content: String
        public init(role: String, content: String) { self.role = role; self.content = content }
    }

    /// The system prompt the template adds when the conversation has none.
    public let defaultSystem: String?

    public init(defaultSystem: String?) { self.defaultSystem = defaultSystem }

    /// The file's template, or nil when it has none (a base model, which serves text completions only).
    public static func ifPresent(in file: GGUFFile) throws -> ChatTemplate? {
        guard file.metadata["tokenizer.chat_template"]?.string != nil else { return nil }
        return try ChatTemplate(file: file)
    }

    public init(file: GGUFFile) throws {
        guard let source = file.metadata["tokenizer.chat_template"]?.string else {
            // No template in the file: plain ChatML, the common default of small instruct models.
            self.init(defaultSystem: nil)
            return
        }
        guard source.contains("<|im_start|>"), source.contains("<|im_end|>") else {
            throw GGUFError.unsupported("chat template (only ChatML-family templates are rendered; this file's tokenizer.chat_template is not one)")
        }
        self.init(defaultSystem: Self.defaultSystemPrompt(in: source))
    }

    /// The literal `<|im_start|>system\n…<|im_end|>` inside a template's string constants.
    static func defaultSystemPrompt(in source: String) -> String? {
        let marker = "<|im_start|>system\\n"
        guard let r = source.range(of: marker) ?? source.range(of: "<|im_start|>system\n") else { return nil }
        guard let end = source.range(of: "<|im_end|>", range: r.upperBound..<source.endIndex) else { return nil }
        let text = String(source[r.upperBound..<end.lowerBound])
        // A template that builds the system turn from a variable is not a default prompt.
        if text.contains("{{") || text.contains("+") || text.contains("message") { return nil }
        return text.replacingOccurrences(of: "\\n", with: "\n")
    }

    /// Segments for `BPETokenizer.encode(segments:)`: template text may contain special tokens,
    /// message content may not. Ends with the assistant turn's opening.
    public func render(_ messages: [Message]) -> [(text: String, allowSpecial: Bool)] {
        var out: [(text: String, allowSpecial: Bool)] = []
        if let defaultSystem, messages.first.map({ Self.role($0.role) != "system" }) ?? true {
            out.append(("<|im_start|>system\n" + defaultSystem + "<|im_end|>\n", true))
        }
        for m in messages {
            out.append(("<|im_start|>" + Self.role(m.role) + "\n", true))
            out.append((m.content, false))
            out.append(("<|im_end|>\n", true))
        }
        out.append(("<|im_start|>assistant\n", true))
        return out
    }

    /// OpenAI's `developer` role is the newer name of `system`.
    static func role(_ r: String) -> String { r == "developer" ? "system" : r }
}
