import Hummingbird
import XeroCore
import XeroStore

/// Authenticates every request of the inference route group once, before any handler runs:
/// bearer key → project in the URL → `inference` scope → endpoint (docs/tenancy.md, "Refusals").
/// The result lands in the context, from which `InferenceContext` is made.
struct InferenceAuthMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let auth: Authenticator
    let proxies: TrustedProxies

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        context.clientIP = proxies.clientIP(peer: context.remoteIP, headers: request.headers)
        context.caller = try await auth.authenticate(authorization: request.headers[.authorization],
                                                     projectPath: context.parameters.get("project") ?? "",
                                                     endpointSlug: context.parameters.get("endpoint") ?? "",
                                                     scope: KeyRecord.inference, remoteIP: context.clientIP)
        return try await next(request, context)
    }
}
