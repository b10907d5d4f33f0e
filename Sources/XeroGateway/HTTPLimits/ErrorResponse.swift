import HTTPTypes
import NIOCore
import XeroCore

/// Writes an OpenAI-shaped error straight from a channel handler (a refusal no route sees) and
/// closes the connection once it has gone out.
enum ErrorResponse {
    static func send(_ error: APIError, context: ChannelHandlerContext, closeOutputFirst: Bool = false) {
        let body = ByteBuffer(string: error.jsonBody)
        let head = HTTPResponse(status: .init(code: error.status),
                                headerFields: [.contentType: "application/json", .contentLength: String(body.readableBytes), .connection: "close"])
        context.write(NIOAny(ResponsePart.head(head)), promise: nil)
        context.write(NIOAny(ResponsePart.body(body)), promise: nil)
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(NIOAny(ResponsePart.end(nil)), promise: done)
        // Closing before the write completes would drop it; a full close with unread request bytes
        // in the socket would send a reset the client may see before the answer, so a refusal that
        // never read the request closes its output first and the rest a moment later.
        done.futureResult.assumeIsolated().whenComplete { _ in
            if closeOutputFirst {
                context.close(mode: .output, promise: nil)
                context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(2)) { context.close(promise: nil) }
            } else {
                context.close(promise: nil)
            }
        }
    }
}
