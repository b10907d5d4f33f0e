import CHiredis
import Foundation
import XeroCore

/// Redis pub/sub for cache invalidation: when a key is revoked, rotated or changed, its hash is
/// published on `xero:events:keys`; every gateway drops that cache entry at once (well under the
/// 1 s the tenancy contract allows). A dedicated connection on its own thread blocks in SUBSCRIBE.
/// After any reconnect the whole cache is dropped, since messages may have been missed.
public final class KeyEventSubscriber: Sendable {
    public static let channel = "xero:events:keys"

    private let stopped = Locked(false)

    public init(address: RedisAddress, onMessage: @escaping @Sendable (String) -> Void, onReconnect: @escaping @Sendable () -> Void) {
        let stopped = self.stopped
        let t = Thread {
            var first = true
            while !stopped.withLock({ $0 }) {
                do {
                    let conn = try RedisConnection(address, timeoutSeconds: 0)
                    try conn.subscribe(Self.channel)
                    if !first { onReconnect() }
                    first = false
                    while !stopped.withLock({ $0 }) {
                        let msg = try conn.readReply()
                        let parts = msg.array
                        if parts.count == 3, parts[0].string == "message", let payload = parts[2].string { onMessage(payload) }
                    }
                } catch {
                    onReconnect()
                    usleep(200_000)
                }
            }
        }
        t.name = "key-events"
        t.start()
    }

    public func stop() { stopped.withLock { $0 = true } }

    /// Tells every gateway to forget `keyHash`.
    public static func publish(_ redis: RedisClient, keyHash: String) async throws {
        _ = try await redis.send(["PUBLISH", channel, keyHash])
    }
}
