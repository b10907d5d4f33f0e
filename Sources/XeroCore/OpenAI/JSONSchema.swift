/// A `response_format: json_schema` schema, compiled into the node graph that constrained decoding
/// walks (XeroGGUF's `SchemaGrammar`). The supported subset is what structured-output schemas use
/// in practice (docs/completions.md, "json_schema"): `type` (one or several), `properties`,
/// `required`, `additionalProperties` (false, true or a schema), `items`, `minItems`, `maxItems`,
/// `enum`, `const`, `anyOf`, local `$ref` into `$defs`/`definitions` (recursion allowed).
/// Annotations are ignored. Any other keyword is a 400 naming it under `strict: true`; without
/// `strict` it is ignored, so the output obeys the schema minus that keyword.
public struct JSONSchema: Sendable, Equatable {
    public enum Node: Sendable, Equatable {
        /// Nothing matches (`false`, or an `anyOf` of nothing).
        case never
        /// One of these exact JSON texts (compact, keys sorted): `enum`, `const`, `null`, booleans.
        case literals([[UInt8]])
        case string
        case number
        case integer
        case object(Object)
        case array(item: Int, minItems: Int, maxItems: Int?)
        case anyOf([Int])
    }

    public struct Object: Sendable, Equatable {
        public struct Property: Sendable, Equatable {
            public var name: String
            /// The name as it appears between the quotes of a JSON key (escaped as JSONWriter does).
            public var encoded: [UInt8]
            public var node: Int
            public var required: Bool
        }
        /// Sorted by name.
        public var properties: [Property]
        /// The schema of any other key; nil = no other key (`additionalProperties: false`).
        public var additional: Int?
    }

    public private(set) var nodes: [Node] = []
    public private(set) var root = 0
    /// The shortest JSON text each node accepts (nil: none is finite), for finishing an answer
    /// whose token budget runs out.
    public private(set) var minimal: [[UInt8]?] = []

    // Bounds: a schema is client input.
    public static let maxNodes = 4096
    public static let maxDepth = 32
    public static let maxProperties = 64
    public static let maxLiterals = 1024
    /// The shortest value may be at most this long: nested `minItems` multiply, and a schema must
    /// not make the gateway build gigabytes (a longer one counts as none: 400).
    public static let maxMinimalBytes = 65_536

    static let annotations: Set<String> = ["title", "description", "default", "examples", "$schema", "$id", "$comment",
                                           "deprecated", "readOnly", "writeOnly", "$defs", "definitions"]
    static let supported: Set<String> = ["type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
                                         "enum", "const", "anyOf", "$ref"]
    static let types: Set<String> = ["object", "array", "string", "number", "integer", "boolean", "null"]

    /// Compiles `schema`; `param` names it in errors (`response_format.json_schema.schema`).
    public static func compile(_ schema: JSONValue, strict: Bool, param: String = "response_format.json_schema.schema") throws(APIError) -> JSONSchema {
        var c = Compiler(rootSchema: schema, strict: strict, param: param)
        let root = try c.node(schema, path: "#", depth: 0)
        var s = JSONSchema()
        s.nodes = c.nodes
        s.root = root
        s.minimal = Self.shortestTexts(c.nodes)
        if s.minimal[root] == nil {
            throw APIError.invalidRequest("Invalid schema: no JSON value of at most \(maxMinimalBytes) bytes satisfies it.", param: param, code: "invalid_value")
        }
        return s
    }

