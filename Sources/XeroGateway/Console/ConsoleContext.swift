import Foundation
import Hummingbird
import HummingbirdAuth
import NIOCore
import XeroStore

/// What a console session remembers: whose it is and which of their projects it acts for.
struct ConsoleSession: Codable, Sendable, Equatable {
    var userID: String
    var projectID: String
}

/// The request context of every `/console` route and of `/`: the gateway's, plus the session
/// (hummingbird-auth's `SessionMiddleware` loads and saves it) and the client as the trusted
/// proxies say it is.
struct ConsoleContext: ChildRequestContext, SessionRequestContext {
    var coreContext: CoreRequestContextStorage
    let sessions: SessionContext<ConsoleSession>
    let remoteIP: String?
    let isTLS: Bool
    /// The CSRF token this request's pages put in their forms (`ConsoleCSRF` sets it).
    var csrfToken = ""
    /// The signed-in user, set by `RequireSignIn` on the routes behind it.
    var signedIn: ConsoleRoutes.SignedIn?

    /// The signed-in user of a route behind `RequireSignIn` (which never lets a request without one through).
    var member: ConsoleRoutes.SignedIn { signedIn! }

    init(context: GatewayRequestContext) throws {
        coreContext = context.coreContext
        sessions = SessionContext()
        remoteIP = context.remoteIP
        isTLS = context.isTLS
    }

    /// Forms, not JSON.
    var requestDecoder: URLEncodedFormDecoder { URLEncodedFormDecoder() }
}

/// Resolves the session's user before the routes behind it, or sends the browser to the log-in.
struct RequireSignIn: RouterMiddleware {
    typealias Context = ConsoleContext
    let resolve: @Sendable (ConsoleContext) async throws -> ConsoleRoutes.SignedIn?

    func handle(_ request: Request, context: ConsoleContext, next: (Request, ConsoleContext) async throws -> Response) async throws -> Response {
        guard let signedIn = try await resolve(context) else { return ConsolePages.redirect("/console/login") }
        var context = context
        context.signedIn = signedIn
        return try await next(request, context)
    }
}

