import Foundation
import XeroCore
import XeroQueue
import XeroStore

/// The rules of managing a project, behind both doors: `/manage/v1` (JSON, for keys and
/// `xeroctl`) and the console (forms, for sessions). Each door turns its input into these calls'
/// arguments; validation, tier entitlement and the self-service quotas are decided here once
/// (docs/seams.md, "The authenticated request context").
struct ProjectService: Sendable {
    let auth: Authenticator
    let config: PlatformConfig
    var store: TenancyStore { auth.store }

    /// A key lives at most ten years (also what keeps `expires_in_seconds × 1000` far from overflow).
    static let maxKeyLifetimeSeconds = 10 * 365 * 86_400
    static let maxNameBytes = 256

    // MARK: Endpoints

    func createEndpoint(_ caller: ManagementCaller, slug: String, model: String, tier: String, fleet: EndpointFleet) async throws -> Endpoint {
        let project = try caller.requireProject()
        guard TenancyStore.isValidSlug(slug) else {
            throw APIError.invalidRequest("'slug' must be lowercase letters, digits and '-' (at most 63).", param: "slug")
        }
        try Self.checkModel(model)
        try checkTier(tier)
        try await requireEntitled(caller, project: project, tier: tier)
        if let p = try await selfServiceProject(caller, project), try await store.endpoints(project: p.id).count >= config.console.maxEndpoints {
            throw Self.quota("endpoints", config.console.maxEndpoints)
        }
        let e = Endpoint(project: project, slug: slug, model: model, tier: tier, fleet: fleet, createdAt: nowMs())
        guard try await store.createEndpoint(e) else {
            throw APIError(status: 409, message: "Endpoint '\(slug)' exists; change it with PATCH /manage/v1/endpoints/\(slug).",
                           type: "invalid_request_error", param: "slug", code: "endpoint_exists")
        }
        auth.invalidateEndpoint(project: project, slug: slug)
        return e
    }

    func updateEndpoint(_ caller: ManagementCaller, _ e: Endpoint, model: String, tier: String, fleet: EndpointFleet) async throws -> Endpoint {
        try Self.checkModel(model)
        try checkTier(tier)
        if tier != e.tier { try await requireEntitled(caller, project: e.project, tier: tier) }
        var e = e
        (e.model, e.tier, e.fleet) = (model, tier, fleet)
        try await store.putEndpoint(e)
        auth.invalidateEndpoint(project: e.project, slug: e.slug)
        return e
    }

    func deleteEndpoint(_ caller: ManagementCaller, slug: String) async throws {
        let project = try caller.requireProject()
        guard try await store.deleteEndpoint(project: project, slug: slug) else { throw APIError.notFound("No endpoint '\(slug)'.", code: "endpoint_not_found") }
        auth.invalidateEndpoint(project: project, slug: slug)
    }

    /// The tiers this caller may put endpoints on: the project's entitlements (any, for the admin).
    func usableTiers(_ caller: ManagementCaller) async throws -> [Tier] {
        if caller.isAdmin { return config.tiers }
        let entitled = Set(try await store.entitledTiers(project: try caller.requireProject(), config: config))
        return config.tiers.filter { entitled.contains($0.name) }
    }

    // MARK: API keys

    func createKey(_ caller: ManagementCaller, name: String, scopes: Set<String>, expiresInSeconds: Int?, allowedIPs: [String]) async throws
        -> (key: String, record: KeyRecord) {
        let projectID = try caller.requireProject()
        guard let project = try await store.project(id: projectID) else { throw APIError.notFound("No such project.", code: "project_not_found") }
        try Self.checkName(name)
        guard !scopes.isEmpty, scopes.isSubset(of: [KeyRecord.inference, KeyRecord.management]) else {
            throw APIError.invalidRequest("'scopes' must be a non-empty list of 'inference' and 'management'.", param: "scopes")
        }
        var expires: Int64?
        if let s = expiresInSeconds {
            guard (1...Self.maxKeyLifetimeSeconds).contains(s) else {
                throw APIError.invalidRequest("'expires_in_seconds' must be an integer between 1 and \(Self.maxKeyLifetimeSeconds) (10 years).",
                                              param: "expires_in_seconds", code: "invalid_value")
            }
            expires = nowMs() + Int64(s) * 1000
        }
        let cidrs = try Self.parseCIDRs(allowedIPs)
        if project.selfService, !caller.isAdmin, try await store.keys(project: project.id).filter({ !$0.revoked }).count >= config.console.maxKeys {
            throw Self.quota("live API keys", config.console.maxKeys)
        }
        return try await store.createKey(project: project, name: name, scopes: scopes, expiresAtMs: expires, allowedCIDRs: cidrs)
    }

    func revokeKey(_ caller: ManagementCaller, id: String) async throws -> KeyRecord {
        var rec = try await ownedKey(caller, id)
        try await store.revokeKey(hash: rec.hash)
        auth.invalidate(keyHash: rec.hash)
        rec.revoked = true
        return rec
    }

    func rotateKey(_ caller: ManagementCaller, id: String, graceSeconds: Int) async throws -> (key: String, record: KeyRecord) {
        let rec = try await ownedKey(caller, id)
        guard !rec.revoked else { throw APIError.invalidRequest("A revoked key cannot be rotated.", param: "id") }
        guard (0...30 * 86400).contains(graceSeconds) else {
            throw APIError.invalidRequest("'grace_seconds' must be between 0 and 2592000.", param: "grace_seconds")
        }
        let rotated = try await store.rotateKey(rec, graceSeconds: graceSeconds)
        auth.invalidate(keyHash: rec.hash)
        return rotated
    }

