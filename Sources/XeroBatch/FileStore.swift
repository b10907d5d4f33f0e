import Foundation
import XeroCore
import XeroStore

/// Where file bytes live. The seam lets a deployment swap the filesystem for object storage; every
/// gateway and the batch runner must reach the same store (a shared volume in compose).
public protocol FileStore: Sendable {
    /// Moves a finished upload (a temporary file) into the store under `id`.
    func adopt(temporaryPath: String, id: String) throws
    func write(_ bytes: [UInt8], id: String) throws
    func read(id: String) throws -> Data
    /// A path to read the bytes from without loading them (for large files).
    func path(id: String) -> String
    func delete(id: String) throws
}

/// Files in one directory, written via rename so a reader never sees half a file.
public struct FilesystemFileStore: FileStore {
    public let directory: String

    public init(directory: String) throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    public func path(id: String) -> String { "\(directory)/\(id)" }

    /// A new temporary path inside the store's directory (same filesystem, so adopt is a rename).
    public func temporaryPath() -> String { "\(directory)/.upload-\(UUID().uuidString)" }

    public func adopt(temporaryPath: String, id: String) throws {
        guard rename(temporaryPath, path(id: id)) == 0 else { throw RedisError("cannot store file \(id): errno \(errno)") }
    }

    public func write(_ bytes: [UInt8], id: String) throws {
        let tmp = temporaryPath()
        try Data(bytes).write(to: URL(fileURLWithPath: tmp))
        try adopt(temporaryPath: tmp, id: id)
    }

    public func read(id: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path(id: id))) }

    public func delete(id: String) throws {
        if FileManager.default.fileExists(atPath: path(id: id)) { try FileManager.default.removeItem(atPath: path(id: id)) }
    }
}

/// A file's metadata (OpenAI's File object), kept in Redis.
public struct FileRecord: Sendable, Equatable {
    public var id: String
    public var project: String
    public var filename: String
    public var bytes: Int
    public var purpose: String
    public var createdAt: Int64   // seconds

    public init(id: String, project: String, filename: String, bytes: Int, purpose: String, createdAt: Int64) {
        self.id = id
        self.project = project
        self.filename = filename
        self.bytes = bytes
        self.purpose = purpose
        self.createdAt = createdAt
    }

    public func write(to w: inout JSONWriter) {
        w.objectStart()
        w.field("id", id); w.field("object", "file"); w.field("bytes", bytes); w.field("created_at", Int(createdAt))
        w.field("filename", filename); w.field("purpose", purpose); w.field("status", "processed")
        w.key("status_details"); w.null()
        w.objectEnd()
    }
}

/// File metadata in Redis: `xero:file:<id>` (HASH) and `xero:files:<project>` (ZSET by creation).
public struct FileRecords: Sendable {
    public let redis: RedisClient
    public init(redis: RedisClient) { self.redis = redis }

    public static func key(_ id: String) -> String { "xero:file:\(id)" }
    public static func index(_ project: String) -> String { "xero:files:\(project)" }

    public func put(_ f: FileRecord) async throws {
        _ = try await redis.pipeline(strings: [
            ["HSET", Self.key(f.id), "id", f.id, "project", f.project, "filename", f.filename, "bytes", String(f.bytes),
             "purpose", f.purpose, "created_at", String(f.createdAt)],
            ["ZADD", Self.index(f.project), String(f.createdAt), f.id],
        ])
    }

    /// The file if it exists and belongs to `project` (another project's file does not exist for you).
    public func get(_ id: String, project: String) async throws -> FileRecord? {
        let h = try await redis.send(["HGETALL", Self.key(id)]).hash
        guard h["project"] == project else { return nil }
        return FileRecord(id: id, project: project, filename: h["filename"] ?? "", bytes: Int(h["bytes"] ?? "") ?? 0,
                          purpose: h["purpose"] ?? "", createdAt: Int64(h["created_at"] ?? "") ?? 0)
    }

    public func list(project: String, purpose: String?) async throws -> [FileRecord] {
        let ids = try await redis.send(["ZREVRANGE", Self.index(project), "0", "9999"]).array.compactMap(\.string)
        var out: [FileRecord] = []
        for id in ids { if let f = try await get(id, project: project), purpose == nil || f.purpose == purpose { out.append(f) } }
        return out
    }

    public func delete(_ id: String, project: String) async throws {
        _ = try await redis.pipeline(strings: [["DEL", Self.key(id)], ["ZREM", Self.index(project), id]])
    }
}
