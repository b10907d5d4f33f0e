import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `xeroctl batch …`: the Files + Batches API of one endpoint (key needs the inference scope).
struct BatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "batch", abstract: "Submit and follow batches.",
                                                    subcommands: [Submit.self, Status.self, List.self, Cancel.self, Results.self])
    static let columns = ["id", "status", "total", "completed", "failed", "output_file_id", "error_file_id"]

    /// The endpoint's base path, from the key's project.
    static func base(_ c: Connection, endpoint: String) async throws -> String {
        let me = try await c.request("GET", "/manage/v1/whoami")
        guard let project = me["project"] as? String, !project.isEmpty else { throw CLIError(message: "batches need a project key (inference scope)") }
        return "/proj_\(project)/\(endpoint)/v1"
    }

    static func flatten(_ b: [String: Any]) -> [String: Any] {
        var out = b
        if let rc = b["request_counts"] as? [String: Any] { for (k, v) in rc { out[k] = v } }
        return out
    }

    struct Submit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Upload a JSONL file and start a batch.")
        @OptionGroup var c: Connection
        @Argument var file: String
        @Option(help: "Endpoint slug the batch runs on.") var endpoint: String
        @Option(help: "OpenAI endpoint of every line.") var url: String = "/v1/chat/completions"
        @Flag(help: "Follow progress until the batch ends.") var watch = false

        func run() async throws {
            guard let data = FileManager.default.contents(atPath: file) else { throw CLIError(message: "cannot read \(file)") }
            let base = try await BatchCommand.base(c, endpoint: endpoint)
            let uploaded = try await c.upload(base + "/files", fileName: (file as NSString).lastPathComponent, data: data, purpose: "batch")
            guard let fileID = uploaded["id"] as? String else { throw CLIError(message: "upload returned no file id") }
            let b = try await c.request("POST", base + "/batches", body: ["input_file_id": fileID, "endpoint": url, "completion_window": "24h"])
            guard let id = b["id"] as? String else { throw CLIError(message: "no batch id returned") }
            if !watch { c.show(BatchCommand.flatten(b), columns: BatchCommand.columns); return }
            try await Watch.follow(c, base: base, id: id)
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one batch: its state, counts and usage.")
        @OptionGroup var c: Connection
        @Argument var id: String
        @Option var endpoint: String
        @Flag var watch = false
        func run() async throws {
            let base = try await BatchCommand.base(c, endpoint: endpoint)
            if watch { try await Watch.follow(c, base: base, id: id); return }
            c.show(BatchCommand.flatten(try await c.request("GET", base + "/batches/\(id)")), columns: BatchCommand.columns)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the project's batches.")
        @OptionGroup var c: Connection
        @Option var endpoint: String
        @Option var limit: Int = 20
        func run() async throws {
            let base = try await BatchCommand.base(c, endpoint: endpoint)
            var r = try await c.request("GET", base + "/batches?limit=\(limit)")
            r["data"] = ((r["data"] as? [[String: Any]]) ?? []).map(BatchCommand.flatten)
            c.show(r, columns: BatchCommand.columns)
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel a batch: lines not yet run are not run.")
        @OptionGroup var c: Connection
        @Argument var id: String
        @Option var endpoint: String
        func run() async throws {
            let base = try await BatchCommand.base(c, endpoint: endpoint)
            c.show(BatchCommand.flatten(try await c.request("POST", base + "/batches/\(id)/cancel")), columns: BatchCommand.columns)
        }
    }

    struct Results: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the output file (and with --errors the error file) as JSONL.")
        @OptionGroup var c: Connection
        @Argument var id: String
        @Option var endpoint: String
        @Flag var errors = false
        func run() async throws {
            let base = try await BatchCommand.base(c, endpoint: endpoint)
            let b = try await c.request("GET", base + "/batches/\(id)")
            guard let fileID = b[errors ? "error_file_id" : "output_file_id"] as? String else {
                throw CLIError(message: "batch \(id) has no \(errors ? "error" : "output") file (status \(b["status"] ?? "?"))")
            }
            FileHandle.standardOutput.write(try await c.raw("GET", base + "/files/\(fileID)/content"))
        }
    }

    enum Watch {
        /// A live progress bar with counts and rate, until the batch reaches a final status.
        static func follow(_ c: Connection, base: String, id: String) async throws {
            let start = Date()
            var status = ""
            while true {
                let b = try await c.request("GET", base + "/batches/\(id)")
                status = b["status"] as? String ?? "?"
                let rc = b["request_counts"] as? [String: Any] ?? [:]
                let total = rc["total"] as? Int ?? 0, done = rc["completed"] as? Int ?? 0, failed = rc["failed"] as? Int ?? 0
                let frac = total > 0 ? Double(done + failed) / Double(total) : 0
                let width = 30
                let bar = String(repeating: "█", count: Int(frac * Double(width))) + String(repeating: "░", count: width - Int(frac * Double(width)))
                let rate = Double(done + failed) / max(0.001, Date().timeIntervalSince(start))
                let line = String(format: "\r%@ %@ %3.0f%%  %d/%d done, %d failed  %.1f req/s  [%@]", id, bar, frac * 100, done, total, failed, rate, status)
                FileHandle.standardError.write(Data(line.utf8))
                if ["completed", "failed", "cancelled", "expired"].contains(status) {
                    FileHandle.standardError.write(Data("\n".utf8))
                    c.show(BatchCommand.flatten(b), columns: BatchCommand.columns)
                    if status != "completed" { throw CLIError(message: "batch \(id) ended \(status)") }
                    return
                }
                try await Task.sleep(nanoseconds: 500_000_000)
            }
        }
    }
}

extension Connection {
    func raw(_ method: String, _ path: String) async throws -> Data {
        let (base, key) = try credentials()
        var req = URLRequest(url: URL(string: base + path)!)
        req.httpMethod = method
        req.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
        let (data, resp) = try await URLSession.shared.data(for: req)
        guard let http = resp as? HTTPURLResponse, http.statusCode == 200 else { throw CLIError(message: "\((resp as? HTTPURLResponse)?.statusCode ?? 0): \(String(decoding: data, as: UTF8.self))") }
        return data
    }

    func upload(_ path: String, fileName: String, data: Data, purpose: String) async throws -> [String: Any] {
        let (base, key) = try credentials()
        let boundary = "xeroctl-\(UUID().uuidString)"
        var body = Data()
        body.append(Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n\(purpose)\r\n".utf8))
        body.append(Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\(fileName)\"\r\nContent-Type: application/jsonl\r\n\r\n".utf8))
        body.append(data)
        body.append(Data("\r\n--\(boundary)--\r\n".utf8))
        var req = URLRequest(url: URL(string: base + path)!)
        req.httpMethod = "POST"
        req.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization")
        req.setValue("multipart/form-data; boundary=\(boundary)", forHTTPHeaderField: "Content-Type")
        req.httpBody = body
        let (out, resp) = try await URLSession.shared.data(for: req)
        let obj = (try? JSONSerialization.jsonObject(with: out)) as? [String: Any] ?? [:]
        guard (resp as? HTTPURLResponse)?.statusCode == 200 else {
            throw CLIError(message: "upload failed: \(((obj["error"] as? [String: Any])?["message"] as? String) ?? String(decoding: out, as: UTF8.self))")
        }
        return obj
    }
}
