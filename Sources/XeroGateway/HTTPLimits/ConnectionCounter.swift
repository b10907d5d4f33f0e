import Synchronization

/// The gateway's open-connection count against its cap, shared by every event loop's channels.
public final class ConnectionCounter: Sendable {
    public let limit: Int
    private let open = Atomic<Int>(0)

    public init(limit: Int) { self.limit = limit }

    /// Connections holding a slot now.
    public var count: Int { open.load(ordering: .relaxed) }

    /// Takes a slot; false (and nothing taken) when all `limit` are held.
    public func acquire() -> Bool {
        var current = open.load(ordering: .relaxed)
        while current < limit {
            let (exchanged, original) = open.compareExchange(expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = original
        }
        return false
    }

    /// Gives back a slot taken by `acquire`.
    public func release() {
        open.subtract(1, ordering: .acquiringAndReleasing)
    }
}
