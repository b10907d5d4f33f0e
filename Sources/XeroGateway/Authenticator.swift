import Foundation
import XeroCore
import XeroStore

/// Who is calling and what for: the result of authenticating a request against its URL.
public struct CallerContext: Sendable {
    public var key: KeyRecord
    public var project: String
    public var endpoint: Endpoint
}

/// Checks a bearer key against the project and endpoint in the URL. Records come from Redis and
/// are cached briefly per gateway (revocations and rotations evict them at once through pub/sub);
/// only the SHA-256 of a key is ever used to look it up.
public struct Authenticator: Sendable {
    public let store: TenancyStore
    let keys: TTLCache<KeyRecord>
    let endpoints: TTLCache<Endpoint>

    public init(store: TenancyStore, keyCacheMs: Int = 2000, endpointCacheMs: Int = 5000) {
        self.store = store
        keys = TTLCache(ttlMs: keyCacheMs, negativeTTLMs: 1000)
        endpoints = TTLCache(ttlMs: endpointCacheMs, negativeTTLMs: 1000)
    }

    /// - Parameters:
    ///   - authorization: the `Authorization` header, if any.
    ///   - projectPath: the URL's project segment, `proj_<id>`.
    ///   - scope: what the route needs (`inference`, `management`).
    ///   - remoteIP: the client's address, for keys with an IP allow-list.
    public func authenticate(authorization: String?, projectPath: String, endpointSlug: String, scope: String, remoteIP: String?) async throws -> CallerContext {
        guard projectPath.hasPrefix("proj_"), projectPath.count > 5 else {
            throw APIError.notFound("Unknown project '\(projectPath)': project URLs look like /proj_<id>/<endpoint>/v1.", code: "project_not_found")
        }
        let projectID = String(projectPath.dropFirst(5))
        let record = try await keyRecord(authorization: authorization, remoteIP: remoteIP)
        guard record.project == projectID else {
            throw APIError.forbidden("This API key does not belong to project '\(projectPath)'.", code: "wrong_project")
        }
        guard record.scopes.contains(scope) else {
            throw APIError.forbidden("This API key lacks the '\(scope)' scope required for this request.", code: "insufficient_scope")
        }
        let endpoint: Endpoint?
        do {
            endpoint = try await endpoints.value(for: "\(projectID)/\(endpointSlug)") {
                try await store.endpoint(project: projectID, slug: endpointSlug)
            }
        } catch {
            throw APIError.unavailable("The endpoint store is unreachable; retry shortly.")
        }
        guard let endpoint else {
            throw APIError.notFound("Endpoint '\(endpointSlug)' does not exist in project '\(projectPath)'.", code: "endpoint_not_found")
        }
        return CallerContext(key: record, project: projectID, endpoint: endpoint)
    }

    /// The key's record if the key is valid now and usable from `remoteIP`: present, well-formed,
    /// known, not revoked, not expired (a rotated key expires at the end of its grace period), and
    /// the address inside its allow-list if it has one.
    public func keyRecord(authorization: String?, remoteIP: String?) async throws -> KeyRecord {
        guard let authorization, !authorization.isEmpty else { throw APIError.missingKey() }
        guard authorization.count > 7, authorization.prefix(7).lowercased() == "bearer " else {
            throw APIError.invalidKey("The Authorization header must be 'Bearer <API key>'.")
        }
        let key = authorization.dropFirst(7).trimmingCharacters(in: .whitespaces)
        guard APIKey.projectSlug(of: key) != nil else {
            throw APIError.invalidKey("Incorrect API key provided: keys look like xero_<project>_<random>.")
        }
        let hash = APIKey.hash(key)
        let found: KeyRecord?
        do { found = try await keys.value(for: hash) { try await store.keyRecord(hash: hash) } } catch {
            throw APIError.unavailable("The key store is unreachable; retry shortly.")
        }
        guard let record = found else { throw APIError.invalidKey() }
        if record.revoked { throw APIError.invalidKey("This API key has been revoked.") }
        if let exp = record.expiresAtMs, exp <= nowMs() { throw APIError.invalidKey("This API key has expired.") }
        if !record.allowedCIDRs.isEmpty {
            let nets = record.allowedCIDRs.compactMap(CIDR.init)
            guard let ip = remoteIP, nets.contains(where: { $0.contains(ip) }) else {
                throw APIError.forbidden("This API key may not be used from \(remoteIP ?? "an unknown address").", code: "ip_not_allowed")
            }
        }
        return record
    }

    /// Forget a key (it was revoked or rotated on some gateway).
    public func invalidate(keyHash: String) { keys.remove(keyHash) }
    /// Forget everything (after missing invalidation messages).
    public func invalidateAll() { keys.removeAll(); endpoints.removeAll() }
    public func invalidateEndpoint(project: String, slug: String) { endpoints.remove("\(project)/\(slug)") }
}
