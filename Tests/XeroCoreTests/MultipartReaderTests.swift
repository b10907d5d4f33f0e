import XCTest
@testable import XeroCore

final class MultipartReaderTests: XCTestCase {
    static let boundary = "----XeroBoundary7MA4YWxkTrZu0gW"

    /// File bytes that look like delimiters but are not (no CRLF before, or cut short), with CR/LF,
    /// NUL and high bytes, ending in a CR and a partial delimiter right before the real one.
    static let fileBytes: [UInt8] = {
        let b = Array(boundary.utf8)
        var f = Array(#"{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{}}"#.utf8) + [10]
        f += Array("--".utf8) + b + [13, 10]                       // at a line start, but not after CRLF
        f += [10] + Array("--".utf8) + b + [10]                    // after a bare LF
        f += [13] + Array("--".utf8) + b                           // after a bare CR
        f += [13, 10, 0x2D] + [13, 10, 0x2D, 0x2D] + [13, 13, 10]  // partial delimiters, CR runs
        f += [13, 10, 0x2D, 0x2D] + b.dropLast() + [0x21]          // all but the last boundary byte
        f += [0, 0xFF, 0xF4, 0x90, 0x80, 0x80, 0x7F, 9]
        f += [13, 10, 0x2D, 0x2D] + b.prefix(5) + [13]             // ends in CR + partial delimiter + CR
        return f
    }()

    static func upload(file: [UInt8] = fileBytes, purpose: String = "batch") -> [UInt8] {
        var s = "preamble to ignore\r\n--\(boundary)\r\n"
        s += "Content-Disposition: form-data; name=\"purpose\"\r\n\r\n\(purpose)\r\n"
        s += "--\(boundary)  \t\r\n"
        s += "content-disposition: form-data; NAME=\"file\"; FileName=\"batch.jsonl\"\r\n"
        s += "Content-Type: application/jsonl\r\n\r\n"
        return Array(s.utf8) + file + Array("\r\n--\(boundary)--\r\nepilogue, ignored".utf8)
    }

    /// Events with consecutive `.body` slices merged, so different chunkings compare equal.
    enum Seen: Equatable {
        case start(name: String, filename: String?, headers: [String])
        case file([UInt8])
        case field(String, [UInt8])
        case end
    }

    static func normalize(_ events: [MultipartEvent], into seen: inout [Seen]) {
        for e in events {
            switch e {
            case let .partStart(h, n, f): seen.append(.start(name: n, filename: f, headers: h.map { "\($0.name): \($0.value)" }))
            case let .body(b):
                XCTAssertFalse(b.isEmpty, "empty .body event")
                guard case .file(var bytes) = seen.last else { seen.append(.file(Array(b))); continue }
                seen[seen.count - 1] = .end   // drop the reference so the append is in place
                bytes += b
                seen[seen.count - 1] = .file(bytes)
            case let .field(n, v): seen.append(.field(n, v))
            case .partEnd: seen.append(.end)
            }
        }
    }

    /// Feeds `body` in chunks of the given sizes (the rest in one chunk), then finishes.
    static func read(_ body: [UInt8], chunks: [Int] = [], boundary: String = boundary,
                     _ make: (String) throws(MultipartError) -> MultipartReader = { b throws(MultipartError) in try MultipartReader(boundary: b) }) throws(MultipartError) -> [Seen] {
        var r = try make(boundary)
        var seen: [Seen] = []
        var i = 0
        for c in chunks where i < body.count {
            let j = min(body.count, i + c)
            normalize(try r.feed(body[i..<j]), into: &seen)
            i = j
        }
        if i < body.count { normalize(try r.feed(body[i...]), into: &seen) }
        try r.finish()
        return seen
    }

    static func error(_ body: [UInt8], chunks: [Int] = [], _ make: (String) throws(MultipartError) -> MultipartReader = { b throws(MultipartError) in try MultipartReader(boundary: b) }) -> MultipartError? {
        do { _ = try read(body, chunks: chunks, make); return nil } catch { return error }
    }

    static func part(_ headers: String, _ body: String) -> String { "--\(boundary)\r\n\(headers)\r\n\r\n\(body)\r\n" }
    static var close: String { "--\(boundary)--" }

    // MARK: Normal uploads

    func testNormalUploadInAnyChunking() throws {
        let body = Self.upload()
        let expected: [Seen] = [
            .start(name: "purpose", filename: nil, headers: [#"Content-Disposition: form-data; name="purpose""#]),
            .field("purpose", Array("batch".utf8)), .end,
            .start(name: "file", filename: "batch.jsonl", headers: [#"content-disposition: form-data; NAME="file"; FileName="batch.jsonl""#, "Content-Type: application/jsonl"]),
            .file(Self.fileBytes), .end,
        ]
        XCTAssertEqual(try Self.read(body), expected, "whole")
        XCTAssertEqual(try Self.read(body, chunks: Array(repeating: 1, count: body.count)), expected, "byte by byte")
        for cut in 0...body.count { XCTAssertEqual(try Self.read(body, chunks: [cut]), expected, "two chunks cut at \(cut)") }
        var rng = SplitMix64(seed: 2046)
        for round in 0..<200 {
            let chunks = (0..<body.count).map { _ in Int.random(in: 1...48, using: &rng) }
            XCTAssertEqual(try Self.read(body, chunks: chunks), expected, "random chunking \(round)")
        }
    }

    func testFileIsStreamedNotAccumulated() throws {
        let file = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 7) }
        let body = Self.upload(file: file)
        var r = try MultipartReader(boundary: Self.boundary)
        var got: [UInt8] = []
        var biggest = 0
        for start in stride(from: 0, to: body.count, by: 4096) {
            for e in try r.feed(body[start..<min(body.count, start + 4096)]) {
                if case .body(let b) = e { got += b; biggest = max(biggest, b.count) }
            }
        }
        try r.finish()
        XCTAssertEqual(got, file)
        XCTAssertLessThanOrEqual(biggest, 4096, "a .body event never exceeds the chunk it came from")
    }

    func testDispositionParameters() throws {
        let body = Self.part(#"Content-Disposition: FORM-DATA ;name=tok.en ;  filename = "a \"q\" \\ é.txt""#, "x")
            + Self.part("Content-Disposition: form-data; name=\"empty\"; filename=\"\"; size=3", "")
            + Self.part("Content-Disposition: form-data; name=\"\"", "") + Self.close
        XCTAssertEqual(try Self.read(Array(body.utf8)).filter { if case .start = $0 { true } else { false } }, [
            .start(name: "tok.en", filename: #"a "q" \ é.txt"#, headers: [#"Content-Disposition: FORM-DATA ;name=tok.en ;  filename = "a \"q\" \\ é.txt""#]),
            .start(name: "empty", filename: "", headers: ["Content-Disposition: form-data; name=\"empty\"; filename=\"\"; size=3"]),
            .start(name: "", filename: nil, headers: ["Content-Disposition: form-data; name=\"\""]),
        ])
        // An empty file part yields no .body events; an empty field yields an empty value.
        XCTAssertEqual(try Self.read(Array(body.utf8)).filter { if case .start = $0 { false } else { true } },
                       [.file(Array("x".utf8)), .end, .end, .field("", []), .end])
    }

    func testCallerDecidesWhichPartsAreFiles() throws {
        let body = Array((Self.part(#"Content-Disposition: form-data; name="file""#, "data") + Self.part(#"Content-Disposition: form-data; name="f"; filename="x""#, "y") + Self.close).utf8)
        let seen = try Self.read(body) { b throws(MultipartError) in try MultipartReader(boundary: b, isFile: { name, _ in name == "file" }) }
        XCTAssertEqual(seen.filter { if case .start = $0 { false } else { true } }, [.file(Array("data".utf8)), .end, .field("f", Array("y".utf8)), .end])
    }

    func testNoPartsAtAll() throws {
        XCTAssertEqual(try Self.read(Array("--\(Self.boundary)--".utf8)), [])
        XCTAssertEqual(try Self.read(Array("junk\r\n--\(Self.boundary)--\r\nmore junk\r\n--\(Self.boundary)\r\n".utf8)), [])
    }

    func testBoundaryFromContentType() {
        XCTAssertEqual(MultipartReader.boundary(fromContentType: "multipart/form-data; boundary=abc123"), "abc123")
        XCTAssertEqual(MultipartReader.boundary(fromContentType: #"Multipart/Form-Data;charset=utf-8; BOUNDARY="a b:c""#), "a b:c")
        XCTAssertNil(MultipartReader.boundary(fromContentType: "multipart/mixed; boundary=abc"))
        XCTAssertNil(MultipartReader.boundary(fromContentType: "multipart/form-data"))
        XCTAssertNil(MultipartReader.boundary(fromContentType: "multipart/form-data; boundary="))
        XCTAssertNil(MultipartReader.boundary(fromContentType: "multipart/form-data; xboundary=abc"))
        XCTAssertNil(MultipartReader.boundary(fromContentType: #"multipart/form-data; boundary="abc"#))
    }

    // MARK: Refusals

    func testTrapInputIsAnError() {
        // multipart-kit indexes a 128-entry table with this byte and traps.
        let body = Array("--\(Self.boundary)\r\nContent-Dispo".utf8) + [0xF4, 0x90, 0x80, 0x80] + Array("sition: form-data; name=\"file\"\r\n\r\nx\r\n\(Self.close)".utf8)
        XCTAssertEqual(Self.error(body), .malformed("a part header name contains a character that is not allowed"))
        XCTAssertEqual(Self.error(body, chunks: Array(repeating: 1, count: body.count)), .malformed("a part header name contains a character that is not allowed"))
        let separators: [UInt8] = [0x22, 0x28, 0x29, 0x2C, 0x2F, 0x3B, 0x3C, 0x3D, 0x3E, 0x3F, 0x40, 0x5B, 0x5C, 0x5D, 0x7B, 0x7D, 0x7F]
        let notToken: [UInt8] = Array(0x80...0xFF) + Array(0x00...0x20) + separators
        for b in notToken where b != 13 && b != 10 {
            let body = Array("--\(Self.boundary)\r\nX".utf8) + [b] + Array("Y: z\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n\r\n\(Self.close)".utf8)
            XCTAssertNotNil(Self.error(body), "header name byte \(b)")
        }
    }

    func testTooManyParts() {
        let tiny = Self.part(#"Content-Disposition: form-data; name="a""#, "1")
        let body = Array((String(repeating: tiny, count: 5000) + Self.close).utf8)
        XCTAssertEqual(Self.error(body), .tooManyParts(limit: 16))
        XCTAssertNoThrow(try Self.read(Array((String(repeating: tiny, count: 16) + Self.close).utf8)))
    }

    func testFieldTooLarge() {
        XCTAssertEqual(Self.error(Self.upload(purpose: String(repeating: "x", count: 5000))), .fieldTooLarge(name: "purpose", limit: 4096))
        XCTAssertEqual(Self.error(Self.upload(purpose: String(repeating: "x", count: 4097)), chunks: Array(repeating: 7, count: 1000)), .fieldTooLarge(name: "purpose", limit: 4096))
        XCTAssertNoThrow(try Self.read(Self.upload(purpose: String(repeating: "x", count: 4096))))
    }

    func testHeaderTooLarge() {
        let big = Self.part("Content-Disposition: form-data; name=\"a\"\r\nX-Big: " + String(repeating: "h", count: 10 * 1024), "") + Self.close
        XCTAssertEqual(Self.error(Array(big.utf8)), .headerTooLarge(limit: 8192))
        let padded = "--\(Self.boundary)" + String(repeating: " ", count: 9000) + "\r\n"
        XCTAssertEqual(Self.error(Array(padded.utf8)), .headerTooLarge(limit: 8192), "transport padding is bounded too")
    }

    func testMissingClosingDelimiter() {
        let full = Self.upload()
        let end = Array("\r\n--\(Self.boundary)--".utf8)
        let cut = full.indices.lastIndex(where: { full[$0...].starts(with: end) })!
        for n in [cut, cut + 1, cut + end.count - 1] {   // before the delimiter, inside it, after one '-'
            XCTAssertEqual(Self.error(Array(full[..<n])), .unterminated, "cut at \(n)")
        }
        XCTAssertNoThrow(try Self.read(Array(full[..<(cut + end.count)])))
        XCTAssertEqual(Self.error([]), .unterminated)
        XCTAssertEqual(Self.error(Array("no boundary here".utf8)), .unterminated)
    }

    func testMalformed() {
        let cd = #"Content-Disposition: form-data; name="a""#
        let cases: [(String, String)] = [
            ("--\(Self.boundary)\r\n\(cd)\nX: y\r\n\r\n\r\n\(Self.close)", "a part header line ends with a bare LF"),
            ("--\(Self.boundary)\r\n\(cd)\rX: y\r\n\r\n\r\n\(Self.close)", "a CR in the part headers is not followed by LF"),
            ("--\(Self.boundary)\r\nContent-Type: text/plain\r\n\r\n\r\n\(Self.close)", "a part has no Content-Disposition header"),
            ("--\(Self.boundary)\r\n\r\n\r\n\(Self.close)", "a part has no Content-Disposition header"),
            ("--\(Self.boundary)\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\n\r\n\(Self.close)", "a part's Content-Disposition is not 'form-data'"),
            ("--\(Self.boundary)\r\nContent-Disposition: form-data; filename=\"a\"\r\n\r\n\r\n\(Self.close)", "a part's Content-Disposition has no 'name' parameter"),
            ("--\(Self.boundary)\r\nContent-Disposition: form-data; name=\"a\"; Name=b\r\n\r\n\r\n\(Self.close)", "a Content-Disposition has two 'name' parameters"),
            ("--\(Self.boundary)\r\nContent-Disposition: form-data; name=\"a\r\n\r\n\r\n\(Self.close)", "a quoted header parameter is not closed"),
            ("--\(Self.boundary)\r\nContent-Disposition: form-data; name=a b\r\n\r\n\r\n\(Self.close)", "unexpected character in a header's parameters"),
            ("--\(Self.boundary)\r\nContent-Disposition: form-data; name=\"a\";\r\n\r\n\r\n\(Self.close)", "a header parameter has no name"),
            ("--\(Self.boundary)\r\n\(cd)\r\n\(cd)\r\n\r\n\r\n\(Self.close)", "a part has more than one Content-Disposition header"),
            ("--\(Self.boundary)\r\n : x\r\n\(cd)\r\n\r\n\r\n\(Self.close)", "a part header name contains a character that is not allowed"),
            ("--\(Self.boundary)\r\n: x\r\n\(cd)\r\n\r\n\r\n\(Self.close)", "a part header has an empty name"),
            ("--\(Self.boundary)\r\nno colon\r\n\(cd)\r\n\r\n\r\n\(Self.close)", "a part header line has no ':'"),
            ("--\(Self.boundary)\r\nX: a\u{1}b\r\n\(cd)\r\n\r\n\r\n\(Self.close)", "a part header value contains a control character"),
            ("--\(Self.boundary)x\r\n\(cd)\r\n\r\n\r\n\(Self.close)", "unexpected data after a boundary delimiter (the boundary must not occur inside a part)"),
            ("--\(Self.boundary)\r\n\(cd)\r\n\r\nv\r\n--\(Self.boundary)-x", "a boundary delimiter is followed by a single '-'"),
            ("--\(Self.boundary) x\r\n", "unexpected data after a boundary delimiter"),
            ("--\(Self.boundary)\r\r\n", "a boundary delimiter line does not end with CRLF"),
        ]
        for (body, why) in cases {
            XCTAssertEqual(Self.error(Array(body.utf8)), .malformed(why), body.debugDescription)
            XCTAssertEqual(Self.error(Array(body.utf8), chunks: Array(repeating: 1, count: body.utf8.count)), .malformed(why), "bytewise " + body.debugDescription)
        }
        let badUTF8 = Array("--\(Self.boundary)\r\nContent-Disposition: form-data; name=\"".utf8) + [0xC3, 0x28] + Array("\"\r\n\r\n\r\n\(Self.close)".utf8)
        XCTAssertEqual(Self.error(badUTF8), .malformed("a part header value is not valid UTF-8"))
    }

    func testErrorsAreStickyAndMapToAPIErrors() throws {
        var r = try MultipartReader(boundary: "b")
        XCTAssertThrowsError(try r.feed(Array("--b\r\n\r\n".utf8)))
        XCTAssertThrowsError(try r.feed(Array("anything".utf8))) { XCTAssertEqual($0 as? MultipartError, .malformed("a part has no Content-Disposition header")) }
        XCTAssertThrowsError(try r.finish())
        let api = MultipartError.fieldTooLarge(name: "purpose", limit: 4096).apiError
        XCTAssertEqual(api.status, 400)
        XCTAssertEqual(api.param, "purpose")
        XCTAssertEqual(api.code, "field_too_large")
        XCTAssertEqual(MultipartError.unterminated.apiError.code, "unterminated_multipart")
    }

    func testBoundaryValidity() {
        for bad in ["", String(repeating: "a", count: 71), "ends in space ", "quote\"", "semi;colon", "é", "cr\r", "tab\t", "star*"] {
            XCTAssertThrowsError(try MultipartReader(boundary: bad), bad.debugDescription) {
                guard case .invalidBoundary = $0 as? MultipartError else { return XCTFail("\($0)") }
            }
        }
        for good in [String(repeating: "a", count: 70), "1", "a b", "'()+_,-./:=?", "----WebKitFormBoundary7MA4YWxkTrZu0gW"] {
            XCTAssertNoThrow(try MultipartReader(boundary: good), good)
        }
    }

    // MARK: Fuzzing

    /// Random mutations of a valid body must only ever throw or succeed — a trap kills the test
    /// process — and the outcome must not depend on how the body is chunked.
    func testFuzzedBodiesNeverTrap() {
        let base = Array((Self.part(#"Content-Disposition: form-data; name="purpose""#, "batch")
            + "--\(Self.boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n").utf8)
            + Self.fileBytes.prefix(90) + Array("\r\n\(Self.close)\r\n".utf8)
        let interesting: [UInt8] = [13, 10, 0x2D, 0x3A, 0x3B, 0x3D, 0x22, 0x5C, 0x20, 0x09, 0x00, 0x7F, 0x80, 0xF4, 0xFF] + Array(Self.boundary.utf8.prefix(6))
        var rng = SplitMix64(seed: 7578)
        var outcomes = [0, 0]
        for round in 0..<3000 {
            var b = base
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let at = Int.random(in: 0...b.count, using: &rng)
                switch Int.random(in: 0..<6, using: &rng) {
                case 0 where at < b.count: b[at] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
                case 1: b.insert(interesting.randomElement(using: &rng)!, at: at)
                case 2: b.insert(UInt8.random(in: 0...255, using: &rng), at: at)
                case 3 where at < b.count: b.remove(at: at)
                case 4: b.removeSubrange(at...)
                case 5 where at < b.count: b.insert(contentsOf: b[at..<min(b.count, at + Int.random(in: 1...40, using: &rng))], at: at)
                default: break
                }
            }
            let chunks = (0..<b.count).map { _ in Int.random(in: 1...16, using: &rng) }
            let whole = Result { () throws(MultipartError) in try Self.read(b) }
            let chunked = Result { () throws(MultipartError) in try Self.read(b, chunks: chunks) }
            switch (whole, chunked) {
            case let (.success(x), .success(y)): XCTAssertEqual(x, y, "round \(round)"); outcomes[0] += 1
            case let (.failure(x), .failure(y)): XCTAssertEqual(x, y, "round \(round)"); outcomes[1] += 1
            default: XCTFail("round \(round): whole \(whole) vs chunked \(chunked)")
            }
        }
        XCTAssertGreaterThan(outcomes[0], 100, "some mutations still parse")
        XCTAssertGreaterThan(outcomes[1], 100, "most mutations are refused")
    }
}
