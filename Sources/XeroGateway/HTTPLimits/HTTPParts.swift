import HummingbirdCore
import NIOCore

// The parts Hummingbird's HTTP/1 pipeline hands the handlers added between its codec and its
// request loop (NIOHTTPTypes' enums), named through `HTTP1Channel` so this target needs no
// direct swift-nio-extras dependency.
extension NIOAsyncChannel {
    typealias InboundPart = Inbound
    typealias OutboundPart = Outbound
}
typealias RequestPart = HTTP1Channel.Value.InboundPart
typealias ResponsePart = HTTP1Channel.Value.OutboundPart
