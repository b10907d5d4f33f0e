import XeroCore
import XeroStore

/// Download grants for the model registry (docs/models.md, "Serving"): a worker started with
/// `--model NAME` asks its router over the authenticated fabric, and gets a token a gateway accepts
/// for that one model, for minutes. The token is the only credential that fetches bytes; join keys
/// and API keys never do.
extension RouterState {
    func grantModel(_ requested: String, fleet: AgentFleet) -> RouterMessage {
        let unknown = RouterMessage.modelRefused(name: requested, reason: "no model '\(requested)' in the registry that this worker may serve")
        do {
            let conn = try lookupConnection()
            var name = requested
            if requested == "auto" {
                guard let needed = try neededModel(fleet: fleet, conn) else {
                    return .modelRefused(name: requested, reason: "no endpoint this worker's fleet serves names a registry model")
                }
                name = needed
            }
            guard ModelRecord.isValidName(name) else { return unknown }
            let h = try conn.command(["HGETALL", ModelRegistry.key(name)]).hash
            // Another project's model answers like a missing one: a worker learns nothing of it.
            guard let owner = h["owner"], Self.fleet(fleet, mayFetch: owner), let sha = h["sha256"], let bytes = Int(h["bytes"] ?? ""), bytes > 0 else {
                return unknown
            }
            let (token, command) = ModelRegistry.issueTokenCommand(model: name)
            _ = try conn.command(command)
            return .modelGrant(name: name, token: token, sha256: sha, bytes: bytes)
        } catch {
            joinKeyConnection = nil
            return .modelRefused(name: requested, reason: "the registry is unreachable; retry")
        }
    }

    /// Platform workers may fetch any model (they serve every project whose endpoints allow them);
    /// a project's agents only that project's models and the platform's.
    static func fleet(_ fleet: AgentFleet, mayFetch owner: String) -> Bool {
        switch fleet {
        case .platform: return true
        case let .project(id): return owner == id || owner == ModelRecord.platform
        }
    }

    /// `--model auto`: the registry model that most endpoints this fleet may serve name (ties by
    /// name), so a new worker takes on what its fleet is asked for.
    func neededModel(fleet: AgentFleet, _ conn: RedisConnection) throws -> String? {
        let projects: [String]
        switch fleet {
        case .platform: projects = try conn.command(["SMEMBERS", RedisKeys.projects]).array.compactMap(\.string)
        case let .project(id): projects = [id]
        }
        var wanted: [String: Int] = [:]
        for p in projects {
            for slug in try conn.command(["SMEMBERS", RedisKeys.endpoints(p)]).array.compactMap(\.string) {
                let e = try conn.command(["HMGET", RedisKeys.endpoint(p, slug), "model", "fleet"]).array.map(\.string)
                guard let model = e.first ?? nil else { continue }
                let endpointFleet = EndpointFleet(name: (e.count > 1 ? e[1] : nil) ?? "both") ?? .both
                let servable: Bool
                switch fleet {
                case .platform: servable = endpointFleet != .project
                case .project: servable = endpointFleet != .platform
                }
                if servable { wanted[model, default: 0] += 1 }
            }
        }
        for (model, _) in wanted.sorted(by: { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }) {
            guard ModelRecord.isValidName(model), let owner = try conn.command(["HGET", ModelRegistry.key(model), "owner"]).string else { continue }
            if Self.fleet(fleet, mayFetch: owner) { return model }
        }
        return nil
    }
}
