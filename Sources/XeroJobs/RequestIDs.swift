import Synchronization

/// Unique request ids: a random per-process prefix and a counter (cheap: no syscall per id).
public final class RequestIDs: Sendable {
    private let prefix: String
    private let counter = Atomic<UInt64>(0)
    public init() { prefix = "chatcmpl-" + String(UInt64.random(in: 0..<UInt64.max), radix: 36) }
    public func next() -> String {
        let n = counter.add(1, ordering: .relaxed).newValue
        return prefix + "x" + String(n, radix: 36)
    }
}
