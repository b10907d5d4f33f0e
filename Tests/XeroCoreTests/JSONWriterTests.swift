import Foundation
import XCTest
@testable import XeroCore

final class JSONWriterTests: XCTestCase {
    func testNestedStructureIsValidJSON() throws {
        var w = JSONWriter()
        w.objectStart()
        w.field("a", 1)
        w.key("b"); w.arrayStart(); w.value("x"); w.value(true); w.null(); w.objectStart(); w.field("c", 2.5); w.objectEnd(); w.arrayEnd()
        w.fieldOrNull("d", nil)
        w.key("e"); w.objectStart(); w.objectEnd()
        w.objectEnd()
        XCTAssertEqual(w.string, #"{"a":1,"b":["x",true,null,{"c":2.5}],"d":null,"e":{}}"#)
    }

    func testEscapingRoundTripsThroughFoundation() throws {
        let nasty = "quote\" backslash\\ newline\n tab\t cr\r bell\u{07} nul\u{0} emoji 👋🏽 CJK 你好 </script>"
        var w = JSONWriter()
        w.objectStart(); w.field("s", nasty); w.objectEnd()
        let parsed = try JSONSerialization.jsonObject(with: Data(w.bytes)) as? [String: String]
        XCTAssertEqual(parsed?["s"], nasty)
        XCTAssertFalse(w.string.contains("\n"), "compact JSON must not contain raw newlines (SSE framing relies on it)")
    }

    func testErrorBodyShape() throws {
        let e = APIError.invalidRequest("bad", param: "messages", code: "invalid_type")
        let obj = try JSONSerialization.jsonObject(with: Data(e.jsonBody.utf8)) as? [String: [String: Any]]
        let err = try XCTUnwrap(obj?["error"])
        XCTAssertEqual(err["message"] as? String, "bad")
        XCTAssertEqual(err["type"] as? String, "invalid_request_error")
        XCTAssertEqual(err["param"] as? String, "messages")
        XCTAssertEqual(err["code"] as? String, "invalid_type")
        let noParam = try JSONSerialization.jsonObject(with: Data(APIError.missingKey().jsonBody.utf8)) as? [String: [String: Any]]
        XCTAssertTrue(noParam?["error"]?["param"] is NSNull)
    }
}

final class JSONParserTests: XCTestCase {
    func testValuesAndTypes() throws {
        let v = try JSONValue.parse(Array(#" {"a":[1,-2,3.5,1e3,-0,true,false,null],"s":"x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00","e":{},"l":[]} "#.utf8))
        guard case let .object(o) = v, case let .array(a)? = o["a"] else { return XCTFail() }
        XCTAssertEqual(a, [.int(1), .int(-2), .double(3.5), .double(1000), .int(0), .bool(true), .bool(false), .null])
        XCTAssertEqual(o["s"], .string("x\"\\/\u{8}\u{c}\n\r\té😀"))
        XCTAssertEqual(o["e"], .object([:]))
        XCTAssertEqual(o["l"], .array([]))
        XCTAssertEqual(try JSONValue.parse(Array("9223372036854775808".utf8)), .double(9223372036854775808))
    }

    func testAgreesWithFoundationOnRoundTrips() throws {
        let text = #"{"model":"m","messages":[{"role":"user","content":"héllo 👋🏽 \n\t \"q\""}],"max_tokens":100,"temperature":0.7,"stop":["a","b"]}"#
        let ours = try JSONValue.parse(Array(text.utf8))
        let theirs = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        XCTAssertEqual(ours, theirs)
        XCTAssertEqual(try JSONValue.parse(ours.encoded()), ours)
    }

    func testRejectsInvalidJSON() {
        let bad = ["", " ", "{", "[1,]", "{\"a\":1,}", "{a:1}", "01", "1.", ".5", "-", "1e", "tru", "nul", "\"abc", "\"\\x\"", "\"\\ud800\"",
                   "\"\\udc00\"", "\"\u{01}\"", "[1] x", "{\"a\" 1}", "[\"a\" \"b\"]", "1e999", String(repeating: "[", count: 600) + String(repeating: "]", count: 600)]
        for s in bad {
            XCTAssertThrowsError(try JSONValue.parse(Array(s.utf8)), s.prefix(20).description)
        }
        XCTAssertThrowsError(try JSONValue.parse([0x22, 0xFF, 0xFE, 0x22]), "invalid UTF-8")
    }
}
