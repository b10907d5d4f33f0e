import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdAuth
import NIOCore
import XeroCore
import XeroStore

/// The web console (docs/console.md): `/` and `/console/…`, server-rendered. A session acts for
/// one of its user's projects with that project's management rights, through `ProjectService`,
/// the same rules `/manage/v1` applies to keys.
struct ConsoleRoutes: Sendable {
    let service: ProjectService
    let users: UserStore
    let registry: ModelRegistry
    let proxies: TrustedProxies
    var store: TenancyStore { service.store }
    var config: PlatformConfig { service.config }

    static let sessionCookie = "xero_session"
    static let sessionLifetime: Duration = .seconds(8 * 3600)
    /// Failed log-ins allowed per email, and per client address, in `throttleWindowSeconds`.
    static let failuresPerEmail = 5
    static let failuresPerAddress = 50
    static let throttleWindowSeconds = 900

    func register(on routes: RouteTable<GatewayRequestContext>) {
        let proxies = self.proxies
        let sessions = SessionMiddleware<ConsoleContext>(
            storage: RedisPersistDriver(redis: store.redis),
            configuration: SessionMiddlewareConfiguration(
                sessionCookieParameters: SessionCookieParameters(name: Self.sessionCookie, path: "/", secure: false, sameSite: .lax),
                keyPrefix: RedisKeys.session(""), defaultSessionExpiration: Self.sessionLifetime))
        let console = routes.group(context: ConsoleContext.self)
            .add(middleware: SecureCookies { request, context in proxies.isSecure(peer: context.remoteIP, headers: request.headers, tls: context.isTLS) })
            .add(middleware: sessions)
            .add(middleware: ConsoleCSRF())

        console.get("/") { request, context -> Response in
            if try await signedIn(context) != nil { return ConsolePages.redirect("/console") }
            return ConsolePages.render("home", ["title": "Welcome", "csrf": context.csrfToken, "signup": config.console.signup != .closed])
        }
        console.get("/console/register") { _, context -> Response in
            registerPage(context)
        }
        console.post("/console/register") { request, context -> Response in
            try await register(try await ConsoleForm.read(request), context)
        }
        console.get("/console/login") { _, context -> Response in
            ConsolePages.render("login", ["title": "Log in", "csrf": context.csrfToken])
        }
        console.post("/console/login") { request, context -> Response in
            try await logIn(try await ConsoleForm.read(request), request: request, context)
        }
        console.post("/console/logout") { _, context -> Response in
            context.sessions.clearSession()
            return ConsolePages.redirect("/")
        }
        // Every route below needs a signed-in user: the middleware resolves the session once and
        // sends anyone else to the log-in, so no handler can forget to ask.
        let member = console.group("").add(middleware: RequireSignIn(resolve: { try await signedIn($0) }))
        member.post("/console/project") { request, context -> Response in
            let s = context.member
            let wanted = try await ConsoleForm.read(request)["project"] ?? ""
            guard s.projects.contains(where: { $0.id == wanted }) else { return ConsolePages.notFound() }
            _ = context.sessions.updateSession(ConsoleSession(userID: s.user.id, projectID: wanted))
            return ConsolePages.redirect("/console")
        }
        member.get("/console") { request, context -> Response in
            let s = context.member
            return try await dashboard(s, request: request, context)
        }
        member.post("/console/endpoints") { request, context -> Response in
            let s = context.member
            let form = try await ConsoleForm.read(request)
            do {
                let tier = form["tier"].flatMap { $0.isEmpty ? nil : $0 } ?? config.defaultEndpointTier
                _ = try await service.createEndpoint(s.caller, slug: form["slug"] ?? "", model: form["model"] ?? "", tier: tier, fleet: .both)
            } catch let e as APIError {
                return try await dashboard(s, request: request, context, error: e.message, status: HTTPResponse.Status(code: e.status))
            }
            return ConsolePages.redirect("/console")
        }
        member.get("/console/keys") { _, context -> Response in
            let s = context.member
            return try await keysPage(s, context)
        }
        member.post("/console/keys") { request, context -> Response in
            let s = context.member
            let form = try await ConsoleForm.read(request)
            let name = (form["name"] ?? "").trimmingCharacters(in: .whitespaces)
            do {
                let ips = Self.addresses(form["allowed_ips"])
                let (key, _) = try await service.createKey(s.caller, name: name.isEmpty ? "key" : name, scopes: Set(form.all("scope")),
                                                           expiresInSeconds: nil, allowedIPs: ips)
                return try await keysPage(s, context, newKey: key)
            } catch let e as APIError {
                return try await keysPage(s, context, error: e.message, status: HTTPResponse.Status(code: e.status))
            }
        }
        member.post("/console/keys/:id/revoke") { _, context -> Response in
            let s = context.member
            do { _ = try await service.revokeKey(s.caller, id: context.parameters.get("id") ?? "") } catch let e as APIError where e.status == 404 {
                return ConsolePages.notFound()
            }
            return ConsolePages.redirect("/console/keys")
        }
        member.post("/console/keys/:id/allowed-ips") { request, context -> Response in
            let s = context.member
            let ips = Self.addresses(try await ConsoleForm.read(request)["allowed_ips"])
            do {
                _ = try await service.setAllowedIPs(s.caller, id: context.parameters.get("id") ?? "", allowedIPs: ips)
                return ConsolePages.redirect("/console/keys")
            } catch let e as APIError where e.status == 404 {
                return ConsolePages.notFound()
            } catch let e as APIError {
                return try await keysPage(s, context, error: e.message, status: HTTPResponse.Status(code: e.status))
            }
        }
        member.post("/console/keys/:id/rotate") { request, context -> Response in
            let s = context.member
            let grace = Int(try await ConsoleForm.read(request)["grace_seconds"] ?? "") ?? 0
            do {
                let (key, _) = try await service.rotateKey(s.caller, id: context.parameters.get("id") ?? "", graceSeconds: grace)
                return try await keysPage(s, context, newKey: key)
            } catch let e as APIError where e.status == 404 {
                return ConsolePages.notFound()
            } catch let e as APIError {
                return try await keysPage(s, context, error: e.message, status: HTTPResponse.Status(code: e.status))
            }
        }
        member.get("/console/agents") { _, context -> Response in
            let s = context.member
            return try await agentsPage(s, context)
        }
        member.post("/console/join-keys") { request, context -> Response in
            let s = context.member
            let name = (try await ConsoleForm.read(request)["name"] ?? "").trimmingCharacters(in: .whitespaces)
            do {
                let (key, _, _) = try await service.createJoinKey(s.projectCaller, name: name.isEmpty ? "agents" : name)
                return try await agentsPage(s, context, newJoinKey: key)
            } catch let e as APIError {
                return try await agentsPage(s, context, error: e.message, status: HTTPResponse.Status(code: e.status))
            }
        }
        member.post("/console/join-keys/:id/revoke") { _, context -> Response in
            let s = context.member
            do { try await service.revokeJoinKey(s.projectCaller, id: context.parameters.get("id") ?? "") } catch let e as APIError where e.status == 404 {
                return ConsolePages.notFound()
            }
            return ConsolePages.redirect("/console/agents")
        }
        member.get("/console/admin/ops") { _, context -> Response in
            let s = context.member
            guard s.user.isAdmin else { return ConsolePages.notFound() }
            return try await opsPage(s, context)
        }
        member.get("/console/usage") { _, context -> Response in
            let s = context.member
            return try await usagePage(s, context)
        }
    }

