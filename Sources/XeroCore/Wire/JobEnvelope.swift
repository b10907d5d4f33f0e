/// A job as it travels gateway → router → worker. The router reads only these header fields;
/// `payload` is the client's validated request body, opaque to the router.
public struct JobEnvelope: Sendable, Equatable {
    public enum Kind: UInt8, Sendable {
        case chatCompletion = 1, embeddings = 2, rerank = 3
        /// `/v1/completions`: a raw prompt, no chat template (docs/completions.md).
        case textCompletion = 4
        /// The worker capability a job of this kind needs.
        public var capability: String {
            switch self {
            case .chatCompletion: return "chat"
            case .textCompletion: return "completions"
            case .embeddings: return "embeddings"
            case .rerank: return "rerank"
            }
        }
    }

    public var requestId: String
    /// Where the token stream goes: the topic prefix the owning gateway subscribed to.
    public var replyTo: String
    /// 1 for the first dispatch; the router increments it when it re-dispatches after a worker loss.
    public var attempt: Int
    public var kind: Kind
    public var tier: String
    public var project: String
    /// Which workers may run it: the project's agents, the platform's, or both.
    public var fleet: EndpointFleet
    public var endpoint: String
    public var model: String
    /// Wall-clock ms since the epoch: when the gateway accepted the request.
    public var acceptedAtMs: Int64
    /// Wall-clock ms: if no worker has taken the job by then it is answered with 503, not run.
    public var queueDeadlineMs: Int64
    /// Wall-clock ms: the worker stops the job at this time and reports a timeout.
    public var requestDeadlineMs: Int64
    /// The prompt's block hashes (`PromptBlocks`, partitioned by project), for prefix-aware
    /// placement; empty for jobs without a chat prompt.
    public var prefixBlocks: [UInt64]
    /// Optional latency targets from `X-SLO-TTFT-Ms` / `X-SLO-TPOT-Ms` (0 = none).
    public var sloTTFTMs: Int
    public var sloTPOTMs: Int
    /// Who pays (nil: nothing is accounted, e.g. a gateway run with `--no-rate-limits`). Set by the
    /// gateway, kept by the router, never sent to a worker (`forWorker`, which drops `prefixBlocks` too).
    public var billing: Billing?
    /// A migration (docs/routing.md, "Mid-stream migration"): the job ran on a worker that died
    /// after streaming; the new run replays these token ids (what the client already has) and
    /// numbers its events from `fromSeq`.
    public var replay: Replay?
    public var payload: [UInt8]

    public struct Replay: Sendable, Equatable {
        public var fromSeq: Int
        public var tokens: [Int32]
        public init(fromSeq: Int, tokens: [Int32]) {
            self.fromSeq = fromSeq
            self.tokens = tokens
        }
    }

    public init(requestId: String, replyTo: String, attempt: Int = 1, kind: Kind = .chatCompletion, tier: String,
                project: String, fleet: EndpointFleet = .both, endpoint: String, model: String, acceptedAtMs: Int64, queueDeadlineMs: Int64,
                requestDeadlineMs: Int64, prefixBlocks: [UInt64] = [], sloTTFTMs: Int = 0, sloTPOTMs: Int = 0, billing: Billing? = nil,
                replay: Replay? = nil, payload: [UInt8]) {
        self.replay = replay
        self.requestId = requestId
        self.replyTo = replyTo
        self.attempt = attempt
        self.kind = kind
        self.tier = tier
        self.project = project
        self.fleet = fleet
        self.endpoint = endpoint
        self.model = model
        self.acceptedAtMs = acceptedAtMs
        self.queueDeadlineMs = queueDeadlineMs
        self.requestDeadlineMs = requestDeadlineMs
        self.prefixBlocks = prefixBlocks
        self.sloTTFTMs = sloTTFTMs
        self.sloTPOTMs = sloTPOTMs
        self.billing = billing
        self.payload = payload
    }

    /// The envelope as a worker receives it: without the billing, which is the platform's business.
    public var forWorker: JobEnvelope {
        var j = self
        j.billing = nil
        j.prefixBlocks = []   // the router's business; a worker hashes the prompt it parses itself
        return j
    }

