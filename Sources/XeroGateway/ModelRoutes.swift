import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import XeroBatch
import XeroCore
import XeroEngines
import XeroStore

/// The model registry (docs/models.md): uploads in OpenAI's Uploads API shape under `/manage/v1`
/// (create, add parts, complete, cancel; `GET` tells what arrived, so a client resumes), the
/// models a project sees, and the download route workers use with a router-issued token.
struct ModelRoutes: Sendable {
    let registry: ModelRegistry
    let fileStore: FilesystemFileStore

    /// Largest model file (a 70B Q4 is ~40 GB) and largest part (OpenAI's is 64 MB).
    static let maxModelBytes = 64 << 30
    static let maxPartBytes = 64 << 20

    func register(on m: RouterGroup<ManagementContext>, public routes: RouteTable<GatewayRequestContext>) {
        m.post("/uploads") { req, ctx in
            let o = try ManagementRoutes.object(try await Gateway.collect(req, limit: 1 << 16))
            guard case .string("model")? = o["purpose"] else {
                throw APIError.invalidRequest("'purpose' must be \"model\" (the registry's uploads).", param: "purpose")
            }
            guard case let .string(filename)? = o["filename"], (1...256).contains(filename.utf8.count) else {
                throw APIError.invalidRequest("'filename' is required (at most 256 bytes).", param: "filename")
            }
            guard case let .int(n)? = o["bytes"], n >= 1, n <= Self.maxModelBytes else {
                throw APIError.invalidRequest("'bytes' must be the file's size, 1 to \(Self.maxModelBytes).", param: "bytes")
            }
            guard case let .string(sha)? = o["sha256"], Self.isHex(sha, length: 64) else {
                throw APIError.invalidRequest("'sha256' must be the file's SHA-256, 64 lowercase hex digits: it is checked at completion.", param: "sha256")
            }
            let u = try await registry.createUpload(owner: try ctx.caller.modelOwner(), filename: filename, bytes: n, sha256: sha)
            return Gateway.json(Self.uploadJSON(u))
        }
        m.get("/uploads/:id") { _, ctx in Gateway.json(Self.uploadJSON(try await ownedUpload(ctx))) }
        m.post("/uploads/:id/parts") { req, ctx in
            let u = try await ownedUpload(ctx, pending: true)
            let part = randomID("part_", length: 20)
            let received = try await receivePart(req, into: Self.partFile(u.id, part), room: u.bytes - u.parts.reduce(0) { $0 + $1.bytes })
            try await registry.addPart(upload: u.id, part: part, bytes: received)
            var w = JSONWriter(); w.objectStart()
            w.field("id", part); w.field("object", "upload.part"); w.field("created_at", Int(Date().timeIntervalSince1970))
            w.field("upload_id", u.id); w.field("bytes", received)
            w.objectEnd()
            return Gateway.json(w.bytes)
        }
        m.post("/uploads/:id/complete") { req, ctx in
            let u = try await ownedUpload(ctx, pending: true)
            let o = try ManagementRoutes.object(try await Gateway.collect(req, limit: 1 << 20))
            guard case let .array(ids)? = o["part_ids"], !ids.isEmpty else {
                throw APIError.invalidRequest("'part_ids' must list the upload's parts in file order.", param: "part_ids")
            }
            let known = Dictionary(u.parts.map { ($0.id, $0.bytes) }, uniquingKeysWith: { a, _ in a })
            var order: [String] = []
            for case let .string(id) in ids {
                guard known[id] != nil, !order.contains(id) else { throw APIError.invalidRequest("Unknown or repeated part '\(id)'.", param: "part_ids") }
                order.append(id)
            }
            guard order.count == ids.count else { throw APIError.invalidRequest("'part_ids' must be strings.", param: "part_ids") }
            guard case let .string(name)? = o["name"], ModelRecord.isValidName(name) else {
                throw APIError.invalidRequest("'name' must be lowercase letters, digits, '.', '_' or '-' (at most 64), not starting with '.' or '-'.", param: "name")
            }
            if try await registry.model(name) != nil {
                throw APIError(status: 409, message: "A model named '\(name)' exists.", type: "invalid_request_error", param: "name", code: "model_exists")
            }
            let model = try await assemble(u, parts: order, name: name)
            guard try await registry.create(model) else {
                try? fileStore.delete(id: model.fileId)
                throw APIError(status: 409, message: "A model named '\(name)' exists.", type: "invalid_request_error", param: "name", code: "model_exists")
            }
            try await registry.setUploadStatus(u.id, "completed")
            for p in u.parts { try? fileStore.delete(id: Self.partFile(u.id, p.id)) }
            var done = u
            done.status = "completed"
            return Gateway.json(Self.uploadJSON(done, model: model))
        }
        m.post("/uploads/:id/cancel") { _, ctx in
            var u = try await ownedUpload(ctx, pending: true)
            try await registry.setUploadStatus(u.id, "cancelled")
            for p in u.parts { try? fileStore.delete(id: Self.partFile(u.id, p.id)) }
            u.status = "cancelled"
            return Gateway.json(Self.uploadJSON(u))
        }
        m.get("/models") { _, ctx in
            let owner = try ctx.caller.modelOwner()
            let models = try await registry.models(visibleTo: owner == ModelRecord.platform ? nil : owner)
            return Gateway.json(ManagementRoutes.list(models) { w, m in Self.writeModel(m, &w) })
        }
        m.get("/models/:name") { _, ctx in
            var w = JSONWriter(); Self.writeModel(try await visibleModel(ctx), &w); return Gateway.json(w.bytes)
        }
        m.delete("/models/:name") { _, ctx in
            let model = try await visibleModel(ctx)
            guard model.owner == (try ctx.caller.modelOwner()) else {
                throw APIError.forbidden("'\(model.name)' is a platform model; only the admin (without ?project=) deletes it.")
            }
            try await registry.delete(model)
            try? fileStore.delete(id: model.fileId)
            return Gateway.json(Array(#"{"deleted":true}"#.utf8))
        }
        // Workers fetch a model's bytes with the token their router handed them over the fabric
        // (never with a join key or an API key). `Range: bytes=N-` resumes a broken download.
        routes.get("/internal/v1/models/:name/content") { req, ctx -> Response in
            let name = ctx.parameters.get("name") ?? ""
            guard let auth = req.headers[.authorization], auth.hasPrefix("Bearer ") else {
                throw APIError(status: 401, message: "A model download needs the token the router issued.", type: "invalid_request_error", code: "missing_token")
            }
            guard let granted = try await registry.modelForToken(String(auth.dropFirst(7))) else {
                throw APIError(status: 401, message: "This download token is unknown or expired.", type: "invalid_request_error", code: "invalid_token")
            }
            guard granted == name, let model = try await registry.model(name) else {
                throw APIError.forbidden("This token does not grant the model '\(name)'.", code: "token_not_for_model")
            }
            var start = 0
            if let range = req.headers[.range] {
                guard range.hasPrefix("bytes="), range.hasSuffix("-"), let n = Int(range.dropFirst(6).dropLast()), n >= 0, n < model.bytes else {
                    throw APIError(status: 416, message: "Only 'Range: bytes=N-' with N below the file's size is served.", type: "invalid_request_error",
                                   code: "range_not_satisfiable")
                }
                start = n
            }
            let body = try await FileIO().loadFile(path: fileStore.path(id: model.fileId), range: start...(model.bytes - 1), context: ctx)
            var headers: HTTPFields = [.contentType: "application/octet-stream", .contentLength: String(model.bytes - start)]
            headers[HTTPField.Name("X-Content-SHA256")!] = model.sha256
            if start > 0 { headers[.contentRange] = "bytes \(start)-\(model.bytes - 1)/\(model.bytes)" }
            return Response(status: start > 0 ? .partialContent : .ok, headers: headers, body: body)
        }
    }

    private func ownedUpload(_ ctx: ManagementContext, pending: Bool = false) async throws -> UploadRecord {
        let id = ctx.parameters.get("id") ?? ""
        guard id.utf8.count <= 64, let u = try await registry.upload(id, owner: try ctx.caller.modelOwner()) else {
            throw APIError.notFound("No upload '\(id)'.", code: "upload_not_found")
        }
        if pending, u.status != "pending" {
            throw APIError(status: 409, message: "Upload \(id) is \(u.status).", type: "invalid_request_error", code: "upload_not_pending")
        }
        return u
    }

    private func visibleModel(_ ctx: ManagementContext) async throws -> ModelRecord {
        let name = ctx.parameters.get("name") ?? ""
        let owner = try ctx.caller.modelOwner()
        guard let m = try await registry.model(name), m.isPlatform || m.owner == owner || owner == ModelRecord.platform else {
            throw APIError.notFound("No model '\(name)'.", code: "model_not_found")
        }
        return m
    }

    /// Streams one part's body to the file store; at most `maxPartBytes`, and never past the
    /// upload's declared size (`room` bytes left).
    private func receivePart(_ req: Request, into id: String, room: Int) async throws -> Int {
        let limit = min(Self.maxPartBytes, room)
        if let len = req.headers[.contentLength].flatMap({ Int($0) }), len > limit {
            throw APIError.invalidRequest("This part (\(len) bytes) is larger than \(limit) bytes: a part is at most \(Self.maxPartBytes) bytes and all parts together the upload's 'bytes'.",
                                          param: "data")
        }
        let tmp = fileStore.temporaryPath()
        FileManager.default.createFile(atPath: tmp, contents: nil)
        guard let handle = FileHandle(forWritingAtPath: tmp) else { throw APIError.internalError("Cannot store the part.") }
        var adopted = false
        defer {
            try? handle.close()
            if !adopted { try? FileManager.default.removeItem(atPath: tmp) }
        }
        var received = 0
        for try await buffer in req.body {
            received += buffer.readableBytes
            guard received <= limit else {
                throw APIError.invalidRequest("The part is larger than \(limit) bytes.", param: "data")
            }
            handle.write(Data(buffer.readableBytesView))
        }
        guard received > 0 else { throw APIError.invalidRequest("A part needs a body (the bytes, as application/octet-stream).", param: "data") }
        try handle.close()
        try fileStore.adopt(temporaryPath: tmp, id: id)
        adopted = true
        return received
    }

    /// Joins the parts in order into one file, checks its size and SHA-256 against what the upload
    /// declared, and asks the built-in engine whether it can run it — the same check a worker makes
    /// when it loads the file. Off the cooperative threads: hashing gigabytes takes seconds.
    private func assemble(_ u: UploadRecord, parts: [String], name: String) async throws -> ModelRecord {
        let store = fileStore
        let fileId = "model-" + name + "-" + u.sha256.prefix(12)
        return try await withCheckedThrowingContinuation { cont in
            DispatchQueue.global().async {
                let tmp = store.temporaryPath()
                do {
                    FileManager.default.createFile(atPath: tmp, contents: nil)
                    guard let out = FileHandle(forWritingAtPath: tmp) else { throw APIError.internalError("Cannot assemble the upload.") }
                    var total = 0
                    for p in parts {
                        guard let input = FileHandle(forReadingAtPath: store.path(id: Self.partFile(u.id, p))) else {
                            throw APIError.invalidRequest("Part \(p) is gone.", param: "part_ids")
                        }
                        while let chunk = try input.read(upToCount: 4 << 20), !chunk.isEmpty {
                            out.write(chunk)
                            total += chunk.count
                        }
                        try input.close()
                    }
                    try out.close()
                    let digest = try FileDigest.sha256(ofFile: tmp)
                    guard total == u.bytes else {
                        throw APIError.invalidRequest("The parts hold \(total) bytes; the upload declared \(u.bytes).", param: "part_ids", code: "upload_incomplete")
                    }
                    guard digest == u.sha256 else {
                        throw APIError.invalidRequest("The parts' SHA-256 is \(digest); the upload declared \(u.sha256).", param: "part_ids", code: "sha256_mismatch")
                    }
                    let info: GGUFModelInfo
                    do { info = try GGUFEngine.inspect(path: tmp) } catch {
                        throw APIError.invalidRequest("The built-in engine cannot run this file: \(error)", param: "file", code: "unsupported_model")
                    }
                    try store.adopt(temporaryPath: tmp, id: fileId)
                    cont.resume(returning: ModelRecord(
                        name: name, owner: u.owner, sha256: digest, bytes: total, filename: u.filename, architecture: info.architecture,
                        tensorTypes: info.tensorTypes, contextLength: info.contextLength, parameters: info.parameters, fileId: fileId,
                        createdAt: Int64(Date().timeIntervalSince1970)))
                } catch {
                    try? FileManager.default.removeItem(atPath: tmp)
                    cont.resume(throwing: error)
                }
            }
        }
    }

    static func partFile(_ upload: String, _ part: String) -> String { "\(upload).\(part)" }

    static func isHex(_ s: String, length: Int) -> Bool {
        s.utf8.count == length && s.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

    static func uploadJSON(_ u: UploadRecord, model: ModelRecord? = nil) -> [UInt8] {
        var w = JSONWriter()
        w.objectStart()
        w.field("id", u.id); w.field("object", "upload"); w.field("purpose", "model"); w.field("filename", u.filename)
        w.field("bytes", u.bytes); w.field("sha256", u.sha256); w.field("status", u.status)
        w.field("created_at", Int(u.createdAt)); w.field("expires_at", Int(u.expiresAt))
        w.key("parts"); w.arrayStart()
        for p in u.parts { w.objectStart(); w.field("id", p.id); w.field("bytes", p.bytes); w.objectEnd() }
        w.arrayEnd()
        w.field("received_bytes", u.parts.reduce(0) { $0 + $1.bytes })
        if let model { w.key("model"); writeModel(model, &w) }
        w.objectEnd()
        return w.bytes
    }

    static func writeModel(_ m: ModelRecord, _ w: inout JSONWriter) {
        w.objectStart()
        w.field("id", m.name); w.field("object", "model"); w.field("owned_by", m.isPlatform ? "platform" : m.owner)
        w.field("created", Int(m.createdAt)); w.field("sha256", m.sha256); w.field("bytes", m.bytes); w.field("filename", m.filename)
        w.field("architecture", m.architecture)
        w.key("tensor_types"); w.arrayStart(); for t in m.tensorTypes { w.value(t) }; w.arrayEnd()
        w.field("context_length", m.contextLength); w.field("parameters", m.parameters)
        w.objectEnd()
    }
}