    // MARK: Who is signed in

    struct SignedIn: Sendable {
        var user: UserRecord
        var project: Project
        var projects: [Project]
        /// The session's rights: the project's management rights, as `/manage/v1` knows them.
        var caller: ManagementCaller
        /// The same without the admin scope: what acts on the project's own fleet (an admin's
        /// join keys here are the project's agents, not platform workers).
        var projectCaller: ManagementCaller {
            var key = caller.key
            key.scopes.remove(KeyRecord.admin)
            return ManagementCaller(key: key, project: caller.project)
        }
    }

    /// The session's user and project, or nil (no session, or its user or projects are gone).
    func signedIn(_ context: ConsoleContext) async throws -> SignedIn? {
        guard let session = context.sessions.session else { return nil }
        guard let user = try await users.user(id: session.userID) else { context.sessions.clearSession(); return nil }
        var projects: [Project] = []
        for id in try await users.projects(of: user.id).keys.sorted() { if let p = try await store.project(id: id) { projects.append(p) } }
        guard let project = projects.first(where: { $0.id == session.projectID }) ?? projects.first else { return nil }
        let key = KeyRecord.consoleSession(user: user.id, email: user.email, project: project, admin: user.isAdmin)
        return SignedIn(user: user, project: project, projects: projects, caller: ManagementCaller(key: key, project: project.id))
    }

