/// What the platform fills in when a client leaves a generation field out. Written into the
/// request body itself, so that the worker, the engine and a pass-through upstream all see the
/// same request the client is billed for (docs/completions.md, "Defaults").
public enum RequestDefaults {
    /// The answer budget for a request that sets none: the tier's `default_max_tokens`, else
    /// OpenAI's 16 for text completions, else none (chat runs to the model's context).
    public static func maxTokens(_ request: ChatRequest, tier: Tier) -> Int? {
        guard request.maxTokens == nil else { return nil }
        return tier.defaultMaxTokens ?? (request.completion != nil ? CompletionRequest.defaultMaxTokens : nil)
    }

    /// Applies the defaults to a validated request and its body (unchanged when nothing applies).
    /// The field is appended after the body's last member: a JSON object's keys are read last-wins,
    /// and the client's own `max_tokens` is known to be absent or null.
    public static func apply(to request: inout ChatRequest, body: inout [UInt8], tier: Tier) {
        guard let n = maxTokens(request, tier: tier) else { return }
        var end = body.count - 1
        while end >= 0, body[end] == 0x20 || body[end] == 0x0A || body[end] == 0x0D || body[end] == 0x09 { end -= 1 }
        guard end > 0, body[end] == UInt8(ascii: "}") else { return }
        var inner = end - 1
        while inner >= 0, body[inner] == 0x20 || body[inner] == 0x0A || body[inner] == 0x0D || body[inner] == 0x09 { inner -= 1 }
        let empty = inner >= 0 && body[inner] == UInt8(ascii: "{")
        body.replaceSubrange(end..., with: Array(((empty ? "" : ",") + "\"max_tokens\":\(n)}").utf8))
        request.maxTokens = n
    }
}
