/// Compact binary encoding for every ZeroMQ message body (see docs/architecture.md, "Wire format").
/// Little-endian integers, strings and byte blobs as u32 length + bytes. Every message starts with a
/// one-byte kind and a one-byte version so either side can refuse what it does not understand.
public struct WireWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 128) { bytes = []; bytes.reserveCapacity(capacity) }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    public mutating func int(_ v: Int) { i64(Int64(v)) }
    public mutating func blob(_ v: [UInt8]) { u32(UInt32(v.count)); bytes.append(contentsOf: v) }
    public mutating func string(_ v: String) {
        let utf8 = v.utf8
        u32(UInt32(utf8.count))
        bytes.append(contentsOf: utf8)
    }
    public mutating func optionalString(_ v: String?) {
        if let v { bool(true); string(v) } else { bool(false) }
    }
    public mutating func strings(_ v: [String]) { u32(UInt32(v.count)); for s in v { string(s) } }
    /// Bytes as they are (already encoded wire data), no length prefix.
    public mutating func raw(_ v: [UInt8]) { bytes.append(contentsOf: v) }
}

/// Reads what `WireWriter` wrote. Every read is bounds-checked and throws `WireError` on short or
/// malformed input: a peer can never crash us with a bad frame.
public struct WireReader {
    private let bytes: [UInt8]
    public private(set) var offset: Int

    public init(_ bytes: [UInt8], offset: Int = 0) { self.bytes = bytes; self.offset = offset }

    public var isAtEnd: Bool { offset == bytes.count }

    private mutating func take(_ n: Int) throws -> Range<Int> {
        guard n >= 0, bytes.count - offset >= n else { throw WireError.truncated(at: offset, wanted: n) }
        defer { offset += n }
        return offset..<(offset + n)
    }

    public mutating func u8() throws -> UInt8 { bytes[try take(1).lowerBound] }
    public mutating func bool() throws -> Bool {
        switch try u8() { case 0: return false; case 1: return true; case let b: throw WireError.invalid("bool byte \(b)") }
    }
    public mutating func u32() throws -> UInt32 {
        let r = try take(4)
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(bytes[r.lowerBound + i]) << (8 * UInt32(i)) }
        return v
    }
    public mutating func u64() throws -> UInt64 {
        let r = try take(8)
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(bytes[r.lowerBound + i]) << (8 * UInt64(i)) }
        return v
    }
    public mutating func i64() throws -> Int64 { Int64(bitPattern: try u64()) }
    public mutating func int() throws -> Int { Int(try i64()) }
    public mutating func blob() throws -> [UInt8] {
        let n = Int(try u32())
        return Array(bytes[try take(n)])
    }
    public mutating func string() throws -> String {
        let n = Int(try u32())
        let r = try take(n)
        guard let s = String(validating: bytes[r], as: UTF8.self) else { throw WireError.invalid("string is not UTF-8") }
        return s
    }
    public mutating func optionalString() throws -> String? { try bool() ? try string() : nil }
    public mutating func strings() throws -> [String] {
        let n = Int(try u32())
        guard n <= bytes.count - offset else { throw WireError.invalid("string count \(n) exceeds frame") }
        return try (0..<n).map { _ in try string() }
    }

    /// Checks the kind/version header that starts every message.
    public mutating func header(expecting kind: UInt8) throws {
        let k = try u8()
        guard k == kind else { throw WireError.invalid("message kind \(k), expected \(kind)") }
        let v = try u8()
        guard v == wireVersion else { throw WireError.invalid("wire version \(v), expected \(wireVersion)") }
    }
}

/// Version of the binary wire format; bump on any incompatible change.
public let wireVersion: UInt8 = 5

public enum WireError: Error, Equatable, CustomStringConvertible {
    case truncated(at: Int, wanted: Int)
    case invalid(String)
    public var description: String {
        switch self {
        case let .truncated(at, wanted): return "wire message truncated at byte \(at) (wanted \(wanted) more)"
        case let .invalid(why): return "invalid wire message: \(why)"
        }
    }
}
