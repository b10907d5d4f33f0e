/// What a router tells one gateway (or batch runner) about itself and its submits, on the
/// client's own topic `<client-id>/` (the one its subscription confirmation comes on). The client
/// keeps each submitted job until its first event, and re-submits it when the router did not take
/// it or was replaced (docs/routing.md, "Keeping a job until it starts": the ZeroMQ guide's Lazy
/// Pirate on the PUSH link).
public enum RouterNotice: Sendable, Equatable {
    /// The router queued this request (or already had it: a duplicate submit is dropped and
    /// acknowledged again). It names the router, so a restarted one is recognised by its first
    /// acknowledgement, before any job it dispatches can start.
    case accepted(requestId: String, routerId: String)
    /// Every 250 ms: this router is up. A new `routerId` on the same link means it restarted and
    /// lost what it held.
    case alive(routerId: String)
    /// This router took over relaying a running job (its worker adopted it here after the router
    /// that dispatched it went away): the client stops waiting for a handover of it.
    case adopted(requestId: String, routerId: String)

    static let wireKind: UInt8 = 0x4E // "N"

    public func encode() -> [UInt8] {
        var w = WireWriter()
        w.u8(Self.wireKind); w.u8(wireVersion)
        switch self {
        case let .accepted(id, router): w.u8(1); w.string(id); w.string(router)
        case let .alive(id): w.u8(2); w.string(id)
        case let .adopted(id, router): w.u8(3); w.string(id); w.string(router)
        }
        return w.bytes
    }

    /// True if `bytes` starts like a notice (the confirmation that shares the topic does not).
    public static func looksLikeNotice(_ bytes: [UInt8]) -> Bool { bytes.first == wireKind }

    public static func decode(_ bytes: [UInt8]) throws -> RouterNotice {
        var r = WireReader(bytes)
        try r.header(expecting: wireKind)
        let kind = try r.u8()
        let notice: RouterNotice
        switch kind {
        case 1: notice = .accepted(requestId: try r.string(max: WireLimits.maxIDBytes, "request id"),
                                   routerId: try r.string(max: WireLimits.maxIDBytes, "router id"))
        case 2: notice = .alive(routerId: try r.string(max: WireLimits.maxIDBytes, "router id"))
        case 3: notice = .adopted(requestId: try r.string(max: WireLimits.maxIDBytes, "request id"),
                                  routerId: try r.string(max: WireLimits.maxIDBytes, "router id"))
        default: throw WireError.invalid("unknown router notice \(kind)")
        }
        guard r.isAtEnd else { throw WireError.invalid("trailing bytes after router notice") }
        return notice
    }
}
