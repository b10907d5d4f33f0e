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

    init(context: GatewayRequestContext) throws {
        coreContext = context.coreContext
        sessions = SessionContext()
        remoteIP = context.remoteIP
        isTLS = context.isTLS
    }

    /// Forms, not JSON.
    var requestDecoder: URLEncodedFormDecoder { URLEncodedFormDecoder() }
}
