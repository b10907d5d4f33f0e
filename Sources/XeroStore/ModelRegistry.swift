import Foundation
import XeroCore

/// A model file in the registry (docs/models.md): uploaded once, served to workers by gateways.
public struct ModelRecord: Sendable, Equatable {
    /// Unique across the registry (one namespace: an endpoint's `model` names exactly one file).
    public var name: String
    /// The owning project's id, or `ModelRecord.platform` for platform models (visible to all).
    public var owner: String
    public var sha256: String
    public var bytes: Int
    public var filename: String
    public var architecture: String
    public var tensorTypes: [String]
    public var contextLength: Int
    public var parameters: Int
    /// Where its bytes are in the file store.
    public var fileId: String
    public var createdAt: Int64

    public static let platform = "_platform"
    public var isPlatform: Bool { owner == Self.platform }

    public init(name: String, owner: String, sha256: String, bytes: Int, filename: String, architecture: String, tensorTypes: [String],
                contextLength: Int, parameters: Int, fileId: String, createdAt: Int64) {
        self.name = name
        self.owner = owner
        self.sha256 = sha256
        self.bytes = bytes
        self.filename = filename
        self.architecture = architecture
        self.tensorTypes = tensorTypes
        self.contextLength = contextLength
        self.parameters = parameters
        self.fileId = fileId
        self.createdAt = createdAt
    }

    /// Model names: what an endpoint's `model` may hold and a URL path segment carries as is.
    public static func isValidName(_ s: String) -> Bool {
        guard (1...64).contains(s.utf8.count), let first = s.utf8.first, first != UInt8(ascii: "."), first != UInt8(ascii: "-") else { return false }
        return s.utf8.allSatisfy { c in
            (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == UInt8(ascii: "-") || c == UInt8(ascii: ".") || c == UInt8(ascii: "_")
        }
    }
}

/// An upload in progress (OpenAI's Upload object): parts arrive, `complete` assembles them.
public struct UploadRecord: Sendable {
    public var id: String
    public var owner: String
    public var filename: String
    public var bytes: Int
    public var sha256: String
    public var status: String          // pending, completed, cancelled
    public var createdAt: Int64        // seconds
    public var expiresAt: Int64        // seconds
    /// Part id → its byte count, in arrival order of ids (sorted by id: ids grow).
    public var parts: [(id: String, bytes: Int)]
}

/// The registry's Redis records (docs/redis-keys.md, "Models"): models, uploads, and the
/// short-lived download tokens routers hand to workers.
public struct ModelRegistry: Sendable {
    public let redis: RedisClient
    public init(redis: RedisClient) { self.redis = redis }

    public static func key(_ name: String) -> String { "xero:model:\(name)" }
    public static func index(_ owner: String) -> String { "xero:models:\(owner)" }
    public static func upload(_ id: String) -> String { "xero:upload:\(id)" }
    public static func uploadParts(_ id: String) -> String { "xero:upload:\(id):parts" }
    public static func token(_ hash: String) -> String { "xero:model-token:\(hash)" }

    /// An upload lives a day (OpenAI: an hour; a large model over a slow link needs longer).
    public static let uploadSeconds: Int64 = 86_400
    public static let tokenSeconds = 600

    // MARK: Models

    /// Registers a model; false when the name is taken (by any owner).
    public func create(_ m: ModelRecord) async throws -> Bool {
        let r = try await redis.send(["EVAL", """
            if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
            redis.call('HSET', KEYS[1], unpack(ARGV, 2))
            redis.call('SADD', KEYS[2], ARGV[1])
            return 1
            """, "2", Self.key(m.name), Self.index(m.owner), m.name,
            "name", m.name, "owner", m.owner, "sha256", m.sha256, "bytes", String(m.bytes), "filename", m.filename,
            "architecture", m.architecture, "tensor_types", m.tensorTypes.joined(separator: ","), "context_length", String(m.contextLength),
            "parameters", String(m.parameters), "file_id", m.fileId, "created_at", String(m.createdAt)])
        return r.int == 1
    }

    public func model(_ name: String) async throws -> ModelRecord? {
        guard ModelRecord.isValidName(name) else { return nil }
        return Self.record(try await redis.send(["HGETALL", Self.key(name)]).hash)
    }

