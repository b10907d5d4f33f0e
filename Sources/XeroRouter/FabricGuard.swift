import Foundation
import XeroCore
import XeroQueue
import XeroStore

/// Who may talk to the router, decided once per connection by its ZAP handler and then per
/// message by the ZAP User-Id (docs/seams.md, "Identities on the fabric", and docs/security.md).
///
/// - `platform`: gateways and batch runners, holding the deployment's platform client key; they
///   may use every socket.
/// - `agent:<join-key hash>`: a worker, holding the key pair derived from its join key; it may use
///   the workers and events-in sockets only, and only while its join key is not revoked.
/// Anyone else is refused at the handshake: they can neither send nor receive anything.
struct FabricGuard {
    static let platformUser = "platform"
    static let agentPrefix = "agent:"
    /// ZAP domains (one per router socket).
    static let jobsDomain = "jobs", workersDomain = "workers", eventsInDomain = "events-in", eventsOutDomain = "events-out"
    static let agentDomains: Set<String> = [workersDomain, eventsInDomain]

    let platformPublicKey: String
    /// Looks a worker's public key up in Redis: its join-key hash if it belongs to a join key
    /// that is not revoked (nil: unknown or revoked). Throws when Redis cannot answer.
    let lookupAgent: (String) throws -> String?
    /// Recent answers, so a flood of handshakes costs one Redis read per key per second.
    private var cache: [String: (user: String?, atMs: Int64)] = [:]
    static let cacheMs: Int64 = 1000
    static let cacheCapacity = 10_000

    init(platformPublicKey: String, lookupAgent: @escaping (String) throws -> String?) {
        self.platformPublicKey = platformPublicKey
        self.lookupAgent = lookupAgent
    }

    enum Verdict: Equatable { case allow(userID: String), deny(String) }

    /// The answer for one ZAP request: `mechanism` must be CURVE, `clientKey` the 32-byte key.
    mutating func judge(domain: String, mechanism: String, clientKey: [UInt8], now: Int64) -> Verdict {
        guard mechanism == "CURVE", clientKey.count == 32, let z85 = try? CurveKeyPair.z85(clientKey) else {
            return .deny("CURVE credentials required")
        }
        if z85 == platformPublicKey { return .allow(userID: Self.platformUser) }
        guard Self.agentDomains.contains(domain) else { return .deny("workers may not use the \(domain) socket") }
        let user: String?
        if let hit = cache[z85], now - hit.atMs < Self.cacheMs {
            user = hit.user
        } else {
            do { user = try lookupAgent(z85).map { Self.agentPrefix + $0 } } catch { return .deny("cannot check the key now") }
            if cache.count >= Self.cacheCapacity { cache.removeAll(keepingCapacity: true) }
            cache[z85] = (user, now)
        }
        guard let user else { return .deny("unknown or revoked key") }
        return .allow(userID: user)
    }

    /// Forget cached answers (a join key was revoked).
    mutating func forget() { cache.removeAll() }

    /// The ZAP reply frames for a request's frames (RFC 27): version, request id, status code,
    /// status text, user id, metadata. Malformed requests are denied.
    mutating func reply(to frames: [[UInt8]], now: Int64) -> [[UInt8]] {
        guard frames.count >= 6, frames[0] == Array("1.0".utf8) else {
            return [Array("1.0".utf8), frames.count > 1 ? frames[1] : [], Array("400".utf8), Array("bad ZAP request".utf8), [], []]
        }
        let domain = String(decoding: frames[2], as: UTF8.self), mechanism = String(decoding: frames[5], as: UTF8.self)
        let key = frames.count > 6 ? frames[6] : []
        switch judge(domain: domain, mechanism: mechanism, clientKey: key, now: now) {
        case let .allow(user): return [frames[0], frames[1], Array("200".utf8), Array("OK".utf8), Array(user.utf8), []]
        case let .deny(why): return [frames[0], frames[1], Array("400".utf8), Array(why.utf8), [], []]
        }
    }
}
