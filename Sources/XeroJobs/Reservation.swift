import XeroCore

/// How many tokens a job reserves from the token buckets when it is admitted: a cheap upper-bound
/// guess, corrected at settlement by what the worker really used.
public enum Reservation {
    /// Tokens reserved for the answer when a chat request sets no `max_tokens`.
    public static let defaultCompletionTokens = 256

    /// The prompt (≈ 4 bytes a token, plus per-message overhead) and the answer budget of every choice.
    public static func tokens(for chat: ChatRequest) -> Int {
        var prompt = chat.messages.reduce(8) { $0.addingSaturated($1.content.utf8.count / 4 + 8) }
        var choices = chat.n
        if let completion = chat.completion {
            for p in completion.prompts {
                switch p {
                case let .text(s): prompt = prompt.addingSaturated(s.utf8.count / 4 + 2)
                case let .tokens(t): prompt = prompt.addingSaturated(t.count)
                }
            }
            choices = completion.choiceCount(n: chat.n)
        }
        return prompt.addingSaturated((chat.budget ?? defaultCompletionTokens).multipliedSaturated(by: choices))
    }

    public static func tokens(for e: EmbeddingsRequest) -> Int {
        e.inputs.reduce(0) { total, input in
            switch input {
            case let .text(s): return total.addingSaturated(s.utf8.count / 3 + 2)
            case let .tokens(t): return total.addingSaturated(t.count + 2)
            }
        }
    }

    public static func tokens(for r: RerankRequest) -> Int {
        ([r.query] + r.documents).reduce(0) { $0.addingSaturated($1.utf8.count / 3 + 2) }
    }
}
