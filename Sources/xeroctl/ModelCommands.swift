import ArgumentParser
import Crypto
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `xeroctl models …`: the model registry (docs/models.md). Uploads go in parts over the Uploads
/// API; an interrupted upload resumes when the same command runs again.
struct Models: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The model registry: upload GGUF files, list, show, delete.",
                                                    subcommands: [Upload.self, List.self, Show.self, Delete.self], defaultSubcommand: List.self)
    static let columns = ["id", "owned_by", "architecture", "parameters", "context_length", "bytes", "tensor_types"]

    struct Upload: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Upload a GGUF file under a name (resumable; checked by SHA-256 and by the engine).")
        @OptionGroup var c: Connection
        @Argument(help: "The .gguf file.") var file: String
        @Option(help: "Its name in the registry: what endpoints put in 'model'.") var name: String
        @Option(help: "Part size, MiB (at most 64).") var partMb: Int = 16
        @Flag(help: "No progress bar.") var quiet = false
        @Option(help: ArgumentHelp("Stop after sending this many parts (tests of resuming).", visibility: .hidden)) var stopAfterParts: Int?

        func run() async throws {
            guard (1...64).contains(partMb) else { throw CLIError(message: "--part-mb must be 1 to 64") }
            guard let attrs = try? FileManager.default.attributesOfItem(atPath: file), let size = (attrs[.size] as? NSNumber)?.intValue, size > 0 else {
                throw CLIError(message: "cannot read \(file)")
            }
            let progress = Progress(total: size, quiet: quiet, bar: !c.json)
            progress.note("hashing \(file)")
            let sha = try sha256(file)
            let statePath = UploadState.path(sha256: sha)
            var state = UploadState.load(statePath)
            let partSize = partMb << 20
            // Resume only an upload of this very file, to this gateway, still pending there.
            if let s = state, s.baseURL == (try c.credentials().base), s.partSize == partSize,
               let u = try? await c.request("GET", "/manage/v1/uploads/\(s.uploadId)"), u["status"] as? String == "pending" {
                let there = Set(((u["parts"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String })
                state!.parts = state!.parts.filter { there.contains($0.value) }
                progress.note("resuming \(s.uploadId): \(state!.parts.count) of \((size + partSize - 1) / partSize) parts already there")
            } else {
                let u = try await c.request("POST", "/manage/v1/uploads", body: ["purpose": "model", "filename": (file as NSString).lastPathComponent,
                                                                                 "bytes": size, "sha256": sha])
                guard let id = u["id"] as? String else { throw CLIError(message: "the gateway returned no upload id") }
                state = UploadState(uploadId: id, baseURL: try c.credentials().base, partSize: partSize, parts: [:])
            }
            var s = state!
            try s.save(statePath)
            guard let input = FileHandle(forReadingAtPath: file) else { throw CLIError(message: "cannot read \(file)") }
            defer { try? input.close() }
            let count = (size + partSize - 1) / partSize
            var sent = 0
            progress.show(done: s.parts.keys.reduce(0) { $0 + min(partSize, size - $1 * partSize) })
            for index in 0..<count where s.parts[index] == nil {
                if let stop = stopAfterParts, sent >= stop {
                    progress.finish()
                    throw CLIError(message: "stopped after \(sent) parts (--stop-after-parts); run the same command again to resume")
                }
                try input.seek(toOffset: UInt64(index * partSize))
                let chunk = try input.read(upToCount: partSize) ?? Data()
                let part = try await c.upload("/manage/v1/uploads/\(s.uploadId)/parts", chunk)
                guard let partId = part["id"] as? String else { throw CLIError(message: "the gateway returned no part id") }
                s.parts[index] = partId
                try s.save(statePath)
                sent += 1
                progress.show(done: s.parts.keys.reduce(0) { $0 + min(partSize, size - $1 * partSize) })
            }
            progress.finish()
            let ids = (0..<count).map { s.parts[$0]! }
            let done = try await c.request("POST", "/manage/v1/uploads/\(s.uploadId)/complete", body: ["part_ids": ids, "name": name])
            try? FileManager.default.removeItem(atPath: statePath)
            let model = (done["model"] as? [String: Any]) ?? [:]
            if c.json { c.show(model, columns: []) } else { c.show(model, columns: Models.columns); print("\nsha256: \(model["sha256"] as? String ?? "")") }
        }

        func sha256(_ path: String) throws -> String {
            guard let input = FileHandle(forReadingAtPath: path) else { throw CLIError(message: "cannot read \(path)") }
            defer { try? input.close() }
            var hasher = SHA256()
            while let chunk = try input.read(upToCount: 4 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
            return hasher.finalize().map { String(format: "%02x", $0) }.joined()
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The project's models and the platform's.")
        @OptionGroup var c: Connection
        func run() async throws { c.show(try await c.request("GET", "/manage/v1/models"), columns: Models.columns) }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One model: hash, architecture, tensor types, context length, parameters.")
        @OptionGroup var c: Connection
        @Argument var name: String
        func run() async throws { c.show(try await c.request("GET", "/manage/v1/models/\(name)"), columns: Models.columns + ["sha256"]) }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete one of the project's models (the admin: a platform model).")
        @OptionGroup var c: Connection
        @Argument var name: String
        func run() async throws { _ = try await c.request("DELETE", "/manage/v1/models/\(name)"); print(c.json ? "{\"deleted\":true}" : "deleted \(name)") }
    }
}

/// What `models upload` remembers between runs, under ~/.cache/xerotier/uploads/<sha256>.json.
struct UploadState: Codable {
    var uploadId: String
    var baseURL: String
    var partSize: Int
    /// Part index in the file → the part's id on the gateway.
    var parts: [Int: String]

    static func path(sha256: String) -> String {
        let env = ProcessInfo.processInfo.environment
        let dir = (env["XDG_CACHE_HOME"] ?? (env["HOME"] ?? ".") + "/.cache") + "/xerotier/uploads"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return "\(dir)/\(sha256).json"
    }

    static func load(_ path: String) -> UploadState? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? JSONDecoder().decode(UploadState.self, from: data)
    }

    func save(_ path: String) throws { try JSONEncoder().encode(self).write(to: URL(fileURLWithPath: path), options: .atomic) }
}

/// A one-line progress bar on stderr (a terminal gets it redrawn in place).
final class Progress {
    let total: Int
    /// `quiet`: nothing at all; without `bar` (JSON output) only the one-line notes.
    let quiet: Bool, bar: Bool
    let start = Date()
    let tty = isatty(2) == 1

    init(total: Int, quiet: Bool, bar: Bool) { self.total = total; self.quiet = quiet; self.bar = bar }

    func note(_ s: String) { if !quiet { FileHandle.standardError.write(Data("\(s)\n".utf8)) } }

    func show(done: Int) {
        guard !quiet && bar else { return }
        let f = total > 0 ? Double(done) / Double(total) : 1
        let width = 30, filled = Int(f * Double(width))
        let rate = Double(done) / max(0.001, Date().timeIntervalSince(start)) / 1_048_576
        let line = String(format: "[%@%@] %3d%%  %.1f/%.1f MiB  %.1f MiB/s", String(repeating: "#", count: filled),
                          String(repeating: " ", count: width - filled), Int(f * 100), Double(done) / 1_048_576, Double(total) / 1_048_576, rate)
        FileHandle.standardError.write(Data(((tty ? "\r" : "") + line + (tty ? "" : "\n")).utf8))
    }

    func finish() { if !quiet && bar && tty { FileHandle.standardError.write(Data("\n".utf8)) } }
}
