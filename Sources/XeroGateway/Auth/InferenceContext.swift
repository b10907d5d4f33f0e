import Hummingbird
import Logging
import XeroCore
import XeroStore

/// The request context of every route under `/proj_<id>/<endpoint>/v1`: it exists only once
/// `InferenceAuthMiddleware` has authenticated the caller, so a handler gets its caller (key,
/// project, endpoint) from the context and cannot forget to ask for it.
public struct InferenceContext: ChildRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let caller: CallerContext
    /// The client's address (after `--trusted-proxy`), for logs.
    public let clientIP: String?

    public init(context: GatewayRequestContext) throws {
        guard let caller = context.caller else {
            // Only reachable if a route were registered outside the authenticated group.
            throw APIError.internalError("This route is not behind authentication.")
        }
        coreContext = context.coreContext
        self.caller = caller
        clientIP = context.clientIP
    }

    /// Bodies are collected explicitly with the gateway's own limit.
    public var maxUploadSize: Int { Int.max }
}
