import ArgumentParser
import Foundation
import XeroQueue
import XeroRouter
import XeroStore

/// `--insecure-plaintext-fabric`, on every process that speaks ZeroMQ. CURVE is the default.
struct FabricOptions: ParsableArguments {
    @Flag(help: "INSECURE: plain ZeroMQ without CURVE. Anyone who can reach the router's ports then reads every prompt and answer and can inject jobs and events. For benchmarks on an isolated host only; every process of the deployment must agree.")
    var insecurePlaintextFabric = false
}

/// The deployment's CURVE keys (docs/security.md): one server key pair shared by its routers and
/// one platform client key pair for gateways and batch runners, kept in Redis (`xero:fabric`),
/// which every platform process already trusts with everything. Made by the first process that
/// asks — `up`, the e2e fixtures and compose need no key step. Workers get only the server's
/// public key (`--router-key` / `XERO_ROUTER_KEY`, printed by `xerotier admin fabric-key`).
enum FabricKeys {
    struct Keys { var server: CurveKeyPair; var platform: CurveKeyPair }

    static let ensureScript = """
    if redis.call('EXISTS', KEYS[1]) == 0 then
      redis.call('HSET', KEYS[1], 'server_public', ARGV[1], 'server_secret', ARGV[2], 'platform_public', ARGV[3], 'platform_secret', ARGV[4], 'created_at', ARGV[5])
    end
    return redis.call('HMGET', KEYS[1], 'server_public', 'server_secret', 'platform_public', 'platform_secret')
    """

    static func load(_ address: RedisAddress) throws -> Keys {
        guard curveAvailable() else { throw ValidationError("this libzmq has no CURVE support (it must be built with libsodium)") }
        let server = try CurveKeyPair.generate(), platform = try CurveKeyPair.generate()
        let conn = try RedisConnection(address)
        let reply = try conn.command(["EVAL", ensureScript, "1", RedisKeys.fabric, server.publicKey, server.secretKey,
                                      platform.publicKey, platform.secretKey, String(Int64(Date().timeIntervalSince1970 * 1000))])
        let v = reply.array.compactMap(\.string)
        guard v.count == 4, v.allSatisfy(CurveKeyPair.isValid) else { throw ValidationError("\(RedisKeys.fabric) in Redis is damaged: \(reply)") }
        return Keys(server: CurveKeyPair(publicKey: v[0], secretKey: v[1]), platform: CurveKeyPair(publicKey: v[2], secretKey: v[3]))
    }

    /// What a gateway or batch runner presents.
    static func platformClient(_ fabric: FabricOptions, redis: RedisAddress) throws -> FabricSecurity {
        if fabric.insecurePlaintextFabric { return .plaintext }
        let k = try load(redis)
        return .client(k.platform, serverPublicKey: k.server.publicKey)
    }

    static func router(_ fabric: FabricOptions, redis: RedisAddress) throws -> RouterSecurity {
        if fabric.insecurePlaintextFabric { return .plaintext }
        let k = try load(redis)
        return .curve(server: k.server, platformPublicKey: k.platform.publicKey)
    }
}
