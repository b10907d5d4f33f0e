import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import XeroCore
import XeroQueue
import XeroStore

/// The management API (`/manage/v1/…`), for `xeroctl` and scripts. Requires a key with the
/// `management` scope and acts on that key's project; a key with the `admin` scope (the bootstrap
/// admin credential) may act on any project (`?project=<id or slug>`) and create projects.
/// The rules themselves are `ProjectService`'s (shared with the console); this type reads JSON
/// into its arguments and writes its results as JSON.
struct ManagementRoutes: Sendable {
    let auth: Authenticator
    let config: PlatformConfig
    var store: TenancyStore { auth.store }
    var service: ProjectService { ProjectService(auth: auth, config: config) }
    static let maxNameBytes = ProjectService.maxNameBytes

    func register(on routes: RouteTable<GatewayRequestContext>, proxies: TrustedProxies) {
        // Every route is behind one authentication step; project administration needs the admin key.
        let m = Self.group(routes, auth: auth, proxies: proxies)
        let admin = Self.group(routes, auth: auth, proxies: proxies, adminOnly: true)
        m.get("/whoami") { req, ctx in try await self.run(req, ctx) { caller, _ in
            var w = JSONWriter(); w.objectStart()
            w.field("key_id", caller.key.id); w.field("project", caller.project ?? ""); w.field("name", caller.key.name)
            w.key("scopes"); w.arrayStart(); for s in caller.key.scopes.sorted() { w.value(s) }; w.arrayEnd()
            w.objectEnd(); return w.bytes
        } }
        OpsRoutes(redis: store.redis, config: config).register(on: admin)
        admin.get("/projects") { req, ctx in try await self.run(req, ctx) { _, _ in
            let ps = try await store.projects()
            return Self.list(ps) { w, p in Self.writeProject(p, &w) }
        } }
        admin.post("/projects") { req, ctx in try await self.run(req, ctx) { _, body in
            let o = try Self.object(body)
            guard case let .string(slug)? = o["slug"], TenancyStore.isValidSlug(slug), !slug.contains("_") else {
                throw APIError.invalidRequest("'slug' must be lowercase letters, digits and '-'.", param: "slug")
            }
            var name = slug
            if case let .string(n)? = o["name"] { name = n }
            guard name.utf8.count <= Self.maxNameBytes else { throw APIError.invalidRequest("'name' may be at most \(Self.maxNameBytes) bytes.", param: "name") }
            if try await store.project(slug: slug) != nil { throw APIError(status: 409, message: "Project slug '\(slug)' is taken.", type: "invalid_request_error", param: "slug", code: "conflict") }
            let p = try await store.createProject(slug: slug, name: name)
            var w = JSONWriter(); Self.writeProject(p, &w); return w.bytes
        } }
        m.get("/endpoints") { req, ctx in try await self.run(req, ctx) { caller, _ in
            let eps = try await store.endpoints(project: try caller.requireProject())
            return Self.list(eps) { w, e in Self.writeEndpoint(e, &w) }
        } }
        m.post("/endpoints") { req, ctx in try await self.run(req, ctx) { caller, body in
            _ = try caller.requireProject()
            let o = try Self.object(body)
            guard case let .string(slug)? = o["slug"], TenancyStore.isValidSlug(slug) else {
                throw APIError.invalidRequest("'slug' must be lowercase letters, digits and '-' (at most 63).", param: "slug")
            }
            guard o["model"] != nil else { throw APIError.invalidRequest("'model' is required.", param: "model") }
            let fields = try Self.endpointFields(o, model: nil, tier: config.defaultEndpointTier, fleet: .both, config: config)
            let e = try await service.createEndpoint(caller, slug: slug, model: fields.model, tier: fields.tier, fleet: fields.fleet)
            var w = JSONWriter(); Self.writeEndpoint(e, &w); return w.bytes
        } }
        m.patch("/endpoints/:slug") { req, ctx in try await self.run(req, ctx) { caller, body in
            let project = try caller.requireProject()
            let slug = ctx.parameters.get("slug") ?? ""
            guard let old = try await store.endpoint(project: project, slug: slug) else {
                throw APIError.notFound("No endpoint '\(slug)'.", code: "endpoint_not_found")
            }
            let fields = try Self.endpointFields(try Self.object(body), model: old.model, tier: old.tier, fleet: old.fleet, config: config)
            let e = try await service.updateEndpoint(caller, old, model: fields.model, tier: fields.tier, fleet: fields.fleet)
            var w = JSONWriter(); Self.writeEndpoint(e, &w); return w.bytes
        } }
        admin.get("/projects/:project/tiers") { req, ctx in try await self.run(req, ctx) { _, _ in
            let project = try await resolveProject(ctx.parameters.get("project") ?? "")
            return Self.writeEntitlements(try await store.entitledTiers(project: project.id, config: config))
        } }
        admin.put("/projects/:project/tiers/:tier") { req, ctx in try await self.run(req, ctx) { _, _ in
            try await setEntitlement(ctx, granted: true)
        } }
        admin.delete("/projects/:project/tiers/:tier") { req, ctx in try await self.run(req, ctx) { _, _ in
            try await setEntitlement(ctx, granted: false)
        } }
        m.delete("/endpoints/:slug") { req, ctx in try await self.run(req, ctx) { caller, _ in
            try await service.deleteEndpoint(caller, slug: ctx.parameters.get("slug") ?? "")
            return Array(#"{"deleted":true}"#.utf8)
        } }
        m.get("/keys") { req, ctx in try await self.run(req, ctx) { caller, _ in
            let keys = try await store.keys(project: try caller.requireProject())
            return Self.list(keys) { w, k in Self.writeKey(k, &w) }
        } }
        m.post("/keys") { req, ctx in try await self.run(req, ctx) { caller, body in
            let o = try Self.object(body)
            var name = "key"
            if case let .string(n)? = o["name"] { name = n }
            var scopes: Set<String> = [KeyRecord.inference]
            if case let .array(a)? = o["scopes"] {
                scopes = Set(a.compactMap { if case let .string(s) = $0 { return s } else { return nil } })
                guard scopes.count == a.count else {
                    throw APIError.invalidRequest("'scopes' must be a non-empty list of 'inference' and 'management'.", param: "scopes")
                }
            }
            var expires: Int?
            if let v = o["expires_in_seconds"], v != .null {
                guard case let .int(s) = v else {
                    throw APIError.invalidRequest("'expires_in_seconds' must be an integer between 1 and \(ProjectService.maxKeyLifetimeSeconds) (10 years).",
                                                  param: "expires_in_seconds", code: "invalid_value")
                }
                expires = s
            }
            let ips = try Self.allowedIPs(o["allowed_ips"]) ?? []
            let (key, rec) = try await service.createKey(caller, name: name, scopes: scopes, expiresInSeconds: expires, allowedIPs: ips)
            var w = JSONWriter(); Self.writeKey(rec, &w, plaintext: key); return w.bytes
        } }
        m.patch("/keys/:id") { req, ctx in try await self.run(req, ctx) { caller, body in
            guard let ips = try Self.allowedIPs(try Self.object(body)["allowed_ips"]) else {
                throw APIError.invalidRequest("Send 'allowed_ips': the addresses and CIDR blocks the key may be used from ([] = anywhere).",
                                              param: "allowed_ips", code: "missing_required_parameter")
            }
            let rec = try await service.setAllowedIPs(caller, id: ctx.parameters.get("id") ?? "", allowedIPs: ips)
            var w = JSONWriter(); Self.writeKey(rec, &w); return w.bytes
        } }
        m.post("/keys/:id/revoke") { req, ctx in try await self.run(req, ctx) { caller, _ in
            let rec = try await service.revokeKey(caller, id: ctx.parameters.get("id") ?? "")
            var w = JSONWriter(); Self.writeKey(rec, &w); return w.bytes
        } }
        m.post("/keys/:id/rotate") { req, ctx in try await self.run(req, ctx) { caller, body in
            var grace = 0
            if !body.isEmpty, let v = try Self.object(body)["grace_seconds"] {
                guard case let .int(g) = v else { throw APIError.invalidRequest("'grace_seconds' must be between 0 and 2592000.", param: "grace_seconds") }
                grace = g
            }
            let (key, new) = try await service.rotateKey(caller, id: ctx.parameters.get("id") ?? "", graceSeconds: grace)
            var w = JSONWriter(); Self.writeKey(new, &w, plaintext: key); return w.bytes
        } }
        m.get("/agents") { req, ctx in try await self.run(req, ctx) { caller, _ in
            // A project sees its own agents; the admin sees every worker (or one project's with ?project=).
            let only: String? = caller.isAdmin ? caller.project.map { AgentFleet.project($0).description } : AgentFleet.project(try caller.requireProject()).description
            return try await OpsRoutes.workers(store.redis, fleet: only)
        } }
        m.get("/join-keys") { req, ctx in try await self.run(req, ctx) { caller, _ in
            let jks = try await store.joinKeys(fleet: try caller.joinKeyFleet())
            return Self.list(jks) { w, j in
                w.objectStart(); w.field("id", j.id); w.field("name", j.name); w.field("fleet", j.fleet.description)
                w.field("created_at", Int(j.createdAt / 1000)); w.field("revoked", j.revoked); w.objectEnd()
            }
        } }
        m.post("/join-keys") { req, ctx in try await self.run(req, ctx) { caller, body in
            var name = "workers"
            if !body.isEmpty, case let .string(n)? = try Self.object(body)["name"] { name = n }
            let (key, id, fleet) = try await service.createJoinKey(caller, name: name)
            var w = JSONWriter(); w.objectStart(); w.field("id", id); w.field("name", name); w.field("fleet", fleet.description)
            w.field("join_key", key); w.objectEnd(); return w.bytes
        } }
        m.post("/join-keys/:id/revoke") { req, ctx in try await self.run(req, ctx) { caller, _ in
            try await service.revokeJoinKey(caller, id: ctx.parameters.get("id") ?? "")
            return Array(#"{"revoked":true}"#.utf8)
        } }
        m.get("/usage") { req, ctx in try await self.run(req, ctx) { caller, _ in
            let usage = try await store.usage(project: try caller.requireProject())
            var w = JSONWriter(); w.objectStart(); w.field("object", "usage")
            var total: [String: Int] = [:]
            w.key("endpoints"); w.objectStart()
            for (ep, counters) in usage.sorted(by: { $0.key < $1.key }) {
                w.key(ep); w.objectStart()
                for k in counters.keys.sorted() { w.field(k, counters[k]!); total[k, default: 0] += counters[k]! }
                w.objectEnd()
            }
            w.objectEnd()
            w.key("total"); w.objectStart(); for k in total.keys.sorted() { w.field(k, total[k]!) }; w.objectEnd()
            w.objectEnd(); return w.bytes
        } }
        m.get("/tiers") { req, ctx in try await self.run(req, ctx) { _, _ in
            Self.list(config.tiers) { w, t in
                w.objectStart()
                w.field("name", t.name); w.field("priority", t.priority); w.field("weight", t.weight)
                w.field("queue_timeout_ms", t.queueTimeoutMs); w.field("request_timeout_ms", t.requestTimeoutMs)
                func opt(_ k: String, _ v: Int?) { w.key(k); if let v { w.value(v) } else { w.null() } }
                opt("requests_per_minute", t.requestsPerMinute); opt("tokens_per_minute", t.tokensPerMinute)
                opt("project_requests_per_minute", t.projectRequestsPerMinute); opt("project_tokens_per_minute", t.projectTokensPerMinute)
                opt("max_concurrent_requests", t.maxConcurrentRequests)
                w.field("price_input_per_million", t.priceInputPerMillion ?? 0); w.field("price_output_per_million", t.priceOutputPerMillion ?? 0)
                w.objectEnd()
            }
        } }
    }

    /// `/manage/v1` behind authentication (with `adminOnly`, the admin key only).
    static func group(_ routes: RouteTable<GatewayRequestContext>, auth: Authenticator, proxies: TrustedProxies,
                      adminOnly: Bool = false) -> RouterGroup<ManagementContext> {
        routes.group("/manage/v1").add(middleware: ManagementAuthMiddleware(auth: auth, proxies: proxies, adminOnly: adminOnly))
            .group(context: ManagementContext.self)
    }

    /// Runs a management call: its body (≤ 1 MiB) in, JSON out. The caller was authenticated
    /// by `ManagementAuthMiddleware` before the route was reached.
    private func run(_ request: Request, _ context: ManagementContext,
                     _ body: @escaping (ManagementCaller, [UInt8]) async throws -> [UInt8]) async throws -> Response {
        let bytes = try await Gateway.collect(request, limit: 1 << 20)
        return Gateway.json(try await body(context.caller, bytes))
    }

    private func resolveProject(_ ref: String) async throws -> Project {
        let id = ref.hasPrefix("proj_") ? String(ref.dropFirst(5)) : ref
        if let p = try await store.project(id: id) { return p }
        if let p = try await store.project(slug: ref) { return p }
        throw APIError.notFound("No project '\(ref)'.", code: "project_not_found")
    }

    private func setEntitlement(_ ctx: ManagementContext, granted: Bool) async throws -> [UInt8] {
        let project = try await resolveProject(ctx.parameters.get("project") ?? "")
        let tier = ctx.parameters.get("tier") ?? ""
        guard config.tier(named: tier) != nil else {
            throw APIError.notFound("Unknown tier '\(tier)'; tiers: \(config.tiers.map(\.name).joined(separator: ", ")).", code: "tier_not_found")
        }
        try await store.setTier(project: project.id, tier: tier, granted: granted)
        return Self.writeEntitlements(try await store.entitledTiers(project: project.id, config: config))
    }

    static func writeEntitlements(_ tiers: [String]) -> [UInt8] {
        var w = JSONWriter(); w.objectStart(); w.field("object", "tier_entitlements")
        w.key("tiers"); w.arrayStart(); for t in tiers { w.value(t) }; w.arrayEnd()
        w.objectEnd(); return w.bytes
    }

    /// An endpoint's `model`, `tier` and `fleet` from a request body, each defaulting to the value
    /// given (the existing endpoint's, for an update).
    static func endpointFields(_ o: [String: JSONValue], model: String?, tier: String, fleet: EndpointFleet, config: PlatformConfig) throws
        -> (model: String, tier: String, fleet: EndpointFleet) {
        var model = model, tier = tier, fleet = fleet
        switch o["model"] {
        case nil: break
        case let .string(m)?:
            guard !m.isEmpty, m.utf8.count <= WireLimits.maxNameBytes else {
                throw APIError.invalidRequest("'model' must be 1 to \(WireLimits.maxNameBytes) bytes.", param: "model")
            }
            model = m
        case let v?: throw APIError.invalidRequest("Invalid type for 'model': expected a string, but got \(v.typeName) instead.", param: "model", code: "invalid_type")
        }
        switch o["tier"] {
        case nil, .null?: break
        case let .string(t)?: tier = t
        case let v?: throw APIError.invalidRequest("Invalid type for 'tier': expected a string, but got \(v.typeName) instead.", param: "tier", code: "invalid_type")
        }
        guard config.tier(named: tier) != nil else {
            throw APIError.invalidRequest("Unknown tier '\(tier)'; tiers: \(config.tiers.map(\.name).joined(separator: ", ")).", param: "tier")
        }
        switch o["fleet"] {
        case nil, .null?: break
        case let .string(f)?:
            guard let parsed = EndpointFleet(name: f) else {
                throw APIError.invalidRequest("Invalid 'fleet': '\(f)'. Supported values are: 'project', 'platform' and 'both'.", param: "fleet", code: "invalid_value")
            }
            fleet = parsed
        case let v?: throw APIError.invalidRequest("Invalid type for 'fleet': expected a string, but got \(v.typeName) instead.", param: "fleet", code: "invalid_type")
        }
        guard let model else { throw APIError.invalidRequest("'model' is required.", param: "model") }
        return (model, tier, fleet)
    }

    /// `allowed_ips`: an array of address or CIDR strings (nil when absent or null).
    static func allowedIPs(_ v: JSONValue?) throws -> [String]? {
        guard let v, v != .null else { return nil }
        guard case let .array(a) = v else { throw APIError.invalidRequest("'allowed_ips' must be an array of addresses or CIDR blocks.", param: "allowed_ips") }
        guard a.count <= 256 else { throw APIError.invalidRequest("'allowed_ips' may hold at most 256 entries.", param: "allowed_ips") }
        return try a.map {
            guard case let .string(c) = $0 else {
                throw APIError.invalidRequest("'allowed_ips' entries must be IPv4/IPv6 addresses or CIDR blocks.", param: "allowed_ips")
            }
            return c
        }
    }

    static func object(_ body: [UInt8]) throws -> [String: JSONValue] {
        if body.isEmpty { return [:] }
        guard case let .object(o) = try JSONValue.parse(body) else { throw APIError.invalidRequest("The request body must be a JSON object.") }
        return o
    }

    static func list<T>(_ items: [T], _ write: (inout JSONWriter, T) -> Void) -> [UInt8] {
        var w = JSONWriter()
        w.objectStart(); w.field("object", "list"); w.key("data"); w.arrayStart()
        for i in items { write(&w, i) }
        w.arrayEnd(); w.objectEnd()
        return w.bytes
    }

    static func writeProject(_ p: Project, _ w: inout JSONWriter) {
        w.objectStart(); w.field("id", p.id); w.field("url_id", "proj_\(p.id)"); w.field("slug", p.slug); w.field("name", p.name)
        w.field("created_at", Int(p.createdAt / 1000)); w.objectEnd()
    }

    static func writeEndpoint(_ e: Endpoint, _ w: inout JSONWriter) {
        w.objectStart(); w.field("slug", e.slug); w.field("model", e.model); w.field("tier", e.tier); w.field("fleet", e.fleet.name)
        w.field("base_path", "/proj_\(e.project)/\(e.slug)/v1"); w.field("created_at", Int(e.createdAt / 1000)); w.objectEnd()
    }

    static func writeKey(_ k: KeyRecord, _ w: inout JSONWriter, plaintext: String? = nil) {
        w.objectStart()
        w.field("id", k.id); w.field("name", k.name); w.field("prefix", k.displayPrefix)
        w.key("scopes"); w.arrayStart(); for s in k.scopes.sorted() { w.value(s) }; w.arrayEnd()
        w.field("created_at", Int(k.createdAt / 1000)); w.field("revoked", k.revoked)
        w.key("expires_at"); if let e = k.expiresAtMs { w.value(Int(e / 1000)) } else { w.null() }
        w.key("allowed_ips"); w.arrayStart(); for c in k.allowedCIDRs { w.value(c) }; w.arrayEnd()
        if let plaintext { w.field("key", plaintext) }
        w.objectEnd()
    }
}
