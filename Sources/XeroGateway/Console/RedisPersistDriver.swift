import Foundation
import Hummingbird
import XeroStore

/// Hummingbird's `PersistDriver` over the platform's Redis client: where console sessions live
/// (`xero:session:<id>`, JSON, TTL its expiry). hummingbird-redis is not in the mirror, and the
/// platform has one Redis client anyway.
struct RedisPersistDriver: PersistDriver {
    let redis: RedisClient

    func create<Object: Codable & Sendable>(key: String, value: Object, expires: Duration?) async throws {
        var args = ["SET", key, try Self.encode(value), "NX"]
        if let expires { args += ["PX", String(Self.ms(expires))] }
        guard try await redis.send(args) == .status("OK") else { throw PersistError.duplicate }
    }

    func set<Object: Codable & Sendable>(key: String, value: Object, expires: Duration?) async throws {
        // No expiry given on an existing key: keep the one it has (the protocol's contract).
        _ = try await redis.send(["SET", key, try Self.encode(value)] + (expires.map { ["PX", String(Self.ms($0))] } ?? ["KEEPTTL"]))
    }

    func get<Object: Codable & Sendable>(key: String, as: Object.Type) async throws -> Object? {
        guard let text = try await redis.send(["GET", key]).string else { return nil }
        return try Self.decode(text, as: Object.self)
    }

    func getWithTTL<Object: Codable & Sendable>(key: String, as: Object.Type) async throws -> (object: Object, ttl: Duration?)? {
        let replies = try await redis.pipeline(strings: [["GET", key], ["PTTL", key]])
        guard replies.count == 2, let text = replies[0].string else { return nil }
        let ttl = replies[1].int.flatMap { $0 > 0 ? Duration.milliseconds($0) : nil }
        return (try Self.decode(text, as: Object.self), ttl)
    }

    func remove(key: String) async throws {
        _ = try await redis.send(["DEL", key])
    }

    static func ms(_ d: Duration) -> Int64 { max(1, d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000) }

    static func encode<Object: Encodable>(_ value: Object) throws -> String {
        String(decoding: try JSONEncoder().encode(value), as: UTF8.self)
    }

    /// A value that does not decode is `invalidConversion`: the session middleware then drops it.
    static func decode<Object: Decodable>(_ text: String, as: Object.Type) throws -> Object {
        do { return try JSONDecoder().decode(Object.self, from: Data(text.utf8)) } catch { throw PersistError.invalidConversion }
    }
}
