import Foundation
import XeroCore

/// One validated input line.
public struct BatchLine: Sendable {
    public var customID: String
    public var body: [UInt8]
}

/// Parses and validates a batch input file (JSONL) the way OpenAI does, before any work runs:
/// every line a JSON object with a unique `custom_id`, `method` POST, `url` equal to the batch's
/// endpoint, and a `body` the endpoint accepts. Problems are reported per line.
public enum BatchInput {
    public static let maxLines = 50_000
    public static let maxBytes = 200 * 1024 * 1024

    public enum Outcome: Sendable {
        case success([BatchLine])
        case failure([LineError])
    }

    public struct LineError: Sendable, Equatable {
        public var code: String
        public var message: String
        public var param: String?
        public var line: Int?   // 1-based, as OpenAI reports
    }

    public static func parse(_ data: Data, endpoint: String) -> Outcome {
        var lines: [BatchLine] = []
        var errors: [LineError] = []
        var seen = Set<String>()
        var n = 0
        for raw in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            n += 1
            let bytes = Array(raw.last == UInt8(ascii: "\r") ? raw.dropLast() : raw[...])
            if bytes.allSatisfy({ $0 == 32 || $0 == 9 }) { continue }   // blank lines (a trailing newline) are fine
            if lines.count + errors.count >= maxLines {
                errors.append(LineError(code: "too_many_requests", message: "A batch may hold at most \(maxLines) requests.", param: nil, line: n))
                break
            }
            guard case let .object(o)? = try? JSONValue.parse(bytes) else {
                errors.append(LineError(code: "invalid_json_line", message: "This line is not a JSON object.", param: nil, line: n))
                continue
            }
            guard case let .string(cid)? = o["custom_id"], !cid.isEmpty else {
                errors.append(LineError(code: "missing_required_parameter", message: "Missing 'custom_id'.", param: "custom_id", line: n))
                continue
            }
            guard seen.insert(cid).inserted else {
                errors.append(LineError(code: "duplicate_custom_id", message: "The custom_id '\(cid)' is used more than once.", param: "custom_id", line: n))
                continue
            }
            guard case .string("POST")? = o["method"] else {
                errors.append(LineError(code: "invalid_method", message: "'method' must be POST.", param: "method", line: n))
                continue
            }
            guard case let .string(url)? = o["url"], url == endpoint else {
                errors.append(LineError(code: "mismatched_url", message: "'url' must be \(endpoint), the batch's endpoint.", param: "url", line: n))
                continue
            }
            guard let body = o["body"], case .object = body else {
                errors.append(LineError(code: "missing_required_parameter", message: "Missing 'body' object.", param: "body", line: n))
                continue
            }
            let encoded = body.encoded()
            // A line must fit in one job frame (a larger frame would cost the runner its router link).
            guard encoded.count <= WireLimits.maxPayloadBytes else {
                errors.append(LineError(code: "request_too_large", message: "This line's body is larger than \(WireLimits.maxPayloadBytes) bytes.", param: "body", line: n))
                continue
            }
            do {
                if endpoint == "/v1/embeddings" {
                    _ = try EmbeddingsRequest.parse(encoded)
                } else if try (endpoint == "/v1/completions" ? CompletionRequest.parse(encoded) : ChatRequest.parse(encoded)).stream {
                    errors.append(LineError(code: "invalid_value", message: "Batch requests cannot stream.", param: "body.stream", line: n))
                    continue
                }
            } catch {
                errors.append(LineError(code: error.code ?? "invalid_request", message: error.message, param: error.param.map { "body.\($0)" }, line: n))
                continue
            }
            lines.append(BatchLine(customID: cid, body: encoded))
        }
        if lines.isEmpty && errors.isEmpty {
            errors.append(LineError(code: "empty_file", message: "The input file has no requests.", param: nil, line: nil))
        }
        return errors.isEmpty ? .success(lines) : .failure(errors)
    }

    /// OpenAI's `errors` object for a failed batch.
    public static func errorsJSON(_ errors: [LineError]) -> String {
        var w = JSONWriter()
        w.objectStart(); w.field("object", "list"); w.key("data"); w.arrayStart()
        for e in errors.prefix(1000) {
            w.objectStart(); w.field("code", e.code); w.field("message", e.message); w.fieldOrNull("param", e.param)
            w.key("line"); if let l = e.line { w.value(l) } else { w.null() }
            w.objectEnd()
        }
        w.arrayEnd(); w.objectEnd()
        return w.string
    }
}
