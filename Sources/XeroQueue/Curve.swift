import CZeroMQ
import Crypto
import Foundation

/// A CURVE key pair, as the Z85 text libzmq takes (40 characters each).
public struct CurveKeyPair: Sendable, Equatable {
    public var publicKey: String
    public var secretKey: String

    public init(publicKey: String, secretKey: String) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// A fresh random key pair (libsodium through libzmq).
    public static func generate() throws -> CurveKeyPair {
        var pub = [CChar](repeating: 0, count: 41), sec = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&pub, &sec) == 0 else { throw ZMQError.last("zmq_curve_keypair") }
        return CurveKeyPair(publicKey: String(cString: pub), secretKey: String(cString: sec))
    }

    /// The key pair a worker holds by virtue of its join key (docs/seams.md, "Identities"): the
    /// secret is SHA-256("xerotier-curve-v1:" ‖ join key), the public key X25519 of it. The join key
    /// never travels; the router knows the public key from when the join key was made.
    public static func derived(fromJoinKey joinKey: String) throws -> CurveKeyPair {
        let digest = Array(SHA256.hash(data: Array("xerotier-curve-v1:\(joinKey)".utf8)))
        let secret = try z85(digest)
        return CurveKeyPair(publicKey: try publicKey(forSecret: secret), secretKey: secret)
    }

    public static func publicKey(forSecret secret: String) throws -> String {
        var pub = [CChar](repeating: 0, count: 41)
        guard zmq_curve_public(&pub, secret) == 0 else { throw ZMQError.last("zmq_curve_public") }
        return String(cString: pub)
    }

    /// Z85 text of 32 bytes.
    public static func z85(_ bytes: [UInt8]) throws -> String {
        precondition(bytes.count == 32)
        var out = [CChar](repeating: 0, count: 41)
        guard bytes.withUnsafeBufferPointer({ zmq_z85_encode(&out, $0.baseAddress, 32) }) != nil else { throw ZMQError.last("zmq_z85_encode") }
        return String(cString: out)
    }

    /// True when `key` is 40 characters of Z85 that decode to 32 bytes.
    public static func isValid(_ key: String) -> Bool {
        guard key.utf8.count == 40 else { return false }
        var out = [UInt8](repeating: 0, count: 32)
        return zmq_z85_decode(&out, key) != nil
    }
}

/// Whether this libzmq can do CURVE (Debian's is linked with libsodium).
public func curveAvailable() -> Bool { zmq_has("curve") == 1 }

/// How a socket authenticates on the fabric.
public enum FabricSecurity: Sendable {
    /// Plain ZeroMQ: only behind `--insecure-plaintext-fabric`, for benchmarks.
    case plaintext
    /// A CURVE server (the router): every peer is checked by the router's ZAP handler; `domain`
    /// tells the handler which socket the handshake is for.
    case server(CurveKeyPair, domain: String)
    /// A CURVE client that trusts this server public key.
    case client(CurveKeyPair, serverPublicKey: String)
}

extension ZMQSocket {
    /// Applies `security` before bind/connect.
    public func secure(_ security: FabricSecurity) throws {
        switch security {
        case .plaintext: break
        case let .server(keys, domain):
            try setOption(ZMQ_CURVE_SERVER, 1)
            try setOption(ZMQ_CURVE_SECRETKEY, bytes: Array(keys.secretKey.utf8))
            // libzmq asks the ZAP handler bound in the same context about every handshake; the
            // router binds its handler before any CURVE socket (without one CURVE admits anyone).
            try setOption(ZMQ_ZAP_DOMAIN, bytes: Array(domain.utf8))
        case let .client(keys, server):
            try setOption(ZMQ_CURVE_SERVERKEY, bytes: Array(server.utf8))
            try setOption(ZMQ_CURVE_PUBLICKEY, bytes: Array(keys.publicKey.utf8))
            try setOption(ZMQ_CURVE_SECRETKEY, bytes: Array(keys.secretKey.utf8))
        }
    }
}