    /// What the layout shows for a signed-in user: the page's title, which tab is lit (`nav`), and
    /// an error to show, if any.
    func layout(_ s: SignedIn, _ context: ConsoleContext, title: String, nav: String, error: String? = nil) -> [String: Any] {
        var data: [String: Any] = ["title": title, "csrf": context.csrfToken, "user": true, "email": s.user.email, "switchable": s.projects.count > 1,
                                   "admin": s.user.isAdmin, "nav_\(nav)": true,
                                   "projects": s.projects.map { ["id": $0.id, "name": $0.name, "current": $0.id == s.project.id] as [String: Any] }]
        if let error { data["error"] = error }
        return data
    }

    // MARK: Sign-up and log-in

    func registerPage(_ context: ConsoleContext, error: String? = nil, email: String = "", project: String = "",
                      status: HTTPResponse.Status = .ok) -> Response {
        var data: [String: Any] = ["title": "Sign up", "csrf": context.csrfToken, "email_value": email, "project_value": project,
                                   "closed": config.console.signup == .closed, "invite": config.console.signup == .invite]
        if let error { data["error"] = error }
        return ConsolePages.render("register", data, status: status)
    }

    func register(_ form: ConsoleForm, _ context: ConsoleContext) async throws -> Response {
        let email = UserStore.normalize(email: form["email"] ?? "")
        let password = form["password"] ?? ""
        let projectName = (form["project"] ?? "").trimmingCharacters(in: .whitespaces)
        func refuse(_ message: String, _ status: HTTPResponse.Status = .badRequest) -> Response {
            registerPage(context, error: message, email: email, project: projectName, status: status)
        }
        switch config.console.signup {
        case .closed: return refuse("Sign-up is closed on this platform.", .forbidden)
        case .invite, .open: break
        }
        guard UserStore.isPlausible(email: email) else { return refuse("That does not look like an email address.") }
        if let problem = Passwords.problem(password, email: email) { return refuse(problem) }
        guard projectName.utf8.count <= ProjectService.maxNameBytes else { return refuse("The project name is too long.") }
        guard try await users.user(email: email) == nil else { return refuse("An account with this email exists. Log in instead.", .conflict) }
        if config.console.signup == .invite {
            guard try await users.takeInvite(form["invite"] ?? "", email: email) else { return refuse("That invite code is not valid for this email.", .forbidden) }
        }
        let hash = try await Passwords.hash(password)
        guard let user = try await users.create(email: email, passwordHash: hash) else { return refuse("An account with this email exists. Log in instead.", .conflict) }
        let name = projectName.isEmpty ? "My project" : projectName
        let project = try await store.createProject(slug: Self.slug(for: name), name: name, selfService: true)
        try await users.addMember(user: user.id, project: project.id, role: .owner)
        context.sessions.createSession(ConsoleSession(userID: user.id, projectID: project.id), expiresIn: Self.sessionLifetime)
        return ConsolePages.redirect("/console")
    }

    /// A project slug from its name: lowercase letters and digits joined by '-', then a random
    /// suffix (slugs are global; two tenants may both call theirs "My app").
    static func slug(for name: String) -> String {
        let words = name.lowercased().split { !($0.isASCII && ($0.isLetter || $0.isNumber)) }
        let base = words.joined(separator: "-").prefix(40)
        return (base.isEmpty ? "project" : String(base)) + "-" + randomID(length: 6)
    }

