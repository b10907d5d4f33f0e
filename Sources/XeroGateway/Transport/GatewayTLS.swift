import Foundation
import HummingbirdTLS
import NIOSSL

/// The gateway's TLS settings from a PEM certificate chain and a PEM private key: TLS 1.2 and up,
/// ALPN `http/1.1` only (the gateway speaks HTTP/1.1; no HTTP/2 is offered).
public enum GatewayTLS {
    /// A certificate or key that cannot be used; the message names the file and the flag.
    public struct LoadError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Reads both files and builds the server context once, so a missing or unreadable file, a
    /// file with no PEM in it, or a key that does not belong to the certificate stops the process
    /// at start rather than failing every handshake.
    public static func configuration(certificatePath: String, keyPath: String) throws -> TLSConfiguration {
        func readable(_ path: String, _ flag: String) throws {
            guard FileManager.default.isReadableFile(atPath: path) else {
                throw LoadError(description: "\(flag) \(path): \(FileManager.default.fileExists(atPath: path) ? "not readable" : "no such file")")
            }
        }
        try readable(certificatePath, "--tls-cert")
        try readable(keyPath, "--tls-key")
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certificatePath) } catch {
            throw LoadError(description: "--tls-cert \(certificatePath): not a PEM certificate chain (\(error))")
        }
        guard !chain.isEmpty else { throw LoadError(description: "--tls-cert \(certificatePath): no PEM certificate in it") }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(file: keyPath, format: .pem) } catch {
            throw LoadError(description: "--tls-key \(keyPath): not a PEM private key, or an encrypted one (\(error))")
        }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        tls.minimumTLSVersion = .tlsv12
        tls.applicationProtocols = ["http/1.1"]
        // A connection the gateway closes waits this long for the client's close_notify before
        // its socket (and its --max-connections slot) goes; HTTP framing makes truncation visible
        // anyway, and clients that just drop the socket are common. (swift-nio-ssl's default: 5 s.)
        tls.shutdownTimeout = .seconds(1)
        do { _ = try NIOSSLContext(configuration: tls) } catch {
            throw LoadError(description: "--tls-key \(keyPath) does not fit --tls-cert \(certificatePath) (\(error))")
        }
        return tls
    }
}
