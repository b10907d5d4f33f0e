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

extension Locked {
    /// The dictionary's value for `key`, made by `make` on first use. `make` runs outside the lock
    /// (it may take locks of its own); when two callers race, the first value stored wins.
    public func value<Key: Hashable & Sendable, Element: AnyObject & Sendable>(for key: Key, make: () -> Element) -> Element
        where Value == [Key: Element] {
        if let made = withLock({ $0[key] }) { return made }
        let made = make()
        return withLock { d in
            if let other = d[key] { return other }
            d[key] = made
            return made
        }
    }
}
