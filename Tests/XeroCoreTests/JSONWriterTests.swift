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
