import HummingbirdCore
import Logging
import NIOCore

/// Wraps a TLS child channel so every request on its connections knows it arrived over TLS:
/// the connection is handled inside a task-local, which `GatewayRequestContext.init` reads
/// (Hummingbird builds the context from the channel alone, and calls the responder inline in
/// the connection's task, so the value reaches it).
struct TLSMarkedChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value

    let base: Base

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        base.setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        await ConnectionTransport.$isTLS.withValue(true) { await base.handle(value: value, logger: logger) }
    }
}
