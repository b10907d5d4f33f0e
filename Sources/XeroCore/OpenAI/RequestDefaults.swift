/// What the platform fills in when a client leaves a generation field out. Written into the
/// request body itself (as `xerotier_default_max_tokens`, not `max_tokens`: a default is a cap the
/// engine shortens to the context, never a reason for a 400), so that the worker, the engine and a
/// pass-through upstream all see the same request the client is admitted for (docs/completions.md,
/// "Defaults").
public enum RequestDefaults {
    /// The answer budget for a request that sets none: for text completions OpenAI's documented 16
    /// (part of that API's contract), for chat the tier's `default_max_tokens`, else none (chat
    /// runs to the model's context).
    public static func maxTokens(_ request: ChatRequest, tier: Tier) -> Int? {
        guard request.maxTokens == nil, request.defaultMaxTokens == nil else { return nil }
        return request.completion != nil ? CompletionRequest.defaultMaxTokens : tier.defaultMaxTokens
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
        body.replaceSubrange(end..., with: Array(((empty ? "" : ",") + "\"\(ChatRequest.defaultMaxTokensField)\":\(n)}").utf8))
        request.defaultMaxTokens = n
    }
}
