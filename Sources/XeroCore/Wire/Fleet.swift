/// Which workers an endpoint's jobs may run on (docs/seams.md, "Fleets"). Travels in the job
/// envelope, so the router decides placement without reading Redis.
public enum EndpointFleet: UInt8, Sendable, CaseIterable {
    /// Only the project's own agents (its join keys).
    case project = 1
    /// Only the platform's workers.
    case platform = 2
    /// Either (the default: a new tenant's endpoint is served by the platform's workers).
    case both = 3

    public init?(name: String) {
        switch name {
        case "project": self = .project
        case "platform": self = .platform
        case "both": self = .both
        default: return nil
        }
    }

    public var name: String {
        switch self {
        case .project: return "project"
        case .platform: return "platform"
        case .both: return "both"
        }
    }
}

/// Whose a worker is: the platform's (it serves every project) or one project's agent (it sees
/// only that project's jobs). Decided by the router from the worker's join key, never by the
/// worker's own word.
public enum AgentFleet: Sendable, Equatable, Hashable, CustomStringConvertible {
    case platform
    case project(String)

    /// `platform` or `project:<id>`, as ops records and the management API show it.
    public var description: String {
        switch self {
        case .platform: return "platform"
        case let .project(id): return "project:\(id)"
        }
    }

    /// Whether a job may run on a worker of this fleet.
    public func mayServe(_ job: JobEnvelope) -> Bool {
        switch self {
        case .platform: return job.fleet != .project
        case let .project(id): return job.project == id && job.fleet != .platform
        }
    }
}
