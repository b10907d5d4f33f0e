import Foundation
import HTTPTypes
import NIOCore
import NIOEmbedded
import XCTest
import XeroCore
@testable import XeroGateway

final class HTTPLimitsTests: XCTestCase {
    func testCounterStopsAtItsLimitAndReleasesSlots() {
        let c = ConnectionCounter(limit: 3)
        XCTAssertEqual((0..<5).map { _ in c.acquire() }, [true, true, true, false, false])
        XCTAssertEqual(c.count, 3)
        c.release()
        XCTAssertTrue(c.acquire())
        XCTAssertFalse(c.acquire())
    }

    func testCounterHoldsAcrossThreads() {
        let c = ConnectionCounter(limit: 100)
        let won = Locked(0)
        DispatchQueue.concurrentPerform(iterations: 1000) { _ in
            if c.acquire() { won.withLock { $0 += 1 } }
        }
        XCTAssertEqual(won.withLock { $0 }, 100)
        XCTAssertEqual(c.count, 100)
        DispatchQueue.concurrentPerform(iterations: 100) { _ in c.release() }
        XCTAssertEqual(c.count, 0)
    }

    /// Reads every response part the handler wrote: head, body bytes and whether an end followed.
    private func response(_ channel: EmbeddedChannel) throws -> (HTTPResponse?, String, Bool) {
        var head: HTTPResponse?
        var body = ""
        var ended = false
        while let part = try channel.readOutbound(as: ResponsePart.self) {
            switch part {
            case .head(let h): head = h
            case .body(let b): body += String(buffer: b)
            case .end: ended = true
            }
        }
        return (head, body, ended)
    }

    func testConnectionOverTheCapGets503JSONAndNoRequestPassesOn() throws {
        let counter = ConnectionCounter(limit: 1)
        let first = EmbeddedChannel(handler: ConnectionCapHandler(counter: counter))
        try first.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        XCTAssertEqual(counter.count, 1)
        XCTAssertNil(try response(first).0)

        let second = EmbeddedChannel(handler: ConnectionCapHandler(counter: counter))
        try second.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        let (head, body, ended) = try response(second)
        XCTAssertEqual(head?.status.code, 503)
        XCTAssertTrue(ended)
        XCTAssertTrue(body.contains(#""code":"too_many_connections""#), body)
        try second.writeInbound(RequestPart.head(HTTPRequest(method: .get, scheme: nil, authority: nil, path: "/health")))
        XCTAssertNil(try second.readInbound(as: RequestPart.self), "a refused connection's request reaches no route")
        XCTAssertEqual(counter.count, 1, "a refused connection holds no slot")

        _ = try first.finish()
        XCTAssertEqual(counter.count, 0, "a closed connection gives its slot back")
        _ = try? second.finish()
    }

    func testBodyNotArrivedInTimeGets408AndTheReaderAnError() throws {
        let channel = EmbeddedChannel(handler: RequestReadTimeoutHandler(seconds: 2))
        let errors = ErrorRecorder()
        try channel.pipeline.syncOperations.addHandler(errors)
        try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.writeInbound(RequestPart.head(HTTPRequest(method: .post, scheme: nil, authority: nil, path: "/x")))
        try channel.writeInbound(RequestPart.body(ByteBuffer(string: "{")))
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        XCTAssertNil(try response(channel).0, "no answer before the timeout")
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        let (head, body, ended) = try response(channel)
        XCTAssertEqual(head?.status.code, 408)
        XCTAssertTrue(ended)
        XCTAssertTrue(body.contains(#""code":"request_timeout""#), body)
        XCTAssertEqual((errors.errors.first as? APIError)?.status, 408, "the route reading the body sees an error, not an early end")
        XCTAssertFalse(channel.isActive)
    }

    func testBodyThatArrivesInTimeIsNotCut() throws {
        let channel = EmbeddedChannel(handler: RequestReadTimeoutHandler(seconds: 2))
        try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.writeInbound(RequestPart.head(HTTPRequest(method: .post, scheme: nil, authority: nil, path: "/x")))
        try channel.writeInbound(RequestPart.end(nil))
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        XCTAssertNil(try response(channel).0)
        XCTAssertTrue(channel.isActive)
        _ = try channel.finish()
    }

    func testUnwritableChannelIsClosedAfterTheStall() throws {
        let channel = EmbeddedChannel(handler: WriteStallHandler(seconds: 1))
        try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(500))
        XCTAssertTrue(channel.isActive)
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        XCTAssertTrue(channel.isActive, "writable again in time: kept")
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        XCTAssertFalse(channel.isActive, "unwritable past the stall: closed")
    }

    func testUploadStateCountsTheFileAndKeepsFields() throws {
        let path = NSTemporaryDirectory() + "upload-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let s = UploadState(handle: FileHandle(forWritingAtPath: path)!)
        s.handle(.partStart(headers: [], name: "purpose", filename: nil))
        s.handle(.field(name: "purpose", value: Array("batch".utf8)))
        s.handle(.partEnd)
        s.handle(.partStart(headers: [], name: "file", filename: "in.jsonl"))
        s.handle(.body(ArraySlice("a\nb".utf8)))
        XCTAssertFalse(s.fileComplete)
        s.handle(.partEnd)
        XCTAssertEqual(s.fields["purpose"], "batch")
        XCTAssertEqual(s.filename, "in.jsonl")
        XCTAssertEqual(s.fileBytes, 3)
        XCTAssertEqual(s.lines, 2, "a last line without a newline counts")
        XCTAssertTrue(s.sawFile && s.fileComplete)
    }
}

/// Collects the errors that reach the end of a test pipeline.
private final class ErrorRecorder: ChannelInboundHandler {
    typealias InboundIn = RequestPart
    var errors: [any Error] = []
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.fireChannelRead(data) }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { errors.append(error) }
}
