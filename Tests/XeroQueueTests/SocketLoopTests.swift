import Foundation
import Synchronization
import XCTest
@testable import XeroQueue

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
