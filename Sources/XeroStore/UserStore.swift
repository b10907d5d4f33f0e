import Foundation
import XeroCore

/// A console user: an email, a password hash (bcrypt, made by the gateway), and whether the
/// platform admin flagged them an admin.
public struct UserRecord: Sendable, Equatable {
    public var id: String
    public var email: String
    public var passwordHash: String
    public var isAdmin: Bool
    public var createdAt: Int64
}

/// Console users, their projects and roles, invites and the log-in throttle, in Redis (key layout
/// in `RedisKeys`, docs/redis-keys.md). Passwords arrive hashed: nothing here sees one.
public struct UserStore: Sendable {
    public enum Role: String, Sendable { case owner, member }

    public let redis: RedisClient
    public init(redis: RedisClient) { self.redis = redis }

    /// Emails are compared lowercased and trimmed.
    public static func normalize(email: String) -> String { email.trimmingCharacters(in: .whitespacesAndNewlines).lowercased() }

    /// A plausible address: one `@`, something on both sides, a dot in the domain, at most 254 bytes.
    public static func isPlausible(email: String) -> Bool {
        let e = normalize(email: email)
        guard e.utf8.count <= 254, !e.contains(where: { $0.isWhitespace }) else { return false }
        let parts = e.split(separator: "@", omittingEmptySubsequences: false)
        return parts.count == 2 && !parts[0].isEmpty && parts[1].contains(".") && !parts[1].hasPrefix(".") && !parts[1].hasSuffix(".")
    }

    /// Creates a user; nil when the email has an account already.
    public func create(email: String, passwordHash: String, isAdmin: Bool = false) async throws -> UserRecord? {
        let email = Self.normalize(email: email)
        let u = UserRecord(id: randomID("user_", length: 16), email: email, passwordHash: passwordHash, isAdmin: isAdmin, createdAt: nowMs())
        let claimed = try await redis.send(["SET", RedisKeys.userEmail(email), u.id, "NX"])
        guard claimed == .status("OK") else { return nil }
        _ = try await redis.send(["HSET", RedisKeys.user(u.id), "id", u.id, "email", email, "password_hash", passwordHash,
                                  "admin", isAdmin ? "1" : "0", "created_at", String(u.createdAt)])
        return u
    }

    public func user(id: String) async throws -> UserRecord? {
        let h = try await redis.send(["HGETALL", RedisKeys.user(id)]).hash
        guard let email = h["email"], let hash = h["password_hash"] else { return nil }
        return UserRecord(id: id, email: email, passwordHash: hash, isAdmin: h["admin"] == "1", createdAt: Int64(h["created_at"] ?? "") ?? 0)
    }

    public func user(email: String) async throws -> UserRecord? {
        guard let id = try await redis.send(["GET", RedisKeys.userEmail(Self.normalize(email: email))]).string else { return nil }
        return try await user(id: id)
    }

    public func setAdmin(_ id: String, _ isAdmin: Bool) async throws {
        _ = try await redis.send(["HSET", RedisKeys.user(id), "admin", isAdmin ? "1" : "0"])
    }

    public func setPasswordHash(_ id: String, _ hash: String) async throws {
        _ = try await redis.send(["HSET", RedisKeys.user(id), "password_hash", hash])
    }

    // MARK: Projects

    public func addMember(user: String, project: String, role: Role) async throws {
        _ = try await redis.pipeline(strings: [
            ["HSET", RedisKeys.userProjects(user), project, role.rawValue],
            ["HSET", RedisKeys.projectMembers(project), user, role.rawValue],
        ])
    }

    /// The user's projects: project id → role.
    public func projects(of user: String) async throws -> [String: Role] {
        try await redis.send(["HGETALL", RedisKeys.userProjects(user)]).hash.compactMapValues { Role(rawValue: $0) }
    }

    public func role(of user: String, in project: String) async throws -> Role? {
        try await redis.send(["HGET", RedisKeys.userProjects(user), project]).string.flatMap { Role(rawValue: $0) }
    }

    // MARK: Invites

    /// A single-use sign-up invite, for one email or for anyone (`email` nil), valid `ttlSeconds`.
    /// Returns the token (shown once; only its hash is stored).
    public func createInvite(email: String?, ttlSeconds: Int) async throws -> String {
        let token = randomID("inv_", length: 32)
        _ = try await redis.send(["SET", RedisKeys.invite(hash: APIKey.hash(token)), email.map(Self.normalize(email:)) ?? "*",
                                  "EX", String(max(1, ttlSeconds))])
        return token
    }

    /// Uses an invite for `email`: true once, when the token exists and is for that email (or anyone).
    public func takeInvite(_ token: String, email: String) async throws -> Bool {
        guard token.utf8.count <= 128 else { return false }
        let key = RedisKeys.invite(hash: APIKey.hash(token))
        guard let forEmail = try await redis.send(["GETDEL", key]).string else { return false }
        if forEmail == "*" || forEmail == Self.normalize(email: email) { return true }
        // Not this address's: put it back for the one it is for.
        _ = try await redis.send(["SET", key, forEmail, "EX", "86400", "NX"])
        return false
    }

    // MARK: Log-in throttle

    /// Failures counted in `scopes` (email hash, client address) within the window: the largest.
    public func loginFailures(_ scopes: [String]) async throws -> Int {
        guard !scopes.isEmpty else { return 0 }
        let r = try await redis.send(["MGET"] + scopes.map(RedisKeys.loginFailures))
        return r.array.compactMap { $0.string.flatMap { Int($0) } }.max() ?? 0
    }

    /// A failed log-in: counted in every scope, each count expiring `windowSeconds` after its first.
    public func recordLoginFailure(_ scopes: [String], windowSeconds: Int) async throws {
        var commands: [[String]] = []
        for s in scopes {
            commands.append(["INCR", RedisKeys.loginFailures(s)])
            commands.append(["EXPIRE", RedisKeys.loginFailures(s), String(windowSeconds), "NX"])
        }
        _ = try await redis.pipeline(strings: commands)
    }

    public func clearLoginFailures(_ scope: String) async throws {
        _ = try await redis.send(["DEL", RedisKeys.loginFailures(scope)])
    }
}
