/// Number-to-text without Foundation's `String(format:)`, which on Linux costs about a
/// microsecond a call: the API key's hex digest (32 calls a request) alone was 38.7 µs of gateway
/// CPU per request, 1.4 µs with `hex` (docs/benchmarks.md, "session 14").
public enum Formatting {
    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// Lower-case hex of bytes: `[0xde, 0xad]` → `"dead"`.
    public static func hex<D: Sequence>(_ bytes: D) -> String where D.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.underestimatedCount * 2)
        for b in bytes {
            out.append(hexDigits[Int(b >> 4)])
            out.append(hexDigits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A non-negative integer with at least `width` digits, zero-padded: `(7, 2)` → `"07"`.
    public static func padded(_ value: Int, width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }

    /// `x` with one decimal, rounded half away from zero: `1.25` → `"1.3"`, `3` → `"3.0"`. (`%.1f`
    /// rounds the binary value, so on exact halves the two may differ in the last digit.)
    public static func oneDecimal(_ x: Double) -> String {
        // Beyond ±1e15 tenths no longer fit the integer path; such values are not ours to format
        // nicely, only never to trap on.
        guard x.isFinite, x.magnitude < 1e15 else { return String(x) }
        let tenths = Int((x * 10).rounded())
        let m = tenths.magnitude
        return "\(tenths < 0 ? "-" : "")\(m / 10).\(m % 10)"
    }
}
