import Foundation
import XeroCore

/// A project: owns endpoints and keys. Its URL form is `proj_<id>`.
public struct Project: Sendable, Equatable {
    public var id: String
    public var slug: String
    public var name: String
    public var createdAt: Int64
    /// Made by a console sign-up: held to the config's `console` quotas.
    public var selfService = false
}

/// An endpoint: a slug bound to a model and a service tier.
public struct Endpoint: Sendable, Equatable {
    public var project: String
    public var slug: String
    public var model: String
    public var tier: String
    /// Who serves it: the project's agents, the platform's workers, or both (the default).
    public var fleet: EndpointFleet
    public var createdAt: Int64

    public init(project: String, slug: String, model: String, tier: String, fleet: EndpointFleet = .both, createdAt: Int64) {
        self.project = project
        self.slug = slug
        self.model = model
        self.tier = tier
        self.fleet = fleet
        self.createdAt = createdAt
    }
}

/// A worker join key as stored (`xero:joinkey:<sha256>`), with the fleet it makes its workers part of.
public struct JoinKeyRecord: Sendable, Equatable {
    public var id: String
    public var hash: String
    public var name: String
    public var fleet: AgentFleet
    public var createdAt: Int64
    public var revoked: Bool
}

/// What a key grants, as stored under its hash.
public struct KeyRecord: Sendable, Equatable {
    /// Public identifier for management (`key_…`); the key itself is never stored.
    public var id: String
    public var hash: String
    public var project: String
    public var projectSlug: String
    public var name: String
    public var scopes: Set<String>
    public var displayPrefix: String
    public var createdAt: Int64
    public var revoked: Bool
    public var expiresAtMs: Int64?
    /// Empty = any address.
    public var allowedCIDRs: [String]

    public static let inference = "inference"
    public static let management = "management"
    /// Cross-project administration (the bootstrap admin credential).
    public static let admin = "admin"
    public static let allScopes: Set<String> = [inference, management, admin]

    /// What a console session acts with: the project's management rights, in the user's name
    /// (no key exists; the id says whose session it is). Admins' sessions add the admin scope.
    public static func consoleSession(user: String, email: String, project: Project, admin: Bool) -> KeyRecord {
        KeyRecord(id: "session:\(user)", hash: "", project: project.id, projectSlug: project.slug, name: email,
                  scopes: admin ? [management, inference, KeyRecord.admin] : [management, inference], displayPrefix: "",
                  createdAt: 0, revoked: false, expiresAtMs: nil, allowedCIDRs: [])
    }
}

/// Projects, endpoints and keys in Redis (the store of record). Key layout in `RedisKeys`.
public struct TenancyStore: Sendable {
    public let redis: RedisClient
    public init(redis: RedisClient) { self.redis = redis }

    static let slugPattern = "^[a-z0-9][a-z0-9-]{0,62}$"

    public static func isValidSlug(_ s: String) -> Bool {
        s.range(of: slugPattern, options: .regularExpression) != nil
    }

    public func createProject(slug: String, name: String, selfService: Bool = false) async throws -> Project {
        guard Self.isValidSlug(slug), !slug.contains("_") else { throw RedisError("invalid project slug '\(slug)'") }
        let p = Project(id: randomID(length: 12), slug: slug, name: name, createdAt: nowMs(), selfService: selfService)
        let claimed = try await redis.send(["SET", RedisKeys.projectSlug(slug), p.id, "NX"])
        guard claimed == .status("OK") else { throw RedisError("project slug '\(slug)' is taken") }
        _ = try await redis.pipeline(strings: [
            ["HSET", RedisKeys.project(p.id), "id", p.id, "slug", slug, "name", name, "created_at", String(p.createdAt),
             "self_service", selfService ? "1" : "0"],
            ["SADD", RedisKeys.projects, p.id],
        ])
        return p
    }

    public func project(id: String) async throws -> Project? {
        let h = try await redis.send(["HGETALL", RedisKeys.project(id)]).hash
        guard let slug = h["slug"] else { return nil }
        return Project(id: id, slug: slug, name: h["name"] ?? "", createdAt: Int64(h["created_at"] ?? "") ?? 0, selfService: h["self_service"] == "1")
    }

    /// The project with this slug, created if there is none.
    public func ensureProject(slug: String, name: String) async throws -> Project {
        if let p = try await project(slug: slug) { return p }
        return try await createProject(slug: slug, name: name)
    }

    public func project(slug: String) async throws -> Project? {
        guard let id = try await redis.send(["GET", RedisKeys.projectSlug(slug)]).string else { return nil }
        return try await project(id: id)
    }

