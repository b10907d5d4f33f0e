import HummingbirdBcrypt
import NIOPosix

/// Console passwords: the rules a new one must meet, and bcrypt (hummingbird-auth's) run on NIO's
/// thread pool, never on an event loop (a hash takes tens of milliseconds by design).
public enum Passwords {
    static let minLength = 10
    /// bcrypt reads at most 72 bytes; a longer password would be cut silently, so it is refused.
    static let maxBytes = 72
    static let cost: UInt8 = 11

    /// Why a password may not be used, or nil.
    public static func problem(_ password: String, email: String) -> String? {
        if password.count < minLength { return "The password needs at least \(minLength) characters." }
        if password.utf8.count > maxBytes { return "The password may be at most \(maxBytes) bytes." }
        if Set(password).count < 4 { return "The password needs more than three different characters." }
        if password.lowercased() == email.lowercased() || password.lowercased() == email.split(separator: "@").first.map(String.init)?.lowercased() {
            return "The password may not be your email address."
        }
        return nil
    }

    public static func hash(_ password: String) async throws -> String {
        try await NIOThreadPool.singleton.runIfActive { Bcrypt.hash(password, cost: cost) }
    }

    public static func verify(_ password: String, hash: String) async throws -> Bool {
        try await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(password, hash: hash) }
    }

    /// A hash no password matches, verified against when the email is unknown: a log-in takes as
    /// long for an unknown address as for a wrong password.
    static let decoy = Bcrypt.hash("decoy password never used", cost: cost)
}
