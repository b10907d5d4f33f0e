/// A tiny, allocation-light JSON writer for the hot path (SSE chunks, responses, error bodies).
/// Foundation's encoders are correct but cost tens of microseconds per object; this appends bytes.
public struct JSONWriter: Sendable {
    public private(set) var bytes: [UInt8] = []
    /// One entry per open container: whether the next element needs a comma first.
    private var needsComma: [Bool] = [false]
    /// True right after `key(_:)`: the next value belongs to that key and takes no comma.
    private var afterKey = false

    public init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    public var string: String { String(decoding: bytes, as: UTF8.self) }

    private mutating func beginValue() {
        if afterKey { afterKey = false; return }
        if needsComma[needsComma.count - 1] { bytes.append(UInt8(ascii: ",")) }
        needsComma[needsComma.count - 1] = true
    }

    public mutating func objectStart() { beginValue(); bytes.append(UInt8(ascii: "{")); needsComma.append(false) }
    public mutating func objectEnd() { bytes.append(UInt8(ascii: "}")); needsComma.removeLast() }
    public mutating func arrayStart() { beginValue(); bytes.append(UInt8(ascii: "[")); needsComma.append(false) }
    public mutating func arrayEnd() { bytes.append(UInt8(ascii: "]")); needsComma.removeLast() }

    /// Writes `"name":`; the next value call supplies its value.
    public mutating func key(_ name: String) {
        beginValue()
        Self.appendQuoted(name, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
        afterKey = true
    }

    public mutating func value(_ s: String) { beginValue(); Self.appendQuoted(s, to: &bytes) }
    public mutating func value(_ i: Int) { beginValue(); bytes.append(contentsOf: String(i).utf8) }
    public mutating func value(_ d: Double) {
        beginValue()
        if d.isFinite { bytes.append(contentsOf: "\(d)".utf8) } else { bytes.append(contentsOf: "null".utf8) }
    }
    public mutating func value(_ b: Bool) { beginValue(); bytes.append(contentsOf: (b ? "true" : "false").utf8) }
    public mutating func null() { beginValue(); bytes.append(contentsOf: "null".utf8) }
    /// Inserts already-encoded JSON as a value.
    public mutating func raw(_ json: [UInt8]) { beginValue(); bytes.append(contentsOf: json) }

    public mutating func field(_ k: String, _ v: String) { key(k); value(v) }
    public mutating func field(_ k: String, _ v: Int) { key(k); value(v) }
    public mutating func field(_ k: String, _ v: Double) { key(k); value(v) }
    public mutating func field(_ k: String, _ v: Bool) { key(k); value(v) }
    public mutating func fieldOrNull(_ k: String, _ v: String?) { key(k); if let v { value(v) } else { null() } }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// Appends `s` as a JSON string literal, escaping what RFC 8259 requires.
    public static func appendQuoted(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\")); out.append(b)
            case 0x0A: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "t"))
            case 0..<0x20:
                out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(b >> 4)], hex[Int(b & 0xF)]])
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
