import Foundation

/// Renders chat messages into the model's prompt format. A general Jinja interpreter is out of
/// scope: the template text is recognised as one of the families below and rendered by hand.
/// - ChatML (`<|im_start|>role\ncontent<|im_end|>\n`): SmolLM2, Qwen 2/2.5/3 — including a
///   default system prompt written in the template's text, added when the first message is not a
///   system message.
/// - Llama 3 (`<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>`), content trimmed;
///   3.1-style templates also open with their "Cutting Knowledge Date" system header.
/// - Gemma (`<start_of_turn>user\n…<end_of_turn>\n`, the assistant is `model`), content trimmed;
///   a system message is prefixed to the first user turn, as Gemma's template does.
/// A GGUF whose `tokenizer.chat_template` is none of these is refused at load, naming it, rather
/// than prompted in a format it was not trained on. BOS is the tokenizer's to add, never text here.
public struct ChatTemplate: Sendable, Equatable {
    public enum Family: String, Sendable {
        case chatml, llama3, gemma
    }
    public struct Message: Sendable {
        public var role: String
        public var content: String
        public init(role: String, content: String) { self.role = role; self.content = content }
    }

    public let family: Family
    /// The system prompt added when the conversation has none: ChatML templates' own, or the
    /// worker's `--default-system-prompt` for any family.
    public let defaultSystem: String?
    /// Llama 3.1-style: the date line of the system header ("26 Jul 2024", the template's own
    /// fallback when no `date_string` is passed); nil for plain Llama 3.
    public let knowledgeDate: String?

    public init(defaultSystem: String?) { family = .chatml; self.defaultSystem = defaultSystem; knowledgeDate = nil }

    public init(family: Family, defaultSystem: String? = nil, knowledgeDate: String? = nil) {
        self.family = family; self.defaultSystem = defaultSystem; self.knowledgeDate = knowledgeDate
    }

    /// The same template with another system prompt for a conversation without one (nil: none).
    public func withDefaultSystem(_ prompt: String?) -> ChatTemplate {
        ChatTemplate(family: family, defaultSystem: prompt, knowledgeDate: knowledgeDate)
    }

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
        try self.init(source: source)
    }

    /// Recognises a template's family from its text.
    public init(source: String) throws {
        if source.contains("<|start_header_id|>") && source.contains("<|eot_id|>") {
            let dated = source.contains("Cutting Knowledge Date")
            var date: String?
            if dated, let r = source.range(of: #"set date_string = ""#), let e = source[r.upperBound...].firstIndex(of: "\"") {
                date = String(source[r.upperBound..<e])
            }
            self.init(family: .llama3, knowledgeDate: dated ? (date ?? "26 Jul 2024") : nil)
        } else if source.contains("<start_of_turn>") && source.contains("<end_of_turn>") {
            self.init(family: .gemma)
        } else if source.contains("<|im_start|>") && source.contains("<|im_end|>") {
            self.init(defaultSystem: Self.defaultSystemPrompt(in: source))
        } else {
            let head = source.prefix(80).replacingOccurrences(of: "\n", with: " ")
            throw GGUFError.unsupported("chat template \"\(head)…\" (rendered families: ChatML, Llama 3, Gemma; use /v1/completions with your own prompt format)")
        }
    }

    /// The literal `<|im_start|>system\n…<|im_end|>` inside a template's string constants: the first
    /// occurrence that is plain text (Qwen 2.5's tools branch builds it from variables first).
    static func defaultSystemPrompt(in source: String) -> String? {
        for marker in ["<|im_start|>system\\n", "<|im_start|>system\n"] {
            var from = source.startIndex
            while let r = source.range(of: marker, range: from..<source.endIndex) {
                from = r.upperBound
                guard let end = source.range(of: "<|im_end|>", range: r.upperBound..<source.endIndex) else { break }
                let text = String(source[r.upperBound..<end.lowerBound])
                // A system turn built from a variable is not a default prompt.
                if text.contains("{{") || text.contains("+") || text.contains("message") { continue }
                return text.replacingOccurrences(of: "\\n", with: "\n")
            }
        }
        return nil
    }

    /// Segments for `BPETokenizer.encode(segments:)`: template text may contain special tokens,
    /// message content may not. Ends with the assistant turn's opening.
    public func render(_ messages: [Message]) -> [(text: String, allowSpecial: Bool)] {
        var messages = messages
        if let defaultSystem, messages.first.map({ Self.role($0.role) != "system" }) ?? true {
            messages.insert(Message(role: "system", content: defaultSystem), at: 0)
        }
        switch family {
        case .chatml: return renderChatML(messages)
        case .llama3: return renderLlama3(messages)
        case .gemma: return renderGemma(messages)
        }
    }

    func renderChatML(_ messages: [Message]) -> [(text: String, allowSpecial: Bool)] {
        var out: [(text: String, allowSpecial: Bool)] = []
        for m in messages {
            out.append(("<|im_start|>" + Self.role(m.role) + "\n", true))
            out.append((m.content, false))
            out.append(("<|im_end|>\n", true))
        }
        out.append(("<|im_start|>assistant\n", true))
        return out
    }

    func renderLlama3(_ messages: [Message]) -> [(text: String, allowSpecial: Bool)] {
        var out: [(text: String, allowSpecial: Bool)] = []
        var rest = messages[...]
        if let knowledgeDate {
            // 3.1: one system turn always, the date header first, then the system message's text.
            var system = ""
            if let first = rest.first, Self.role(first.role) == "system" { system = Self.trim(first.content); rest = rest.dropFirst() }
            out.append(("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: " + knowledgeDate + "\n\n", true))
            out.append((system, false))
            out.append(("<|eot_id|>", true))
        }
        for m in rest {
            out.append(("<|start_header_id|>" + Self.role(m.role) + "<|end_header_id|>\n\n", true))
            out.append((Self.trim(m.content), false))
            out.append(("<|eot_id|>", true))
        }
        out.append(("<|start_header_id|>assistant<|end_header_id|>\n\n", true))
        return out
    }

    func renderGemma(_ messages: [Message]) -> [(text: String, allowSpecial: Bool)] {
        var out: [(text: String, allowSpecial: Bool)] = []
        var rest = messages[...]
        var prefix = ""
        if let first = rest.first, Self.role(first.role) == "system" { prefix = first.content + "\n\n"; rest = rest.dropFirst() }
        for (i, m) in rest.enumerated() {
            let role = m.role == "assistant" ? "model" : Self.role(m.role)
            out.append(("<start_of_turn>" + role + "\n", true))
            out.append(((i == 0 ? prefix : "") + Self.trim(m.content), false))
            out.append(("<end_of_turn>\n", true))
        }
        out.append(("<start_of_turn>model\n", true))
        return out
    }

    /// Jinja's `trim`: whitespace off both ends.
    static func trim(_ s: String) -> String { s.trimmingCharacters(in: .whitespacesAndNewlines) }

    /// OpenAI's `developer` role is the newer name of `system`.
    static func role(_ r: String) -> String { r == "developer" ? "system" : r }
}
