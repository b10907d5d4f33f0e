import Foundation

/// Wall-clock milliseconds since the epoch. Deadlines cross processes, so they are wall-clock;
/// all processes of one deployment are assumed to share a synchronised clock (NTP).
@inline(__always) public func nowMs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// Monotonic nanoseconds, for measuring durations inside one process.
@inline(__always) public func monotonicNs() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

