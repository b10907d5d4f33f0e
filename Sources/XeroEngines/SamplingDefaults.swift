import XeroCore
import XeroGGUF

/// How the built-in engine samples a request that says nothing about sampling (no temperature,
/// top_p, top_k, min_p or penalty). OpenAI's own default, temperature 1, makes a 135M model
/// ramble; greedy decoding with a light frequency penalty answered the seed's examples in one
/// sentence and never looped in bench/sampling_defaults.py (docs/completions.md, "Sampling
/// defaults"). A request that sets any sampling field gets OpenAI's defaults for the others.
public struct SamplingDefaults: Sendable, Equatable {
    /// 0 = greedy.
    public var temperature: Float = 0
    /// Used only when `temperature` > 0.
    public var topP: Float = 0.9
    public var frequencyPenalty: Float = 0.3
    /// `n` > 1 with a greedy default would give n identical choices: they sample at this
    /// temperature (with `topP`) instead.
    public var choicesTemperature: Float = 0.2

    public init() {}

    /// True when the request leaves every sampling field to the engine.
    static func apply(to chat: ChatRequest) -> Bool {
        chat.temperature == nil && chat.topP == nil && chat.topK == nil && chat.minP == nil
            && chat.presencePenalty == nil && chat.frequencyPenalty == nil
    }

    /// The sampling options of one choice of `chat` (seed and logprobs are set by the caller).
    func options(for chat: ChatRequest) -> SamplingOptions {
        var o = SamplingOptions()
        if Self.apply(to: chat) {
            o.temperature = chat.n > 1 && temperature <= 0 ? choicesTemperature : temperature
            o.topP = o.temperature > 0 ? topP : 1
            o.frequencyPenalty = frequencyPenalty
            return o
        }
        o.temperature = chat.temperature.map(Float.init) ?? 1
        o.topP = chat.topP.map(Float.init) ?? 1
        o.topK = max(0, chat.topK ?? 0)
        o.minP = Float(chat.minP ?? 0)
        o.presencePenalty = Float(chat.presencePenalty ?? 0)
        o.frequencyPenalty = Float(chat.frequencyPenalty ?? 0)
        return o
    }
}
