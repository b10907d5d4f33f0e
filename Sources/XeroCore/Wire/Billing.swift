/// Who pays for a job, as the gateway admitted it (docs/seams.md, "The job client"). Travels
/// gateway → router in the envelope so the router can settle the job from its worker's final
/// report; the router strips it before dispatch: a worker never sees whose key ran a job.
public struct Billing: Sendable, Equatable {
    /// SHA-256 of the API key that made the request (empty for batch lines: they are billed to the
    /// project alone).
    public var keyHash: String
    /// Tokens the admission reserved from the token buckets; settlement corrects by real usage.
    public var reservedTokens: Int
    /// The batch a line belongs to (empty otherwise): its usage is also added to the batch.
    public var batchId: String

    public init(keyHash: String, reservedTokens: Int, batchId: String = "") {
        self.keyHash = keyHash
        self.reservedTokens = reservedTokens
        self.batchId = batchId
    }

    func encode(into w: inout WireWriter) {
        w.string(keyHash); w.int(reservedTokens); w.string(batchId)
    }

    static func decode(from r: inout WireReader) throws -> Billing {
        Billing(keyHash: try r.string(max: WireLimits.maxIDBytes, "key hash"), reservedTokens: try r.int(in: WireLimits.tokens, "reserved tokens"),
                batchId: try r.string(max: WireLimits.maxIDBytes, "batch id"))
    }
}
