/// Totals of an engine's batch loop since it started (monotonic): the engine counts them
/// (XeroEngines' `Engine.stepStats`), the worker's metrics turn them into counters (XeroMetrics),
/// so the type lives below both. An operator reads the mean batch (tokens over steps) and how busy
/// the loop is (busy seconds over wall seconds) from their rates.
public struct EngineStepStats: Sendable, Equatable {
    /// Forward passes run.
    public var steps: Int
    /// Tokens those passes took: one per decoding sequence…
    public var decodeTokens: Int
    /// …and the prompt tokens they computed (not those found cached).
    public var prefillTokens: Int
    /// Seconds spent in forward passes.
    public var busySeconds: Double
    public static let none = EngineStepStats(steps: 0, decodeTokens: 0, prefillTokens: 0, busySeconds: 0)
    public init(steps: Int, decodeTokens: Int, prefillTokens: Int, busySeconds: Double) {
        self.steps = steps
        self.decodeTokens = decodeTokens
        self.prefillTokens = prefillTokens
        self.busySeconds = busySeconds
    }
}
