import Foundation
import XeroCore
import XeroStore

/// A batch as OpenAI reports it, stored as `xero:batch:<id>` (HASH). Timestamps are seconds.
public struct BatchRecord: Sendable, Equatable {
    public var fields: [String: String]

    public init(fields: [String: String]) { self.fields = fields }

    public var id: String { fields["id"] ?? "" }
    public var project: String { fields["project"] ?? "" }
    public var status: String { fields["status"] ?? "" }
    public var endpointSlug: String { fields["endpoint_slug"] ?? "" }
    public var model: String { fields["model"] ?? "" }
    public var inputFileID: String { fields["input_file_id"] ?? "" }
    public var total: Int { Int(fields["total"] ?? "") ?? 0 }
    public var completed: Int { Int(fields["completed"] ?? "") ?? 0 }
    public var failed: Int { Int(fields["failed"] ?? "") ?? 0 }
    public var nextLine: Int { Int(fields["next_line"] ?? "") ?? 0 }
    public var expiresAt: Int64 { Int64(fields["expires_at"] ?? "") ?? .max }

    static let timestampFields = ["in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
                                  "cancelling_at", "cancelled_at"]

    /// The OpenAI Batch object.
    public func json() -> [UInt8] {
        var w = JSONWriter()
        w.objectStart()
        w.field("id", id)
        w.field("object", "batch")
        w.field("endpoint", fields["endpoint"] ?? "")
        w.key("errors"); if let e = fields["errors"], !e.isEmpty { w.raw(Array(e.utf8)) } else { w.null() }
        w.field("input_file_id", inputFileID)
        w.field("completion_window", fields["completion_window"] ?? "24h")
        w.field("status", status)
        w.fieldOrNull("output_file_id", fields["output_file_id"].flatMap { $0.isEmpty ? nil : $0 })
        w.fieldOrNull("error_file_id", fields["error_file_id"].flatMap { $0.isEmpty ? nil : $0 })
        w.field("created_at", Int(fields["created_at"] ?? "") ?? 0)
        for k in Self.timestampFields {
            w.key(k)
            if let v = fields[k].flatMap({ Int($0) }) { w.value(v) } else { w.null() }
        }
        w.key("request_counts"); w.objectStart()
        w.field("total", total); w.field("completed", completed); w.field("failed", failed)
        w.objectEnd()
        w.key("metadata"); if let m = fields["metadata"], !m.isEmpty { w.raw(Array(m.utf8)) } else { w.null() }
        // What the lines used, as the router settled them (docs/tenancy.md, "Billing").
        let input = Int(fields["usage_input_tokens"] ?? "") ?? 0, output = Int(fields["usage_output_tokens"] ?? "") ?? 0
        w.key("usage"); w.objectStart()
        w.field("input_tokens", input)
        w.key("input_tokens_details"); w.objectStart(); w.field("cached_tokens", 0); w.objectEnd()
        w.field("output_tokens", output)
        w.key("output_tokens_details"); w.objectStart(); w.field("reasoning_tokens", 0); w.objectEnd()
        w.field("total_tokens", input.addingSaturated(output))
        w.objectEnd()
        w.objectEnd()
        return w.bytes
    }
}

/// Batches in Redis. Layout (docs/redis-keys.md):
/// `xero:batch:<id>` HASH (the record and counters), `xero:batches:<project>` ZSET (listing),
/// `xero:batches:active` SET (what the runner works on), and per batch `:inflight` HASH
/// line → request id, `:results` / `:errors` HASH line → output line, `:retry` LIST, `:tries` HASH.
public struct BatchStore: Sendable {
    public let redis: RedisClient
    public init(redis: RedisClient) { self.redis = redis }

    public static func key(_ id: String) -> String { RedisKeys.batch(id) }
    public static func index(_ project: String) -> String { "xero:batches:\(project)" }
    public static let active = "xero:batches:active"
    public static func inflight(_ id: String) -> String { "xero:batch:\(id):inflight" }
    public static func results(_ id: String) -> String { "xero:batch:\(id):results" }
    public static func errors(_ id: String) -> String { "xero:batch:\(id):errors" }
    public static func retry(_ id: String) -> String { "xero:batch:\(id):retry" }
    public static func tries(_ id: String) -> String { "xero:batch:\(id):tries" }

    public func create(_ fields: [String: String]) async throws {
        let id = fields["id"]!, project = fields["project"]!
        _ = try await redis.pipeline(strings: [
            ["HSET", Self.key(id)] + fields.flatMap { [$0.key, $0.value] },
            // Scored in ms (creation seconds tie too often for stable paging).
            ["ZADD", Self.index(project), String(nowMs()), id],
            ["SADD", Self.active, id],
        ])
    }

    public func get(_ id: String) async throws -> BatchRecord? {
        let h = try await redis.send(["HGETALL", Self.key(id)]).hash
        return h.isEmpty ? nil : BatchRecord(fields: h)
    }

    public func get(_ id: String, project: String) async throws -> BatchRecord? {
        guard let b = try await get(id), b.project == project else { return nil }
        return b
    }

    public func set(_ id: String, _ fields: [String: String]) async throws {
        _ = try await redis.send(["HSET", Self.key(id)] + fields.flatMap { [$0.key, $0.value] })
    }

    /// Newest first; `after` is a batch id (OpenAI's cursor), `limit` 1…100.
    public func list(project: String, after: String?, limit: Int) async throws -> (batches: [BatchRecord], hasMore: Bool) {
        var start = 0
        if let after, let rank = try await redis.send(["ZREVRANK", Self.index(project), after]).int { start = rank + 1 }
        let ids = try await redis.send(["ZREVRANGE", Self.index(project), String(start), String(start + limit)]).array.compactMap(\.string)
        var out: [BatchRecord] = []
        for id in ids.prefix(limit) { if let b = try await get(id) { out.append(b) } }
        return (out, ids.count > limit)
    }

    public func activeIDs() async throws -> [String] {
        try await redis.send(["SMEMBERS", Self.active]).array.compactMap(\.string).sorted()
    }

    /// Records a line's outcome once: a line already recorded (it ran twice after a crash) is
    /// ignored, so every custom_id appears exactly once. Returns true if this call recorded it.
    static let recordScript = """
    local done = redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1
    redis.call('HDEL', KEYS[4], ARGV[1])
    if done then return 0 end
    if ARGV[2] == 'ok' then
      redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
      redis.call('HINCRBY', KEYS[1], 'completed', 1)
    else
      redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
      redis.call('HINCRBY', KEYS[1], 'failed', 1)
    end
    return 1
    """

    public func record(batch: String, line: Int, ok: Bool, outputLine: String) async throws -> Bool {
        let r = try await redis.sendDurably(["EVAL", Self.recordScript, "4", Self.key(batch), Self.results(batch), Self.errors(batch), Self.inflight(batch),
                                      String(line), ok ? "ok" : "err", outputLine])
        if case let .error(e) = r { throw RedisError("batch record: \(e)") }
        return r.int == 1
    }
}
