import Foundation
import XCTest
@testable import XeroGGUF

final class JSONGrammarTests: XCTestCase {
    func accepts(_ s: String) -> Bool {
        var g = JSONGrammar()
        for b in s.utf8 where !g.accept(b) { return false }
        return g.isComplete
    }

    func testValidObjectsAreAccepted() {
        for s in [#"{}"#, #" { "a" : 1 } "#, #"{"a":[1,2.5,-0.1e+3,true,false,null,"x\"\\\u00e9"],"b":{"c":{}}}"#,
                  #"{"emoji":"🎉","n":0,"e":1E5,"arr":[[],[{}]]}"#, "{\n  \"k\": \"v\"\n}"] {
            XCTAssertTrue(accepts(s), s)
            XCTAssertNotNil(try? JSONSerialization.jsonObject(with: Data(s.utf8)), s)
        }
    }

    func testInvalidTextIsRejected() {
        for s in [#"[]"#, #""a""#, #"{a:1}"#, #"{"a":01}"#, #"{"a":1,}"#, #"{"a" 1}"#, #"{"a":tru}"#, "{\"a\":\"x\ny\"}",
                  #"{"a":1}}"#, #"{"a":-}"#, #"{"a":1.}"#, #"{"a":"\x"}"#, #"{} x"#] {
            XCTAssertFalse(accepts(s), s)
        }
    }

    /// Every prefix of a valid object, completed with `completion()`, parses as a JSON object.
    func testCompletionOfAnyPrefixParses() throws {
        let doc = #"{"name":"Ada \"L\"","tags":["a",[1,-2.5e-3,{"x":null}]],"ok":true,"n":0,"u":"\u00e9\n"}"#
        let bytes = Array(doc.utf8)
        for cut in 0...bytes.count {
            var g = JSONGrammar()
            for b in bytes[..<cut] { XCTAssertTrue(g.accept(b)) }
            let text = bytes[..<cut] + g.completion()
            let parsed = try? JSONSerialization.jsonObject(with: Data(text))
            XCTAssertTrue(parsed is [String: Any], "prefix \(cut): \(String(decoding: text, as: UTF8.self))")
        }
    }

    func testWhitespaceRunsAreCapped() {
        var g = JSONGrammar()
        XCTAssertTrue(g.accept(UInt8(ascii: "{")))
        var accepted = 0
        for _ in 0..<100 where g.accept(0x20) { accepted += 1 }
        XCTAssertEqual(accepted, Int(JSONGrammar.maxSpaces))
    }
}