    func logIn(_ form: ConsoleForm, request: Request, _ context: ConsoleContext) async throws -> Response {
        let email = UserStore.normalize(email: form["email"] ?? "")
        let password = form["password"] ?? ""
        let ip = proxies.clientIP(peer: context.remoteIP, headers: request.headers) ?? "unknown"
        let byEmail = "email:" + APIKey.hash(email), byAddress = "ip:" + ip
        func page(_ error: String, _ status: HTTPResponse.Status) -> Response {
            ConsolePages.render("login", ["title": "Log in", "csrf": context.csrfToken, "email_value": email, "error": error], status: status)
        }
        let emailFailures = try await users.loginFailures([byEmail]), addressFailures = try await users.loginFailures([byAddress])
        if emailFailures >= Self.failuresPerEmail || addressFailures >= Self.failuresPerAddress {
            return page("Too many failed log-ins. Try again in \(Self.throttleWindowSeconds / 60) minutes.", .tooManyRequests)
        }
        let user = try await users.user(email: email)
        // An unknown address costs the same bcrypt as a wrong password, and gets the same answer.
        let ok = try await Passwords.verify(password, hash: user?.passwordHash ?? Passwords.decoy) && user != nil
        guard ok, let user else {
            try await users.recordLoginFailure([byEmail, byAddress], windowSeconds: Self.throttleWindowSeconds)
            return page("Wrong email or password.", .unauthorized)
        }
        try await users.clearLoginFailures(byEmail)
        let projects = try await users.projects(of: user.id).keys.sorted()
        guard let first = projects.first else {
            return ConsolePages.render("message", ["title": "No project", "heading": "No project",
                                                   "message": "Your account belongs to no project yet. Ask the platform administrator to add you to one."],
                                       status: .forbidden)
        }
        context.sessions.createSession(ConsoleSession(userID: user.id, projectID: first), expiresIn: Self.sessionLifetime)
        return ConsolePages.redirect("/console")
    }

    // MARK: Pages

    func dashboard(_ s: SignedIn, request: Request, _ context: ConsoleContext, error: String? = nil,
                   status: HTTPResponse.Status = .ok) async throws -> Response {
        var data = layout(s, context, title: "Dashboard", nav: "dashboard", error: error)
        data["project_name"] = s.project.name
        let base = Self.origin(request, secure: proxies.isSecure(peer: context.remoteIP, headers: request.headers, tls: context.isTLS))
        data["endpoints"] = try await store.endpoints(project: s.project.id).sorted { $0.slug < $1.slug }.map { e -> [String: Any] in
            let url = "\(base)/proj_\(e.project)/\(e.slug)/v1"
            return ["slug": e.slug, "model": e.model, "tier": e.tier, "base_url": url,
                    "python": Snippets.python(baseURL: url, model: e.model), "node": Snippets.node(baseURL: url, model: e.model),
                    "curl": Snippets.curl(baseURL: url, model: e.model)]
        }
        let models = try await catalog(project: s.project.id)
        data["models"] = models.map { ["name": $0.name, "source": $0.source] }
        if let first = models.first { data["first_model"] = first.name }
        data["tiers"] = try await service.usableTiers(s.caller).map { t -> [String: Any] in
            ["name": t.name, "limits": Self.limits(t), "prices": Self.prices(t), "default": t.name == config.defaultEndpointTier]
        }
        return ConsolePages.render("dashboard", data, status: status)
    }

    func keysPage(_ s: SignedIn, _ context: ConsoleContext, newKey: String? = nil, error: String? = nil,
                  status: HTTPResponse.Status = .ok) async throws -> Response {
        var data = layout(s, context, title: "API keys", nav: "keys", error: error)
        if let newKey { data["new_key"] = newKey }
        let now = nowMs()
        data["keys"] = try await store.keys(project: s.project.id).sorted { $0.createdAt > $1.createdAt }.map { k -> [String: Any] in
            let expired = k.expiresAtMs.map { $0 <= now } ?? false
            return ["id": k.id, "name": k.name, "prefix": k.displayPrefix, "scopes": k.scopes.sorted().joined(separator: ", "),
                    "allowed": k.allowedCIDRs.isEmpty ? "anywhere" : k.allowedCIDRs.joined(separator: ", "),
                    "allowed_input": k.allowedCIDRs.joined(separator: ", "),
                    "created": Self.date(k.createdAt), "state": k.revoked ? "revoked" : expired ? "expired" : "live", "live": !k.revoked && !expired]
        }
        return ConsolePages.render("keys", data, status: status)
    }

