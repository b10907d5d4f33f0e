import NIOCore
import XeroCore

/// Bounds the time from a request's head to its end: a body still arriving when the timeout
/// fires (a slow-loris upload) gets a 408 JSON answer if no response has started, and the
/// connection is closed. The route still reading the body sees the 408 as an error, not an
/// early end, so a truncated body is never taken for a whole one.
final class RequestReadTimeoutHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = RequestPart
    typealias InboundOut = RequestPart
    typealias OutboundIn = ResponsePart
    typealias OutboundOut = ResponsePart

    private let timeout: TimeAmount
    private var timer: Scheduled<Void>?
    private var responseStarted = false
    private var timedOut = false

    init(seconds: Int) { self.timeout = .seconds(Int64(seconds)) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !timedOut else { return }
        switch unwrapInboundIn(data) {
        case .head:
            timer?.cancel()
            timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in fire(context) }
        case .body:
            break
        case .end:
            timer?.cancel()
            timer = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // After a timeout the route's own answer (to the error it was handed) has nowhere to go.
        guard !timedOut else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        switch unwrapOutboundIn(data) {
        case .head: responseStarted = true
        case .body: break
        case .end: responseStarted = false
        }
        context.write(data, promise: promise)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    private func fire(_ context: ChannelHandlerContext) {
        timer = nil
        timedOut = true
        let error = APIError.requestTimeout408(seconds: Int(timeout.nanoseconds / 1_000_000_000))
        // The reader first (its answer to the error is dropped by `write`), then the client.
        context.fireErrorCaught(error)
        if responseStarted {
            context.close(promise: nil)   // mid-answer: nothing more can be said
        } else {
            ErrorResponse.send(error, context: context)
        }
    }
}
