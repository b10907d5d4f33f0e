import Hummingbird
import XeroCore
import XeroStore

/// Authenticates every `/manage/v1` request once: a valid key with the `management` (or
/// `admin`) scope, and the project it acts on. With `adminOnly`, only the admin key passes.
struct ManagementAuthMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let auth: Authenticator
    let proxies: TrustedProxies
    var adminOnly = false

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        context.clientIP = proxies.clientIP(peer: context.remoteIP, headers: request.headers)
        let key = try await auth.keyRecord(authorization: request.headers[.authorization], remoteIP: context.clientIP)
        let isAdmin = key.scopes.contains(KeyRecord.admin)
        if adminOnly && !isAdmin { throw APIError.forbidden("This operation needs the 'admin' scope.", code: "insufficient_scope") }
        guard isAdmin || key.scopes.contains(KeyRecord.management) else {
            throw APIError.forbidden("This API key lacks the 'management' scope required for this request.", code: "insufficient_scope")
        }
        var project: String? = isAdmin ? nil : key.project
        if let wanted = request.uri.queryParameters.get("project"), !wanted.isEmpty {
            let store = auth.store
            let resolved: String?
            do {
                if try await store.project(id: wanted) != nil { resolved = wanted } else { resolved = try await store.project(slug: wanted)?.id }
            } catch {
                throw APIError.unavailable("The project store is unreachable; retry shortly.")
            }
            if isAdmin {
                guard let resolved else { throw APIError.notFound("No project '\(wanted)'.", code: "project_not_found") }
                project = resolved
            } else if resolved != key.project {
                throw APIError.forbidden("This API key does not belong to project '\(wanted)'.", code: "wrong_project")
            }
        }
        context.management = ManagementCaller(key: key, project: project)
        return try await next(request, context)
    }
}
