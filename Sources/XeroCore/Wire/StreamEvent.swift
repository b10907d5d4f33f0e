/// One event on a request's channel (worker or router → gateway), PUB/SUB topic `<gateway>/<request>`.
/// `seq` numbers events of one attempt from 0 so a gateway can detect loss or reordering;
/// every stream ends with exactly one terminal event, `.done` or `.error`.
public struct StreamEvent: Sendable, Equatable {
    public enum Body: Sendable, Equatable {
        /// A piece of text for choice `index`; `logprobs` is an OpenAI-shaped JSON fragment, if asked for.
        /// `tokens`: the token ids the engine produced since the choice's previous delta (their
        /// text is this piece, or still held back): what a migration replays (docs/routing.md,
        /// "Mid-stream migration"). Empty from engines that have no token ids.
        case delta(index: Int, text: String, logprobs: String?, tokens: [Int32] = [])
        /// A piece of a tool call for choice `index`: `id` and `name` on its first piece (empty after),
        /// `arguments` a fragment of the JSON arguments.
        case toolCall(index: Int, toolIndex: Int, id: String, name: String, arguments: String)
        /// Embedding vectors (or rerank scores, `dim` 1): `count` × `dim` little-endian Float32.
        case vectors(dim: Int, data: [UInt8])
        /// Choice `index` ended (`stop`, `length`, `tool_calls`, ...).
        case finish(index: Int, reason: String)
        /// Terminal: the job finished; real token counts.
        case done(Usage)
        /// Terminal: the job failed; an OpenAI-shaped error for the client.
        case error(APIError)
        /// Out of band, from the router: the worker running this started job died. The client may
        /// `resume` it (the tokens it has, from its next seq) within a few seconds; otherwise the
        /// router ends it with `error` (`worker_lost`).
        case lost(APIError)
        /// Out of band, from the router, for a job with SLO hints: where it was placed and what that
        /// worker is predicted to achieve, ms (-1: no prediction yet). Not terminal; the gateway
        /// reports it in headers (docs/routing.md, "SLO-aware placement").
        case placed(predictedTTFTMs: Int, predictedTPOTMs: Int)
    }

    public var requestId: String
    public var attempt: Int
    public var seq: Int
    public var body: Body

    public init(requestId: String, attempt: Int, seq: Int, body: Body) {
        self.requestId = requestId
        self.attempt = attempt
        self.seq = seq
        self.body = body
    }

    public var isTerminal: Bool {
        switch body { case .done, .error, .lost: return true; default: return false }
    }

    static let wireKind: UInt8 = 0x45 // "E"