    /// A fixed point: a node's shortest text from its children's, until nothing shortens.
    static func shortestTexts(_ nodes: [Node]) -> [[UInt8]?] {
        var best = [[UInt8]?](repeating: nil, count: nodes.count)
        var changed = true
        while changed {
            changed = false
            for (i, n) in nodes.enumerated() {
                var candidate: [UInt8]?
                switch n {
                case .never: candidate = nil
                case let .literals(options): candidate = options.min { $0.count < $1.count }
                case .string: candidate = Array(#""""#.utf8)
                case .number, .integer: candidate = [UInt8(ascii: "0")]
                case let .object(o):
                    var out: [UInt8] = [UInt8(ascii: "{")]
                    var ok = true
                    for p in o.properties where p.required {
                        guard let v = best[p.node] else { ok = false; break }
                        if out.count > 1 { out.append(UInt8(ascii: ",")) }
                        out += [UInt8(ascii: "\"")] + p.encoded + Array("\":".utf8) + v
                    }
                    out.append(UInt8(ascii: "}"))
                    candidate = ok ? out : nil
                case let .array(item, minItems, _):
                    if minItems == 0 { candidate = Array("[]".utf8) }
                    else if let v = best[item], minItems.multipliedSaturated(by: v.count + 1) <= maxMinimalBytes {
                        candidate = [UInt8(ascii: "[")] + Array(Array(repeating: v, count: minItems).joined(separator: [UInt8(ascii: ",")])) + [UInt8(ascii: "]")]
                    }
                case let .anyOf(alts):
                    candidate = alts.compactMap { best[$0] }.min { $0.count < $1.count }
                }
                if let c = candidate, c.count <= maxMinimalBytes, best[i] == nil || c.count < best[i]!.count { best[i] = c; changed = true }
            }
        }
        return best
    }

    private struct Compiler {
        let rootSchema: JSONValue
        let strict: Bool
        let param: String
        var nodes: [Node] = []
        /// `$ref` target → its node (filled in after it is reserved, so recursion terminates).
        var refs: [String: Int] = [:]

        init(rootSchema: JSONValue, strict: Bool, param: String) {
            self.rootSchema = rootSchema; self.strict = strict; self.param = param
        }

        func fail(_ message: String) -> APIError {
            APIError.invalidRequest("Invalid schema: \(message)", param: param, code: "invalid_value")
        }

        mutating func add(_ n: Node) throws(APIError) -> Int {
            guard nodes.count < JSONSchema.maxNodes else { throw fail("more than \(JSONSchema.maxNodes) subschemas.") }
            nodes.append(n)
            return nodes.count - 1
        }

        mutating func node(_ schema: JSONValue, path: String, depth: Int) throws(APIError) -> Int {
            guard depth <= JSONSchema.maxDepth else { throw fail("nested deeper than \(JSONSchema.maxDepth) at \(path).") }
            switch schema {
            case .bool(true): return try anyValue()
            case .bool(false): return try add(.never)
            case let .object(o): return try object(o, path: path, depth: depth)
            default: throw fail("\(path) must be an object or a boolean, not \(schema.typeName).")
            }
        }

        /// Any JSON value (`{}`, `true`): one shared node, reused for every place that allows anything.
        var anyIndex: Int?
        mutating func anyValue() throws(APIError) -> Int {
            if let anyIndex { return anyIndex }
            let any = try add(.never)          // reserved, filled below (it contains itself)
            anyIndex = any
            let obj = try add(.object(Object(properties: [], additional: any)))
            let arr = try add(.array(item: any, minItems: 0, maxItems: nil))
            let str = try add(.string), num = try add(.number), lit = try add(.literals([Array("true".utf8), Array("false".utf8), Array("null".utf8)]))
            nodes[any] = .anyOf([obj, arr, str, num, lit])
            return any
        }

        mutating func object(_ o: [String: JSONValue], path: String, depth: Int) throws(APIError) -> Int {
            for key in o.keys.sorted() where !JSONSchema.supported.contains(key) && !JSONSchema.annotations.contains(key) {
                if strict {
                    throw APIError.invalidRequest("Invalid schema: the keyword '\(key)' at \(path) is not supported (supported: \(JSONSchema.supported.sorted().joined(separator: ", "))).",
                                                  param: param, code: "unsupported_schema_keyword")
                }
            }
            if let ref = o["$ref"] {
                guard case let .string(target) = ref else { throw fail("'$ref' at \(path) must be a string.") }
                return try resolve(target, depth: depth)
            }
            if let c = o["const"] { return try add(.literals([c.encoded()])) }
            if let e = o["enum"] {
                guard case let .array(values) = e, !values.isEmpty, values.count <= JSONSchema.maxLiterals else {
                    throw fail("'enum' at \(path) must be a non-empty array of at most \(JSONSchema.maxLiterals) values.")
                }
                return try add(.literals(values.map { $0.encoded() }))
            }
            if let a = o["anyOf"] {
                guard case let .array(alts) = a, !alts.isEmpty else { throw fail("'anyOf' at \(path) must be a non-empty array.") }
                let reserved = try add(.never)
                var indices: [Int] = []
                for (i, alt) in alts.enumerated() { indices.append(try node(alt, path: "\(path)/anyOf/\(i)", depth: depth + 1)) }
                // Sibling keywords (e.g. a `type`) narrow nothing here: anyOf wins, as most generators emit it alone.
                nodes[reserved] = .anyOf(indices)
                return reserved
            }
            var types: [String]
            switch o["type"] {
            case nil:
                types = o["properties"] != nil || o["additionalProperties"] != nil || o["required"] != nil ? ["object"]
                    : o["items"] != nil || o["minItems"] != nil || o["maxItems"] != nil ? ["array"] : []
                if types.isEmpty { return try anyValue() }
            case let .string(t)?: types = [t]
            case let .array(ts)?:
                types = []
                for t in ts { guard case let .string(s) = t else { throw fail("'type' at \(path) must name types.") }; types.append(s) }
                guard !types.isEmpty else { throw fail("'type' at \(path) is empty.") }
            case let v?: throw fail("'type' at \(path) must be a string or an array, not \(v.typeName).")
            }
            if let bad = types.first(where: { !JSONSchema.types.contains($0) }) { throw fail("unknown type '\(bad)' at \(path).") }
            if types.count == 1 { return try typed(types[0], o, path: path, depth: depth) }
            let reserved = try add(.never)
            var indices: [Int] = []
            for t in types { indices.append(try typed(t, o, path: path, depth: depth)) }
            nodes[reserved] = .anyOf(indices)
            return reserved
        }

        mutating func typed(_ type: String, _ o: [String: JSONValue], path: String, depth: Int) throws(APIError) -> Int {
            switch type {
            case "string": return try add(.string)
            case "number": return try add(.number)
            case "integer": return try add(.integer)
            case "boolean": return try add(.literals([Array("true".utf8), Array("false".utf8)]))
            case "null": return try add(.literals([Array("null".utf8)]))
            case "array":
                let reserved = try add(.never)
                let item: Int
                if let items = o["items"] { item = try node(items, path: path + "/items", depth: depth + 1) } else { item = try anyValue() }
                let minItems = try count(o["minItems"], "minItems", path) ?? 0
                let maxItems = try count(o["maxItems"], "maxItems", path)
                if let maxItems, maxItems < minItems { throw fail("'maxItems' is below 'minItems' at \(path).") }
                nodes[reserved] = .array(item: item, minItems: minItems, maxItems: maxItems)
                return reserved
            default:   // object
                let reserved = try add(.never)
                var required = Set<String>()
                if let r = o["required"] {
                    guard case let .array(names) = r else { throw fail("'required' at \(path) must be an array of names.") }
                    for n in names { guard case let .string(s) = n else { throw fail("'required' at \(path) must be an array of names.") }; required.insert(s) }
                }
                var properties: [Object.Property] = []
                if let p = o["properties"] {
                    guard case let .object(props) = p else { throw fail("'properties' at \(path) must be an object.") }
                    guard props.count <= JSONSchema.maxProperties else { throw fail("more than \(JSONSchema.maxProperties) properties at \(path).") }
                    for name in props.keys.sorted() {
                        let child = try node(props[name]!, path: "\(path)/properties/\(name)", depth: depth + 1)
                        properties.append(.init(name: name, encoded: Self.keyText(name), node: child, required: required.contains(name)))
                    }
                }
                let additional: Int?
                switch o["additionalProperties"] {
                case nil, .bool(true)?: additional = try anyValue()
                case .bool(false)?: additional = nil
                case let v?: additional = try node(v, path: path + "/additionalProperties", depth: depth + 1)
                }
                // A required key with no schema of its own takes the additional schema.
                let missing = required.subtracting(properties.map(\.name)).sorted()
                if let first = missing.first {
                    guard let additional else { throw fail("'\(first)' is required at \(path) but not allowed by its properties.") }
                    properties += missing.map { .init(name: $0, encoded: Self.keyText($0), node: additional, required: true) }
                    properties.sort { $0.name < $1.name }
                    guard properties.count <= JSONSchema.maxProperties else { throw fail("more than \(JSONSchema.maxProperties) properties at \(path).") }
                }
                nodes[reserved] = .object(Object(properties: properties, additional: additional))
                return reserved
            }
        }

        /// A property name as it stands between a JSON key's quotes.
        static func keyText(_ name: String) -> [UInt8] {
            var encoded = JSONValue.string(name).encoded()
            encoded.removeFirst(); encoded.removeLast()
            return encoded
        }

        func count(_ v: JSONValue?, _ name: String, _ path: String) throws(APIError) -> Int? {
            guard let v else { return nil }
            guard case let .int(n) = v, n >= 0, n <= 1 << 16 else { throw fail("'\(name)' at \(path) must be an integer in 0…65536.") }
            return n
        }

        /// `#`, `#/$defs/Name` or `#/definitions/Name` (JSON-pointer escapes `~0`, `~1`).
        mutating func resolve(_ target: String, depth: Int) throws(APIError) -> Int {
            if let known = refs[target] { return known }
            guard target.hasPrefix("#") else { throw fail("only local references ('#/$defs/…') are supported, not '\(target)'.") }
            var value = rootSchema
            for raw in target.dropFirst().split(separator: "/", omittingEmptySubsequences: true) {
                let key = raw.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
                guard case let .object(o) = value, let next = o[key] else { throw fail("the reference '\(target)' points nowhere.") }
                value = next
            }
            // Reserve the slot first: a recursive reference then finds it.
            let slot = try add(.never)
            refs[target] = slot
            let body = try node(value, path: target, depth: depth + 1)
            nodes[slot] = .anyOf([body])
            return slot
        }
    }
}
