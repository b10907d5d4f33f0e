import CZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// A ZeroMQ context: thread-safe, one per process is enough.
public final class ZMQContext: @unchecked Sendable {
    let raw: UnsafeMutableRawPointer
    private var terminated = false

    public init(ioThreads: Int32 = 1) {
        raw = zmq_ctx_new()
        zmq_ctx_set(raw, ZMQ_IO_THREADS, ioThreads)
    }

    /// Ends the context; every socket must be closed first.
    public func terminate() {
        guard !terminated else { return }
        terminated = true
        zmq_ctx_term(raw)
    }
}

public enum SocketType: Sendable {
    case push, pull, pub, sub, xpub, xsub, router, dealer, rep, pair

    var raw: Int32 {
        switch self {
        case .push: return ZMQ_PUSH
        case .pull: return ZMQ_PULL
        case .pub: return ZMQ_PUB
        case .sub: return ZMQ_SUB
        case .xpub: return ZMQ_XPUB
        case .xsub: return ZMQ_XSUB
        case .router: return ZMQ_ROUTER
        case .dealer: return ZMQ_DEALER
        case .rep: return ZMQ_REP
        case .pair: return ZMQ_PAIR
        }
    }
}

public struct ZMQError: Error, CustomStringConvertible {
    public let errno: Int32
    public let operation: String
    public var description: String { "\(operation): \(String(cString: zmq_strerror(errno)))" }
    static func last(_ op: String) -> ZMQError { ZMQError(errno: zmq_errno(), operation: op) }
}

/// One ZeroMQ socket. Not thread-safe (neither is ZeroMQ's): it is created, used and closed by
/// one owner — a `SocketLoop` thread — and never shared. Frames are byte arrays.
public final class ZMQSocket {
    let raw: UnsafeMutableRawPointer
    public let type: SocketType
    private var closed = false

    public init(_ context: ZMQContext, _ type: SocketType) throws {
        guard let s = zmq_socket(context.raw, type.raw) else { throw ZMQError.last("zmq_socket") }
        raw = s
        self.type = type
        // Never block process exit on unsent messages.
        try setOption(ZMQ_LINGER, 0)
    }

    deinit { close() }

    public func close() {
        guard !closed else { return }
        closed = true
        zmq_close(raw)
    }

    public func setOption(_ option: Int32, _ value: Int32) throws {
        var v = value
        guard zmq_setsockopt(raw, option, &v, MemoryLayout<Int32>.size) == 0 else { throw ZMQError.last("zmq_setsockopt(\(option))") }
    }

    public func setOption(_ option: Int32, int64 value: Int64) throws {
        var v = value
        guard zmq_setsockopt(raw, option, &v, MemoryLayout<Int64>.size) == 0 else { throw ZMQError.last("zmq_setsockopt(\(option))") }
    }

    public func setOption(_ option: Int32, bytes: [UInt8]) throws {
        let rc = bytes.withUnsafeBytes { zmq_setsockopt(raw, option, $0.baseAddress, $0.count) }
        guard rc == 0 else { throw ZMQError.last("zmq_setsockopt(\(option))") }
    }

    public func subscribe(_ prefix: String) throws { try setOption(ZMQ_SUBSCRIBE, bytes: Array(prefix.utf8)) }

    /// Binds and returns the endpoint actually bound (resolves `tcp://127.0.0.1:*` to a port).
    @discardableResult
    public func bind(_ endpoint: String) throws -> String {
        guard zmq_bind(raw, endpoint) == 0 else { throw ZMQError.last("zmq_bind(\(endpoint))") }
        var buf = [CChar](repeating: 0, count: 256)
        var len = buf.count
        zmq_getsockopt(raw, ZMQ_LAST_ENDPOINT, &buf, &len)
        return String(cString: buf)
    }

    public func connect(_ endpoint: String) throws {
        guard zmq_connect(raw, endpoint) == 0 else { throw ZMQError.last("zmq_connect(\(endpoint))") }
    }

    /// A PAIR socket that receives this socket's handshake failures (libzmq's socket monitor):
    /// two frames, `u16 event, u32 value` and the endpoint. A client learns so that the router
    /// refused its credentials, which CURVE otherwise only shows as silence.
    public func handshakeFailures(context: ZMQContext, name: String) throws -> ZMQSocket {
        let endpoint = "inproc://handshake-\(name)"
        guard zmq_socket_monitor(raw, endpoint, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) == 0 else {
            throw ZMQError.last("zmq_socket_monitor")
        }
        let pair = try ZMQSocket(context, .pair)
        try pair.connect(endpoint)
        return pair
    }

