import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import XeroBatch
import XeroCore
import XeroStore

/// OpenAI's Files and Batches APIs under each endpoint's base URL. Files and batches belong to the
/// project: any of its endpoints' URLs sees them, another project's key never does. File bytes go
/// to the `FileStore` (a directory every gateway and the batch runner share), metadata to Redis.
struct BatchRoutes: Sendable {
    let auth: Authenticator
    let fileStore: FilesystemFileStore
    let files: FileRecords
    let batches: BatchStore
    /// For the self-service storage quota.
    let service: ProjectService
    static let supportedEndpoints = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
    static let purposes = ["batch", "batch_output"]

    func register(on api: RouterGroup<InferenceContext>) {
        api.post("/files") { req, ctx in
            let caller = ctx.caller
            return try await upload(req, project: caller.project)
        }
        api.get("/files") { req, ctx in
            let caller = ctx.caller
            let list = try await files.list(project: caller.project, purpose: req.uri.queryParameters.get("purpose"))
            var w = JSONWriter()
            w.objectStart(); w.field("object", "list"); w.key("data"); w.arrayStart()
            for f in list { f.write(to: &w) }
            w.arrayEnd(); w.field("has_more", false); w.objectEnd()
            return Gateway.json(w.bytes)
        }
        api.get("/files/:file") { req, ctx in
            let caller = ctx.caller
            let f = try await file(ctx, caller)
            var w = JSONWriter(); f.write(to: &w)
            return Gateway.json(w.bytes)
        }
        api.get("/files/:file/content") { req, ctx in
            let caller = ctx.caller
            let f = try await file(ctx, caller)
            let data = try fileStore.read(id: f.id)
            return Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
        api.delete("/files/:file") { req, ctx in
            let caller = ctx.caller
            let f = try await file(ctx, caller)
            try await files.delete(f.id, project: caller.project)
            try? fileStore.delete(id: f.id)
            return Gateway.json(Array(#"{"id":"\#(f.id)","object":"file","deleted":true}"#.utf8))
        }
        api.post("/batches") { req, ctx in
            let caller = ctx.caller
            return try await createBatch(req, caller)
        }
        api.get("/batches") { req, ctx in
            let caller = ctx.caller
            var limit = 20
            if let l = req.uri.queryParameters.get("limit") {
                guard let v = Int(l), (1...100).contains(v) else { throw APIError.invalidRequest("'limit' must be between 1 and 100.", param: "limit") }
                limit = v
            }
            let (list, more) = try await batches.list(project: caller.project, after: req.uri.queryParameters.get("after"), limit: limit)
            var w = JSONWriter()
            w.objectStart(); w.field("object", "list"); w.key("data"); w.arrayStart()
            for b in list { w.raw(b.json()) }
            w.arrayEnd()
            w.fieldOrNull("first_id", list.first?.id); w.fieldOrNull("last_id", list.last?.id); w.field("has_more", more)
            w.objectEnd()
            return Gateway.json(w.bytes)
        }
        api.get("/batches/:batch") { req, ctx in
            let caller = ctx.caller
            return Gateway.json(try await batch(ctx, caller).json())
        }
        api.post("/batches/:batch/cancel") { req, ctx in
            let caller = ctx.caller
            let b = try await batch(ctx, caller)
            guard ["validating", "in_progress", "cancelling"].contains(b.status) else {
                throw APIError(status: 409, message: "Batch \(b.id) is \(b.status) and cannot be cancelled.", type: "invalid_request_error", code: "batch_not_cancellable")
            }
            if b.status != "cancelling" {
                try await batches.set(b.id, ["status": "cancelling", "cancelling_at": String(Int(Date().timeIntervalSince1970))])
            }
            return Gateway.json(try await batches.get(b.id)!.json())
        }
    }

    private func file(_ ctx: InferenceContext, _ caller: CallerContext) async throws -> FileRecord {
        let id = ctx.parameters.get("file") ?? ""
        guard let f = try await files.get(id, project: caller.project) else {
            throw APIError.notFound("No such File object: \(id)", code: "file_not_found")
        }
        return f
    }

    private func batch(_ ctx: InferenceContext, _ caller: CallerContext) async throws -> BatchRecord {
        let id = ctx.parameters.get("batch") ?? ""
        guard let b = try await batches.get(id, project: caller.project) else {
            throw APIError.notFound("No such Batch object: \(id)", code: "batch_not_found")
        }
        return b
    }

    /// Streams a multipart upload straight to disk (never the whole body in memory), enforcing
    /// the size, part and line limits as it goes. Parsed by our own `MultipartReader` (strict, and
    /// unable to trap on any byte: MultipartKit's parser traps on a non-ASCII header name). Every
    /// refusal removes the temporary file.
    private func upload(_ request: Request, project: String) async throws -> Response {
        guard let ct = request.headers[.contentType], let boundary = MultipartReader.boundary(fromContentType: ct) else {
            throw APIError.invalidRequest("Uploads must be multipart/form-data with a 'file' part and a 'purpose' field.", param: "file")
        }
        if let len = request.headers[.contentLength].flatMap({ Int($0) }), len > UploadState.maxBodyBytes {
            throw APIError.payloadTooLarge(limit: BatchInput.maxBytes)
        }
        var reader: MultipartReader
        do {
            reader = try MultipartReader(boundary: boundary, maxParts: UploadState.maxParts, maxHeaderBytes: UploadState.maxPartHeaderBytes,
                                         maxFieldBytes: UploadState.maxFieldBytes, isFile: { name, _ in name == "file" })
        } catch { throw error.apiError }
        let tmp = fileStore.temporaryPath()
        FileManager.default.createFile(atPath: tmp, contents: nil)
        guard let handle = FileHandle(forWritingAtPath: tmp) else { throw APIError.internalError("Cannot write the upload.") }
        let state = UploadState(handle: handle)
        var adopted = false
        defer {
            try? handle.close()
            if !adopted { try? FileManager.default.removeItem(atPath: tmp) }
        }
        do {
            var received = 0
            for try await buffer in request.body {
                received += buffer.readableBytes
                // File, fields, part headers and boundaries together; the file alone is checked below.
                if received > UploadState.maxBodyBytes { throw APIError.payloadTooLarge(limit: BatchInput.maxBytes) }
                for event in try reader.feed(buffer.readableBytesView) { state.handle(event) }
                if state.fileBytes > BatchInput.maxBytes { throw APIError.payloadTooLarge(limit: BatchInput.maxBytes) }
            }
            try reader.finish()
        } catch let e as MultipartError {
            // A body that ends inside the file part (the client went away) is not a whole file.
            if case .unterminated = e, state.sawFile, !state.fileComplete {
                throw APIError.invalidRequest("The multipart body ended before the 'file' part did.", param: "file")
            }
            throw e.apiError
        } catch let e as APIError { throw e } catch {
            throw APIError.invalidRequest("The upload could not be read (\(error)).", param: "file")
        }
        try? handle.close()
        guard state.sawFile else {
            throw APIError.invalidRequest("Missing required parameter: 'file'.", param: "file", code: "missing_required_parameter")
        }
        guard state.fileComplete else {
            throw APIError.invalidRequest("The multipart body ended before the 'file' part did.", param: "file")
        }
        let purpose = state.fields["purpose"] ?? ""
        guard purpose == "batch" else {
            throw APIError.invalidRequest("Invalid 'purpose': '\(purpose)'. This deployment accepts 'batch'.", param: "purpose", code: "invalid_value")
        }
        if state.lines > BatchInput.maxLines {
            throw APIError.invalidRequest("A batch input file may hold at most \(BatchInput.maxLines) requests; this one has \(state.lines).", param: "file", code: "too_many_lines")
        }
        try await service.requireStorage(project: project, adding: state.fileBytes) {
            try await files.list(project: project, purpose: nil).reduce(0) { $0 + $1.bytes }
        }
        let id = "file-" + randomID(length: 24)
        try fileStore.adopt(temporaryPath: tmp, id: id)
        adopted = true
        let rec = FileRecord(id: id, project: project, filename: state.filename ?? "upload.jsonl", bytes: state.fileBytes, purpose: purpose,
                             createdAt: Int64(Date().timeIntervalSince1970))
        try await files.put(rec)
        var w = JSONWriter(); rec.write(to: &w)
        return Gateway.json(w.bytes)
    }

    private func createBatch(_ request: Request, _ caller: CallerContext) async throws -> Response {
        guard case let .object(o) = try JSONValue.parse(try await Gateway.collect(request, limit: 1 << 20)) else {
            throw APIError.invalidRequest("The request body must be a JSON object.")
        }
        guard case let .string(fileID)? = o["input_file_id"] else {
            throw APIError.invalidRequest("Missing required parameter: 'input_file_id'.", param: "input_file_id", code: "missing_required_parameter")
        }
        guard case let .string(endpoint)? = o["endpoint"] else {
            throw APIError.invalidRequest("Missing required parameter: 'endpoint'.", param: "endpoint", code: "missing_required_parameter")
        }
        guard Self.supportedEndpoints.contains(endpoint) else {
            throw APIError.invalidRequest("Invalid 'endpoint': '\(endpoint)'. Supported: \(Self.supportedEndpoints.joined(separator: ", ")).", param: "endpoint", code: "invalid_value")
        }
        guard case .string("24h")? = o["completion_window"] else {
            throw APIError.invalidRequest("Invalid 'completion_window': only '24h' is supported.", param: "completion_window", code: "invalid_value")
        }
        var metadata = ""
        if let m = o["metadata"], m != .null {
            guard case let .object(mo) = m, mo.count <= 16, mo.values.allSatisfy({ if case let .string(s) = $0 { return s.count <= 512 } else { return false } }) else {
                throw APIError.invalidRequest("'metadata' must be an object of at most 16 string values.", param: "metadata", code: "invalid_value")
            }
            metadata = String(decoding: m.encoded(), as: UTF8.self)
        }
        guard let f = try await files.get(fileID, project: caller.project) else {
            throw APIError.notFound("No such File object: \(fileID)", code: "file_not_found")
        }
        guard f.purpose == "batch" else {
            throw APIError.invalidRequest("File \(fileID) has purpose '\(f.purpose)', not 'batch'.", param: "input_file_id", code: "invalid_value")
        }
        let now = Int(Date().timeIntervalSince1970)
        let id = "batch_" + randomID(length: 24)
        try await batches.create([
            "id": id, "project": caller.project, "endpoint": endpoint, "endpoint_slug": caller.endpoint.slug, "fleet": caller.endpoint.fleet.name, "model": caller.endpoint.model,
            "input_file_id": fileID, "completion_window": "24h", "status": "validating", "created_at": String(now),
            "expires_at": String(now + 86400), "total": "0", "completed": "0", "failed": "0", "metadata": metadata,
        ])
        return Gateway.json(try await batches.get(id)!.json())
    }
}

/// What one upload has produced so far (`MultipartReader` events): the file streamed to disk with
/// its size and line count, and the other fields. The reader enforces the part, header and field
/// bounds; these are the numbers it is given.
final class UploadState: @unchecked Sendable {
    static let maxParts = 16
    static let maxFieldBytes = 4096
    static let maxPartHeaderBytes = 8192
    /// The whole body: the largest file plus every other part at its bounds, and boundaries.
    static let maxBodyBytes = BatchInput.maxBytes + maxParts * (maxFieldBytes + maxPartHeaderBytes + 256)

    let handle: FileHandle
    var fields: [String: String] = [:]
    var filename: String?
    var sawFile = false
    var fileComplete = false
    var fileBytes = 0
    var lines = 0
    var lastByte: UInt8 = 10
    private var inFile = false

    init(handle: FileHandle) { self.handle = handle }

    func handle(_ event: MultipartEvent) {
        switch event {
        case let .partStart(_, name, filename):
            inFile = name == "file"
            if inFile { sawFile = true; self.filename = filename ?? self.filename }
        case let .body(bytes) where inFile:
            fileBytes += bytes.count
            for b in bytes where b == 10 { lines += 1 }
            if let last = bytes.last { lastByte = last }
            handle.write(Data(bytes))
        case .body:
            break
        case let .field(name, value):
            fields[name] = String(decoding: value, as: UTF8.self)
        case .partEnd:
            if inFile {
                fileComplete = true
                if lastByte != 10 { lines += 1 }   // a last line without a newline
            }
            inFile = false
        }
    }
}
