/// The ranges every field of a ZeroMQ message must lie in (docs/architecture.md, "Wire format").
/// Decoders refuse anything outside them, so no process does arithmetic or indexing with a value
/// another process made up; a refused frame is dropped and logged with its sender.
public enum WireLimits {
    /// Request, worker, gateway ids and topics.
    public static let maxIDBytes = 256
    /// Model, tier, project, endpoint, engine, host and capability names.
    public static let maxNameBytes = 256
    /// Error messages and other free text.
    public static let maxTextBytes = 64 * 1024
    /// A job's payload (the client's request body). Gateways refuse larger bodies (413) before
    /// they reach the router, and batch lines larger than this are refused at validation.
    public static let maxPayloadBytes = 32 * 1024 * 1024
    /// Largest frame a receiving socket accepts (`ZMQ_MAXMSGSIZE`): payload plus envelope, or a
    /// vectors event (2,048 inputs × 8,192 dims × 4 bytes).
    public static let maxJobFrameBytes = maxPayloadBytes + 64 * 1024
    public static let maxEventFrameBytes = 64 * 1024 * 1024 + 64 * 1024
    /// Control messages (hello, credit, heartbeat, prefixes, done, ...).
    public static let maxControlFrameBytes = 1024 * 1024
    /// Subscriptions and confirmations: a topic.
    public static let maxSubscriptionFrameBytes = 1024

    /// Slots a worker may offer; credits and active-job counts live in `0...maxSlots`.
    public static let slots = 1...4096
    public static let maxModels = 1024
    public static let maxCapabilities = 16
    public static let maxPrefixHashes = 65_536
    /// A job's prompt block hashes (`PromptBlocks.maxBlocks`).
    public static let maxPrefixBlocks = PromptBlocks.maxBlocks
    /// A sealed job ticket (docs/routing.md, "Handover"): an envelope without payload, sealed.
    public static let maxTicketBytes = 4096
    /// Token ids in one delta event, and replayed in a migration (`JobEnvelope.replay`).
    public static let maxTokensPerDelta = 65_536
    public static let maxReplayTokens = 1 << 20
    /// Request ids in one `relocate`.
    public static let maxRelocateIds = 4096
    /// `ids` in `relocate`-sized parts, in order.
    public static func relocateParts(_ ids: [String]) -> [[String]] {
        stride(from: 0, to: ids.count, by: maxRelocateIds).map { Array(ids[$0..<min(ids.count, $0 + maxRelocateIds)]) }
    }
    /// Dispatch attempts of one job (the router retries unstarted jobs a few times).
    public static let attempts = 1...16
    /// Wall-clock ms: the epoch up to the year 9999.
    public static let timesMs: ClosedRange<Int64> = 0...253_402_300_799_999
    /// Token counts in usage and reports.
    public static let tokens = 0...Int(Int32.max)
    /// Choice indices (`n` ≤ 128) and tool-call indices.
    public static let choices = 0..<128
    public static let toolIndices = 0..<128
    /// Event sequence numbers; `outOfBandSeq` marks a terminal event made by a router or gateway.
    public static let seqs = 0...Int(Int32.max)
    public static let outOfBandSeq = Int(Int32.max)
    /// Embedding dimensions (1 for rerank scores).
    public static let dims = 1...8192
    public static let maxVectorBytes = 64 * 1024 * 1024
    /// SLO hints, ms.
    public static let sloMs = 0...3_600_000
    /// HTTP statuses an error event may carry; anything else becomes 502.
    public static let errorStatuses = 400...599
    public static let mappedStatus = 502
}

extension WireReader {
    /// An integer that must lie in `range`; `field` names it in the error.
    public mutating func int(in range: ClosedRange<Int>, _ field: String) throws -> Int {
        let v = try int()
        guard range.contains(v) else { throw WireError.invalid("\(field) \(v) outside \(range)") }
        return v
    }

    public mutating func int(in range: Range<Int>, _ field: String) throws -> Int {
        let v = try int()
        guard range.contains(v) else { throw WireError.invalid("\(field) \(v) outside \(range)") }
        return v
    }

    public mutating func time(_ field: String) throws -> Int64 {
        let v = try i64()
        guard WireLimits.timesMs.contains(v) else { throw WireError.invalid("\(field) \(v) is not a time") }
        return v
    }

    /// A string of at most `max` UTF-8 bytes.
    public mutating func string(max: Int, _ field: String) throws -> String {
        let s = try string()
        guard s.utf8.count <= max else { throw WireError.invalid("\(field) longer than \(max) bytes") }
        return s
    }

    public mutating func strings(maxCount: Int, maxBytes: Int, _ field: String) throws -> [String] {
        let v = try strings()
        guard v.count <= maxCount else { throw WireError.invalid("\(field): \(v.count) entries, at most \(maxCount)") }
        for s in v where s.utf8.count > maxBytes { throw WireError.invalid("\(field) entry longer than \(maxBytes) bytes") }
        return v
    }
}
