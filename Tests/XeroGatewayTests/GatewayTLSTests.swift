import Foundation
import Hummingbird
import HummingbirdTesting
import XCTest
@testable import XeroGateway

/// `GatewayTLS` and the server builder: files that cannot serve are refused naming the file, and a
/// request over TLS sees `isTLS` while the same router over plain HTTP does not.
final class GatewayTLSTests: XCTestCase {
    nonisolated(unsafe) static var dir: String!
    static var cert: String { dir + "/server.pem" }
    static var key: String { dir + "/server.key" }

    override class func setUp() {
        dir = NSTemporaryDirectory() + "gateway-tls-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                 "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert])
        openssl(["genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", dir + "/other.key"])
    }
    override class func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    static func openssl(_ args: [String]) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try? p.run()
        p.waitUntilExit()
    }

    func testGoodFilesLoad() throws {
        let tls = try GatewayTLS.configuration(certificatePath: Self.cert, keyPath: Self.key)
        XCTAssertEqual(tls.minimumTLSVersion, .tlsv12)
        XCTAssertEqual(tls.applicationProtocols, ["http/1.1"])
    }

    func testBadFilesAreNamed() throws {
        let garbage = Self.dir + "/garbage.pem"
        try "not a certificate\n".write(toFile: garbage, atomically: true, encoding: .utf8)
        let cases: [(String, String, String)] = [
            (Self.dir + "/missing.pem", Self.key, "--tls-cert \(Self.dir!)/missing.pem: no such file"),
            (Self.cert, Self.dir + "/missing.key", "--tls-key \(Self.dir!)/missing.key: no such file"),
            (garbage, Self.key, "--tls-cert \(garbage)"),
            (Self.cert, garbage, "--tls-key \(garbage)"),
            (Self.key, Self.key, "--tls-cert \(Self.key)"),
            (Self.cert, Self.dir + "/other.key", "does not fit --tls-cert"),
        ]
        for (cert, key, expected) in cases {
            XCTAssertThrowsError(try GatewayTLS.configuration(certificatePath: cert, keyPath: key)) { error in
                XCTAssertTrue("\(error)".contains(expected), "\(cert) \(key): \(error)")
            }
        }
    }

    private func router() -> Router<GatewayRequestContext> {
        let r = Router(context: GatewayRequestContext.self)
        r.get("/transport") { _, context -> String in context.isTLS ? "tls" : "plain" }
        return r
    }

    func testRequestsOverTLSAreMarked() async throws {
        let tls = try GatewayTLS.configuration(certificatePath: Self.cert, keyPath: Self.key)
        let app = Application(router: router(), server: Gateway.serverBuilder(http1: .init(), tls: tls),
                              configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.ahc(.https)) { client in
            try await client.execute(uri: "/transport", method: .get) { XCTAssertEqual(String(buffer: $0.body), "tls") }
        }
    }

    func testPlainRequestsAreNot() async throws {
        let app = Application(router: router(), server: Gateway.serverBuilder(http1: .init(), tls: nil),
                              configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { client in
            try await client.execute(uri: "/transport", method: .get) { XCTAssertEqual(String(buffer: $0.body), "plain") }
        }
    }
}
