import Foundation
import NIOCore
import XCTest
import XeroCore
@testable import XeroGateway
import XeroJobs

final class SSEAndCacheTests: XCTestCase {
    func testEventFraming() {
        let ev = SSE.event(Array(#"{"a":"line\nbreak"}"#.utf8))
        XCTAssertEqual(String(decoding: ev, as: UTF8.self), "data: {\"a\":\"line\\nbreak\"}\n\n")
        var buf = ByteBuffer()
        SSE.append(Array("{}".utf8), to: &buf)
        buf.writeBytes(SSE.done)
        XCTAssertEqual(buf.getString(at: 0, length: buf.readableBytes), "data: {}\n\ndata: [DONE]\n\n")
    }

    func testChunksFramedAsSSEParseBack() throws {
        let w = ChatResponseWriter(id: "c", created: 0, model: "m")
        var buf = ByteBuffer()
        for piece in ["Hel", "lo\n", "\"w\"", "🌍"] { SSE.append(w.chunk(index: 0, content: piece), to: &buf) }
        let text = buf.getString(at: 0, length: buf.readableBytes)!
        let events = text.components(separatedBy: "\n\n").filter { !$0.isEmpty }
        XCTAssertEqual(events.count, 4)
        var joined = ""
        for e in events {
            XCTAssertTrue(e.hasPrefix("data: "))
            let obj = try JSONSerialization.jsonObject(with: Data(e.dropFirst(6).utf8)) as! [String: Any]
            let delta = ((obj["choices"] as! [[String: Any]])[0]["delta"] as! [String: Any])
            joined += delta["content"] as! String
        }
        XCTAssertEqual(joined, "Hello\n\"w\"🌍")
    }

    func testTTLCacheExpiresAndCachesMisses() async throws {
        let cache = TTLCache<String>(ttlMs: 50, negativeTTLMs: 20)
        var loads = 0
        for _ in 0..<3 { _ = try await cache.value(for: "k") { loads += 1; return "v" } }
        XCTAssertEqual(loads, 1)
        try await Task.sleep(nanoseconds: 80_000_000)
        _ = try await cache.value(for: "k") { loads += 1; return "v" }
        XCTAssertEqual(loads, 2)
        var missLoads = 0
        for _ in 0..<3 { _ = try await cache.value(for: "missing") { missLoads += 1; return nil } }
        XCTAssertEqual(missLoads, 1, "misses are cached too")
        cache.remove("k")
        if case .miss = cache.get("k") {} else { XCTFail("removed entry still cached") }
    }

    func testRequestIDsAreUnique() {
        let ids = RequestIDs()
        let set = Set((0..<10_000).map { _ in ids.next() })
        XCTAssertEqual(set.count, 10_000)
        XCTAssertTrue(set.first!.hasPrefix("chatcmpl-"))
    }
}

final class RateLimitHeaderTests: XCTestCase {
    func testDurationFormat() {
        XCTAssertEqual(RateLimitHeaders.formatDuration(ms: 20), "20ms")
        XCTAssertEqual(RateLimitHeaders.formatDuration(ms: 1000), "1s")
        XCTAssertEqual(RateLimitHeaders.formatDuration(ms: 1500), "1.5s")
        XCTAssertEqual(RateLimitHeaders.formatDuration(ms: 360_000), "6m0s")
        XCTAssertEqual(RateLimitHeaders.formatDuration(ms: -5), "0ms")
    }
}