    func agentsPage(_ s: SignedIn, _ context: ConsoleContext, newJoinKey: String? = nil, error: String? = nil,
                    status: HTTPResponse.Status = .ok) async throws -> Response {
        var data = layout(s, context, title: "Agents", nav: "agents", error: error)
        if let newJoinKey { data["new_join_key"] = newJoinKey }
        let fleet = AgentFleet.project(s.project.id)
        data["join_keys"] = try await store.joinKeys(fleet: fleet).sorted { $0.createdAt > $1.createdAt }.map { j -> [String: Any] in
            ["id": j.id, "name": j.name, "created": Self.date(j.createdAt), "state": j.revoked ? "revoked" : "live", "live": !j.revoked]
        }
        let agents = try Self.rows(try await OpsRoutes.workers(store.redis, fleet: fleet.description)).map { w -> [String: Any] in
            var row = w
            row["age"] = Self.age(w["last_heartbeat"] as? Int)
            return row
        }
        data["agents"] = agents
        data["has_agents"] = !agents.isEmpty
        return ConsolePages.render("agents", data, status: status)
    }

    /// The admin's view of the deployment, the same records `xeroctl ops` reads (`OpsRoutes`).
    func opsPage(_ s: SignedIn, _ context: ConsoleContext) async throws -> Response {
        var data = layout(s, context, title: "Operations", nav: "ops")
        data["refresh"] = 2
        let ops = OpsRoutes(redis: store.redis, config: config)
        let queues = try JSONValue.parse(try await ops.queues())
        data["tiers"] = Self.rows(queues, "data")
        data["routers"] = Self.rows(queues, "routers").map { r -> [String: Any] in
            var row = r
            row["age"] = (r["last_seen_ms_ago"] as? Int).map { Self.duration(ms: $0) + " ago" } ?? "–"
            return row
        }
        data["workers"] = try Self.rows(try await OpsRoutes.workers(store.redis, fleet: nil)).map { w -> [String: Any] in
            var row = w
            row["age"] = Self.age(w["last_heartbeat"] as? Int)
            return row
        }
        let tiers = config.tiers.map(\.name)
        var jobs: [[String: Any]] = []
        for state in ["waiting", "running"] {
            for j in Self.rows(try JSONValue.parse(try await ops.jobs(tiers: tiers, state: state, limit: 50)), "data") {
                var row = j
                row["age"] = (j["age_ms"] as? Int).map { Self.duration(ms: $0) } ?? "–"
                if let q = j["queued_at"] as? Int, let d = j["dispatched_at"] as? Int { row["queued_for"] = Self.duration(ms: max(0, d - q)) }
                else { row["queued_for"] = state == "waiting" ? "still queued" : "–" }
                for k in ["worker", "project", "tier", "state"] where row[k] == nil { row[k] = "–" }
                jobs.append(row)
            }
        }
        data["jobs"] = jobs
        data["has_jobs"] = !jobs.isEmpty
        return ConsolePages.render("ops", data)
    }

    /// The objects of a JSON list (`{"data": [...]}` by default) as template rows.
    static func rows(_ bytes: [UInt8]) throws -> [[String: Any]] { rows(try JSONValue.parse(bytes), "data") }

    static func rows(_ value: JSONValue, _ field: String) -> [[String: Any]] {
        guard case let .object(o) = value, case let .array(items)? = o[field] else { return [] }
        return items.compactMap { item in
            guard case let .object(fields) = item else { return nil }
            return fields.compactMapValues { v -> Any? in
                switch v {
                case let .string(x): return x
                case let .int(x): return x
                case let .double(x): return x
                case let .bool(x): return x
                case .null, .array, .object: return nil
                }
            }
        }
    }

