import Foundation

/// A validated `POST /embeddings` body (OpenAI's shape): `input` as a string, an array of strings,
/// an array of token ids or an array of token-id arrays; `encoding_format` float or base64;
/// `dimensions` only as the model's own width.
public struct EmbeddingsRequest: Sendable, Equatable {
    public enum Input: Sendable, Equatable {
        case text(String)
        case tokens([Int32])
    }

    public var model: String
    public var inputs: [Input]
    public var base64: Bool
    public var dimensions: Int?

    public static let maxInputs = 2048

    public static func parse(_ body: [UInt8]) throws(APIError) -> EmbeddingsRequest {
        guard case let .object(o) = try JSONValue.parse(body) else { throw APIError.invalidRequest("The request body must be a JSON object.") }
        var f = FieldReader(o)
        guard let model = try f.string("model") else {
            throw APIError.invalidRequest("you must provide a model parameter", param: "model", code: "missing_required_parameter")
        }
        var inputs: [Input] = []
        func tokens(_ a: [JSONValue]) throws(APIError) -> [Int32] {
            var out: [Int32] = []
            for v in a {
                guard case let .int(i) = v, i >= 0, i < Int(Int32.max) else {
                    throw APIError.invalidRequest("Invalid 'input': token arrays must hold non-negative integers.", param: "input", code: "invalid_value")
                }
                out.append(Int32(i))
            }
            guard !out.isEmpty else { throw APIError.invalidRequest("Invalid 'input': empty token array.", param: "input", code: "invalid_value") }
            return out
        }
        switch o["input"] {
        case nil, .null?:
            throw APIError.invalidRequest("Missing required parameter: 'input'.", param: "input", code: "missing_required_parameter")
        case let .string(s)?:
            inputs = [.text(s)]
        case let .array(items)?:
            guard !items.isEmpty else { throw APIError.invalidRequest("Invalid 'input': empty array.", param: "input", code: "empty_array") }
            if items.allSatisfy({ if case .int = $0 { return true } else { return false } }) {
                inputs = [.tokens(try tokens(items))]
            } else {
                for item in items {
                    switch item {
                    case let .string(s): inputs.append(.text(s))
                    case let .array(a): inputs.append(.tokens(try tokens(a)))
                    default:
                        throw APIError.invalidRequest("Invalid 'input': expected strings or token arrays, got \(item.typeName).", param: "input", code: "invalid_type")
                    }
                }
            }
        case let v?:
            throw APIError.invalidRequest("Invalid type for 'input': expected a string or an array, but got \(v.typeName) instead.", param: "input", code: "invalid_type")
        }
        guard inputs.count <= maxInputs else {
            throw APIError.invalidRequest("Invalid 'input': at most \(maxInputs) inputs per request.", param: "input", code: "array_above_max_length")
        }
        for case let .text(s) in inputs where s.isEmpty {
            throw APIError.invalidRequest("Invalid 'input': empty strings cannot be embedded.", param: "input", code: "invalid_value")
        }
        var base64 = false
        if let e = try f.string("encoding_format") {
            guard e == "float" || e == "base64" else {
                throw APIError.invalidRequest("Invalid 'encoding_format': '\(e)'. Supported values are: 'float' and 'base64'.", param: "encoding_format", code: "invalid_value")
            }
            base64 = e == "base64"
        }
        let dimensions = try f.int("dimensions", min: 1, max: WireLimits.dims.upperBound)
        _ = try f.string("user", allowEmpty: true)
        return EmbeddingsRequest(model: model, inputs: inputs, base64: base64, dimensions: dimensions)
    }
}

/// A validated `POST /rerank` body (the shape vLLM, Jina and Cohere share).
public struct RerankRequest: Sendable, Equatable {
    public var query: String
    public var documents: [String]
    public var topN: Int?
    public var returnDocuments: Bool

    public static let maxDocuments = 1000

    public static func parse(_ body: [UInt8]) throws(APIError) -> RerankRequest {
        guard case let .object(o) = try JSONValue.parse(body) else { throw APIError.invalidRequest("The request body must be a JSON object.") }
        var f = FieldReader(o)
        guard let query = try f.string("query") else {
            throw APIError.invalidRequest("Missing required parameter: 'query'.", param: "query", code: "missing_required_parameter")
        }
        guard case let .array(items)? = o["documents"], !items.isEmpty else {
            throw APIError.invalidRequest("'documents' must be a non-empty array of strings or {\"text\": …} objects.", param: "documents", code: "invalid_value")
        }
        guard items.count <= maxDocuments else {
            throw APIError.invalidRequest("At most \(maxDocuments) documents per request.", param: "documents", code: "array_above_max_length")
        }
        var docs: [String] = []
        for (i, item) in items.enumerated() {
            switch item {
            case let .string(s) where !s.isEmpty: docs.append(s)
            case let .object(d):
                guard case let .string(t)? = d["text"], !t.isEmpty else { fallthrough }
                docs.append(t)
            default:
                throw APIError.invalidRequest("Invalid 'documents[\(i)]': expected a non-empty string or {\"text\": …}.", param: "documents[\(i)]", code: "invalid_value")
            }
        }
        let topN = try f.int("top_n", min: 1, max: maxDocuments)
        let ret = try f.bool("return_documents") ?? true
        _ = try f.string("model", allowEmpty: true)
        return RerankRequest(query: query, documents: docs, topN: topN, returnDocuments: ret)
    }
}
