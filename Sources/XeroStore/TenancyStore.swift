import Foundation
import XeroCore

/// A project: owns endpoints and keys. Its URL form is `proj_<id>`.
public struct Project: Sendable, Equatable {
    public var id: String
    public var slug: String
    public var name: String
    public var createdAt: Int64
}

/// An endpoint: a slug bound to a model and a service tier.
public struct Endpoint: Sendable, Equatable {
    public var project: String
    public var slug: String
    public var model: String
    public var tier: String
    public var createdAt: Int64

    public init(project: String, slug: String, model: String, tier: String, createdAt: Int64) {
        self.project = project
        self.slug = slug
        self.model = model
        self.tier = tier
        self.createdAt = createdAt
    }
}

/// What a key grants, as stored under its hash.
public struct KeyRecord: Sendable, Equatable {
    public var hash: String
    public var project: String
    public var projectSlug: String
    public var name: String
    public var scopes: Set<String>
    public var displayPrefix: String
    public var createdAt: Int64
    public var revoked: Bool
    public var expiresAtMs: Int64?

    public static let inference = "inference"
    public static let management = "management"
}

/// Projects, endpoints and keys in Redis (the store of record). Key layout in `RedisKeys`.
public struct TenancyStore: Sendable {
    public let redis: RedisClient
    public init(redis: RedisClient) { self.redis = redis }

    static let slugPattern = "^[a-z0-9][a-z0-9-]{0,62}$"

    public static func isValidSlug(_ s: String) -> Bool {
        s.range(of: slugPattern, options: .regularExpression) != nil
    }

    public func createProject(slug: String, name: String) async throws -> Project {
        guard Self.isValidSlug(slug), !slug.contains("_") else { throw RedisError("invalid project slug '\(slug)'") }
        let p = Project(id: randomID(length: 12), slug: slug, name: name, createdAt: nowMs())
        let claimed = try await redis.send(["SET", RedisKeys.projectSlug(slug), p.id, "NX"])
        guard claimed == .status("OK") else { throw RedisError("project slug '\(slug)' is taken") }
        _ = try await redis.pipeline(strings: [
            ["HSET", RedisKeys.project(p.id), "id", p.id, "slug", slug, "name", name, "created_at", String(p.createdAt)],
            ["SADD", RedisKeys.projects, p.id],
        ])
        return p
    }

    public func project(id: String) async throws -> Project? {
        let h = try await redis.send(["HGETALL", RedisKeys.project(id)]).hash
        guard let slug = h["slug"] else { return nil }
        return Project(id: id, slug: slug, name: h["name"] ?? "", createdAt: Int64(h["created_at"] ?? "") ?? 0)
    }

    public func project(slug: String) async throws -> Project? {
        guard let id = try await redis.send(["GET", RedisKeys.projectSlug(slug)]).string else { return nil }
        return try await project(id: id)
    }

    public func putEndpoint(_ e: Endpoint) async throws {
        _ = try await redis.pipeline(strings: [
            ["HSET", RedisKeys.endpoint(e.project, e.slug), "project", e.project, "slug", e.slug, "model", e.model, "tier", e.tier,
             "created_at", String(e.createdAt)],
            ["SADD", RedisKeys.endpoints(e.project), e.slug],
        ])
    }

    public func endpoint(project: String, slug: String) async throws -> Endpoint? {
        let h = try await redis.send(["HGETALL", RedisKeys.endpoint(project, slug)]).hash
        guard let model = h["model"], let tier = h["tier"] else { return nil }
        return Endpoint(project: project, slug: slug, model: model, tier: tier, createdAt: Int64(h["created_at"] ?? "") ?? 0)
    }

    /// Creates a key and returns its plaintext — the only time it exists outside the client.
    public func createKey(project: Project, name: String, scopes: Set<String> = [KeyRecord.inference], expiresAtMs: Int64? = nil) async throws -> (key: String, record: KeyRecord) {
        let key = APIKey.generate(projectSlug: project.slug)
        let rec = KeyRecord(hash: APIKey.hash(key), project: project.id, projectSlug: project.slug, name: name, scopes: scopes,
                            displayPrefix: APIKey.displayPrefix(key), createdAt: nowMs(), revoked: false, expiresAtMs: expiresAtMs)
        var fields = ["HSET", RedisKeys.apiKey(hash: rec.hash), "project", rec.project, "project_slug", rec.projectSlug, "name", name,
                      "scopes", scopes.sorted().joined(separator: ","), "prefix", rec.displayPrefix, "created_at", String(rec.createdAt), "revoked", "0"]
        if let expiresAtMs { fields += ["expires_at", String(expiresAtMs)] }
        _ = try await redis.pipeline(strings: [fields, ["SADD", RedisKeys.projectKeys(project.id), rec.hash]])
        return (key, rec)
    }

    public func keyRecord(hash: String) async throws -> KeyRecord? {
        let h = try await redis.send(["HGETALL", RedisKeys.apiKey(hash: hash)]).hash
        guard let project = h["project"] else { return nil }
        return KeyRecord(hash: hash, project: project, projectSlug: h["project_slug"] ?? "", name: h["name"] ?? "",
                         scopes: Set((h["scopes"] ?? "").split(separator: ",").map(String.init)), displayPrefix: h["prefix"] ?? "",
                         createdAt: Int64(h["created_at"] ?? "") ?? 0, revoked: h["revoked"] == "1",
                         expiresAtMs: h["expires_at"].flatMap { Int64($0) })
    }

    public func revokeKey(hash: String) async throws {
        _ = try await redis.send(["HSET", RedisKeys.apiKey(hash: hash), "revoked", "1"])
    }
}
