import Foundation

/// A parsed JSON document that keeps the distinctions validation needs (bool vs number,
/// integer vs fraction, null vs absent) — `JSONSerialization` blurs them on Linux.
public enum JSONValue: Sendable, Equatable, Decodable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    /// Parses bytes; throws `APIError.invalidJSON` with the parser's reason.
    public static func parse(_ bytes: [UInt8]) throws(APIError) -> JSONValue {
        do { return try JSONParser.parse(bytes) } catch {
            throw APIError.invalidJSON("\(error)")
        }
    }

    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .int, .double: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }

    /// Serialises back to compact JSON (for pass-through fields such as `tools`).
    public func encoded() -> [UInt8] {
        var w = JSONWriter()
        write(to: &w)
        return w.bytes
    }

    public func write(to w: inout JSONWriter) {
        switch self {
        case .null: w.null()
        case let .bool(b): w.value(b)
        case let .int(i): w.value(i)
        case let .double(d): w.value(d)
        case let .string(s): w.value(s)
        case let .array(a): w.arrayStart(); for v in a { v.write(to: &w) }; w.arrayEnd()
        case let .object(o):
            w.objectStart()
            for k in o.keys.sorted() { w.key(k); o[k]!.write(to: &w) }
            w.objectEnd()
        }
    }
}