    public func putEndpoint(_ e: Endpoint) async throws {
        _ = try await redis.pipeline(strings: [
            ["HSET", RedisKeys.endpoint(e.project, e.slug), "project", e.project, "slug", e.slug, "model", e.model, "tier", e.tier,
             "fleet", e.fleet.name, "created_at", String(e.createdAt)],
            ["SADD", RedisKeys.endpoints(e.project), e.slug],
        ])
    }

    /// Creates an endpoint; false (nothing written) when the slug is taken in this project.
    public func createEndpoint(_ e: Endpoint) async throws -> Bool {
        let r = try await redis.send(["HSETNX", RedisKeys.endpoint(e.project, e.slug), "slug", e.slug])
        guard r.int == 1 else { return false }
        try await putEndpoint(e)
        return true
    }

    // MARK: Tier entitlements

    /// The admin's per-project grants and withdrawals: tier → `granted` / `withdrawn`. A tier not
    /// named here follows the config's `project_tiers`.
    public func tierOverrides(project: String) async throws -> [String: String] {
        try await redis.send(["HGETALL", RedisKeys.projectTiers(project)]).hash
    }

    /// The tiers `project` may put endpoints on.
    public func entitledTiers(project: String, config: PlatformConfig) async throws -> [String] {
        let overrides = try await tierOverrides(project: project)
        return config.tiers.map(\.name).filter { overrides[$0] == "granted" || (overrides[$0] == nil && config.projectTiers.contains($0)) }
    }

    public func setTier(project: String, tier: String, granted: Bool) async throws {
        _ = try await redis.send(["HSET", RedisKeys.projectTiers(project), tier, granted ? "granted" : "withdrawn"])
    }

    public func endpoint(project: String, slug: String) async throws -> Endpoint? {
        let h = try await redis.send(["HGETALL", RedisKeys.endpoint(project, slug)]).hash
        guard let model = h["model"], let tier = h["tier"] else { return nil }
        // Endpoints from before fleets existed are served by both, as new ones are by default.
        return Endpoint(project: project, slug: slug, model: model, tier: tier, fleet: h["fleet"].flatMap(EndpointFleet.init(name:)) ?? .both,
                        createdAt: Int64(h["created_at"] ?? "") ?? 0)
    }

    /// Creates a key and returns its plaintext — the only time it exists outside the client.
    public func createKey(project: Project, name: String, scopes: Set<String> = [KeyRecord.inference], expiresAtMs: Int64? = nil,
                          allowedCIDRs: [String] = []) async throws -> (key: String, record: KeyRecord) {
        let key = APIKey.generate(projectSlug: project.slug)
        let rec = KeyRecord(id: randomID("key_", length: 16), hash: APIKey.hash(key), project: project.id, projectSlug: project.slug,
                            name: name, scopes: scopes, displayPrefix: APIKey.displayPrefix(key), createdAt: nowMs(), revoked: false,
                            expiresAtMs: expiresAtMs, allowedCIDRs: allowedCIDRs)
        try await put(rec)
        return (key, rec)
    }

    func put(_ rec: KeyRecord) async throws {
        let fields = ["HSET", RedisKeys.apiKey(hash: rec.hash), "id", rec.id, "project", rec.project, "project_slug", rec.projectSlug,
                      "name", rec.name, "scopes", rec.scopes.sorted().joined(separator: ","), "prefix", rec.displayPrefix,
                      "created_at", String(rec.createdAt), "revoked", rec.revoked ? "1" : "0",
                      "allowed_cidrs", rec.allowedCIDRs.joined(separator: ","), "expires_at", rec.expiresAtMs.map(String.init) ?? ""]
        _ = try await redis.pipeline(strings: [fields, ["SET", RedisKeys.keyID(rec.id), rec.hash],
                                               ["SADD", RedisKeys.projectKeys(rec.project), rec.hash]])
    }

    public func keyRecord(hash: String) async throws -> KeyRecord? {
        let h = try await redis.send(["HGETALL", RedisKeys.apiKey(hash: hash)]).hash
        guard let project = h["project"] else { return nil }
        return KeyRecord(id: h["id"] ?? "", hash: hash, project: project, projectSlug: h["project_slug"] ?? "", name: h["name"] ?? "",
                         scopes: Set((h["scopes"] ?? "").split(separator: ",").map(String.init)), displayPrefix: h["prefix"] ?? "",
                         createdAt: Int64(h["created_at"] ?? "") ?? 0, revoked: h["revoked"] == "1",
                         expiresAtMs: h["expires_at"].flatMap { Int64($0) },
                         allowedCIDRs: (h["allowed_cidrs"] ?? "").split(separator: ",").map(String.init))
    }