    public func encode() -> [UInt8] {
        var w = WireWriter(capacity: 64)
        w.u8(Self.wireKind); w.u8(wireVersion)
        w.string(requestId); w.int(attempt); w.int(seq)
        switch body {
        case let .delta(index, text, logprobs, tokens):
            w.u8(1); w.int(index); w.string(text); w.optionalString(logprobs)
            w.u32(UInt32(tokens.count)); for t in tokens { w.u32(UInt32(bitPattern: t)) }
        case let .finish(index, reason):
            w.u8(2); w.int(index); w.string(reason)
        case let .done(usage):
            w.u8(3); w.int(usage.promptTokens); w.int(usage.completionTokens); w.int(usage.cachedTokens)
        case let .toolCall(index, toolIndex, id, name, arguments):
            w.u8(5); w.int(index); w.int(toolIndex); w.string(id); w.string(name); w.string(arguments)
        case let .vectors(dim, data):
            w.u8(6); w.int(dim); w.blob(data)
        case let .error(e):
            w.u8(4); w.int(e.status); w.string(e.message); w.string(e.type); w.optionalString(e.param); w.optionalString(e.code)
        case let .lost(e):
            w.u8(7); w.int(e.status); w.string(e.message); w.string(e.type); w.optionalString(e.param); w.optionalString(e.code)
        case let .placed(ttft, tpot):
            w.u8(8); w.int(ttft); w.int(tpot)
        }
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws -> StreamEvent {
        var r = WireReader(bytes)
        let event = try decode(from: &r)
        guard r.isAtEnd else { throw WireError.invalid("trailing bytes after stream event") }
        return event
    }

    /// Reads one event where `r` stands (inside a frame, or one of a `StreamEventBatch`).
    static func decode(from r: inout WireReader) throws -> StreamEvent {
        try r.header(expecting: wireKind)
        typealias L = WireLimits
        let id = try r.string(max: L.maxIDBytes, "request id")
        // Attempt 0 is the gateway's own (its safety timeout); workers and routers use 1….
        let attempt = try r.int(in: 0...L.attempts.upperBound, "attempt"), seq = try r.int(in: L.seqs, "seq")
        let body: Body
        let kind = try r.u8()
        switch kind {
        case 1:
            let index = try r.int(in: L.choices, "choice"), text = try r.string(), logprobs = try r.optionalString()
            let n = Int(try r.u32())
            guard n <= L.maxTokensPerDelta else { throw WireError.invalid("\(n) token ids in one delta") }
            body = .delta(index: index, text: text, logprobs: logprobs, tokens: try (0..<n).map { _ in Int32(bitPattern: try r.u32()) })
        case 2: body = .finish(index: try r.int(in: L.choices, "choice"), reason: try r.string(max: L.maxNameBytes, "finish reason"))
        case 3:
            body = .done(Usage(promptTokens: try r.int(in: L.tokens, "prompt tokens"), completionTokens: try r.int(in: L.tokens, "completion tokens"),
                               cachedTokens: try r.int(in: L.tokens, "cached tokens")))
        case 4, 7:
            let lost = kind == 7
            // A status that is not an HTTP error (HTTPTypes traps outside 0…999) becomes 502.
            let raw = try r.int()
            let status = L.errorStatuses.contains(raw) ? raw : L.mappedStatus
            let message = try r.string(max: L.maxTextBytes, "error message"), type = try r.string(max: L.maxNameBytes, "error type")
            let param = try r.optionalString(), code = try r.optionalString()
            guard (param?.utf8.count ?? 0) <= L.maxNameBytes, (code?.utf8.count ?? 0) <= L.maxNameBytes else {
                throw WireError.invalid("error param or code too long")
            }
            let e = APIError(status: status, message: message, type: type, param: param, code: code)
            body = lost ? .lost(e) : .error(e)
        case 5:
            body = .toolCall(index: try r.int(in: L.choices, "choice"), toolIndex: try r.int(in: L.toolIndices, "tool index"),
                             id: try r.string(max: L.maxIDBytes, "tool call id"), name: try r.string(max: L.maxNameBytes, "tool name"),
                             arguments: try r.string())
        case 6:
            let dim = try r.int(in: L.dims, "dimension")
            let data = try r.blob()
            guard data.count <= L.maxVectorBytes, data.count % (4 * dim) == 0 else {
                throw WireError.invalid("vectors of \(data.count) bytes do not hold whole \(dim)-dimensional vectors")
            }
            body = .vectors(dim: dim, data: data)
        case 8:
            body = .placed(predictedTTFTMs: try r.int(in: -1...L.sloMs.upperBound, "predicted TTFT"),
                           predictedTPOTMs: try r.int(in: -1...L.sloMs.upperBound, "predicted TPOT"))
        case let k: throw WireError.invalid("unknown event body \(k)")
        }
        return StreamEvent(requestId: id, attempt: attempt, seq: seq, body: body)
    }
}

/// Token counts as OpenAI's `usage` reports them.
public struct Usage: Sendable, Equatable {
    public var promptTokens: Int
    public var completionTokens: Int
    public var cachedTokens: Int
    public init(promptTokens: Int, completionTokens: Int, cachedTokens: Int = 0) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cachedTokens = cachedTokens
    }
    public var totalTokens: Int { promptTokens + completionTokens }
}
