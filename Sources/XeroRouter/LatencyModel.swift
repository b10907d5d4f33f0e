/// A worker's measured latency as a line, y ≈ a + b·x, fitted by exponentially weighted least
/// squares (each new sample weighs 1, older ones fade by `decay` per sample), for SLO-aware
/// placement (docs/routing.md, "SLO-aware placement"):
/// - time to first token against the prompt blocks the worker did not hold (x = uncached blocks);
/// - time per output token against the jobs running on the worker, the sampled one included.
/// Pure and tiny: a handful of doubles per worker.
///
/// Where the samples cannot tell the slope (all at one x, or nearly), it leans, above them, to the
/// line through the origin and their mean: latency in proportion to the work (TTFT to the uncached
/// blocks, TPOT to the jobs running), what an engine costs at worst, as if batching saved nothing
/// (below them it takes the smaller of that and their own slope, the cautious side there). The
/// flat line the samples alone give there is the optimist's reading: SLO placement keeps a worker
/// at the one load where it still meets the hints, so its samples all sit at that load, and a flat
/// line then promises one job more costs nothing: every job there missed (docs/benchmarks.md).
public struct LatencyModel: Sendable, Equatable {
    public static let decay = 0.95
    /// Samples before a prediction is made: until then the worker is presumed to meet any target
    /// (a new worker gets traffic, and so gets measured).
    public static let minSamples = 3
    /// How much the proportional slope weighs: as much as samples of total weight 1 spread one
    /// x unit (one block, one job) about their mean. Samples spread over a few jobs outweigh it
    /// by the tens.
    public static let priorWeight = 1.0

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
        let meanX = sx / w, meanY = sy / w
        // Weighted sums of squares about the means (never negative, whatever the rounding).
        let spread = max(0, sxx - sx * meanX), covariance = sxy - sx * meanY
        let proportional = meanX > 0 ? meanY / meanX : 0
        let leaning = max(0, (covariance + Self.priorWeight * proportional) / (spread + Self.priorWeight))   // latency never falls as work grows
        // Below the samples the cautious slope is the smaller: the proportional line would promise
        // a slow worker measured busy that it is fast when idle. Their own slope, flat if they lack one.
        let own = spread > 1e-9 * max(1, sxx) ? max(0, covariance / spread) : 0
        let b = x > meanX ? leaning : min(leaning, own)
        return max(0, meanY + b * (x - meanX))
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
