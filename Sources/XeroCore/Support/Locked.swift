import Synchronization

/// A value behind a mutex, as a class so it can be a stored property of any type. (A `Mutex`
/// stored directly in a class whose initializer can throw crashes the Swift 6.3 optimizer —
/// "Found ownership error" in release builds — so classes hold a `Locked` instead.)
public final class Locked<Value>: @unchecked Sendable {
    private let mutex: Mutex<Value>
    public init(_ value: sending Value) { mutex = Mutex(value) }
    @discardableResult
    public func withLock<R>(_ body: (inout sending Value) throws -> sending R) rethrows -> sending R {
        try mutex.withLock(body)
    }
}
