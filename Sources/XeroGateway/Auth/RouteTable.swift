import HTTPTypes
import Hummingbird

/// Registers routes on a router and remembers each (method, path): the table an adversarial test
/// walks to prove every route refuses an unauthenticated call (`xerotier gateway --print-routes`).
final class RouteTable<Context: RequestContext>: RouterMethods {
    struct Entry: Sendable, Hashable { var method: String; var path: String }

    private let router: Router<Context>
    /// Filled while routes are registered, on one thread, before the server starts.
    private(set) var entries: [Entry] = []

    init(_ router: Router<Context>) { self.router = router }

    @discardableResult func on<Responder: HTTPResponder>(_ path: RouterPath, method: HTTPRequest.Method, responder: Responder) -> Self
        where Responder.Context == Context {
        entries.append(Entry(method: method.rawValue, path: path.description))
        router.on(path, method: method, responder: responder)
        return self
    }

    @discardableResult func add(middleware: any MiddlewareProtocol<Request, Response, Context>) -> Self {
        router.add(middleware: middleware)
        return self
    }
}
