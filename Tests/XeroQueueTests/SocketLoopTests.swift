import Foundation
import Synchronization
import XCTest
@testable import XeroQueue
import XeroCore

final class SocketLoopTests: XCTestCase {
    /// PUSH → PULL across two loops on tcp loopback: every message arrives, in order, intact.
    func testPushPullAcrossLoops() throws {
        let ctx = ZMQContext()
        let pull = try ZMQSocket(ctx, .pull)
        let endpoint = try pull.bind("tcp://127.0.0.1:*")
        XCTAssertTrue(endpoint.hasPrefix("tcp://127.0.0.1:"))
        let push = try ZMQSocket(ctx, .push)
        try push.connect(endpoint)
        let received = Mutex<[[UInt8]]>([])
        let done = expectation(description: "all received")
        let n = 2000
        let rx = SocketLoop(name: "rx", sockets: [pull], onMessage: { _, _, frames in
            let count = received.withLock { r -> Int in r.append(frames[0] + frames[1]); return r.count }
            if count == n { done.fulfill() }
        })
        let tx = SocketLoop(name: "tx", sockets: [push], onMessage: { _, _, _ in })
        rx.start(); tx.start()
        for i in 0..<n { tx.send(socket: 0, frames: [Array("m\(i)".utf8), [UInt8(i % 256)]]) }
        wait(for: [done], timeout: 10)
        let got = received.withLock { $0 }
        for i in [0, 1, 999, n - 1] { XCTAssertEqual(got[i], Array("m\(i)".utf8) + [UInt8(i % 256)]) }
        tx.stop(); rx.stop()
        ctx.terminate()
    }

    /// ROUTER/DEALER with routing ids, replying from inside the handler; ROUTER_MANDATORY reports
    /// unknown peers instead of dropping silently.
    func testRouterDealerReplyAndMandatory() throws {
        let ctx = ZMQContext()
        let router = try ZMQSocket(ctx, .router)
        try router.set(.routerMandatory)
        let endpoint = try router.bind("tcp://127.0.0.1:*")
        let dealer = try ZMQSocket(ctx, .dealer)
        try dealer.set(.routingID("w-1"))
        try dealer.connect(endpoint)
        let unknownPeerRefused = Mutex(false)
        let rLoop = SocketLoop(name: "r", sockets: [router], onMessage: { lc, _, frames in
            XCTAssertEqual(frames[0], Array("w-1".utf8))
            unknownPeerRefused.withLock { $0 = !lc.send(socket: 0, frames: [Array("nobody".utf8), [1]]) }
            lc.send(socket: 0, frames: [frames[0], frames[1] + [9]])
        })
        let reply = expectation(description: "reply")
        let dLoop = SocketLoop(name: "d", sockets: [dealer], onMessage: { _, _, frames in
            XCTAssertEqual(frames, [[1, 2, 9]])
            reply.fulfill()
        })
        rLoop.start(); dLoop.start()
        dLoop.send(socket: 0, frames: [[1, 2]])
        wait(for: [reply], timeout: 5)
        XCTAssertTrue(unknownPeerRefused.withLock { $0 })
        rLoop.stop(); dLoop.stop()
        ctx.terminate()
    }

    /// Messages that pile up before the loop gets to them are merged by the coalescer (here the
    /// worker's event batching): fewer frames arrive, and every event arrives once, in order.
    func testCoalescingSocketMergesWhatWaits() throws {
        let ctx = ZMQContext()
        let pull = try ZMQSocket(ctx, .pull)
        let endpoint = try pull.bind("tcp://127.0.0.1:*")
        let push = try ZMQSocket(ctx, .push)
        try push.connect(endpoint)
        let n = 500
        let frames = Mutex(0), seqs = Mutex<[String: [Int]]>([:])
        let done = expectation(description: "all events")
        let rx = SocketLoop(name: "rx", sockets: [pull], onMessage: { _, _, m in
            let events = (try? StreamEventBatch.decodeFrame(m[1])) ?? []
            frames.withLock { $0 += 1 }
            let total = seqs.withLock { s -> Int in
                for e in events { s[e.requestId, default: []].append(e.seq) }
                return s.values.reduce(0) { $0 + $1.count }
            }
            if total == 2 * n { done.fulfill() }
        })
        let tx = SocketLoop(name: "tx", sockets: [push], coalescing: ([0], StreamEventBatch.coalesce), onMessage: { _, _, _ in })
        // Queued before the loop runs, so its first pass sees all of them at once.
        for i in 0..<n {
            for r in ["a", "b"] {
                let e = StreamEvent(requestId: r, attempt: 1, seq: i, body: .delta(index: 0, text: "t\(i)", logprobs: nil))
                tx.send(socket: 0, frames: [Array("g/\(r)".utf8), e.encode()])
            }
        }
        rx.start(); tx.start()
        wait(for: [done], timeout: 10)
        XCTAssertEqual(seqs.withLock { $0 }, ["a": Array(0..<n), "b": Array(0..<n)])
        XCTAssertLessThanOrEqual(frames.withLock { $0 }, 2)
        tx.stop(); rx.stop()
        ctx.terminate()
    }

    func testTickRunsAndStopIsIdempotent() throws {
        let ctx = ZMQContext()
        let s = try ZMQSocket(ctx, .pull)
        _ = try s.bind("tcp://127.0.0.1:*")
        let ticks = Mutex(0)
        let loop = SocketLoop(name: "t", sockets: [s], tickMs: 5, onMessage: { _, _, _ in }, onTick: { _ in ticks.withLock { $0 += 1 } })
        loop.start()
        Thread.sleep(forTimeInterval: 0.2)
        loop.stop()
        loop.stop()
        XCTAssertGreaterThan(ticks.withLock { $0 }, 5)
        ctx.terminate()
    }

    func testBadEndpointThrows() throws {
        let ctx = ZMQContext()
        let s = try ZMQSocket(ctx, .pull)
        XCTAssertThrowsError(try s.bind("nonsense://x"))
        s.close()
        ctx.terminate()
    }
}
