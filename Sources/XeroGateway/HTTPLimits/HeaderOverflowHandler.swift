import NIOCore
import NIOHTTP1
import XeroCore

/// Turns NIO's header-overflow parse error (a header field, all headers or their count over
/// the bounds) into a 431 JSON answer and a close, where Hummingbird alone would send an empty
/// 400. Other parse errors, and one arriving while an answer is being written, pass on.
final class HeaderOverflowHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = RequestPart
    typealias InboundOut = RequestPart
    typealias OutboundIn = ResponsePart
    typealias OutboundOut = ResponsePart

    private let maxHeaderBytes: Int
    private let maxFields: Int
    /// Requests read whose answers have not ended.
    private var open = 0
    private var refused = false

    init(maxHeaderBytes: Int, maxFields: Int) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxFields = maxFields
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) { open += 1 }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { open -= 1 }
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if refused { return }   // the decoder keeps complaining about the bytes after the bad head
        if case .headerOverflow? = error as? HTTPParserError, open == 0 {
            refused = true
            ErrorResponse.send(.headersTooLarge(limit: maxHeaderBytes, maxFields: maxFields), context: context, closeOutputFirst: true)
            return
        }
        context.fireErrorCaught(error)
    }
}
