import Foundation
import Yams

/// A service tier: how its jobs are scheduled and limited. Loaded from `config/tiers.yaml`.
public struct Tier: Sendable, Equatable, Codable {
    public var name: String
    /// Higher is served first when tiers compete; used for tie-breaks and ordering.
    public var priority: Int
    /// Share of dispatches when several tiers are backlogged (smooth weighted round-robin):
    /// weights 4 and 1 give 4 of every 5 dispatches to the first — priority without starvation.
    /// Weight 0 (the batch tier) takes only capacity that no weighted tier's job can use.
    public var weight: Int
    /// How long a job may wait for a worker before it is answered 503.
    public var queueTimeoutMs: Int
    /// How long a job may run in all, from acceptance, before it is ended with a timeout error.
    public var requestTimeoutMs: Int
    // Limits and prices: enforced and billed by the tenancy layer.
    public var requestsPerMinute: Int?
    public var tokensPerMinute: Int?
    public var projectRequestsPerMinute: Int?
    public var projectTokensPerMinute: Int?
    public var maxConcurrentRequests: Int?
    /// Jobs this tier may hold queued at the router, and jobs one project may hold in it; a
    /// submit past either is answered 429 with `Retry-After` (nil = only the router's total bound).
    public var maxQueued: Int?
    public var maxQueuedPerProject: Int?
    public var priceInputPerMillion: Double?
    public var priceOutputPerMillion: Double?
    /// How the router picks a worker for this tier's jobs: `least_loaded` (default),
    /// `round_robin` or `prefix_aware` (docs/routing.md, "Placement"), and the latter's
    /// parameters: the weight of load against the matched prefix, and how much busier than the
    /// least-loaded candidate a worker may be and still win by its cache.
    public var placement: String?
    public var placementLoadWeight: Double?
    public var placementMaxImbalance: Double?
    /// The answer budget of a chat request that sets no `max_tokens` (docs/completions.md,
    /// "Defaults"): the gateway writes it into the request, so every engine, upstreams included,
    /// sees it; an engine shortens it to the context left. Nil: chat runs to the model's context.
    /// Text completions always get OpenAI's documented 16.
    public var defaultMaxTokens: Int?

    enum CodingKeys: String, CodingKey {
        case name, priority, weight
        case queueTimeoutMs = "queue_timeout_ms"
        case requestTimeoutMs = "request_timeout_ms"
        case requestsPerMinute = "requests_per_minute"
        case tokensPerMinute = "tokens_per_minute"
        case projectRequestsPerMinute = "project_requests_per_minute"
        case projectTokensPerMinute = "project_tokens_per_minute"
        case maxConcurrentRequests = "max_concurrent_requests"
        case maxQueued = "max_queued"
        case maxQueuedPerProject = "max_queued_per_project"
        case priceInputPerMillion = "price_input_per_million"
        case priceOutputPerMillion = "price_output_per_million"
        case placement
        case placementLoadWeight = "placement_load_weight"
        case placementMaxImbalance = "placement_max_imbalance"
        case defaultMaxTokens = "default_max_tokens"
    }

    public init(name: String, priority: Int, weight: Int, queueTimeoutMs: Int, requestTimeoutMs: Int) {
        self.name = name
        self.priority = priority
        self.weight = weight
        self.queueTimeoutMs = queueTimeoutMs
        self.requestTimeoutMs = requestTimeoutMs
    }
}

/// The tier table plus what a fresh install creates. Loaded from a YAML file.
public struct PlatformConfig: Sendable, Codable {
    public struct Demo: Sendable, Codable {
        public var projectSlug: String
        public var projectName: String
        public var endpointSlug: String
        public var model: String
        public var tier: String
        public init(projectSlug: String, projectName: String, endpointSlug: String, model: String, tier: String) {
            self.projectSlug = projectSlug
            self.projectName = projectName
            self.endpointSlug = endpointSlug
            self.model = model
            self.tier = tier
        }
        enum CodingKeys: String, CodingKey {
            case projectSlug = "project_slug", projectName = "project_name", endpointSlug = "endpoint_slug", model, tier
        }
    }

    public var tiers: [Tier]
    public var demo: Demo?
    /// The tier of an endpoint created without one (`default_endpoint_tier`). It must be
    /// interactive (weight > 0); when the file names none, the interactive tier of lowest priority.
    public var defaultEndpointTier: String
    /// The tiers every project may put endpoints on unless the admin granted or withdrew one
    /// (`project_tiers`); when the file names none, every interactive tier (weight > 0).
    public var projectTiers: [String]
    /// Sign-up and self-service quotas (`console:`).
    public var console: ConsoleConfig

    enum CodingKeys: String, CodingKey {
        case tiers, demo, console
        case defaultEndpointTier = "default_endpoint_tier"
        case projectTiers = "project_tiers"
    }

