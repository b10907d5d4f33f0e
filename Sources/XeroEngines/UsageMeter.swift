import Synchronization
import XeroCore

/// A job's token counts while it runs. The engine sets the prompt (once the prompt is known) and
/// adds each generated token; the worker reads it when the job ends however it ends, so the
/// billed usage never depends on the job reaching its final `.usage` event.
public final class UsageMeter: Sendable {
    private let prompt = Atomic<Int>(0)
    private let completion = Atomic<Int>(0)
    private let cached = Atomic<Int>(0)

    public init() {}

    public func setPrompt(_ tokens: Int, cached: Int = 0) {
        prompt.store(max(0, tokens), ordering: .relaxed)
        self.cached.store(max(0, cached), ordering: .relaxed)
    }

    public func addCompletion(_ tokens: Int = 1) { completion.add(max(0, tokens), ordering: .relaxed) }

    /// Replaces the counts with the engine's final word (e.g. an upstream's reported usage).
    public func set(_ usage: Usage) {
        setPrompt(usage.promptTokens, cached: usage.cachedTokens)
        completion.store(max(0, usage.completionTokens), ordering: .relaxed)
    }

    public var usage: Usage {
        Usage(promptTokens: prompt.load(ordering: .relaxed), completionTokens: completion.load(ordering: .relaxed),
              cachedTokens: cached.load(ordering: .relaxed))
    }
}
