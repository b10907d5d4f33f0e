import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import XeroCore

/// Turns every failure into OpenAI's error object with its status — including Hummingbird's own
/// (unknown route, body too large) and anything unexpected, which becomes a plain 500 without
/// internals. The one place where errors meet HTTP.
struct OpenAIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let maxBodyBytes: Int

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as APIError {
            return Self.response(e)
        } catch let e as HTTPError {
            return Self.response(map(e, request: request))
        } catch is NIOTooManyBytesError {
            return Self.response(.payloadTooLarge(limit: maxBodyBytes))
        } catch {
            context.logger.error("unhandled error", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            return Self.response(.internalError())
        }
    }

    func map(_ e: HTTPError, request: Request) -> APIError {
        switch e.status.code {
        case 404: return .notFound("Unknown request URL: \(request.method) \(request.uri.path). API URLs look like /proj_<id>/<endpoint>/v1/chat/completions.", code: "unknown_url")
        case 405: return .methodNotAllowed("\(request.method)", path: request.uri.path)
        case 413: return .payloadTooLarge(limit: maxBodyBytes)
        case 400..<500: return APIError(status: e.status.code, message: e.body ?? e.status.reasonPhrase, type: "invalid_request_error")
        default: return .internalError()
        }
    }

    static func response(_ e: APIError) -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        for (k, v) in e.headers { if let name = HTTPField.Name(k) { headers[name] = v } }
        return Response(status: .init(code: e.httpStatus), headers: headers,
                        body: .init(byteBuffer: ByteBuffer(string: e.jsonBody)))
    }
}

