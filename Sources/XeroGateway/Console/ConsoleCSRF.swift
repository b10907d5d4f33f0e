import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import XeroStore

/// Cross-site request forgery: every console form carries a token that must equal the
/// `xero_csrf` cookie (a double-submit token; hummingbird-auth has no helper for it). The cookie
/// is HttpOnly and SameSite=Lax and set on the first console page a browser loads, so another
/// site can neither read it nor make the browser send it with a POST; it cannot put the token in
/// its form. A POST without it, or with another, gets 403.
struct ConsoleCSRF: RouterMiddleware {
    typealias Context = ConsoleContext
    static let cookie = "xero_csrf"
    static let field = "_csrf"

    func handle(_ request: Request, context: ConsoleContext, next: (Request, ConsoleContext) async throws -> Response) async throws -> Response {
        let existing = request.cookies[Self.cookie]?.value.filter { $0.isASCII && ($0.isLetter || $0.isNumber) }
        var context = context
        if request.method == .post {
            guard let token = existing, token.count >= 32 else { return ConsolePages.forbidden("This form has expired. Reload the page and try again.") }
            var request = request
            let body = try await request.collectBody(upTo: ConsoleForm.maxBytes)
            guard let sent = ConsoleForm(body)[Self.field], Self.equal(sent, token) else {
                return ConsolePages.forbidden("This form has expired. Reload the page and try again.")
            }
            context.csrfToken = token
            return try await next(request, context)
        }
        context.csrfToken = existing.flatMap { $0.count >= 32 ? $0 : nil } ?? randomID(length: 40)
        var response = try await next(request, context)
        if existing != context.csrfToken {
            // `SecureCookies` adds Secure where the connection is HTTPS.
            response.headers.append(HTTPField(name: .setCookie, value: "\(Self.cookie)=\(context.csrfToken); Path=/; HttpOnly; SameSite=Lax"))
        }
        return response
    }

    /// Constant time: the comparison does not stop at the first difference.
    static func equal(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<x.count { diff |= x[i] ^ y[i] }
        return diff == 0
    }
}

/// An `application/x-www-form-urlencoded` body as fields (the last value of a repeated name wins;
/// `all` keeps every one, for checkboxes).
struct ConsoleForm {
    /// The largest form body a console route reads.
    static let maxBytes = 1 << 20
    private(set) var pairs: [(String, String)] = []

    static func read(_ request: Request) async throws -> ConsoleForm {
        ConsoleForm(try await request.body.collect(upTo: maxBytes))
    }

    init(_ body: ByteBuffer) {
        let text = String(buffer: body)
        for part in text.split(separator: "&") {
            let kv = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String { String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "" }
            pairs.append((decode(kv[0]), kv.count > 1 ? decode(kv[1]) : ""))
        }
    }

    subscript(_ name: String) -> String? { pairs.last { $0.0 == name }?.1 }
    func all(_ name: String) -> [String] { pairs.filter { $0.0 == name }.map(\.1) }
}