    /// The PUB/SUB topic that carries this job's events: `<replyTo>/<requestId>`.
    public var topic: String { "\(replyTo)/\(requestId)" }

    static let wireKind: UInt8 = 0x4A // "J"

    public func encode() -> [UInt8] {
        var w = WireWriter(capacity: 128 + payload.count)
        w.u8(Self.wireKind); w.u8(wireVersion)
        w.string(requestId); w.string(replyTo); w.int(attempt); w.u8(kind.rawValue)
        w.string(tier); w.string(project); w.u8(fleet.rawValue); w.string(endpoint); w.string(model)
        w.i64(acceptedAtMs); w.i64(queueDeadlineMs); w.i64(requestDeadlineMs)
        w.u32(UInt32(prefixBlocks.count)); for h in prefixBlocks { w.u64(h) }
        w.int(sloTTFTMs); w.int(sloTPOTMs)
        if let billing { w.u8(1); billing.encode(into: &w) } else { w.u8(0) }
        if let replay {
            w.u8(1); w.int(replay.fromSeq); w.u32(UInt32(replay.tokens.count))
            for t in replay.tokens { w.u32(UInt32(bitPattern: t)) }
        } else { w.u8(0) }
        w.blob(payload)
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws -> JobEnvelope {
        var r = WireReader(bytes)
        try r.header(expecting: wireKind)
        typealias L = WireLimits
        let requestId = try r.string(max: L.maxIDBytes, "request id"), replyTo = try r.string(max: L.maxIDBytes, "reply-to")
        let attempt = try r.int(in: L.attempts, "attempt")
        guard let kind = Kind(rawValue: try r.u8()) else { throw WireError.invalid("unknown job kind") }
        let tier = try r.string(max: L.maxNameBytes, "tier"), project = try r.string(max: L.maxNameBytes, "project")
        guard let fleet = EndpointFleet(rawValue: try r.u8()) else { throw WireError.invalid("unknown fleet") }
        let endpoint = try r.string(max: L.maxNameBytes, "endpoint"), model = try r.string(max: L.maxNameBytes, "model")
        let accepted = try r.time("accepted-at"), queueDeadline = try r.time("queue deadline"), requestDeadline = try r.time("request deadline")
        let blockCount = Int(try r.u32())
        guard blockCount <= L.maxPrefixBlocks else { throw WireError.invalid("\(blockCount) prefix blocks") }
        let blocks = try (0..<blockCount).map { _ in try r.u64() }
        let ttft = try r.int(in: L.sloMs, "SLO TTFT"), tpot = try r.int(in: L.sloMs, "SLO TPOT")
        let billing: Billing?
        switch try r.u8() {
        case 0: billing = nil
        case 1: billing = try Billing.decode(from: &r)
        case let b: throw WireError.invalid("billing flag \(b)")
        }
        let replay: Replay?
        switch try r.u8() {
        case 0: replay = nil
        case 1:
            let from = try r.int(in: L.seqs, "replay seq")
            let n = Int(try r.u32())
            guard n <= L.maxReplayTokens else { throw WireError.invalid("\(n) replay tokens") }
            replay = Replay(fromSeq: from, tokens: try (0..<n).map { _ in Int32(bitPattern: try r.u32()) })
        case let b: throw WireError.invalid("replay flag \(b)")
        }
        let payload = try r.blob()
        guard payload.count <= L.maxPayloadBytes else { throw WireError.invalid("payload of \(payload.count) bytes") }
        guard r.isAtEnd else { throw WireError.invalid("trailing bytes after job envelope") }
        return JobEnvelope(requestId: requestId, replyTo: replyTo, attempt: attempt, kind: kind, tier: tier, project: project,
                           fleet: fleet, endpoint: endpoint, model: model, acceptedAtMs: accepted, queueDeadlineMs: queueDeadline,
                           requestDeadlineMs: requestDeadline, prefixBlocks: blocks, sloTTFTMs: ttft, sloTPOTMs: tpot, billing: billing,
                           replay: replay, payload: payload)
    }
}
