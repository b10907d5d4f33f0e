import Foundation
import XCTest
@testable import XeroBatch

final class BatchInputTests: XCTestCase {
    let endpoint = "/v1/chat/completions"

    func line(_ id: String, url: String = "/v1/chat/completions", method: String = "POST", body: String = #"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#) -> String {
        #"{"custom_id":"\#(id)","method":"\#(method)","url":"\#(url)","body":\#(body)}"#
    }

    func testValidFileParses() throws {
        let text = [line("a"), line("b"), ""].joined(separator: "\n")
        guard case let .success(lines) = BatchInput.parse(Data(text.utf8), endpoint: endpoint) else { return XCTFail() }
        XCTAssertEqual(lines.map(\.customID), ["a", "b"])
    }

    func testEveryKindOfBadLineIsReportedWithItsLineNumber() {
        let text = [
            line("a"),
            "not json",
            line("a"),                                  // duplicate
            line("c", method: "GET"),
            line("d", url: "/v1/embeddings"),
            #"{"custom_id":"e","method":"POST","url":"/v1/chat/completions"}"#,
            line("f", body: #"{"model":"m","messages":[]}"#),
            #"{"method":"POST","url":"/v1/chat/completions","body":{}}"#,
            line("g", body: #"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}"#),
        ].joined(separator: "\n")
        guard case let .failure(errors) = BatchInput.parse(Data(text.utf8), endpoint: endpoint) else { return XCTFail("accepted") }
        XCTAssertEqual(errors.map(\.line), [2, 3, 4, 5, 6, 7, 8, 9])
        XCTAssertEqual(errors.map(\.code), ["invalid_json_line", "duplicate_custom_id", "invalid_method", "mismatched_url",
                                            "missing_required_parameter", "empty_array", "missing_required_parameter", "invalid_value"])
        XCTAssertEqual(errors[5].param, "body.messages")
        let json = BatchInput.errorsJSON(errors)
        let obj = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        XCTAssertEqual((obj?["data"] as? [Any])?.count, 8)
    }

    func testEmptyFileFails() {
        guard case let .failure(errors) = BatchInput.parse(Data("\n\n".utf8), endpoint: endpoint) else { return XCTFail() }
        XCTAssertEqual(errors.first?.code, "empty_file")
    }
}