    /// Changes where a live key may be used from (an empty list: anywhere).
    func setAllowedIPs(_ caller: ManagementCaller, id: String, allowedIPs: [String]) async throws -> KeyRecord {
        var rec = try await ownedKey(caller, id)
        guard !rec.revoked else { throw APIError.invalidRequest("A revoked key's allow-list cannot be changed.", param: "id") }
        rec.allowedCIDRs = try Self.parseCIDRs(allowedIPs)
        try await store.setAllowedCIDRs(hash: rec.hash, rec.allowedCIDRs)
        auth.invalidate(keyHash: rec.hash)
        return rec
    }

    func ownedKey(_ caller: ManagementCaller, _ id: String) async throws -> KeyRecord {
        guard id.utf8.count <= 128, let rec = try await store.keyRecord(id: id), rec.project == (try caller.requireProject()) else {
            throw APIError.notFound("No key '\(id)' in this project.", code: "key_not_found")
        }
        return rec
    }

    // MARK: Join keys

    func createJoinKey(_ caller: ManagementCaller, name: String) async throws -> (key: String, id: String, fleet: AgentFleet) {
        try Self.checkName(name)
        let fleet = try caller.joinKeyFleet()
        if case let .project(id) = fleet, try await selfServiceProject(caller, id) != nil,
           try await store.joinKeys(fleet: fleet).filter({ !$0.revoked }).count >= config.console.maxJoinKeys {
            throw Self.quota("live join keys", config.console.maxJoinKeys)
        }
        let (key, id) = try await store.createJoinKey(fleet: fleet, name: name) { try CurveKeyPair.derived(fromJoinKey: $0).publicKey }
        return (key, id, fleet)
    }

    func revokeJoinKey(_ caller: ManagementCaller, id: String) async throws {
        guard try await store.revokeJoinKey(fleet: try caller.joinKeyFleet(), id: id) else {
            throw APIError.notFound("No such join key.", code: "join_key_not_found")
        }
    }

    // MARK: Files

    /// A self-service project's Files may hold at most `console.max_storage_mb` (uploads and batch
    /// outputs together). Checked when an upload completes; two uploads finishing at the same
    /// instant can pass one file over, never more.
    func requireStorage(project id: String, adding bytes: Int, stored: () async throws -> Int) async throws {
        guard let p = try await store.project(id: id), p.selfService else { return }
        let limit = config.console.maxStorageMB << 20
        let used = try await stored()
        guard used.addingSaturated(bytes) <= limit else {
            throw APIError.forbidden("This project's files may take at most \(config.console.maxStorageMB) MiB (the self-service quota); \(used >> 20) MiB are in use. Delete files or ask the platform admin.",
                                     code: "quota_exceeded")
        }
    }

    // MARK: Checks

    /// A management key may use only the tiers its project is entitled to; the admin may use any.
    func requireEntitled(_ caller: ManagementCaller, project: String, tier: String) async throws {
        if caller.isAdmin { return }
        let entitled = try await store.entitledTiers(project: project, config: config)
        guard entitled.contains(tier) else {
            throw APIError.forbidden("This project is not entitled to tier '\(tier)'; its tiers: \(entitled.joined(separator: ", ")). The platform admin grants tiers.",
                                     code: "tier_not_allowed")
        }
    }

    func checkTier(_ tier: String) throws {
        guard config.tier(named: tier) != nil else {
            throw APIError.invalidRequest("Unknown tier '\(tier)'; tiers: \(config.tiers.map(\.name).joined(separator: ", ")).", param: "tier")
        }
    }

    static func checkModel(_ model: String) throws {
        guard !model.isEmpty, model.utf8.count <= WireLimits.maxNameBytes else {
            throw APIError.invalidRequest("'model' must be 1 to \(WireLimits.maxNameBytes) bytes.", param: "model")
        }
    }

    static func checkName(_ name: String) throws {
        guard name.utf8.count <= maxNameBytes else { throw APIError.invalidRequest("'name' may be at most \(maxNameBytes) bytes.", param: "name") }
    }

    static func parseCIDRs(_ entries: [String]) throws -> [String] {
        guard entries.count <= 256 else { throw APIError.invalidRequest("'allowed_ips' may hold at most 256 entries.", param: "allowed_ips") }
        return try entries.map { c in
            guard let parsed = CIDR(c) else {
                throw APIError.invalidRequest("'allowed_ips' entries must be IPv4/IPv6 addresses or CIDR blocks.", param: "allowed_ips")
            }
            return parsed.description
        }
    }

    /// The project when quotas apply to this caller: a self-service project, and not the admin.
    private func selfServiceProject(_ caller: ManagementCaller, _ id: String) async throws -> Project? {
        guard !caller.isAdmin, let p = try await store.project(id: id), p.selfService else { return nil }
        return p
    }

    static func quota(_ what: String, _ n: Int) -> APIError {
        APIError.forbidden("This project may hold at most \(n) \(what) (the self-service quota); the platform admin can raise it.",
                           code: "quota_exceeded")
    }
}
