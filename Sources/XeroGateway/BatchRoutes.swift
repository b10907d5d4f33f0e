import Foundation
import HTTPTypes
import Hummingbird
import MultipartKit
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
    static let supportedEndpoints = ["/v1/chat/completions", "/v1/embeddings"]
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
    /// the size, part and line limits as it goes. Every refusal removes the temporary file.
    private func upload(_ request: Request, project: String) async throws -> Response {
        guard let ct = request.headers[.contentType], ct.lowercased().hasPrefix("multipart/form-data"),
              let boundary = ct.components(separatedBy: "boundary=").dropFirst().first?.split(separator: ";").first.map({ String($0).trimmingCharacters(in: CharacterSet(charactersIn: "\" ")) }),
              !boundary.isEmpty else {
            throw APIError.invalidRequest("Uploads must be multipart/form-data with a 'file' part and a 'purpose' field.", param: "file")
        }
        if let len = request.headers[.contentLength].flatMap({ Int($0) }), len > UploadState.maxBodyBytes {
            throw APIError.payloadTooLarge(limit: BatchInput.maxBytes)
        }
        let tmp = fileStore.temporaryPath()
        FileManager.default.createFile(atPath: tmp, contents: nil)
        guard let handle = FileHandle(forWritingAtPath: tmp) else { throw APIError.internalError("Cannot write the upload.") }
        let state = UploadState(handle: handle)
        var adopted = false
        defer {
            try? handle.close()
            if !adopted { try? FileManager.default.removeItem(atPath: tmp) }
        }
        let parser = MultipartParser(boundary: boundary)
        parser.onHeader = { name, value in state.header(name, value) }
        parser.onBody = { buf in state.body(&buf) }
        parser.onPartComplete = { state.partComplete() }
        do {
            var received = 0
            for try await buffer in request.body {
                received += buffer.readableBytes
                // File, fields, part headers and boundaries together; the file alone is checked below.
                if received > UploadState.maxBodyBytes { throw APIError.payloadTooLarge(limit: BatchInput.maxBytes) }
                try parser.execute(buffer)
                if let refusal = state.refusal { throw refusal }
                if state.fileBytes > BatchInput.maxBytes { throw APIError.payloadTooLarge(limit: BatchInput.maxBytes) }
            }
        } catch let e as APIError { throw e } catch {
            throw APIError.invalidRequest("The multipart body could not be parsed (\(error)).", param: "file")
        }
        try? handle.close()
        guard state.sawFile else {
            throw APIError.invalidRequest("Missing required parameter: 'file'.", param: "file", code: "missing_required_parameter")
        }
        // A body that ended inside the file part (the client went away) is not a whole file.
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

/// Parser callbacks' state for one upload, and its bounds on what is not the file: every part
/// counts against `maxParts`, a field's value and a part's headers have their own byte bounds.
/// The callbacks cannot throw, so a broken bound is kept in `refusal` for the caller to raise.
final class UploadState: @unchecked Sendable {
    static let maxParts = 16
    static let maxFieldBytes = 4096
    static let maxPartHeaderBytes = 8192
    /// The whole body: the largest file plus every other part at its bounds, and boundaries.
    static let maxBodyBytes = BatchInput.maxBytes + maxParts * (maxFieldBytes + maxPartHeaderBytes + 256)

    let handle: FileHandle
    var headers: [String: String] = [:]
    var headerBytes = 0
    var fields: [String: String] = [:]
    var current: [UInt8] = []
    var filename: String?
    var sawFile = false
    var fileComplete = false
    var fileBytes = 0
    var lines = 0
    var lastByte: UInt8 = 10
    var parts = 0
    var refusal: APIError?

    init(handle: FileHandle) { self.handle = handle }

    var partName: String? { disposition("name") }

    func disposition(_ key: String) -> String? {
        guard let d = headers["content-disposition"] else { return nil }
        for piece in d.split(separator: ";") {
            let kv = piece.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
            if kv.count == 2, kv[0] == key { return kv[1].trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
        }
        return nil
    }

    func header(_ name: String, _ value: String) {
        guard refusal == nil else { return }
        // MultipartKit hands over whole header lines; a single line still being read is bounded
        // only by the body bound.
        headerBytes += name.utf8.count + value.utf8.count + 4
        if headerBytes > Self.maxPartHeaderBytes {
            refusal = .invalidRequest("A multipart part's headers are larger than \(Self.maxPartHeaderBytes) bytes.", param: "file", code: "part_headers_too_large")
            return
        }
        headers[name.lowercased()] = value
    }

    func body(_ buf: inout ByteBuffer) {
        guard refusal == nil else { return }
        if partName == "file" {
            sawFile = true
            if filename == nil { filename = disposition("filename") }
            let bytes = buf.readBytes(length: buf.readableBytes) ?? []
            fileBytes += bytes.count
            for b in bytes where b == 10 { lines += 1 }
            if let last = bytes.last { lastByte = last }
            handle.write(Data(bytes))
        } else {
            current += buf.readBytes(length: buf.readableBytes) ?? []
            if current.count > Self.maxFieldBytes {
                let name = partName ?? "(unnamed)"
                refusal = .invalidRequest("The multipart field '\(name)' is larger than \(Self.maxFieldBytes) bytes.", param: name, code: "field_too_large")
            }
        }
    }

    func partComplete() {
        guard refusal == nil else { return }
        parts += 1
        if parts > Self.maxParts {
            refusal = .invalidRequest("A multipart upload may hold at most \(Self.maxParts) parts.", param: "file", code: "too_many_parts")
            return
        }
        if let name = partName, name != "file" { fields[name] = String(decoding: current, as: UTF8.self) }
        if partName == "file" {
            fileComplete = true
            if lastByte != 10 { lines += 1 }   // a last line without a newline
        }
        headers = [:]
        headerBytes = 0
        current = []
    }
}