    public func keyRecord(id: String) async throws -> KeyRecord? {
        guard let hash = try await redis.send(["GET", RedisKeys.keyID(id)]).string else { return nil }
        return try await keyRecord(hash: hash)
    }

    public func keys(project: String) async throws -> [KeyRecord] {
        let hashes = try await redis.send(["SMEMBERS", RedisKeys.projectKeys(project)]).array.compactMap(\.string)
        var out: [KeyRecord] = []
        for h in hashes { if let r = try await keyRecord(hash: h) { out.append(r) } }
        return out.sorted { $0.createdAt < $1.createdAt }
    }

    /// Replaces a key's IP allow-list (empty: anywhere), at once on every gateway.
    public func setAllowedCIDRs(hash: String, _ cidrs: [String]) async throws {
        _ = try await redis.send(["HSET", RedisKeys.apiKey(hash: hash), "allowed_cidrs", cidrs.joined(separator: ",")])
        try await KeyEventSubscriber.publish(redis, keyHash: hash)
    }

    /// Revokes at once on every gateway (pub/sub invalidation of their caches).
    public func revokeKey(hash: String) async throws {
        _ = try await redis.send(["HSET", RedisKeys.apiKey(hash: hash), "revoked", "1"])
        try await KeyEventSubscriber.publish(redis, keyHash: hash)
    }

    /// Issues a new key with the same project, name, scopes and allow-list; the old key keeps working
    /// for `graceSeconds` (0 = stops at once).
    public func rotateKey(_ old: KeyRecord, graceSeconds: Int) async throws -> (key: String, record: KeyRecord) {
        let project = Project(id: old.project, slug: old.projectSlug, name: "", createdAt: 0)
        let new = try await createKey(project: project, name: old.name, scopes: old.scopes, expiresAtMs: old.expiresAtMs, allowedCIDRs: old.allowedCIDRs)
        let until = nowMs() + Int64(max(0, graceSeconds)) * 1000
        let expires = min(old.expiresAtMs ?? Int64.max, until)
        _ = try await redis.send(["HSET", RedisKeys.apiKey(hash: old.hash), "expires_at", String(expires), "rotated_to", new.record.id])
        try await KeyEventSubscriber.publish(redis, keyHash: old.hash)
        return new
    }

    /// The bootstrap admin credential: `xero_admin_<random>`, scopes admin + management, bound to no
    /// project (so it serves no inference). Shown once, like every key.
    public func createAdminKey(name: String = "admin") async throws -> (key: String, record: KeyRecord) {
        let key = APIKey.generate(projectSlug: "admin")
        let rec = KeyRecord(id: randomID("key_", length: 16), hash: APIKey.hash(key), project: "", projectSlug: "admin", name: name,
                            scopes: [KeyRecord.admin, KeyRecord.management], displayPrefix: APIKey.displayPrefix(key), createdAt: nowMs(),
                            revoked: false, expiresAtMs: nil, allowedCIDRs: [])
        try await put(rec)
        return (key, rec)
    }

    // MARK: Projects and endpoints for management

    public func projects() async throws -> [Project] {
        let ids = try await redis.send(["SMEMBERS", RedisKeys.projects]).array.compactMap(\.string)
        var out: [Project] = []
        for id in ids { if let p = try await project(id: id) { out.append(p) } }
        return out.sorted { $0.createdAt < $1.createdAt }
    }

    public func endpoints(project: String) async throws -> [Endpoint] {
        let slugs = try await redis.send(["SMEMBERS", RedisKeys.endpoints(project)]).array.compactMap(\.string)
        var out: [Endpoint] = []
        for s in slugs.sorted() { if let e = try await endpoint(project: project, slug: s) { out.append(e) } }
        return out
    }

    public func deleteEndpoint(project: String, slug: String) async throws -> Bool {
        let r = try await redis.pipeline(strings: [["DEL", RedisKeys.endpoint(project, slug)], ["SREM", RedisKeys.endpoints(project), slug]])
        return r[0].int == 1
    }

    // MARK: Join keys (workers present one to receive jobs)

    /// Revocations are announced here (routers also re-check their workers' keys twice a second).
    public static let joinKeyEvents = "xero:events:joinkeys"

    /// Platform join keys are listed under this pseudo-project (project ids are 12 [a-z0-9]).
    static let platformJoinKeys = "_platform"

    static func joinKeySet(_ fleet: AgentFleet) -> String {
        switch fleet {
        case .platform: return RedisKeys.projectJoinKeys(platformJoinKeys)
        case let .project(id): return RedisKeys.projectJoinKeys(id)
        }
    }

