/// A worker's measured latency as a line, y ≈ a + b·x, fitted by exponentially weighted least
/// squares (each new sample weighs 1, older ones fade by `decay` per sample), for SLO-aware
/// placement (docs/routing.md, "SLO-aware placement"):
/// - time to first token against the prompt blocks the worker did not hold (x = uncached blocks);
/// - time per output token against the worker's load when the job was sent (x = running / slots).
/// Pure and tiny: a handful of doubles per worker.
public struct LatencyModel: Sendable, Equatable {
    public static let decay = 0.95
    /// Samples before a prediction is made: until then the worker is presumed to meet any target
    /// (a new worker gets traffic, and so gets measured).
    public static let minSamples = 3

    private var w = 0.0, sx = 0.0, sy = 0.0, sxx = 0.0, sxy = 0.0
    public private(set) var samples = 0

    public init() {}

    public mutating func add(x: Double, y: Double) {
        guard x.isFinite, y.isFinite, y >= 0 else { return }
        let d = Self.decay
        w = w * d + 1
        sx = sx * d + x
        sy = sy * d + y
        sxx = sxx * d + x * x
        sxy = sxy * d + x * y
        samples += 1
    }

    /// The predicted y at `x` (never negative), or nil before `minSamples`.
    public func predict(_ x: Double) -> Double? {
        guard samples >= Self.minSamples, w > 0 else { return nil }
        let den = w * sxx - sx * sx
        // All samples at (nearly) one x: the weighted mean is the best line there is.
        guard abs(den) > 1e-9 * max(1, w * sxx) else { return max(0, sy / w) }
        let b = max(0, (w * sxy - sx * sy) / den)   // latency never falls as work grows
        let a = (sy - b * sx) / w
        return max(0, a + b * x)
    }
}

/// What the router has measured of one worker.
public struct WorkerTimings: Sendable, Equatable {
    public var ttft = LatencyModel()
    public var tpot = LatencyModel()
    public init() {}
}

/// A placement's prediction for the chosen worker, ms (nil: no model of it yet).
public struct Prediction: Sendable, Equatable {
    public var ttftMs: Int?
    public var tpotMs: Int?
    public init(ttftMs: Int?, tpotMs: Int?) {
        self.ttftMs = ttftMs
        self.tpotMs = tpotMs
    }
}
