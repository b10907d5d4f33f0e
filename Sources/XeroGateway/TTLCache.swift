import Synchronization
import XeroCore

/// A small time-bounded cache for records read from Redis (keys, endpoints). Misses are cached
/// too (as nil), briefly, so a flood of bad keys cannot turn into a flood of Redis reads.
public final class TTLCache<Value: Sendable>: Sendable {
    private struct Entry { var value: Value?; var expiresNs: UInt64 }
    private let entries = Locked<[String: Entry]>([:])
    private let ttlNs: UInt64
    private let negativeTTLNs: UInt64
    private let capacity: Int

    public init(ttlMs: Int, negativeTTLMs: Int, capacity: Int = 100_000) {
        ttlNs = UInt64(ttlMs) * 1_000_000
        negativeTTLNs = UInt64(negativeTTLMs) * 1_000_000
        self.capacity = capacity
    }

    public enum Lookup { case hit(Value?), miss }

    public func get(_ key: String) -> Lookup {
        let now = monotonicNs()
        return entries.withLock { e in
            guard let entry = e[key], entry.expiresNs > now else { return .miss }
            return .hit(entry.value)
        }
    }

    public func put(_ key: String, _ value: Value?) {
        let now = monotonicNs()
        entries.withLock { e in
            if e.count >= capacity { e.removeAll(keepingCapacity: true) }
            e[key] = Entry(value: value, expiresNs: now + (value == nil ? negativeTTLNs : ttlNs))
        }
    }

    public func remove(_ key: String) { _ = entries.withLock { $0.removeValue(forKey: key) } }
    public func removeAll() { entries.withLock { $0.removeAll() } }

    /// Cached value, or `load()`'s result stored for next time.
    public func value(for key: String, load: () async throws -> Value?) async throws -> Value? {
        if case let .hit(v) = get(key) { return v }
        let v = try await load()
        put(key, v)
        return v
    }
}
