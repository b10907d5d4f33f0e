import NIOCore
import XeroCore

/// Holds one `ConnectionCounter` slot for its connection's life; a connection that finds none
/// free is answered at once with a 503 JSON refusal and closed, instead of waiting unanswered in
/// the accept backlog. Its request, if any, is never passed on.
final class ConnectionCapHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = RequestPart
    typealias InboundOut = RequestPart
    typealias OutboundIn = ResponsePart
    typealias OutboundOut = ResponsePart

    private let counter: ConnectionCounter
    private enum State { case fresh, admitted, refused, released }
    private var state = State.fresh

    init(counter: ConnectionCounter) { self.counter = counter }

    func handlerAdded(context: ChannelHandlerContext) {
        state = counter.acquire() ? .admitted : .refused
        if context.channel.isActive { refuseIfOverCap(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        refuseIfOverCap(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        release()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { release() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard state != .refused else { return }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard state != .refused else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        context.write(data, promise: promise)
    }

    private var answered = false
    private func refuseIfOverCap(_ context: ChannelHandlerContext) {
        guard state == .refused, !answered else { return }
        answered = true
        ErrorResponse.send(.tooManyConnections(limit: counter.limit), context: context, closeOutputFirst: true)
    }

    private func release() {
        guard state == .admitted else { return }
        counter.release()
        state = .released
    }
}
