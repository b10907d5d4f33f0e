import XeroCore

/// Label values taken from untrusted input, kept bounded: each is cut to `maxLength` characters of
/// `[A-Za-z0-9_.:-]` (anything else becomes `_`), and past `maxValues` distinct values in one family
/// a new one is reported as `other`. Prometheus keeps one series per value, so an unbounded label
/// is unbounded memory in this process and in Prometheus.
final class BoundedLabels: Sendable {
    static let maxValues = 32
    static let maxLength = 48
    private let seen = Locked([String: Set<String>]())

    func admit(_ raw: String, family: String) -> String {
        // The usual case, a value seen before: admitted values are clean, so `raw` is its own.
        if seen.withLock({ $0[family]?.contains(raw) ?? false }) { return raw }
        let value = Self.clean(raw)
        return seen.withLock { seen in
            if seen[family, default: []].contains(value) { return value }
            guard seen[family, default: []].count < Self.maxValues else { return "other" }
            seen[family, default: []].insert(value)
            return value
        }
    }

    static func clean(_ raw: String) -> String {
        var out = ""
        for scalar in raw.unicodeScalars.prefix(maxLength) {
            switch scalar {
            case "a"..."z", "A"..."Z", "0"..."9", "_", ".", ":", "-": out.unicodeScalars.append(scalar)
            default: out.append("_")
            }
        }
        return out.isEmpty ? "none" : out
    }
}
