/// The jobs running on a worker integrated over time (job·ms, on the router's clock), so that a
/// finished job's TPOT is sampled against the mean number of jobs it decoded beside, itself
/// included: the regressor of the worker's TPOT model (`LatencyModel`).
///
/// Why not the load when the job was sent: in a closed loop a job sent to an idle worker has
/// company within milliseconds, so its TPOT is that of a full batch against x = 1. Such samples
/// flatten the fitted line (regression dilution): a worker measured that way was predicted to take
/// a fifth job within a 15 ms hint that it served at 15.4 ms, and every job there missed.
///
/// Advanced at the events that change the router's count (dispatch, start, finish); a heartbeat's
/// count is taken up at the next of them. Pure and tiny.
public struct JobTime: Sendable, Equatable {
    /// Job·ms accrued up to `sinceMs`.
    public private(set) var total = 0.0
    public private(set) var sinceMs: Int64?
    /// Jobs running since `sinceMs`.
    public private(set) var jobs = 0.0

    public init() {}

    /// Accrues the running count up to `now`, then makes `jobs` the count from now on. A clock
    /// that went back accrues nothing.
    public mutating func advance(to now: Int64, jobs newJobs: Double) {
        if let since = sinceMs, now > since { total += jobs * Double(now - since) }
        sinceMs = max(sinceMs ?? now, now)
        jobs = max(0, newJobs)
    }

    /// The mean count between a mark (`total` then, at `fromMs`) and now, or nil over no time.
    public func mean(since mark: Double, fromMs: Int64, to now: Int64) -> Double? {
        guard let since = sinceMs, now > fromMs, now >= since else { return nil }
        let accrued = total + jobs * Double(now - since) - mark
        return accrued >= 0 ? accrued / Double(now - fromMs) : nil
    }
}