    /// A join key for `fleet`: made with the admin key (or `xerotier admin create-join-key`) it
    /// makes platform workers, which serve every project; made with a project's management key it
    /// makes that project's agents, which see only its jobs.
    ///
    /// `curvePublicKey` gives the CURVE public key a worker derives from the key (XeroQueue's
    /// `CurveKeyPair.derived`); it is recorded, with an index from it to the key's hash, so the
    /// routers' ZAP handler can refuse any other key at the handshake. The join key itself is
    /// returned once and stored only as its hash.
    public func createJoinKey(fleet: AgentFleet, name: String, curvePublicKey: (String) throws -> String) async throws -> (key: String, id: String) {
        let key = randomID("xjoin_", length: 32)
        let id = randomID("jk_", length: 12)
        let hash = APIKey.hash(key)
        let curve = try curvePublicKey(key)
        var project = ""
        if case let .project(p) = fleet { project = p }
        _ = try await redis.pipeline(strings: [
            ["HSET", RedisKeys.joinKey(hash: hash), "id", id, "project", project, "fleet", fleet == .platform ? "platform" : "project",
             "name", name, "created_at", String(nowMs()), "revoked", "0", "curve_public", curve],
            ["SET", RedisKeys.curveKey(curve), hash],
            ["SADD", Self.joinKeySet(fleet), hash],
        ])
        return (key, id)
    }

    /// The fleet a stored join key record stands for. Records from before fleets existed have only
    /// a `project`: the `system` project's keys (what `admin create-join-key` made) become platform
    /// keys; any other project's stay that project's — the safe reading, since a tenant's key must
    /// never see other tenants' prompts. `projectSlug` resolves the project id's slug.
    public static func fleet(of h: [String: String], projectSlug: String?) -> AgentFleet {
        switch h["fleet"] {
        case "platform"?: return .platform
        case "project"?: return .project(h["project"] ?? "")
        default:
            guard let p = h["project"], !p.isEmpty, projectSlug != "system" else { return .platform }
            return .project(p)
        }
    }

    public func joinKeys(fleet: AgentFleet) async throws -> [JoinKeyRecord] {
        let hashes = try await redis.send(["SMEMBERS", Self.joinKeySet(fleet)]).array.compactMap(\.string)
        var out: [JoinKeyRecord] = []
        for h in hashes {
            let rec = try await redis.send(["HGETALL", RedisKeys.joinKey(hash: h)]).hash
            guard let id = rec["id"] else { continue }
            out.append(JoinKeyRecord(id: id, hash: h, name: rec["name"] ?? "", fleet: fleet, createdAt: Int64(rec["created_at"] ?? "") ?? 0,
                                     revoked: rec["revoked"] == "1"))
        }
        return out.sorted { $0.createdAt < $1.createdAt }
    }

    public func revokeJoinKey(fleet: AgentFleet, id: String) async throws -> Bool {
        for rec in try await joinKeys(fleet: fleet) where rec.id == id {
            _ = try await redis.pipeline(strings: [["HSET", RedisKeys.joinKey(hash: rec.hash), "revoked", "1"],
                                                   ["PUBLISH", Self.joinKeyEvents, rec.hash]])
            return true
        }
        return false
    }

    // MARK: Usage

    public func usage(project: String) async throws -> [String: [String: Int]] {
        let eps = try await redis.send(["SMEMBERS", RedisKeys.usageEndpoints(project)]).array.compactMap(\.string)
        var out: [String: [String: Int]] = [:]
        for e in eps {
            out[e] = try await redis.send(["HGETALL", RedisKeys.usage(project, e)]).hash.compactMapValues { Int($0) }
        }
        return out
    }

    /// One day's usage of a project, per endpoint.
    public struct DayUsage: Sendable, Equatable {
        public var day: String
        public var endpoints: [String: [String: Int]]
    }

    /// The last `days` UTC days' usage, oldest first (days without usage included, empty).
    public func usageByDay(project: String, days: Int, nowMs: Int64 = nowMs()) async throws -> [DayUsage] {
        let dayKeys = (0..<max(1, min(days, 400))).reversed().map { RedisKeys.day(ms: nowMs - Int64($0) * 86_400_000) }
        let replies = try await redis.pipeline(strings: dayKeys.map { ["HGETALL", RedisKeys.usageDay(project, day: $0)] })
        return zip(dayKeys, replies).map { day, reply in
            var endpoints: [String: [String: Int]] = [:]
            for (field, value) in reply.hash {
                guard let colon = field.lastIndex(of: ":"), let n = Int(value) else { continue }
                endpoints[String(field[..<colon]), default: [:]][String(field[field.index(after: colon)...])] = n
            }
            return DayUsage(day: day, endpoints: endpoints)
        }
    }
}
