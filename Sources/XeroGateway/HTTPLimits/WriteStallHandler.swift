import NIOCore

/// Closes a connection whose channel has stayed unwritable (the client stopped reading its
/// answer) for the stall bound, so the route's pending write fails and its job is cancelled
/// instead of holding a worker slot and buffers for as long as the client stays silent.
final class WriteStallHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = RequestPart
    typealias InboundOut = RequestPart
    typealias OutboundIn = ResponsePart
    typealias OutboundOut = ResponsePart

    private let stall: TimeAmount
    private var timer: Scheduled<Void>?

    init(seconds: Int) { self.stall = .seconds(Int64(seconds)) }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            timer?.cancel()
            timer = nil
        } else if timer == nil {
            timer = context.eventLoop.assumeIsolated().scheduleTask(in: stall) { [self] in
                timer = nil
                if !context.channel.isWritable { context.close(promise: nil) }
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }
}
