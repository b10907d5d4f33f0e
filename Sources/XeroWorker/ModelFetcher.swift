import AsyncHTTPClient
import Foundation
import NIOCore
import XeroCore
import XeroQueue
import XeroStore

/// `worker --model NAME` (docs/models.md, "Serving"): asks the router for a download grant over
/// the worker's own authenticated link, fetches the file from a gateway with that token (resuming a
/// broken download), checks its SHA-256, and keeps it in a local cache by hash. A tenant's agent
/// needs neither Redis nor a shared disk.
public struct ModelFetcher: Sendable {
    public struct Grant: Sendable, Equatable {
        public var name: String, token: String, sha256: String, bytes: Int
    }

    public let routerWorkers: String
    public let security: FabricSecurity
    /// Presented in the request on a plain fabric (with CURVE the handshake proves it).
    public let joinKey: String
    public let source: String
    public let cacheDirectory: String

    public init(routerWorkers: String, security: FabricSecurity, joinKey: String, source: String, cacheDirectory: String) {
        self.routerWorkers = routerWorkers
        self.security = security
        self.joinKey = joinKey
        self.source = source.hasSuffix("/") ? String(source.dropLast()) : source
        self.cacheDirectory = cacheDirectory
    }

    /// The model's local path (fetched now, or found in the cache) and the name it was granted
    /// under (`auto` resolves to one).
    public func fetch(_ name: String, timeoutMs: Int32 = 10_000) async throws -> (path: String, grant: Grant) {
        let grant = try requestGrant(name, timeoutMs: timeoutMs)
        try FileManager.default.createDirectory(atPath: cacheDirectory, withIntermediateDirectories: true)
        let path = "\(cacheDirectory)/\(grant.sha256).gguf"
        if FileManager.default.fileExists(atPath: path), try FileDigest.sha256(ofFile: path) == grant.sha256 { return (path, grant) }
        try await download(grant, to: path)
        return (path, grant)
    }

    /// One request on a connection of its own to the router's worker port: a grant or the reason.
    func requestGrant(_ name: String, timeoutMs: Int32) throws -> Grant {
        let context = ZMQContext()
        defer { context.terminate() }
        let socket = try ZMQSocket(context, .dealer)
        defer { socket.close() }
        try socket.set(.routingID("fetch-" + String(UInt64.random(in: 0..<UInt64.max), radix: 36)))
        try socket.set(.receiveTimeout(timeoutMs))
        try socket.set(.maxMessageSize(WireLimits.maxControlFrameBytes))
        try socket.secure(security)
        try socket.connect(routerWorkers)
        let presented: String
        if case .plaintext = security { presented = joinKey } else { presented = "" }
        _ = try socket.send([WorkerMessage.modelRequest(name: name, joinKey: presented).encode()], dontWait: false)
        while true {
            guard let frames = try socket.receive(dontWait: false), frames.count == 1 else {
                throw ModelFetchError("no answer from the router within \(timeoutMs) ms (is --router-key right, and the join key valid?)")
            }
            switch try RouterMessage.decode(frames[0]) {
            case let .modelGrant(granted, token, sha, bytes):
                guard sha.utf8.count == 64 else { throw ModelFetchError("the router's grant carries a malformed SHA-256") }
                return Grant(name: granted, token: token, sha256: sha, bytes: bytes)
            case let .modelRefused(_, reason): throw ModelFetchError("the router refused model '\(name)': \(reason)")
            case let .refused(reason): throw ModelFetchError("the router refused this worker: \(reason)")
            default: continue
            }
        }
    }

    /// Streams the file into `<path>.part` (continuing one a broken download left), then checks
    /// size and hash before it takes the final name.
    func download(_ grant: Grant, to path: String) async throws {
        let part = path + ".part"
        if !FileManager.default.fileExists(atPath: part) { FileManager.default.createFile(atPath: part, contents: nil) }
        guard let out = FileHandle(forWritingAtPath: part) else { throw ModelFetchError("cannot write \(part)") }
        defer { try? out.close() }
        var have = Int(try out.seekToEnd())
        if have > grant.bytes {
            try out.truncate(atOffset: 0)
            have = 0
        }
        if have < grant.bytes {
            var request = HTTPClientRequest(url: "\(source)/internal/v1/models/\(grant.name)/content")
            request.headers.add(name: "Authorization", value: "Bearer \(grant.token)")
            if have > 0 { request.headers.add(name: "Range", value: "bytes=\(have)-") }
            let response = try await HTTPClient.shared.execute(request, timeout: .hours(6))
            guard response.status == .ok || response.status == .partialContent else {
                let body = try? await response.body.collect(upTo: 64 << 10)
                throw ModelFetchError("the gateway refused the download (\(response.status.code)): \(body.map { String(buffer: $0) } ?? "")")
            }
            if response.status == .ok, have > 0 {
                try out.truncate(atOffset: 0)   // the gateway sent the whole file after all
                have = 0
            }
            for try await chunk in response.body {
                have += chunk.readableBytes
                guard have <= grant.bytes else { throw ModelFetchError("the gateway sent more than the model's \(grant.bytes) bytes") }
                out.write(Data(chunk.readableBytesView))
            }
        }
        try out.close()
        guard have == grant.bytes else { throw ModelFetchError("the download stopped at \(have) of \(grant.bytes) bytes; run again to resume") }
        let digest = try FileDigest.sha256(ofFile: part)
        guard digest == grant.sha256 else {
            try? FileManager.default.removeItem(atPath: part)
            throw ModelFetchError("the downloaded file's SHA-256 is \(digest), the registry's \(grant.sha256): discarded")
        }
        guard rename(part, path) == 0 else { throw ModelFetchError("cannot move \(part) to \(path)") }
    }
}

public struct ModelFetchError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
