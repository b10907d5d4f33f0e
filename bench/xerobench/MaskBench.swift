import Foundation
import XeroCore
import XeroGGUF

/// What a constrained-decoding mask costs per step on a real vocabulary: the token-by-token scan
/// (every token's bytes through a copy of the grammar — how JSON mode worked before the schema
/// work) against `GrammarConstraint.mask` (trie walk, plain-string shortcut), in several states,
/// for `json_object` and a `json_schema` with required keys, an enum, anyOf and a $ref.
/// Usage: xerobench json-mask MODEL.gguf
enum MaskBench {
    static let schema = #"""
    {"type":"object","additionalProperties":false,"required":["customer","kind","pets","priority","note"],
     "properties":{"customer":{"type":"string"},"kind":{"enum":["adoption","grooming","boarding"]},
       "pets":{"type":"array","items":{"$ref":"#/$defs/Pet"},"minItems":1,"maxItems":2},"priority":{"type":"integer"},
       "note":{"anyOf":[{"type":"string"},{"type":"null"}]}},
     "$defs":{"Pet":{"type":"object","additionalProperties":false,"required":["name","species","age"],
       "properties":{"name":{"type":"string"},"species":{"enum":["cat","dog"]},"age":{"type":"integer"}}}}}
    """#

    static func run(path: String) throws {
        let tokenizer = try Tokenizers.load(try GGUFFile(path: path))
        let vocab = VocabIndex(tokenizer: tokenizer)
        let compiled = try JSONSchema.compile(try JSONValue.parse(Array(schema.utf8)), strict: true)
        let states = [("start", ""), ("key", #"{"cust"#), ("string", #"{"customer":"Ann Lee of"#), ("number", #"{"priority":12"#),
                      ("enum", #"{"kind":"gro"#), ("nested", #"{"pets":[{"name":"Tom","species":"#)]
        for (label, prefix) in states {
            var json = JSONGrammar(), sg = SchemaGrammar(schema: compiled)
            for b in prefix.utf8 { _ = json.accept(b); _ = sg.accept(b) }
            report("json_object", label, tokenizer, scan: json, fast: GrammarConstraint(json, vocab: vocab))
            report("json_schema", label, tokenizer, scan: sg, fast: GrammarConstraint(sg, vocab: vocab))
        }
    }

    static func report<G: ByteGrammar>(_ kind: String, _ state: String, _ tokenizer: any Tokenizer, scan grammar: G, fast: GrammarConstraint<G>) {
        let bytes = (0..<Int32(tokenizer.vocabSize)).map { tokenizer.bytes(of: $0) }
        func time(_ body: () -> Int) -> (Double, Int) {
            var best = Double.infinity, allowed = 0
            for _ in 0..<5 {
                let t0 = DispatchTime.now().uptimeNanoseconds
                allowed = body()
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
            }
            return (best, allowed)
        }
        let (scanMs, scanAllowed) = time {
            var n = 0
            for b in bytes where !b.isEmpty {
                var g = grammar
                if b.allSatisfy({ g.accept($0) }) { n += 1 }
            }
            return n
        }
        let (fastMs, fastAllowed) = time { fast.mask(remaining: .max).reduce(0) { $0 + ($1 ? 1 : 0) } }
        print(String(format: #"{"mode":"json-mask","format":"%@","state":"%@","vocab":%d,"allowed":%d,"scan_ms":%.2f,"mask_ms":%.2f,"speedup":%.1f,"scan_allowed":%d}"#,
                     kind, state, tokenizer.vocabSize, fastAllowed, scanMs, fastMs, scanMs / fastMs, scanAllowed))
    }
}