    static func age(_ epochMs: Int?) -> String {
        guard let epochMs else { return "–" }
        return duration(ms: max(0, Int(nowMs()) - epochMs)) + " ago"
    }

    static func duration(ms: Int) -> String {
        ms < 1000 ? "\(ms) ms" : ms < 120_000 ? String(format: "%.1f s", Double(ms) / 1000) : "\(ms / 60_000) min"
    }

    /// An allow-list as typed in a form: addresses and CIDR blocks split by commas and spaces.
    static func addresses(_ field: String?) -> [String] {
        (field ?? "").split { $0 == "," || $0 == " " }.map(String.init)
    }

    func usagePage(_ s: SignedIn, _ context: ConsoleContext) async throws -> Response {
        var data = layout(s, context, title: "Usage", nav: "usage")
        let usage = try await store.usage(project: s.project.id).sorted { $0.key < $1.key }
        data["rows"] = usage.map { ep, c -> [String: Any] in
            ["endpoint": ep, "requests": c["requests"] ?? 0, "input": c["input_tokens"] ?? 0, "output": c["output_tokens"] ?? 0,
             "cost": String(format: "%.6f", Double(c["cost_micro_usd"] ?? 0) / 1e6)]
        }
        data["has_rows"] = !usage.isEmpty
        // A bar per endpoint, its length its requests against the busiest one's.
        let top = max(1, usage.map { $0.value["requests"] ?? 0 }.max() ?? 1)
        data["bars"] = usage.enumerated().map { i, u -> [String: Any] in
            let n = u.value["requests"] ?? 0, width = max(1, 360 * n / top)
            return ["label": String(u.key.prefix(20)), "value": n, "y": 8 + i * 28, "text_y": 22 + i * 28, "width": width, "value_x": 168 + width]
        }
        data["chart_height"] = 16 + usage.count * 28
        // Per day (UTC), the last 14: a column per day, stacked by nothing — its height the day's
        // requests against the busiest day's — and a row per day and endpoint.
        let days = try await store.usageByDay(project: s.project.id, days: 14)
        let perDay = days.map { d in d.endpoints.values.reduce(0) { $0 + ($1["requests"] ?? 0) } }
        let busiest = max(1, perDay.max() ?? 1)
        data["day_bars"] = zip(days, perDay).enumerated().map { i, pair -> [String: Any] in
            let (d, n) = pair, h = n == 0 ? 0 : max(2, 120 * n / busiest)
            return ["x": 8 + i * 42, "y": 140 - h, "height": h, "value": n, "value_y": 134 - h, "label": String(d.day.suffix(4).prefix(2)) + "-" + String(d.day.suffix(2)),
                    "text_x": 8 + i * 42 + 16]
        }
        data["day_rows"] = days.reversed().flatMap { d in
            d.endpoints.sorted { $0.key < $1.key }.map { ep, c -> [String: Any] in
                ["day": String(d.day.prefix(4)) + "-" + String(d.day.dropFirst(4).prefix(2)) + "-" + String(d.day.suffix(2)), "endpoint": ep,
                 "requests": c["requests"] ?? 0, "input": c["input_tokens"] ?? 0, "output": c["output_tokens"] ?? 0,
                 "cost": String(format: "%.6f", Double(c["cost_micro_usd"] ?? 0) / 1e6)]
            }
        }
        return ConsolePages.render("usage", data)
    }

    /// The models this project can put an endpoint on: what live workers of its fleets serve (the
    /// platform's, its own agents), then the registry's models it sees.
    func catalog(project: String) async throws -> [(name: String, source: String)] {
        var out: [(name: String, source: String)] = []
        var seen = Set<String>()
        let ids = try await store.redis.send(["ZRANGE", RedisKeys.workers, "0", "-1"]).array.compactMap(\.string)
        let records = ids.isEmpty ? [] : try await store.redis.pipeline(strings: ids.map { ["HGETALL", RedisKeys.worker($0)] })
        for h in records.map(\.hash) where h["state"] != "draining" {
            let fleet = h["fleet"] ?? "platform"
            guard fleet == "platform" || fleet == AgentFleet.project(project).description else { continue }
            for m in (h["models"] ?? "").split(separator: ",").map(String.init) where m != "*" && seen.insert(m).inserted {
                out.append((m, fleet == "platform" ? "served by the platform" : "served by your agents"))
            }
        }
        for m in try await registry.models(visibleTo: project) where seen.insert(m.name).inserted {
            out.append((m.name, m.isPlatform ? "platform registry" : "your registry"))
        }
        return out
    }

