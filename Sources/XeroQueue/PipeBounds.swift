import XeroCore

/// ZeroMQ queue bounds (high-water marks, in messages) per peer pipe. The token path is lossy at
/// its bound on purpose: a publisher drops for the one subscriber that stopped reading, and that
/// subscriber's gateway sees the gap in the sequence numbers and fails the affected requests
/// visibly (`stream_interrupted`). Nothing else is affected and no memory grows without end.
public enum PipeBounds {
    /// Event pipes (worker → router → gateway): about 2 s of a fast router's whole output.
    public static let events: Int32 = 1_000_000
    /// Jobs, cancels and control messages.
    public static let control: Int32 = 100_000

    /// What a socket that only receives subscriptions from its peers accepts.
    public static let subscriptionBytes = WireLimits.maxSubscriptionFrameBytes
}
