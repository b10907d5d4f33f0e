/// Every error a client can see, in OpenAI's shape: `{"error":{"message","type","param","code"}}`
/// plus the HTTP status it travels with. The one place that maps failures to status codes.
public struct APIError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: Int
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?
    /// Extra response headers (e.g. `Retry-After`).
    public var headers: [String: String]

    public init(status: Int, message: String, type: String, param: String? = nil, code: String? = nil, headers: [String: String] = [:]) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers
    }

    public var description: String { "\(status) \(type)\(code.map { "/\($0)" } ?? ""): \(message)" }

    /// The status to send: `status` when it is a real HTTP error status, else 502 (HTTPTypes
    /// traps on a status outside 0…999, and a made-up one must never reach a client).
    public var httpStatus: Int { (400...599).contains(status) ? status : 502 }

    /// The JSON body OpenAI sends with an error.
    public var jsonBody: String {
        var w = JSONWriter()
        w.objectStart()
        w.key("error"); w.objectStart()
        w.field("message", message)
        w.field("type", type)
        w.fieldOrNull("param", param)
        w.fieldOrNull("code", code)
        w.objectEnd()
        w.objectEnd()
        return w.string
    }

    // MARK: The catalogue

    public static func invalidRequest(_ message: String, param: String? = nil, code: String? = nil) -> APIError {
        APIError(status: 400, message: message, type: "invalid_request_error", param: param, code: code)
    }
    public static func invalidJSON(_ detail: String) -> APIError {
        APIError(status: 400, message: "We could not parse the JSON body of your request. (\(detail))", type: "invalid_request_error", code: "invalid_json")
    }
    public static func missingKey() -> APIError {
        APIError(status: 401, message: "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", type: "invalid_request_error", code: "missing_api_key")
    }
    public static func invalidKey(_ message: String = "Incorrect API key provided.") -> APIError {
        APIError(status: 401, message: message, type: "invalid_request_error", code: "invalid_api_key")
    }
    public static func forbidden(_ message: String, code: String = "insufficient_permissions") -> APIError {
        APIError(status: 403, message: message, type: "permission_error", code: code)
    }
    public static func notFound(_ message: String, code: String = "not_found") -> APIError {
        APIError(status: 404, message: message, type: "invalid_request_error", code: code)
    }
    public static func methodNotAllowed(_ method: String, path: String) -> APIError {
        APIError(status: 405, message: "Method \(method) is not allowed on \(path).", type: "invalid_request_error", code: "method_not_allowed")
    }
    public static func payloadTooLarge(limit: Int) -> APIError {
        APIError(status: 413, message: "Request body is larger than the \(limit) byte limit.", type: "invalid_request_error", code: "request_too_large")
    }
    public static func requestTimeout408(seconds: Int) -> APIError {
        APIError(status: 408, message: "The request body did not arrive within \(seconds) s of its headers; the connection is closed.", type: "invalid_request_error", code: "request_timeout")
    }
    public static func headersTooLarge(limit: Int, maxFields: Int) -> APIError {
        APIError(status: 431, message: "The request headers are larger than the \(limit) byte limit (or more than \(maxFields) fields).", type: "invalid_request_error", code: "request_headers_too_large")
    }
    public static func unsupportedMediaType(_ got: String) -> APIError {
        APIError(status: 415, message: "Content-Type must be application/json (got \(got)).", type: "invalid_request_error", code: "unsupported_media_type")
    }
    public static func noCapacity(model: String, tier: String, waitedMs: Int) -> APIError {
        APIError(status: 503, message: "No worker serving model '\(model)' became available within the '\(tier)' tier's queue timeout (\(waitedMs) ms). Retry later.", type: "service_unavailable", code: "no_worker_available")
    }
    /// No live worker serves the model for this project at all (not merely a busy one).
    public static func noWorker(model: String, tier: String) -> APIError {
        APIError(status: 503, message: "No live worker serves model '\(model)' for this endpoint (tier '\(tier)'). Retry later.", type: "service_unavailable", code: "no_worker_available")
    }
    public static func timeout(tier: String, ms: Int) -> APIError {
        APIError(status: 504, message: "The request did not finish within the '\(tier)' tier's request timeout (\(ms) ms).", type: "timeout", code: "request_timeout")
    }
    public static func workerLost() -> APIError {
        APIError(status: 502, message: "The worker running this request went away after it had started answering. Retry the request.", type: "server_error", code: "worker_lost")
    }
    public static func internalError(_ message: String = "The server had an error while processing your request.") -> APIError {
        APIError(status: 500, message: message, type: "server_error", code: "internal_error")
    }
    /// A queue or buffer bound was reached: back off and retry.
    public static func overloaded(_ message: String, code: String = "queue_full", retryAfterSeconds: Int = 1) -> APIError {
        APIError(status: 429, message: message, type: "requests", code: code, headers: ["Retry-After": String(retryAfterSeconds)])
    }
    /// The token stream of a request lost events (a bound was reached on its path): the answer
    /// is incomplete, so the request fails visibly instead of showing a gap.
    public static func streamInterrupted(_ detail: String) -> APIError {
        APIError(status: 502, message: "The answer's event stream was interrupted (\(detail)); the request was stopped. Retry the request.",
                 type: "server_error", code: streamInterruptedCode)
    }
    /// The code of `streamInterrupted`: a request that ends with it may still run on its worker.
    public static let streamInterruptedCode = "stream_interrupted"
    /// A worker (or the upstream behind it) answered something that does not fit the request.
    public static func badWorkerAnswer(_ message: String) -> APIError {
        APIError(status: 502, message: message, type: "server_error", code: "bad_worker_answer")
    }
    public static func tooManyConnections(limit: Int) -> APIError {
        APIError(status: 503, message: "This gateway already holds its maximum of \(limit) connections. Retry later or on another gateway.", type: "service_unavailable", code: "too_many_connections")
    }
    public static func unavailable(_ message: String) -> APIError {
        APIError(status: 503, message: message, type: "service_unavailable", code: "service_unavailable")
    }
}