    static func limits(_ t: Tier) -> String {
        var parts: [String] = []
        if let r = t.requestsPerMinute { parts.append("\(r) requests/min") }
        if let k = t.tokensPerMinute { parts.append("\(k) tokens/min") }
        if let c = t.maxConcurrentRequests { parts.append("\(c) at once") }
        return parts.isEmpty ? "no per-key limits" : parts.joined(separator: " · ")
    }

    static func prices(_ t: Tier) -> String {
        let i = t.priceInputPerMillion ?? 0, o = t.priceOutputPerMillion ?? 0
        if i == 0 && o == 0 { return "free" }
        return String(format: "$%.2f in · $%.2f out per million tokens", i, o)
    }

    static func date(_ ms: Int64) -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyy-MM-dd HH:mm"
        f.timeZone = TimeZone(identifier: "UTC")
        return f.string(from: Date(timeIntervalSince1970: Double(ms) / 1000)) + " UTC"
    }

    /// `scheme://host` as the client reached this gateway (the Host header it sent).
    static func origin(_ request: Request, secure: Bool) -> String {
        let host = request.head.authority ?? request.headers[HTTPField.Name("Host")!] ?? "127.0.0.1"
        let safe = host.filter { $0.isASCII && ($0.isLetter || $0.isNumber || ".:-[]".contains($0)) }
        return (secure ? "https://" : "http://") + safe
    }
}

/// Adds `Secure` to every cookie the console sets when the client's connection is HTTPS (the
/// gateway's TLS, or a trusted proxy that says so). Chromium keeps cookies on plain-HTTP localhost.
struct SecureCookies: RouterMiddleware {
    typealias Context = ConsoleContext
    let isSecure: @Sendable (Request, ConsoleContext) -> Bool

    func handle(_ request: Request, context: ConsoleContext, next: (Request, ConsoleContext) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        guard isSecure(request, context) else { return response }
        let cookies = response.headers[values: .setCookie]
        guard !cookies.isEmpty else { return response }
        response.headers[values: .setCookie] = cookies.map { $0.lowercased().contains("; secure") ? $0 : $0 + "; Secure" }
        return response
    }
}

/// The code a dashboard shows for an endpoint: it runs as shown once a key replaces YOUR_API_KEY.
/// The model name is quoted for each language (it is the tenant's text).
enum Snippets {
    /// Inside a double-quoted string of Python, JavaScript or JSON.
    static func q(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
    }

    static func python(baseURL: String, model: String) -> String {
        """
        from openai import OpenAI

        client = OpenAI(base_url="\(baseURL)", api_key="YOUR_API_KEY")
        response = client.chat.completions.create(
            model="\(q(model))",
            messages=[{"role": "user", "content": "Say hello in one sentence."}],
            max_tokens=40,
        )
        print(response.choices[0].message.content)
        """
    }

    static func node(baseURL: String, model: String) -> String {
        """
        import OpenAI from "openai";

        const client = new OpenAI({ baseURL: "\(baseURL)", apiKey: "YOUR_API_KEY" });
        const response = await client.chat.completions.create({
          model: "\(q(model))",
          messages: [{ role: "user", content: "Say hello in one sentence." }],
          max_tokens: 40,
        });
        console.log(response.choices[0].message.content);
        """
    }

    static func curl(baseURL: String, model: String) -> String {
        """
        curl \(baseURL)/chat/completions \\
          -H "Authorization: Bearer YOUR_API_KEY" \\
          -H "Content-Type: application/json" \\
          -d '{"model": "\(q(model).replacingOccurrences(of: "'", with: "'\\''"))", "messages": [{"role": "user", "content": "Say hello in one sentence."}], "max_tokens": 40}'
        """
    }
}