    public init(tiers: [Tier], demo: Demo? = nil, defaultEndpointTier: String? = nil, projectTiers: [String]? = nil, console: ConsoleConfig = ConsoleConfig()) {
        self.tiers = tiers
        self.demo = demo
        self.console = console
        self.defaultEndpointTier = defaultEndpointTier ?? Self.lowestInteractive(tiers) ?? tiers.first?.name ?? ""
        self.projectTiers = projectTiers ?? tiers.filter { $0.weight > 0 }.map(\.name)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let tiers = try c.decode([Tier].self, forKey: .tiers)
        self.init(tiers: tiers, demo: try c.decodeIfPresent(Demo.self, forKey: .demo),
                  defaultEndpointTier: try c.decodeIfPresent(String.self, forKey: .defaultEndpointTier),
                  projectTiers: try c.decodeIfPresent([String].self, forKey: .projectTiers),
                  console: try c.decodeIfPresent(ConsoleConfig.self, forKey: .console) ?? ConsoleConfig())
    }

    static func lowestInteractive(_ tiers: [Tier]) -> String? {
        tiers.filter { $0.weight > 0 }.min { $0.priority < $1.priority }?.name
    }

    public func tier(named name: String) -> Tier? { tiers.first { $0.name == name } }

    public static func load(path: String) throws -> PlatformConfig {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigError("cannot read config file \(path)")
        }
        return try parse(yaml: text, source: path)
    }

    public static func parse(yaml: String, source: String = "config") throws -> PlatformConfig {
        let config: PlatformConfig
        do { config = try YAMLDecoder().decode(PlatformConfig.self, from: yaml) } catch {
            throw ConfigError("\(source): \(error)")
        }
        try config.validate(source: source)
        return config
    }

    func validate(source: String) throws {
        guard !tiers.isEmpty else { throw ConfigError("\(source): no tiers defined") }
        var seen = Set<String>()
        for t in tiers {
            guard t.name.range(of: "^[a-z0-9][a-z0-9_-]*$", options: .regularExpression) != nil else {
                throw ConfigError("\(source): tier name '\(t.name)' must be lowercase letters, digits, - or _")
            }
            guard seen.insert(t.name).inserted else { throw ConfigError("\(source): tier '\(t.name)' defined twice") }
            guard t.weight >= 0 else { throw ConfigError("\(source): tier '\(t.name)' weight must be ≥ 0 (0 = only idle capacity)") }
            guard t.queueTimeoutMs > 0, t.requestTimeoutMs > 0 else { throw ConfigError("\(source): tier '\(t.name)' timeouts must be > 0") }
        }
        if let demo, tier(named: demo.tier) == nil { throw ConfigError("\(source): demo tier '\(demo.tier)' is not defined") }
        try console.validate(source: source)
        guard let d = tier(named: defaultEndpointTier) else {
            throw ConfigError("\(source): default_endpoint_tier '\(defaultEndpointTier)' is not defined (and no interactive tier exists to default to)")
        }
        guard d.weight > 0 else {
            throw ConfigError("\(source): default_endpoint_tier '\(d.name)' has weight 0; new endpoints must land on an interactive tier")
        }
        for name in projectTiers where tier(named: name) == nil {
            throw ConfigError("\(source): project_tiers names '\(name)', which is not a defined tier")
        }
        guard projectTiers.contains(defaultEndpointTier) else {
            throw ConfigError("\(source): project_tiers must include default_endpoint_tier '\(defaultEndpointTier)' (endpoints created without a tier land there)")
        }
        for t in tiers {
            for (name, v) in [("requests_per_minute", t.requestsPerMinute), ("tokens_per_minute", t.tokensPerMinute),
                              ("project_requests_per_minute", t.projectRequestsPerMinute), ("project_tokens_per_minute", t.projectTokensPerMinute),
                              ("max_concurrent_requests", t.maxConcurrentRequests), ("max_queued", t.maxQueued),
                              ("max_queued_per_project", t.maxQueuedPerProject), ("default_max_tokens", t.defaultMaxTokens)] {
                if let v, v <= 0 || v > 1_000_000_000 { throw ConfigError("\(source): tier '\(t.name)' \(name) must be between 1 and 1e9 (omit it for no limit)") }
            }
            for (name, v) in [("price_input_per_million", t.priceInputPerMillion), ("price_output_per_million", t.priceOutputPerMillion)] {
                if let v, !(v >= 0 && v <= 1_000_000) { throw ConfigError("\(source): tier '\(t.name)' \(name) must be between 0 and 1e6") }
            }
            if let p = t.placement, !["least_loaded", "round_robin", "prefix_aware"].contains(p) {
                throw ConfigError("\(source): tier '\(t.name)' placement must be least_loaded, round_robin or prefix_aware, not '\(p)'")
            }
            for (name, v) in [("placement_load_weight", t.placementLoadWeight), ("placement_max_imbalance", t.placementMaxImbalance)] {
                if let v, !(v >= 0 && v <= 100) { throw ConfigError("\(source): tier '\(t.name)' \(name) must be between 0 and 100") }
            }
            guard t.queueTimeoutMs <= 7 * 86_400_000, t.requestTimeoutMs <= 7 * 86_400_000 else {
                throw ConfigError("\(source): tier '\(t.name)' timeouts must be at most 7 days")
            }
        }
    }
}

public struct ConfigError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}