    /// The models a project sees: its own, then the platform's.
    public func models(visibleTo project: String?) async throws -> [ModelRecord] {
        var owners = [ModelRecord.platform]
        if let project { owners.insert(project, at: 0) }
        var out: [ModelRecord] = []
        for owner in owners {
            let names = try await redis.send(["SMEMBERS", Self.index(owner)]).array.compactMap(\.string).sorted()
            guard !names.isEmpty else { continue }
            for reply in try await redis.pipeline(strings: names.map { ["HGETALL", Self.key($0)] }) {
                if let m = Self.record(reply.hash) { out.append(m) }
            }
        }
        return out
    }

    public func delete(_ m: ModelRecord) async throws {
        _ = try await redis.pipeline(strings: [["DEL", Self.key(m.name)], ["SREM", Self.index(m.owner), m.name]])
    }

    static func record(_ h: [String: String]) -> ModelRecord? {
        guard let name = h["name"], let owner = h["owner"], let sha = h["sha256"], let fileId = h["file_id"] else { return nil }
        return ModelRecord(name: name, owner: owner, sha256: sha, bytes: Int(h["bytes"] ?? "") ?? 0, filename: h["filename"] ?? "",
                           architecture: h["architecture"] ?? "", tensorTypes: (h["tensor_types"] ?? "").split(separator: ",").map(String.init),
                           contextLength: Int(h["context_length"] ?? "") ?? 0, parameters: Int(h["parameters"] ?? "") ?? 0,
                           fileId: fileId, createdAt: Int64(h["created_at"] ?? "") ?? 0)
    }

    // MARK: Uploads

    public func createUpload(owner: String, filename: String, bytes: Int, sha256: String) async throws -> UploadRecord {
        let now = Int64(Date().timeIntervalSince1970)
        let u = UploadRecord(id: randomID("upload_", length: 24), owner: owner, filename: filename, bytes: bytes, sha256: sha256,
                             status: "pending", createdAt: now, expiresAt: now + Self.uploadSeconds, parts: [])
        _ = try await redis.pipeline(strings: [
            ["HSET", Self.upload(u.id), "id", u.id, "owner", owner, "filename", filename, "bytes", String(bytes), "sha256", sha256,
             "status", u.status, "created_at", String(now), "expires_at", String(u.expiresAt)],
            ["EXPIRE", Self.upload(u.id), String(Self.uploadSeconds)],
        ])
        return u
    }

    /// The upload if it exists and belongs to `owner` (another owner's upload does not exist for you).
    public func upload(_ id: String, owner: String) async throws -> UploadRecord? {
        let replies = try await redis.pipeline(strings: [["HGETALL", Self.upload(id)], ["HGETALL", Self.uploadParts(id)]])
        let h = replies[0].hash
        guard h["owner"] == owner, let filename = h["filename"] else { return nil }
        let parts = replies[1].hash.map { (id: $0.key, bytes: Int($0.value) ?? 0) }.sorted { $0.id < $1.id }
        return UploadRecord(id: id, owner: owner, filename: filename, bytes: Int(h["bytes"] ?? "") ?? 0, sha256: h["sha256"] ?? "",
                            status: h["status"] ?? "pending", createdAt: Int64(h["created_at"] ?? "") ?? 0,
                            expiresAt: Int64(h["expires_at"] ?? "") ?? 0, parts: parts)
    }

    public func addPart(upload: String, part: String, bytes: Int) async throws {
        _ = try await redis.pipeline(strings: [["HSET", Self.uploadParts(upload), part, String(bytes)],
                                              ["EXPIRE", Self.uploadParts(upload), String(Self.uploadSeconds)]])
    }

    public func setUploadStatus(_ id: String, _ status: String) async throws {
        _ = try await redis.send(["HSET", Self.upload(id), "status", status])
    }

    // MARK: Download tokens

    /// A download token for one model, valid `tokenSeconds`; only its hash is stored.
    public static func issueTokenCommand(model: String) -> (token: String, command: [String]) {
        let token = randomID("xmt_", length: 40)
        return (token, ["SET", Self.token(APIKey.hash(token)), model, "EX", String(Self.tokenSeconds)])
    }

    /// The model a token grants, if it is live.
    public func modelForToken(_ token: String) async throws -> String? {
        guard token.hasPrefix("xmt_"), token.utf8.count <= 64 else { return nil }
        return try await redis.send(["GET", Self.token(APIKey.hash(token))]).string
    }
}