    /// Decodes a monitor event: (event, value).
    public static func monitorEvent(_ frames: [[UInt8]]) -> (event: Int32, value: UInt32)? {
        guard let f = frames.first, f.count == 6 else { return nil }
        let event = Int32(UInt16(f[0]) | UInt16(f[1]) << 8)
        let value = UInt32(f[2]) | UInt32(f[3]) << 8 | UInt32(f[4]) << 16 | UInt32(f[5]) << 24
        return (event, value)
    }

    public static let handshakeFailedAuth = Int32(ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)

    public enum SendResult: Sendable { case sent, wouldBlock, unroutable }

    /// Sends a multipart message (ZeroMQ delivers all frames or none). `wouldBlock`: no peer yet or
    /// the queue is full — try again when the socket is writable; `unroutable`: a ROUTER's peer
    /// (ROUTER_MANDATORY) is gone.
    @discardableResult
    public func send(_ frames: [[UInt8]], dontWait: Bool = true) throws -> SendResult {
        for (i, frame) in frames.enumerated() {
            var flags: Int32 = dontWait ? ZMQ_DONTWAIT : 0
            if i < frames.count - 1 { flags |= ZMQ_SNDMORE }
            let rc = frame.withUnsafeBytes { zmq_send(raw, $0.baseAddress, $0.count, flags) }
            if rc < 0 {
                let e = zmq_errno()
                if e == EHOSTUNREACH { return .unroutable }
                if e == EAGAIN { return .wouldBlock }
                throw ZMQError(errno: e, operation: "zmq_send")
            }
        }
        return .sent
    }

    /// Read the ZAP `User-Id` of each received message into `lastUserID` (CURVE server sockets).
    public var wantsUserID = false
    /// The authenticated peer of the last message received (nil on plain sockets).
    public private(set) var lastUserID: String?

    /// Receives one multipart message, or nil when none is waiting (with `dontWait`).
    public func receive(dontWait: Bool = true) throws -> [[UInt8]]? {
        var frames: [[UInt8]] = []
        var msg = zmq_msg_t()
        while true {
            zmq_msg_init(&msg)
            defer { zmq_msg_close(&msg) }
            let rc = zmq_msg_recv(&msg, raw, dontWait ? ZMQ_DONTWAIT : 0)
            if rc < 0 {
                let e = zmq_errno()
                if e == EAGAIN && frames.isEmpty { return nil }
                if e == EINTR && frames.isEmpty { return nil }
                throw ZMQError(errno: e, operation: "zmq_msg_recv")
            }
            // A ROUTER's identity frame is made locally and carries no metadata: take the User-Id
            // from the first frame that came over the wire.
            if wantsUserID {
                if frames.isEmpty { lastUserID = nil }
                if lastUserID == nil { lastUserID = zmq_msg_gets(&msg, "User-Id").map { String(cString: $0) } }
            }
            let size = zmq_msg_size(&msg)
            let data = zmq_msg_data(&msg)!
            frames.append(Array(UnsafeRawBufferPointer(start: data, count: size)))
            if zmq_msg_more(&msg) == 0 { return frames }
        }
    }
}

/// The socket options Xerotier uses, so no C constant leaks out of this module.
public enum SocketOption: Sendable {
    /// 0 = unbounded queue (never drop; memory is the limit).
    case sendHighWaterMark(Int32)
    case receiveHighWaterMark(Int32)
    /// ROUTER: sending to an unknown peer fails instead of silently dropping.
    case routerMandatory
    /// XPUB: report every subscription, duplicates included.
    case xpubVerbose
    /// DEALER/ROUTER identity.
    case routingID(String)
    /// Reconnect interval in ms.
    case reconnectInterval(Int32)
    /// Largest message accepted from a peer; a peer that sends a larger one is disconnected.
    case maxMessageSize(Int)
    /// A blocking receive gives up after this many ms (nil message).
    case receiveTimeout(Int32)
}

extension ZMQSocket {
    public func set(_ option: SocketOption) throws {
        switch option {
        case let .sendHighWaterMark(n): try setOption(ZMQ_SNDHWM, n)
        case let .receiveHighWaterMark(n): try setOption(ZMQ_RCVHWM, n)
        case .routerMandatory: try setOption(ZMQ_ROUTER_MANDATORY, 1)
        case .xpubVerbose: try setOption(ZMQ_XPUB_VERBOSE, 1)
        case let .routingID(id): try setOption(ZMQ_ROUTING_ID, bytes: Array(id.utf8))
        case let .reconnectInterval(ms): try setOption(ZMQ_RECONNECT_IVL, ms)
        case let .maxMessageSize(n): try setOption(ZMQ_MAXMSGSIZE, int64: Int64(n))
        case let .receiveTimeout(ms): try setOption(ZMQ_RCVTIMEO, ms)
        }
    }
}
